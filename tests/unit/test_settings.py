"""Settings: defaults that run on a bare machine, and refusals that name the variable and the choices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from backends.celery.settings import CelerySettings
from backends.inprocess.settings import InProcessSettings
from taskservice import TaskSettings
from taskservice.factory import BUILTIN_BACKENDS as BACKENDS


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
    assert settings.module_names == [], "the library imports no task module of its own accord"
    assert settings.max_payload_bytes == 256 * 1024
    assert settings.result_ttl_s == 7 * 24 * 3600
    assert settings.async_concurrency == 100

    inprocess = settings.for_backend(InProcessSettings)
    assert inprocess.store_url == "sqlite:///.taskservice/tasks.sqlite3", "durable by default; memory:// is opt-in"
    assert inprocess.sqlite_path == ".taskservice/tasks.sqlite3"
    assert (inprocess.thread_concurrency, inprocess.shutdown_grace_s) == (8, 10.0)
    celery = settings.for_backend(CelerySettings)
    assert celery.redis_url == "redis://localhost:6379/0"
    assert (celery.redis_timeout_s, celery.visibility_timeout_s, celery.worker_prefetch) == (3.0, 300.0, 1)
    assert celery.flower_basic_auth is None


def test_backend_settings_live_with_their_backend_and_take_what_was_given_here() -> None:
    settings = TaskSettings(backend="celery", redis_url="redis://elsewhere:1/2", max_payload_bytes=99)
    assert not hasattr(settings, "redis_url"), "core settings know nothing of Redis"
    celery = settings.for_backend(CelerySettings)
    assert (celery.backend, celery.redis_url, celery.max_payload_bytes) == ("celery", "redis://elsewhere:1/2", 99)
    assert settings.for_backend(TaskSettings) is settings


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
    celery = CelerySettings()

    assert settings.backend == "celery"
    assert celery.redis_url == "redis://broker:6380/2"
    assert InProcessSettings().sqlite_path == "var/tasks.db"
    assert settings.module_names == ["app.tasks", "tests.tasks"]
    assert (settings.max_payload_bytes, settings.result_ttl_s, celery.visibility_timeout_s) == (1024, 60, 7200)
    assert celery.flower_basic_auth is not None
    assert celery.flower_basic_auth.get_secret_value() == "admin:secret"
    assert "secret" not in repr(celery), "credentials never show in a repr or a log line"


def test_a_dot_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TASK_BACKEND=celery\nTASK_THREAD_CONCURRENCY=3\n")
    assert TaskSettings().backend == "celery"
    assert InProcessSettings().thread_concurrency == 3


@pytest.mark.parametrize("value", ["rq", "Celery", "", "fastapi ", "my.module", "a:b:c"])
def test_an_unknown_backend_is_refused_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TASK_BACKEND", value)
    with pytest.raises(ValidationError) as caught:
        TaskSettings()
    message = str(caught.value)
    assert "TASK_BACKEND must be one of fastapi, celery, or package.module:Class" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["postgres://db/tasks", "sqlite:///", "sqlite://relative.db", "memory:", "redis://x"])
def test_an_unknown_store_is_refused_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TASK_STORE_URL", value)
    with pytest.raises(ValidationError, match=r"TASK_STORE_URL must be 'memory://' or 'sqlite:///PATH'"):
        InProcessSettings()


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
    settings_class = InProcessSettings if variable in ("TASK_THREAD_CONCURRENCY", "TASK_SHUTDOWN_GRACE_S") else None
    settings_class = CelerySettings if variable in ("TASK_REDIS_TIMEOUT_S", "TASK_WORKER_PREFETCH") else settings_class
    with pytest.raises(ValidationError, match=variable.removeprefix("TASK_").lower()):
        (settings_class or TaskSettings)()


def test_settings_are_frozen() -> None:
    settings = TaskSettings()
    with pytest.raises(ValidationError):
        settings.backend = "celery"  # type: ignore[misc]


def test_every_built_in_backend_and_any_dotted_path_is_accepted() -> None:
    """The settings check the names against the factory's one table, so they cannot disagree."""
    for name in BACKENDS:
        assert TaskSettings(backend=name).backend == name
    assert TaskSettings(backend="my_company.tasks.backend:SqsTaskService").backend.endswith(":SqsTaskService")
