"""Real processes for tests and benchmarks: a private redis-server, Celery workers, uvicorn servers.

Each helper starts a real process in its own process group on a free loopback port, writes its
output to a log file, and tears the whole group down when the context ends. Nothing here fakes a
service; the machine's own Redis is never touched. Used by taskservice's own tests and benchmarks
and by the pytest plugin's ``--task-backend=celery``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent  # where this interpreter's celery and uvicorn scripts are


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal the process group, wait, then SIGKILL whatever is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    # the leader may be gone while its children (a prefork pool) are not
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def spawn(
    args: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group (in ``cwd``), its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(args), env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def base_env(root: Path | None = None, **overrides: str) -> dict[str, str]:
    """A child's environment: no inherited TASK_/CELERY_/FLOWER_ settings, ``root`` importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TASK_", "CELERY_", "FLOWER_"))}
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def wait_for_log(log_path: Path, needle: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait until ``needle`` appears in the process's log; fail fast if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{_tail(log_path)}")
        if log_path.exists() and needle in log_path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{needle!r} not in {log_path.name} after {timeout_s} s:\n{_tail(log_path)}")


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-4000:] if log_path.exists() else "(no log)"


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    """A redis-server this process started; ``stop``/``restart`` on the same port for fault tests."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    extra_args: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis  # only where a client is asked for: the testing kit works without redis installed

        return redis.Redis(host="127.0.0.1", port=self.port, db=0)

    def reset(self) -> None:
        """Empty every database and zero the command statistics."""
        client = self.client()
        client.flushall()
        client.config_resetstat()
        client.close()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        stop_process(self.process, sig=sig)

    def restart(self) -> None:
        """Start again on the same port (after ``stop``), e.g. to prove a client recovers."""
        self.process = _spawn_redis(self.port, self.directory, self.extra_args)
        wait_for_port(self.port, process=self.process)


def _spawn_redis(port: int, directory: Path, extra_args: Sequence[str]) -> subprocess.Popen[bytes]:
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(directory), "--daemonize", "no", *extra_args]
    return spawn(args, os.environ, directory / "redis.log")


@contextlib.contextmanager
def redis_server(directory: Path, extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A private redis-server on a free port (no persistence unless ``extra_args`` say so)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = RedisServer(port, _spawn_redis(port, directory, extra_args), directory, tuple(extra_args))
    try:
        wait_for_port(port, process=server.process)
        yield server
    finally:
        server.stop()


def celery_worker_args(app: str, concurrency: int, extra_args: Sequence[str] = ()) -> list[str]:
    args = [str(VENV_BIN / "celery"), "-A", app, "worker", "--loglevel=INFO", "--pool=prefork"]
    return [*args, f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", *extra_args]


@contextlib.contextmanager
def celery_worker(
    env: Mapping[str, str],
    log_path: Path,
    concurrency: int = 2,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    app: str = "backends.celery_app",
) -> Iterator[subprocess.Popen[bytes]]:
    """A real prefork ``celery -A backends.celery_app worker`` that is ready to take tasks."""
    process = spawn(celery_worker_args(app, concurrency, extra_args), env, log_path, cwd)
    try:
        wait_for_log(log_path, "ready.", process, timeout_s=60)
        yield process
    finally:
        stop_process(process, timeout_s=15)


@contextlib.contextmanager
def uvicorn_server(
    env: Mapping[str, str], log_path: Path, app: str, cwd: Path | None = None, extra_args: Sequence[str] = ()
) -> Iterator[str]:
    """A real uvicorn process serving ``app``; yields its base URL once it answers."""
    port = free_port()
    args = [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = spawn([*args, *extra_args], env, log_path, cwd)
    try:
        wait_for_port(port, timeout_s=30, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout_s=15)
