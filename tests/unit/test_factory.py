"""The backend factory: a table of import strings, imported lazily, so choosing fastapi never imports Celery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskservice import TaskSettings, create_task_service, get_task_service, set_task_service
from taskservice.factory import BUILTIN_BACKENDS as BACKENDS
from taskservice.factory import load_backend_class
from taskservice.testing import FakeTaskService

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("celery", "kombu", "redis", "billiard", "flower")


def run_python(code: str, **env: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter from the repository root; it prints one JSON object.

    ``HEAVY_MODULES`` in its environment names the packages that must not be imported.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASK_") and k != "REDIS_URL"}
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={**clean, "HEAVY_MODULES": ",".join(HEAVY_MODULES), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_choosing_fastapi_does_not_import_celery() -> None:
    loaded = run_python(
        """
        import json, os, sys
        import taskservice
        service = taskservice.get_task_service()
        heavy = os.environ["HEAVY_MODULES"].split(",")
        print(json.dumps({
            "backend": type(service).__name__,
            "name": service.backend_name,
            "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
        }))
        """,
        TASK_BACKEND="fastapi",
    )
    assert loaded == {"backend": "FastAPITaskService", "name": "fastapi", "heavy": []}


def test_the_testing_kit_works_without_celery_or_redis() -> None:
    """Celery and Redis made unimportable: the kit still imports, records and runs tasks."""
    ran = run_python(
        """
        import json, os, sys
        for name in os.environ["HEAVY_MODULES"].split(","):
            sys.modules[name] = None  # any import of it now fails
        from taskservice import task
        from taskservice.testing import FakeTaskService, assert_enqueued
        import taskservice.testing.pytest_plugin

        @task(name="kit.double")
        def double(x: int) -> int:
            return 2 * x

        fake = FakeTaskService()
        fake.enqueue(double, 21)
        assert_enqueued(fake, double, 21)
        [result] = fake.run_all()
        print(json.dumps({"status": result.status, "result": result.result}))
        """
    )
    assert ran == {"status": "succeeded", "result": 42}


def test_backends_are_loaded_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "fake", "taskservice.testing.fake:FakeTaskService")
    assert load_backend_class("fake") is FakeTaskService


def test_an_entry_that_is_not_a_task_service_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "broken", "json:JSONDecoder")
    with pytest.raises(TypeError, match="json:JSONDecoder is not a TaskService subclass"):
        load_backend_class("broken")


def test_an_unknown_backend_name_is_refused_with_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"TASK_BACKEND must be one of fastapi, celery, or package.module:Class; got 'rq'"
    ):
        load_backend_class("rq")


def test_a_backend_outside_the_tree_is_loaded_from_a_dotted_path() -> None:
    assert load_backend_class("taskservice.testing.fake:FakeTaskService") is FakeTaskService
    with pytest.raises(ValueError, match=r"no module 'no_such_package\.backend' can be imported"):
        load_backend_class("no_such_package.backend:Service")


def test_create_task_service_passes_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "fastapi", "taskservice.testing.fake:FakeTaskService")
    settings = TaskSettings(_env_file=None, backend="fastapi", max_payload_bytes=123)
    service = create_task_service(settings)
    assert isinstance(service, FakeTaskService) and service.settings is settings


def test_set_task_service_installs_and_returns_the_previous_one() -> None:
    first, second = FakeTaskService(), FakeTaskService()
    original = set_task_service(first)
    try:
        assert get_task_service() is first
        assert set_task_service(second) is first
        assert get_task_service() is second
    finally:
        assert set_task_service(original) is second
