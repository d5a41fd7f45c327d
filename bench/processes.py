"""Real processes the benchmark drives, and what it measures of them (CPU, Redis commands).

The plumbing (ports, process groups, a private redis-server) is ``taskservice.testing.processes``,
shared with the tests; this binds it to the checkout and adds several workers or servers at once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from taskservice.testing import processes
from taskservice.testing.processes import VENV_BIN, RedisServer, free_port, stop_process, wait_for_log, wait_for_port

__all__ = ["REPO_ROOT", "VENV_BIN", "RedisServer", "base_env", "free_port", "redis_server", "spawn", "wait_for_port"]
REPO_ROOT = Path(__file__).resolve().parent.parent

# Commands the harness itself sends while measuring; they are not the system under test.
HARNESS_COMMANDS = frozenset({"info", "config|resetstat", "config", "flushall", "dbsize"})


def base_env(**overrides: str) -> dict[str, str]:
    """The environment of a child: no inherited TASK_/CELERY_ settings, the checkout importable."""
    return processes.base_env(REPO_ROOT, **overrides)


def spawn(args: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group from the repository root."""
    return processes.spawn(args, env, log_path, REPO_ROOT)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port, no persistence."""
    with processes.redis_server(directory) as server:
        yield server


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
