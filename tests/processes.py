"""Real processes for tests, bound to this checkout: a private redis-server, Celery workers, uvicorn.

The plumbing is ``taskservice.testing.processes`` (shared with the benchmarks); this adds the
checkout as working directory and import path, and the rule that under ``CI=true`` a test that
needs Redis fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from taskservice.testing import processes
from taskservice.testing.processes import (
    VENV_BIN,
    RedisServer,
    free_port,
    stop_process,
    wait_for_log,
    wait_for_port,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

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


def base_env(**overrides: str) -> dict[str, str]:
    """The environment of a child: no inherited TASK_/CELERY_ settings, the checkout importable."""
    return processes.base_env(REPO_ROOT, **overrides)


def spawn(args: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group from the repository root."""
    return processes.spawn(args, env, log_path, REPO_ROOT)


def require_redis_server() -> str:
    binary = processes.redis_binary()
    if binary is None:
        message = "redis-server is not on PATH (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": Redis tests must not be skipped in CI")
        pytest.skip(message)
    return binary


@contextlib.contextmanager
def redis_server(directory: Path, extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A private redis-server on a free port; skipped (failed under CI) without the binary."""
    require_redis_server()
    with processes.redis_server(directory, extra_args) as server:
        yield server


@contextlib.contextmanager
def celery_worker(
    env: Mapping[str, str], log_path: Path, concurrency: int = 2, extra_args: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery -A backends.celery_app worker`` (prefork) that is ready to take tasks."""
    with processes.celery_worker(env, log_path, concurrency, extra_args, cwd=REPO_ROOT) as process:
        yield process


@contextlib.contextmanager
def uvicorn_server(env: Mapping[str, str], log_path: Path, app: str = "app.main:app") -> Iterator[str]:
    """A real uvicorn process serving ``app``; yields its base URL once it answers."""
    with processes.uvicorn_server(env, log_path, app, cwd=REPO_ROOT) as url:
        yield url
