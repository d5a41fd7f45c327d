"""Real processes the benchmark drives: a private redis-server, Celery workers, uvicorn servers.

Each helper starts its process in its own process group on a free loopback port and tears
the whole group down when the context ends. The machine's own Redis is never touched.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Commands the harness itself sends while measuring; they are not the system under test.
HARNESS_COMMANDS = frozenset({"info", "config|resetstat", "config", "flushall", "dbsize"})


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
    # the leader may be gone while its children (prefork pool) are not
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def spawn(args: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group from the repository root, output to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args, env=dict(env), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def base_env(**overrides: str) -> dict[str, str]:
    """The environment of a child: no inherited TASK_/CELERY_ settings, the checkout importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TASK_", "CELERY_", "FLOWER_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0)

    def reset(self) -> None:
        """Empty every database and zero the command statistics."""
        client = self.client()
        client.flushall()
        client.config_resetstat()
        client.close()


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(directory), "--daemonize", "no"]
    process = spawn(args, os.environ, directory / "redis.log")
    try:
        wait_for_port(port, process=process)
        yield RedisServer(port, process)
    finally:
        stop_process(process, sig=signal.SIGKILL)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the live processes of a process group (a worker and its pool)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def command_counts(client: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as command -> calls."""
    stats: dict[str, Any] = client.info("commandstats")
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}


class CommandCounter:
    """Redis commands sent between ``start`` and ``stop``, minus the harness's own."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.before: dict[str, int] = {}
        self.delta: dict[str, int] = {}

    def start(self) -> None:
        self.before = command_counts(self.client)

    def stop(self, own: Mapping[str, int] | None = None) -> int:
        """Stop counting; ``own`` lists commands the harness sent in between (e.g. its polls)."""
        after = command_counts(self.client)
        own = own or {}
        delta = {}
        for name, calls in after.items():
            if name in HARNESS_COMMANDS:
                continue
            count = calls - self.before.get(name, 0) - own.get(name, 0)
            if count:
                delta[name] = count
        self.delta = delta
        return sum(delta.values())


@dataclass(frozen=True)
class Worker:
    """How to start one prefork ``celery -A app worker``."""

    app: str
    env: Mapping[str, str]
    log_path: Path
    concurrency: int = 2


@contextlib.contextmanager
def celery_workers(*workers: Worker, timeout_s: float = 60.0) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every worker at once (start-up is seconds of imports), yield once all say they are ready."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for worker in workers:
            args = [str(VENV_BIN / "celery"), "-A", worker.app, "worker", "--loglevel=INFO", "--pool=prefork"]
            args += [f"--concurrency={worker.concurrency}", "--without-gossip", "--without-mingle"]
            args += ["--without-heartbeat"]
            worker.log_path.write_bytes(b"")
            processes.append(spawn(args, worker.env, worker.log_path))
        for worker, process in zip(workers, processes, strict=True):
            wait_for_log(worker.log_path, "ready.", process, timeout_s)
        yield processes
    finally:
        for process in processes:
            stop_process(process, timeout_s=15)


@contextlib.contextmanager
def uvicorn_servers(*apps: tuple[str, Mapping[str, str], Path]) -> Iterator[list[tuple[str, int]]]:
    """Real single-process uvicorn servers, one per (app, env, log); yields their (host, port) once all answer."""
    started: list[tuple[int, subprocess.Popen[bytes]]] = []
    try:
        for app, env, log_path in apps:
            port = free_port()
            args = [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port)]
            args += ["--log-level", "warning", "--no-access-log"]
            started.append((port, spawn(args, env, log_path)))
        for port, process in started:
            wait_for_port(port, timeout_s=30, process=process)
        yield [("127.0.0.1", port) for port, _ in started]
    finally:
        for _, process in started:
            stop_process(process, timeout_s=15)


def wait_for_log(log_path: Path, needle: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        if needle in log_path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{needle!r} not in {log_path.name} after {timeout_s} s:\n{log_path.read_text()[-4000:]}")
