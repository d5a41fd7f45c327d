"""The app's key flows, driven over HTTP against a live server; shared by the SQLite and PostgreSQL runs."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from PIL import Image as PILImage
from sqlalchemy import func, select

from app.models import Image, OutboxMessage, UpkeepRun
from tests.app.live import ADMIN_TOKEN, NOTIFY_MAX_RETRIES, UPKEEP_INTERVAL_S, LiveApp, wait_until

SAMPLES = Path(__file__).resolve().parents[2] / "app" / "samples"
TASK_TIMEOUT_S = 60.0


def task_status(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for_task(client: httpx.Client, task_id: str, timeout_s: float = TASK_TIMEOUT_S) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        task = task_status(client, task_id)
        return task if task["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(final, timeout_s, what=f"task {task_id} to finish")


def upload_image(
    client: httpx.Client, data: bytes, name: str = "photo.jpg", kind: str = "image/jpeg"
) -> dict[str, Any]:
    response = client.post("/images", files={"file": (name, data, kind)})
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for_thumbnails(client: httpx.Client, image_id: str, timeout_s: float = TASK_TIMEOUT_S) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        image = client.get(f"/images/{image_id}").json()
        return image if image["thumbnail_ready"] else None

    return wait_until(ready, timeout_s, what=f"thumbnails of image {image_id}")


def image_flow(live: LiveApp, client: httpx.Client) -> str:
    """Upload the sample photo; thumbnails of 150/300/600 px appear; the SHA-256 is recorded."""
    original = (SAMPLES / "photo.jpg").read_bytes()
    accepted = upload_image(client, original, "photo.jpg")
    assert accepted["thumbnail_ready"] is False and accepted["filename"] == "photo.jpg"
    image = wait_for_thumbnails(client, accepted["id"])
    assert image["thumbnail_url"] == f"/images/{accepted['id']}/thumbnail"
    assert wait_for_task(client, accepted["task_id"])["status"] == "succeeded"
    for size, expected in ((None, (300, 200)), (150, (150, 100)), (600, (600, 400))):
        params = {"size": size} if size else {}
        response = client.get(image["thumbnail_url"], params=params)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        with PILImage.open(io.BytesIO(response.content)) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("JPEG", expected)
    with live.database.session() as session:
        assert session.get_one(Image, accepted["id"]).sha256 == hashlib.sha256(original).hexdigest()
    return str(accepted["id"])


def create_project(client: httpx.Client, data: bytes, name: str = "sales.csv") -> str:
    response = client.post("/projects", files={"file": (name, data, "text/csv")})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "idle"
    return str(response.json()["id"])


def wait_for_project(client: httpx.Client, project_id: str, timeout_s: float = TASK_TIMEOUT_S) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        project = client.get(f"/projects/{project_id}").json()
        return project if project["status"] in ("completed", "error") else None

    return wait_until(settled, timeout_s, interval_s=0.05, what=f"project {project_id} to settle")


def project_flow(client: httpx.Client) -> None:
    """The sample CSV goes idle -> processing -> completed with a summary."""
    project_id = create_project(client, (SAMPLES / "sales.csv").read_bytes())
    accepted = client.post(f"/projects/{project_id}/process")
    assert accepted.status_code == 202 and accepted.json()["project_id"] == project_id
    assert client.get(f"/projects/{project_id}").json()["status"] in ("processing", "completed")
    project = wait_for_project(client, project_id)
    assert project["status"] == "completed", project
    assert project["progress"] == 100.0 and project["error_message"] is None
    assert project["result"]["rows"] == 48 and project["task_id"] == accepted.json()["task_id"]
    assert wait_for_task(client, project["task_id"])["progress"] == 100.0


def bad_project_flow(client: httpx.Client) -> None:
    """The bad sample ends ``error`` naming the line and column; the task's traceback is reachable."""
    project_id = create_project(client, (SAMPLES / "sales_bad.csv").read_bytes(), "sales_bad.csv")
    task_id = client.post(f"/projects/{project_id}/process").json()["task_id"]
    project = wait_for_project(client, project_id)
    assert project["status"] == "error"
    assert project["error_message"].startswith("line 7, column 4 (units): 'twelve' is not a whole number")
    task = wait_for_task(client, task_id)
    assert task["status"] == "failed" and task["error"].startswith("PipelineError: line 7, column 4")
    assert task["traceback"] is None, "the traceback (server paths) is for admins only"
    admin = client.get(f"/tasks/{task_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert "Traceback" in admin["traceback"] and "PipelineError" in admin["traceback"]


def post_notification(client: httpx.Client, to: str, send_at: datetime | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"to": to, "subject": "Report ready", "body": "Your report is ready."}
    if send_at is not None:
        payload["send_at"] = send_at.isoformat()
    response = client.post("/notifications", json=payload)
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for_notification(client: httpx.Client, notification_id: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        notification = client.get(f"/notifications/{notification_id}").json()
        return notification if notification["status"] in ("sent", "failed", "cancelled") else None

    return wait_until(settled, TASK_TIMEOUT_S, what=f"notification {notification_id}")


def notification_flow(live: LiveApp, client: httpx.Client) -> None:
    """Now -> sent; in 2 s -> scheduled, sent after send_at; flaky relay -> retried then sent; dead -> failed."""
    now_sent = post_notification(client, "ada@example.com")
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    later = post_notification(client, "ada@example.com", send_at)
    flaky = post_notification(client, "bo@fail-2.invalid")
    dead = post_notification(client, "cy@nowhere.invalid")
    assert (now_sent["status"], later["status"], flaky["status"]) == ("queued", "scheduled", "queued")

    assert wait_for_notification(client, now_sent["id"])["status"] == "sent"
    sent_later = wait_for_notification(client, later["id"])
    assert sent_later["status"] == "sent"
    assert datetime.fromisoformat(sent_later["sent_at"]) >= send_at
    flaky_done = wait_for_notification(client, flaky["id"])
    assert (flaky_done["status"], flaky_done["attempts"]) == ("sent", 3)
    assert wait_for_task(client, flaky["task_id"])["attempts"] == 3
    dead_done = wait_for_notification(client, dead["id"])
    assert (dead_done["status"], dead_done["attempts"]) == ("failed", NOTIFY_MAX_RETRIES + 1)
    assert "never accepts mail" in dead_done["last_error"]
    dead_task = wait_for_task(client, dead["task_id"])
    assert dead_task["status"] == "failed" and "DeliveryRefused" in dead_task["error"]
    with live.database.session() as session:
        delivered = set(session.scalars(select(OutboxMessage.notification_id)))
    assert {now_sent["id"], later["id"], flaky["id"]} <= delivered and dead["id"] not in delivered


def upkeep_flow(live: LiveApp, client: httpx.Client, image_id: str) -> None:
    """Delete a thumbnail on disk: the periodic check notices, re-enqueues, and records its run."""
    with live.database.session() as session:
        runs_before = session.scalar(select(func.count()).select_from(UpkeepRun)) or 0
    (live.data_dir / "images" / image_id / "thumb_300.jpg").unlink()
    assert client.get(f"/images/{image_id}/thumbnail").status_code == 404

    wait_until(
        lambda: client.get(f"/images/{image_id}/thumbnail").status_code == 200,
        timeout_s=UPKEEP_INTERVAL_S * 5 + 20,
        interval_s=0.2,
        what="the integrity check to remake the thumbnail",
    )
    with live.database.session() as session:
        runs = session.scalars(select(UpkeepRun).order_by(UpkeepRun.id)).all()
        assert len(runs) > runs_before
        assert any(run.requeued >= 1 for run in runs)
        assert session.get_one(Image, image_id).repairs >= 1
