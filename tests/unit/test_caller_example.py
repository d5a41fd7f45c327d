"""How a team unit-tests an endpoint that enqueues work: the taskservice fixtures only, no Redis, no worker.

The top half stands for your service (normally in ``app/``); the bottom half is what you
write in your tests. ``task_service_override`` comes from the taskservice pytest plugin:
it serves a ``FakeTaskService`` to the app of your ``app`` fixture, which records what the
endpoints enqueue and runs it when the test says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from taskservice import (
    TaskConflict,
    TaskServiceDep,
    TaskServiceMiddleware,
    TaskStatus,
    create_tasks_router,
    set_progress,
    task,
    task_service_lifespan,
)
from taskservice.testing import FakeTaskService, assert_enqueued, assert_not_enqueued, assert_scheduled

# --- your service ----------------------------------------------------------------------

REPORTS: dict[int, dict[str, Any]] = {}  # stands for the database
OUTBOX: list[str] = []  # stands for the mail server


@task(name="example.build_report", max_retries=2)
def build_report(report_id: int) -> dict[str, int]:
    report = REPORTS[report_id]
    set_progress(50, "adding up")
    report["total"] = sum(report["values"])
    report["status"] = "ready"
    return {"report_id": report_id, "total": report["total"]}


@task(name="example.send_reminder")
def send_reminder(report_id: int) -> None:
    OUTBOX.append(f"report {report_id} is waiting for you")


def create_app() -> FastAPI:
    app = FastAPI(lifespan=task_service_lifespan)
    app.add_middleware(TaskServiceMiddleware)
    app.include_router(create_tasks_router())

    @app.post("/reports/{report_id}/build", status_code=202)
    def start_build(report_id: int, service: TaskServiceDep) -> dict[str, Any]:
        if report_id not in REPORTS:
            raise HTTPException(status_code=404, detail="no such report")
        try:
            task_id = service.enqueue(build_report.options(unique_key=f"report:{report_id}"), report_id)
        except TaskConflict:
            raise HTTPException(status_code=409, detail="this report is already being built") from None
        return {"report_id": report_id, "task_id": task_id}

    @app.post("/reports/{report_id}/remind", status_code=202)
    def remind_tomorrow(report_id: int, service: TaskServiceDep) -> dict[str, str]:
        return {"task_id": service.schedule(send_reminder, timedelta(days=1), report_id)}

    return app


# --- your tests ------------------------------------------------------------------------


@pytest.fixture
def app() -> FastAPI:
    REPORTS.clear()
    OUTBOX.clear()
    return create_app()


@pytest.fixture
def client(app: FastAPI, task_service_override: FakeTaskService) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def test_building_a_report_enqueues_the_task_and_running_it_builds_the_report(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    REPORTS[7] = {"values": [1, 2, 3], "status": "draft"}

    response = client.post("/reports/7/build")

    assert response.status_code == 202
    call = assert_enqueued(task_service_override, build_report, 7)
    assert call.unique_key == "report:7"
    assert response.json() == {"report_id": 7, "task_id": call.id}
    assert REPORTS[7]["status"] == "draft", "nothing runs until the test says so"

    [result] = task_service_override.run_all()

    assert (result.status, result.result) == (TaskStatus.SUCCEEDED, {"report_id": 7, "total": 6})
    assert REPORTS[7] == {"values": [1, 2, 3], "status": "ready", "total": 6}
    assert task_service_override.progress_history(call.id) == [(50, "adding up")]
    assert client.get(f"/tasks/{call.id}").json()["status"] == "succeeded"


def test_a_second_build_while_the_first_is_pending_is_refused(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    REPORTS[7] = {"values": [1], "status": "draft"}
    assert client.post("/reports/7/build").status_code == 202

    assert client.post("/reports/7/build").status_code == 409
    assert len(task_service_override.enqueued(build_report)) == 1

    task_service_override.run_all()
    assert client.post("/reports/7/build").status_code == 202, "the key is free once the build ended"


def test_an_unknown_report_enqueues_nothing(client: TestClient, task_service_override: FakeTaskService) -> None:
    assert client.post("/reports/404/build").status_code == 404
    assert_not_enqueued(task_service_override, build_report)


def test_a_failing_build_is_recorded_not_silent(client: TestClient, task_service_override: FakeTaskService) -> None:
    REPORTS[8] = {"values": [1, "two"], "status": "draft"}
    task_id = client.post("/reports/8/build").json()["task_id"]

    [result] = task_service_override.run_all()

    assert result.status == TaskStatus.FAILED
    assert result.attempts == 3, "max_retries=2: three runs, without waiting for the backoff"
    assert result.error == "TypeError: unsupported operand type(s) for +: 'int' and 'str'"
    assert client.get(f"/tasks/{task_id}").json()["error"] == result.error


def test_the_reminder_is_scheduled_for_tomorrow(client: TestClient, task_service_override: FakeTaskService) -> None:
    client.post("/reports/7/remind")

    assert_scheduled(task_service_override, send_reminder, timedelta(days=1), 7)
    assert task_service_override.run_all() == [], "not due yet"
    assert OUTBOX == []

    task_service_override.run_all(scheduled="all")  # as if a day went by
    assert OUTBOX == ["report 7 is waiting for you"]
