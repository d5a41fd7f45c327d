"""The pytest plugin's switch and options, run as a user's suite would run them (pytester, own process).

- ``taskservice_finish_request_tasks = true`` (one ini line): requests finish their tasks first;
  a failed task fails the test even when the client swallowed the error; ``ignore`` turns that off.
- ``--task-backend=fastapi`` sets the backend; ``--task-backend=celery`` runs the same suite on a
  real worker with a private Redis, and leaves nothing behind for the next session.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.processes import require_redis_server

pytest_plugins = ["pytester"]

APP = """
import os
import time
from pathlib import Path

from fastapi import FastAPI
from taskservice import TaskServiceDep, TaskServiceMiddleware, task

OUT = Path(os.environ["SUITE_OUT"])


@task(name="suite.write")
def write(name: str, text: str, delay_s: float = 0.0) -> None:
    time.sleep(delay_s)  # run concurrently, the first write would come last
    with open(OUT / name, "a") as file:
        file.write(text)


@task(name="suite.explode")
def explode() -> None:
    raise ValueError("the task exploded")


app = FastAPI()
app.add_middleware(TaskServiceMiddleware)


@app.post("/notes/{name}")
def add_note(name: str, service: TaskServiceDep) -> dict:
    service.enqueue(write, name, "first,", 0.3)
    service.enqueue(write, name, "second,")
    return {"ok": True}


@app.post("/explode")
def explode_endpoint(service: TaskServiceDep) -> dict:
    return {"id": service.enqueue(explode)}
"""

SUITE = """
import os

from fastapi.testclient import TestClient

from suite_app import OUT, app

client = TestClient(app)  # module level, no lifespan: the most common shape


def test_the_effect_is_there_right_after_the_request():
    assert client.post("/notes/a").status_code == 200
    written = (OUT / "a").read_text() if (OUT / "a").exists() else ""
    assert written == "first,second,"


def test_the_backend():
    assert os.environ.get("TASK_BACKEND") == os.environ["EXPECTED_BACKEND"]
"""

SWALLOWED = """
from fastapi.testclient import TestClient

from suite_app import app


def test_swallowed():
    quiet = TestClient(app, raise_server_exceptions=False)
    assert quiet.post("/explode").status_code == 200
"""


def run_suite(pytester: pytest.Pytester, *args: str, ini: str, expected: str, **extra_env: str) -> pytest.RunResult:
    out = pytester.mkdir("out")
    pytester.makepyfile(suite_app=APP, test_suite=SUITE, test_swallowed=SWALLOWED)
    pytester.makeini(f"[pytest]\n{ini}\n")
    env = {"SUITE_OUT": str(out), "EXPECTED_BACKEND": expected, "TASK_STORE_URL": "memory://", **extra_env}
    # A user's suite: nothing of this project's own configuration (make exports TASK_MODULES=app.tasks).
    hidden = {key: os.environ.pop(key) for key in ("TASK_MODULES", "TASK_BACKEND") if key in os.environ}
    for key, value in env.items():
        os.environ[key] = value
    try:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args, timeout=180)
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(hidden)


def test_one_ini_line_finishes_request_tasks_and_a_swallowed_failure_still_fails_the_test(
    pytester: pytest.Pytester,
) -> None:
    result = run_suite(pytester, "--task-backend=fastapi", ini=SWITCH, expected="fastapi")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*RequestTaskFailed: a task enqueued by a request of this test failed (the client did not raise it):*",
            "*task suite.explode (*) enqueued by POST /explode failed: ValueError: the task exploded*",
        ]
    )


def test_errors_can_be_ignored(pytester: pytest.Pytester) -> None:
    ini = "taskservice_finish_request_tasks = true\ntaskservice_request_task_errors = ignore"
    result = run_suite(pytester, "--task-backend=fastapi", ini=ini, expected="fastapi")
    result.assert_outcomes(passed=3)


def test_without_the_switch_the_effect_is_not_there_yet(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, "-k", "effect", ini="", expected="")
    result.assert_outcomes(failed=1, deselected=2)


SWITCH = "taskservice_finish_request_tasks = true"


@pytest.mark.slow
def test_the_same_suite_runs_on_a_real_celery_worker_and_leaves_nothing_behind(pytester: pytest.Pytester) -> None:
    require_redis_server()
    first = run_suite(pytester, "--task-backend=celery", ini=SWITCH, expected="celery")
    first.assert_outcomes(passed=2, failed=1)
    assert "worker_task.py" in first.stdout.str(), "the traceback comes from the Celery worker"
    leftovers = subprocess.run(["pgrep", "-f", "taskservice-pytest-"], capture_output=True, text=True).stdout
    assert leftovers == "", "a redis-server, worker or beat outlived its session"
    assert not list(Path(tempfile.gettempdir()).glob("taskservice-pytest-*")), "its directory outlived it"


@pytest.mark.slow
def test_on_celery_a_request_s_tasks_keep_their_order(pytester: pytest.Pytester) -> None:
    require_redis_server()
    result = run_suite(pytester, "--task-backend=celery", "-k", "effect", ini=SWITCH, expected="celery")
    result.assert_outcomes(passed=1, deselected=2)
