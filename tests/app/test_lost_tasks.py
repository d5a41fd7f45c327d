"""The app never leaves its own rows stuck: a project or notification whose task failed, was
interrupted or vanished reads ``error``/``failed`` with a message, on the session's real backend."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import get_database
from app.main import app as reference_app
from app.models import Notification
from app.project_runs import new_run_token, record_requested
from app.settings import AppSettings
from app.tasks import process_project
from taskservice import TaskStatus, get_task_service
from taskservice.testing import replace_task
from tests.app.media import sales_csv

UNKNOWN_TASK = "00000000-0000-4000-8000-000000000000"  # as after a restart lost a memory:// store


@pytest.fixture
def client(shared_app_settings: AppSettings) -> Iterator[TestClient]:
    with TestClient(reference_app) as test_client:
        yield test_client


def test_a_project_whose_task_vanished_reads_error(client: TestClient) -> None:
    project_id = client.post("/projects", files={"file": ("s.csv", sales_csv(10), "text/csv")}).json()["id"]
    record_requested(get_database(), project_id, new_run_token(), UNKNOWN_TASK)
    assert client.get(f"/projects/{project_id}").status_code == 200

    project = client.get(f"/projects/{project_id}").json()

    assert project["status"] == "error"
    assert project["error_message"].startswith("the pipeline task is gone: the task service has no record of task")
    assert client.post(f"/projects/{project_id}/process").status_code == 202, "it can be processed again"


def test_a_notification_whose_task_vanished_reads_failed(client: TestClient) -> None:
    accepted = client.post(
        "/notifications",
        json={"to": "ada@example.com", "subject": "x", "body": "x", "send_at": _in(timedelta(days=1))},
    ).json()
    _set_task_id(accepted["id"], UNKNOWN_TASK)

    notification = client.get(f"/notifications/{accepted['id']}").json()

    assert notification["status"] == "failed"
    assert notification["last_error"].startswith("the delivery task is gone: the task service has no record")


def test_a_notification_that_was_never_enqueued_reads_failed_after_a_grace(client: TestClient) -> None:
    accepted = client.post(
        "/notifications",
        json={"to": "ada@example.com", "subject": "x", "body": "x", "send_at": _in(timedelta(days=1))},
    ).json()
    _set_task_id(accepted["id"], None)
    assert client.get(f"/notifications/{accepted['id']}").json()["status"] == "scheduled", "within the grace"
    with get_database().session() as session:
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        session.execute(update(Notification).where(Notification.id == accepted["id"]).values(created_at=long_ago))

    notification = client.get(f"/notifications/{accepted['id']}").json()

    assert (notification["status"], notification["last_error"]) == (
        "failed",
        "the delivery was never enqueued (the API stopped before it could)",
    )


@pytest.mark.skipif(os.environ.get("TASK_BACKEND") == "celery", reason="stops the in-process runner")
def test_a_project_whose_task_was_interrupted_by_a_stop_reads_error(
    shared_app_settings: AppSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASK_SHUTDOWN_GRACE_S", "0")  # the service this test creates cuts off at once

    def still_running(project_id: str, run_token: int) -> None:
        time.sleep(5)  # whatever the pipeline's speed, the stop finds it running

    with replace_task(process_project, still_running), TestClient(reference_app) as client:
        project_id = client.post("/projects", files={"file": ("s.csv", sales_csv(90_000), "text/csv")}).json()["id"]
        task_id = client.post(f"/projects/{project_id}/process").json()["task_id"]
        service = get_task_service()
        while service.get_status(task_id).status is TaskStatus.PENDING:
            time.sleep(0.005)
    # The lifespan ended with the task still running: it was cut off and recorded as interrupted.
    with TestClient(reference_app) as client:
        project = client.get(f"/projects/{project_id}").json()
    assert project["status"] == "error", project
    assert project["error_message"].startswith("the pipeline task ended failed: TaskInterrupted")


def _in(delay: timedelta) -> str:
    return (datetime.now(UTC) + delay).isoformat()


def _set_task_id(notification_id: str, task_id: str | None) -> None:
    with get_database().session() as session:
        session.execute(update(Notification).where(Notification.id == notification_id).values(task_id=task_id))
