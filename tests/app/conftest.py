"""Fixtures of the reference app's tests.

Unit tests (``client``) run the app in-process with ``FakeTaskService``: no broker, no
worker. Request tests (``real_client``) run the app in-process on the session's real backend
(``--task-backend=fastapi`` or ``celery``, a real worker then) with ``finish_request_tasks``, the
way a suite written for ``BackgroundTasks`` does. End-to-end tests (``live``) run a real uvicorn
process per backend configuration; see ``live.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.db import reset_database
from app.main import app as reference_app
from app.settings import AppSettings, get_settings
from taskservice.testing import FakeTaskService, FinishPolicy
from tests.app.live import ADMIN_TOKEN, UPLOAD_LIMIT_BYTES, LiveApp, live_app


@pytest.fixture(scope="session")
def task_worker_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The app's settings for the whole session: the ``--task-backend=celery`` worker reads the same
    database and data directory as the tests (a worker cannot follow per-test settings)."""
    data = tmp_path_factory.mktemp("shared-app") / "data"
    return {
        "APP_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'app.sqlite3'}",
        "APP_ADMIN_TOKEN": ADMIN_TOKEN,
        "APP_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT_BYTES),
        "APP_NOTIFY_RETRY_BACKOFF_S": "0.05",
        "TASK_STORE_URL": "memory://",
    }


@pytest.fixture
def shared_app_settings(task_worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[AppSettings]:
    """The session's app settings (those of ``task_worker_env``) in this process too."""
    for name, value in task_worker_env.items():
        monkeypatch.setenv(name, value)
    with _settings_from_environment() as settings:
        yield settings


@pytest.fixture
def real_client(shared_app_settings: AppSettings, finish_request_tasks: FinishPolicy) -> Iterator[TestClient]:
    """The app on the session's real backend; each request returns once its tasks have finished."""
    with TestClient(reference_app) as test_client:
        yield test_client


@pytest.fixture
def app_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppSettings]:
    """App settings for one test: a fresh SQLite database and data directory under ``tmp_path``."""
    monkeypatch.setenv("APP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APP_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("APP_MAX_UPLOAD_BYTES", str(UPLOAD_LIMIT_BYTES))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with _settings_from_environment() as settings:
        yield settings


@contextlib.contextmanager
def _settings_from_environment() -> Iterator[AppSettings]:
    """The app's settings read again from the environment (and its database with them); forgotten after."""
    get_settings.cache_clear()
    reset_database()
    try:
        yield get_settings()
    finally:
        get_settings.cache_clear()
        reset_database()


@pytest.fixture
def app(app_settings: AppSettings) -> FastAPI:
    return reference_app


@pytest.fixture
def client(app: FastAPI, task_service_override: FakeTaskService) -> Iterator[TestClient]:
    """The app in-process, its TaskService replaced by the fake (``task_service_override``)."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session", params=["fastapi", "celery"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """The app in a real uvicorn process, once per backend (Celery: private Redis, worker and beat)."""
    backend = str(request.param)
    with live_app(backend, tmp_path_factory.mktemp(f"live-{backend}")) as served:
        yield served
