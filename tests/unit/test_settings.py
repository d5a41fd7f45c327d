"""Settings: defaults that run on a bare machine, and refusals that name the variable and the choices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from taskservice import TaskSettings
from taskservice.factory import BACKENDS
from taskservice.settings import BACKEND_NAMES, BackendName


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TASK_* variable and no .env file from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("TASK_") or name in {"REDIS_URL", "FLOWER_BASIC_AUTH"}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_run_the_in_process_backend_on_a_bare_machine() -> None:
    settings = TaskSettings()

    assert settings.backend == "fastapi"
    assert settings.store_url == "memory://" and settings.sqlite_path is None
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.module_names == ["app.tasks"]
    assert settings.max_payload_bytes == 256 * 1024
    assert settings.result_ttl_s == 7 * 24 * 3600
    assert (settings.async_concurrency, settings.thread_concurrency) == (100, 8)
    assert settings.shutdown_grace_s == 10.0
    assert (settings.redis_timeout_s, settings.visibility_timeout_s, settings.worker_prefetch) == (3.0, 300.0, 1)
    assert settings.flower_basic_auth is None


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_BACKEND", "celery")
    monkeypatch.setenv("REDIS_URL", "redis://broker:6380/2")
    monkeypatch.setenv("TASK_STORE_URL", "sqlite:///var/tasks.db")
    monkeypatch.setenv("TASK_MODULES", " app.tasks, tests.tasks ,,")
    monkeypatch.setenv("TASK_MAX_PAYLOAD_BYTES", "1024")
    monkeypatch.setenv("TASK_RESULT_TTL_S", "60")
    monkeypatch.setenv("TASK_VISIBILITY_TIMEOUT_S", "7200")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:secret")

    settings = TaskSettings()

    assert settings.backend == "celery"
    assert settings.redis_url == "redis://broker:6380/2"
    assert settings.sqlite_path == "var/tasks.db"
    assert settings.module_names == ["app.tasks", "tests.tasks"]
    assert (settings.max_payload_bytes, settings.result_ttl_s, settings.visibility_timeout_s) == (1024, 60, 7200)
    assert settings.flower_basic_auth is not None
    assert settings.flower_basic_auth.get_secret_value() == "admin:secret"
    assert "secret" not in repr(settings), "credentials never show in a repr or a log line"


def test_a_dot_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TASK_BACKEND=celery\nTASK_THREAD_CONCURRENCY=3\n")
    settings = TaskSettings()
    assert (settings.backend, settings.thread_concurrency) == ("celery", 3)


@pytest.mark.parametrize("value", ["rq", "Celery", "", "fastapi "])
def test_an_unknown_backend_is_refused_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TASK_BACKEND", value)
    with pytest.raises(ValidationError) as caught:
        TaskSettings()
    message = str(caught.value)
    assert "TASK_BACKEND must be one of fastapi, celery" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["postgres://db/tasks", "sqlite:///", "sqlite://relative.db", "memory:", "redis://x"])
def test_an_unknown_store_is_refused_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TASK_STORE_URL", value)
    with pytest.raises(ValidationError, match=r"TASK_STORE_URL must be 'memory://' or 'sqlite:///PATH'"):
        TaskSettings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASK_MAX_PAYLOAD_BYTES", "0"),
        ("TASK_RESULT_TTL_S", "-1"),
        ("TASK_ASYNC_CONCURRENCY", "0"),
        ("TASK_THREAD_CONCURRENCY", "many"),
        ("TASK_SHUTDOWN_GRACE_S", "-0.5"),
        ("TASK_REDIS_TIMEOUT_S", "0"),
        ("TASK_WORKER_PREFETCH", "0"),
    ],
)
def test_numbers_out_of_range_are_refused_at_start(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("TASK_").lower()):
        TaskSettings()


def test_settings_are_frozen() -> None:
    settings = TaskSettings()
    with pytest.raises(ValidationError):
        settings.backend = "celery"  # type: ignore[misc]


def test_allowed_backends_and_the_factory_table_agree() -> None:
    """A backend added to one but not the other would be refused at start-up, or never loadable."""
    assert set(get_args(BackendName)) == set(BACKEND_NAMES) == set(BACKENDS)
    for name in BACKENDS:
        assert TaskSettings(backend=name).backend == name
