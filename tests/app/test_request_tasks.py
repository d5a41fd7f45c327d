"""The reference app tested the way a suite written for ``BackgroundTasks`` tests: assert the effect
right after the request. ``finish_request_tasks`` makes each request run its tasks to completion on
the session's real backend (in-process, or a real Celery worker with ``--task-backend=celery``),
with the real codec and store; a task that fails fails the test with its traceback.
"""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import get_database
from app.models import OutboxMessage
from taskservice.testing import FinishPolicy, RequestTaskFailed
from tests.app.media import jpeg_bytes, sales_csv


def test_the_thumbnails_exist_when_the_upload_returns(real_client: TestClient) -> None:
    original = jpeg_bytes(900, 600)
    accepted = real_client.post("/images", files={"file": ("cat.jpg", original, "image/jpeg")})

    assert accepted.status_code == 202
    image = real_client.get(f"/images/{accepted.json()['id']}").json()
    assert image["thumbnail_ready"] is True
    assert real_client.get(image["thumbnail_url"], params={"size": 150}).status_code == 200
    task = real_client.get(f"/tasks/{accepted.json()['task_id']}").json()
    assert task["status"] == "succeeded" and task["result"]["sha256"] == hashlib.sha256(original).hexdigest()


def test_the_project_is_completed_when_the_process_request_returns(real_client: TestClient) -> None:
    created = real_client.post("/projects", files={"file": ("sales.csv", sales_csv(500, seed=11), "text/csv")})
    project_id = created.json()["id"]

    accepted = real_client.post(f"/projects/{project_id}/process")

    assert accepted.status_code == 202
    project = real_client.get(f"/projects/{project_id}").json()
    assert (project["status"], project["progress"], project["result"]["rows"]) == ("completed", 100.0, 500)
    assert real_client.post(f"/projects/{project_id}/process").status_code == 202, "the unique key is free"


def test_a_notification_is_sent_and_a_flaky_one_retried_before_the_request_returns(real_client: TestClient) -> None:
    sent = real_client.post("/notifications", json={"to": "ada@example.com", "subject": "Hi", "body": "."}).json()
    flaky = real_client.post("/notifications", json={"to": "bo@fail-1.invalid", "subject": "Hi", "body": "."}).json()

    assert real_client.get(f"/notifications/{sent['id']}").json()["status"] == "sent"
    flaky_now = real_client.get(f"/notifications/{flaky['id']}").json()
    assert (flaky_now["status"], flaky_now["attempts"]) == ("sent", 2)
    with get_database().session() as session:
        delivered = set(session.scalars(select(OutboxMessage.notification_id)))
    assert {sent["id"], flaky["id"]} <= delivered


def test_a_failing_task_fails_the_request_with_its_traceback(real_client: TestClient) -> None:
    created = real_client.post("/projects", files={"file": ("bad.csv", sales_csv(20, bad_line=5), "text/csv")})

    with pytest.raises(RequestTaskFailed) as raised:
        real_client.post(f"/projects/{created.json()['id']}/process")

    message = str(raised.value)
    assert "task projects.process" in message and "PipelineError: line 5, column 4 (units)" in message
    assert "Traceback (most recent call last)" in message and "app/tasks.py" in message


def test_with_errors_turned_off_the_project_reads_error(
    real_client: TestClient, finish_request_tasks: FinishPolicy
) -> None:
    finish_request_tasks.raise_errors = False
    created = real_client.post("/projects", files={"file": ("bad.csv", sales_csv(20, bad_line=5), "text/csv")})

    assert real_client.post(f"/projects/{created.json()['id']}/process").status_code == 202

    project = real_client.get(f"/projects/{created.json()['id']}").json()
    assert project["status"] == "error" and project["error_message"].startswith("line 5, column 4 (units)")
    assert len(finish_request_tasks.failures) == 1
