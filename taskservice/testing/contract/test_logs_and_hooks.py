"""No silent failure: every backend logs each outcome through the ``taskservice`` logger (WARNING per
retry, ERROR with the traceback per final failure, timeouts included) with task id, name and attempt
as fields, and calls ``on_task_started``/``on_task_finished`` in the process that runs the task.

These tests read the contract sink (``taskservice.testing.contract.sink``) of the process that ran the
task; a harness without one skips them, saying so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from taskservice import TaskService, TaskStatus
from taskservice.testing.contract import sink, tasks


@pytest.fixture
def sink_path(request: pytest.FixtureRequest) -> str:
    """The path of the ``contract_sink`` fixture defined next to ``task_service``; skipped without one."""
    try:
        path: str | None = request.getfixturevalue("contract_sink")
    except pytest.FixtureLookupError:
        path = None
    if path is None:
        pytest.skip("this harness has no contract_sink fixture (see taskservice.testing.contract.sink)")
    return path


def _entries(path: str, task_id: str, kind: str, expected: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The sink's entries of one kind for a task, once ``expected`` of them arrived (hooks may lag a status)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [entry for entry in sink.read(path, task_id) if entry["kind"] == kind]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_a_final_failure_is_one_error_line_with_the_traceback_and_the_fields(
    task_service: TaskService, sink_path: str
) -> None:
    result = task_service.wait(task_service.enqueue(tasks.fail, "logged"))
    assert result.status == TaskStatus.FAILED

    logs = _entries(sink_path, result.id, "log", 1)
    errors = [entry for entry in logs if entry["level"] == "ERROR"]
    assert len(errors) == 1, logs
    [error] = errors
    assert (error["task_name"], error["attempt"], error["error"]) == ("contract.fail", 1, "ValueError: logged")
    assert error["task_status"] == "failed" and error["has_traceback"]
    assert result.id in error["message"]


def test_each_retry_is_a_warning_and_the_last_failure_an_error(
    task_service: TaskService, sink_path: str, tmp_path: Path
) -> None:
    task = tasks.flaky.options(max_retries=2, retry_backoff=0.01)
    result = task_service.wait(task_service.enqueue(task, str(tmp_path), 10))
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 3)

    logs = [entry for entry in _entries(sink_path, result.id, "log", 3) if entry["level"] in ("WARNING", "ERROR")]
    assert [(entry["level"], entry["attempt"]) for entry in logs] == [("WARNING", 1), ("WARNING", 2), ("ERROR", 3)]
    assert all(entry["retry_delay_s"] is not None for entry in logs[:2])


def test_a_timeout_is_logged_as_a_final_failure(task_service: TaskService, sink_path: str) -> None:
    result = task_service.wait(task_service.enqueue(tasks.async_sleep_for.options(timeout=0.5), 30), timeout_s=20)
    errors = [entry for entry in _entries(sink_path, result.id, "log", 1) if entry["level"] == "ERROR"]
    assert [entry["error"] for entry in errors] == ["TimeoutError: task timed out after 0.5 s"]


def test_hooks_see_every_attempt_start_and_end(task_service: TaskService, sink_path: str, tmp_path: Path) -> None:
    result = task_service.wait(task_service.enqueue(tasks.flaky.options(retry_backoff=0.01), str(tmp_path), 1))
    assert (result.status, result.attempts) == (TaskStatus.SUCCEEDED, 2)

    started = _entries(sink_path, result.id, "started", 2)
    finished = _entries(sink_path, result.id, "finished", 2)
    assert [(entry["name"], entry["attempt"]) for entry in started] == [("contract.flaky", 1), ("contract.flaky", 2)]
    assert [(entry["attempt"], entry["status"]) for entry in finished] == [(1, "retrying"), (2, "succeeded")]
    assert finished[0]["error"] == "RuntimeError: run 1 fails on purpose" and finished[0]["has_exception"]
    assert finished[1]["error"] is None
    for begun, ended in zip(started, finished, strict=True):
        assert begun["pid"] == ended["pid"], "an attempt's hooks run in the process that runs it"
