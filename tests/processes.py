"""Real processes for tests: a private redis-server, Celery workers/beat, uvicorn servers.

Every helper starts a real process on a free loopback port and tears it down (with its
children) when the context ends. Nothing here fakes a service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# One implementation of the process plumbing, shared with the benchmark harness.
from bench.processes import REPO_ROOT, VENV_BIN, base_env, free_port, spawn, stop_process, wait_for_port

__all__ = [
    "REPO_ROOT",
    "VENV_BIN",
    "RedisServer",
    "base_env",
    "celery_worker",
    "free_port",
    "redis_server",
    "require_redis_server",
    "spawn",
    "stop_process",
    "uvicorn_server",
    "wait_for_log",
    "wait_for_port",
]


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process, sig=signal.SIGKILL)

    def restart(self) -> None:
        """Start again on the same port (after ``stop``), e.g. to prove a client recovers."""
        self.process = _spawn_redis(self.port, self.directory)
        wait_for_port(self.port, process=self.process)


def require_redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not on PATH (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": Redis tests must not be skipped in CI")
        pytest.skip(message)
    return binary


def _spawn_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    binary = require_redis_server()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(directory), "--daemonize", "no"]
    return spawn(args, os.environ, directory / "redis.log")


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port (``REDIS_URL`` is used only when the binary is missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    if shutil.which("redis-server") is None and os.environ.get("REDIS_URL") and os.environ.get("CI") != "true":
        pytest.skip("redis-server is not on PATH; these tests need a private server they can stop")
    port = free_port()
    server = RedisServer(port, _spawn_redis(port, directory), directory)
    try:
        wait_for_port(port, process=server.process)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def celery_worker(
    env: Mapping[str, str], log_path: Path, concurrency: int = 2, extra_args: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery -A backends.celery_app worker`` (prefork) that is ready to take tasks."""
    args = [str(VENV_BIN / "celery"), "-A", "backends.celery_app", "worker", "--loglevel=INFO"]
    args += ["--pool=prefork", f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", *extra_args]
    process = spawn(args, env, log_path)
    try:
        _wait_for_log(log_path, "ready.", process, timeout_s=60)
        yield process
    finally:
        stop_process(process, timeout_s=15)


@contextlib.contextmanager
def uvicorn_server(env: Mapping[str, str], log_path: Path, app: str = "app.main:app") -> Iterator[str]:
    """A real uvicorn process serving ``app``; yields its base URL once it answers."""
    port = free_port()
    args = [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = spawn(args, env, log_path)
    try:
        wait_for_port(port, timeout_s=30, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout_s=15)


def _wait_for_log(log_path: Path, needle: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        if log_path.exists() and needle in log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{needle!r} not in {log_path.name} after {timeout_s} s:\n{log_path.read_text()[-4000:]}")


def wait_for_log(log_path: Path, needle: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait until ``needle`` appears in the process's log (it fails fast if the process dies)."""
    _wait_for_log(log_path, needle, process, timeout_s)
