"""The reference app served by a real uvicorn process, under either backend.

``fastapi``: one uvicorn process; tasks run inside it.
``celery``: a private redis-server, a real Celery worker (prefork, 2 processes) and beat,
and uvicorn with ``TASK_BACKEND=celery``. All of them share one database and data directory.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select

from app.db import Database
from app.models import Image, Notification, Project
from tests.processes import VENV_BIN, base_env, celery_worker, redis_server, spawn, stop_process, uvicorn_server
from tests.processes import wait_for_log as wait_for_process_log

ADMIN_TOKEN = "test-admin-token"
UPLOAD_LIMIT_BYTES = 4 * 1024 * 1024
UPKEEP_INTERVAL_S = 2.0
NOTIFY_MAX_RETRIES = 3

T = TypeVar("T")


@dataclass
class LiveApp:
    backend: str
    base_url: str
    data_dir: Path
    database_url: str
    log_path: Path

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0, **options)

    @functools.cached_property
    def database(self) -> Database:
        """The app's database, for tests that check what was (not) stored."""
        return Database(self.database_url)

    def stored(self) -> tuple[int, int, int, frozenset[Path]]:
        """Rows of every table a request can create, and the per-upload folders (images/<id>, projects/<id>)."""
        with self.database.session() as session:
            counts = [
                session.scalar(select(func.count()).select_from(table)) or 0 for table in (Image, Project, Notification)
            ]
        folders = frozenset(path for folder in ("images", "projects") for path in (self.data_dir / folder).glob("*"))
        return counts[0], counts[1], counts[2], folders

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def app_env(backend: str, directory: Path, database_url: str | None = None) -> dict[str, str]:
    data_dir = directory / "data"
    env = base_env(
        TASK_BACKEND=backend,
        TASK_MODULES="app.tasks",
        TASK_STORE_URL=f"sqlite:///{directory / 'tasks.sqlite3'}",  # the default store, but not in the checkout
        APP_DATA_DIR=str(data_dir),
        APP_ADMIN_TOKEN=ADMIN_TOKEN,
        APP_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT_BYTES),
        APP_UPKEEP_INTERVAL_S=str(UPKEEP_INTERVAL_S),
        APP_NOTIFY_MAX_RETRIES=str(NOTIFY_MAX_RETRIES),
        APP_NOTIFY_RETRY_BACKOFF_S="0.2",
    )
    env["DATABASE_URL"] = database_url or f"sqlite:///{data_dir / 'app.sqlite3'}"
    return env


@contextlib.contextmanager
def live_app(backend: str, directory: Path, database_url: str | None = None) -> Iterator[LiveApp]:
    env = app_env(backend, directory, database_url)
    log_path = directory / "api.log"
    with contextlib.ExitStack() as stack:
        if backend == "celery":
            redis = stack.enter_context(redis_server(directory / "redis"))
            env["REDIS_URL"] = redis.url
            stack.enter_context(celery_worker(env, directory / "worker.log", concurrency=2))
            stack.enter_context(celery_beat(env, directory))
        base_url = stack.enter_context(uvicorn_server(env, log_path))
        served = LiveApp(backend, base_url, Path(env["APP_DATA_DIR"]), env["DATABASE_URL"], log_path)
        yield served
        _fail_on_server_errors(log_path)


@contextlib.contextmanager
def celery_beat(env: dict[str, str], directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery beat`` with its schedule file in ``directory`` (not in the checkout)."""
    log_path = directory / "beat.log"
    args = [str(VENV_BIN / "celery"), "-A", "backends.celery_app", "beat", "--loglevel=INFO"]
    args += [f"--schedule={directory / 'beat-schedule'}"]
    process = spawn(args, env, log_path)
    try:
        wait_for_process_log(log_path, "beat: Starting", process, timeout_s=60)
        yield process
    finally:
        stop_process(process, timeout_s=10)


def _fail_on_server_errors(log_path: Path) -> None:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    if "Exception in ASGI application" in text:
        pytest.fail(f"the API logged an unhandled exception (a 500):\n{text[-6000:]}")


def wait_until(probe: Callable[[], T | None], timeout_s: float = 30.0, interval_s: float = 0.1, what: str = "") -> T:
    """Call ``probe`` until it returns something other than None/False; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what or probe}")
        time.sleep(interval_s)
