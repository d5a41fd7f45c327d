"""The app's endpoints in-process with ``FakeTaskService``: a caller's unit tests need no broker.

The fake records what the endpoints enqueue and runs it only when the test says so, the
way a worker would (decoded copies of the arguments, retries, progress), so each test
can look at the state before and after the background work.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import func, select

from app.db import get_database
from app.models import Image, Notification, OutboxMessage, Project, UpkeepRun
from app.settings import AppSettings, get_settings
from app.storage import data_dir
from app.tasks import check_thumbnail_integrity, deliver_notification, make_image_thumbnails, process_project
from taskservice import TaskStatus
from taskservice.testing import FakeTaskService, assert_enqueued, assert_scheduled
from tests.app.live import ADMIN_TOKEN
from tests.app.media import jpeg_bytes, png_bytes, sales_csv


def upload_image(client: TestClient, data: bytes, name: str = "photo.jpg", kind: str = "image/jpeg") -> str:
    response = client.post("/images", files={"file": (name, data, kind)})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def create_project(client: TestClient, data: bytes) -> str:
    response = client.post("/projects", files={"file": ("sales.csv", data, "text/csv")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_health_names_the_backend(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "backend": "fake"}


def test_upload_answers_at_once_and_the_task_makes_every_thumbnail(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    original = jpeg_bytes(1200, 800)
    response = client.post("/images", files={"file": ("cat.jpg", original, "image/jpeg")})

    assert response.status_code == 202
    body = response.json()
    image_id = body["id"]
    assert body == {"id": image_id, "filename": "cat.jpg", "thumbnail_ready": False, "task_id": body["task_id"]}
    call = assert_enqueued(task_service_override, make_image_thumbnails, image_id)
    assert call.unique_key == f"thumbnails:{image_id}"
    assert client.get(f"/images/{image_id}/thumbnail").status_code == 404  # not made yet

    [result] = task_service_override.run_all()

    assert result.status == TaskStatus.SUCCEEDED, result.error
    assert client.get(f"/images/{image_id}").json() == {
        "id": image_id,
        "filename": "cat.jpg",
        "thumbnail_ready": True,
        "thumbnail_url": f"/images/{image_id}/thumbnail",
    }
    for query, expected in (("", (300, 200)), ("?size=150", (150, 100)), ("?size=600", (600, 400))):
        thumbnail = client.get(f"/images/{image_id}/thumbnail{query}")
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/jpeg"
        with PILImage.open(io.BytesIO(thumbnail.content)) as image:
            assert (image.format, image.size) == ("JPEG", expected)
    with get_database().session() as session:
        stored = session.get_one(Image, image_id)
        assert stored.sha256 == hashlib.sha256(original).hexdigest()


def test_transparent_png_and_small_images_are_not_upscaled(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    image_id = upload_image(client, png_bytes(120, 90, "RGBA"), "logo.png", "image/png")
    assert task_service_override.run_all()[0].status == TaskStatus.SUCCEEDED
    for size in (150, 300, 600):
        thumbnail = client.get(f"/images/{image_id}/thumbnail?size={size}")
        with PILImage.open(io.BytesIO(thumbnail.content)) as image:
            assert image.size == (120, 90)
            assert image.mode == "RGB"


def test_thumbnail_size_not_offered_is_400(client: TestClient, task_service_override: FakeTaskService) -> None:
    image_id = upload_image(client, jpeg_bytes())
    task_service_override.run_all()
    response = client.get(f"/images/{image_id}/thumbnail?size=64")
    assert response.status_code == 400
    assert "150, 300, 600" in response.json()["detail"]


def test_project_runs_the_pipeline_with_progress(client: TestClient, task_service_override: FakeTaskService) -> None:
    project_id = create_project(client, sales_csv(6000))
    assert client.get(f"/projects/{project_id}").json()["status"] == "idle"

    accepted = client.post(f"/projects/{project_id}/process")

    assert accepted.status_code == 202
    task_id = accepted.json()["task_id"]
    assert accepted.json() == {"project_id": project_id, "task_id": task_id}
    call = assert_enqueued(task_service_override, process_project)
    assert call.args[0] == project_id and call.unique_key == f"project:{project_id}"
    assert client.get(f"/projects/{project_id}").json()["status"] == "processing"
    assert client.post(f"/projects/{project_id}/process").status_code == 409  # the same project, still queued

    [result] = task_service_override.run_all()

    assert result.status == TaskStatus.SUCCEEDED, result.traceback
    project = client.get(f"/projects/{project_id}").json()
    assert project["status"] == "completed" and project["progress"] == 100.0
    assert project["result"]["rows"] == 6000 and project["error_message"] is None
    percents = [percent for percent, _ in task_service_override.progress_history(task_id)]
    assert percents == sorted(percents) and percents[-1] == 100
    assert len([p for p in percents if 0 < p < 100]) >= 5  # real steps, not just start and end
    assert data_dir().project_report(project_id).is_file()


def test_a_bad_row_ends_in_error_naming_line_and_column(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    project_id = create_project(client, sales_csv(50, bad_line=7))
    task_id = client.post(f"/projects/{project_id}/process").json()["task_id"]

    [result] = task_service_override.run_all()

    assert result.status == TaskStatus.FAILED
    project = client.get(f"/projects/{project_id}").json()
    assert project["status"] == "error"
    assert project["error_message"] == "line 7, column 4 (units): 'lots' is not a whole number from 0 to 1000000000"
    task = client.get(f"/tasks/{task_id}").json()
    assert task["status"] == "failed" and "PipelineError" in task["error"] and task["traceback"] is None
    admin = client.get(f"/tasks/{task_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert "Traceback" in admin["traceback"]  # the traceback (server paths) is for admins only
    assert client.post(f"/projects/{project_id}/process").status_code == 202  # the key is free again


def test_notification_now_is_queued_then_sent_to_the_outbox(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    response = client.post("/notifications", json={"to": "ada@example.com", "subject": "Hi", "body": "Hello"})

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert_enqueued(task_service_override, deliver_notification, body["id"])
    task_service_override.run_all()
    notification = client.get(f"/notifications/{body['id']}").json()
    assert notification["status"] == "sent" and notification["attempts"] == 1
    with get_database().session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_notification_with_future_send_at_is_scheduled(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    send_at = datetime.now(UTC) + timedelta(hours=2)
    response = client.post(
        "/notifications", json={"to": "ada@example.com", "subject": "Later", "body": "", "send_at": send_at.isoformat()}
    )

    assert response.status_code == 202 and response.json()["status"] == "scheduled"
    assert_scheduled(task_service_override, deliver_notification, send_at, response.json()["id"])
    assert task_service_override.run_all() == []  # not due yet
    task_service_override.run_all(scheduled="all")
    assert client.get(f"/notifications/{response.json()['id']}").json()["status"] == "sent"


def test_refused_delivery_is_retried_then_sent(
    client: TestClient, task_service_override: FakeTaskService, app_settings: AppSettings
) -> None:
    response = client.post("/notifications", json={"to": "bo@fail-2.invalid", "subject": "Hi", "body": "."})
    [result] = task_service_override.run_all()

    assert result.status == TaskStatus.SUCCEEDED and result.attempts == 3
    notification = client.get(f"/notifications/{response.json()['id']}").json()
    assert notification["status"] == "sent" and notification["attempts"] == 3
    [call] = task_service_override.enqueued(deliver_notification)
    assert call.options.max_retries == app_settings.notify_max_retries


def test_delivery_refused_every_time_ends_failed(client: TestClient, task_service_override: FakeTaskService) -> None:
    response = client.post("/notifications", json={"to": "bo@nowhere.invalid", "subject": "Hi", "body": "."})
    [result] = task_service_override.run_all()

    assert result.status == TaskStatus.FAILED and "DeliveryRefused" in (result.error or "")
    notification = client.get(f"/notifications/{response.json()['id']}").json()
    assert notification["status"] == "failed" and notification["attempts"] == 4
    assert "never accepts mail" in notification["last_error"]


def test_integrity_check_requeues_images_whose_thumbnails_went_missing(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    image_id = upload_image(client, jpeg_bytes())
    task_service_override.run_all()
    data_dir().thumbnail(image_id, 300).unlink()
    task_service_override.clear()

    counts = check_thumbnail_integrity()

    assert counts == {"checked": 1, "missing": 1, "requeued": 1, "already_queued": 0, "given_up": 0}
    assert_enqueued(task_service_override, make_image_thumbnails, image_id)
    assert client.get(f"/images/{image_id}").json()["thumbnail_ready"] is False
    task_service_override.run_all()
    assert client.get(f"/images/{image_id}/thumbnail").status_code == 200
    with get_database().session() as session:
        [run] = session.scalars(select(UpkeepRun)).all()
        assert (run.checked, run.requeued) == (1, 1)
        assert session.get_one(Image, image_id).repairs == 1


def test_admin_task_endpoints_need_the_token(client: TestClient) -> None:
    assert client.get("/tasks").status_code == 401
    assert client.get("/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/tasks", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    assert client.delete("/tasks/nope").status_code == 401


def test_admin_task_endpoints_are_closed_without_a_configured_token(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, app_settings: AppSettings
) -> None:
    monkeypatch.delenv("APP_ADMIN_TOKEN")
    get_settings.cache_clear()
    response = client.get("/tasks", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 403 and "APP_ADMIN_TOKEN" in response.json()["detail"]


def test_nothing_is_stored_for_a_refused_upload(client: TestClient, task_service_override: FakeTaskService) -> None:
    response = client.post("/images", files={"file": ("x.png", b"not an image at all", "image/png")})
    assert response.status_code == 400
    with get_database().session() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 0
        assert session.scalar(select(func.count()).select_from(Project)) == 0
        assert session.scalar(select(func.count()).select_from(Notification)) == 0
    assert not any(data_dir().root.joinpath("images").glob("*"))
    assert task_service_override.calls == []


def test_integrity_check_leaves_fresh_uploads_alone_and_repairs_stale_ones(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    upload_image(client, jpeg_bytes())  # fresh: its task may simply not be enqueued yet
    stale_id = upload_image(client, jpeg_bytes())
    task_service_override.clear()  # as if both uploads' tasks were lost (a crash before they ran)
    with get_database().session() as session:
        session.get_one(Image, stale_id).created_at = datetime.now(UTC) - timedelta(minutes=5)

    counts = check_thumbnail_integrity()

    assert counts == {"checked": 2, "missing": 1, "requeued": 1, "already_queued": 0, "given_up": 0}
    [call] = task_service_override.enqueued(make_image_thumbnails)
    assert call.args == [stale_id]


def test_integrity_check_gives_up_on_an_image_that_never_converts(
    client: TestClient, task_service_override: FakeTaskService
) -> None:
    image_id = upload_image(client, jpeg_bytes())
    data_dir().original(image_id).write_bytes(b"damaged on disk")
    with get_database().session() as session:
        session.get_one(Image, image_id).created_at = datetime.now(UTC) - timedelta(minutes=5)
    assert task_service_override.run_all()[0].status == TaskStatus.FAILED

    for _ in range(4):
        counts = check_thumbnail_integrity()
        task_service_override.run_all()

    assert counts["given_up"] == 1 and counts["requeued"] == 0
    with get_database().session() as session:
        assert session.get_one(Image, image_id).repairs == 3


def test_the_send_at_examples_the_app_shows_are_accepted(client: TestClient) -> None:
    """The 400's example and the OpenAPI example lie within the 30-day window (a fixed date would not)."""
    note = {"to": "ada@example.com", "subject": "x", "body": "x"}
    refused = client.post("/notifications", json={**note, "send_at": "2030-01-01T09:00:00"})
    assert refused.status_code == 400
    from_error = refused.json()["detail"].split("e.g. ", 1)[1].split()[0]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["NotificationIn"]
    from_openapi = next(example["send_at"] for example in schema["examples"] if "send_at" in example)
    for send_at in (from_error, from_openapi):
        accepted = client.post("/notifications", json={**note, "send_at": send_at})
        assert (accepted.status_code, accepted.json()["status"]) == (202, "scheduled"), send_at
