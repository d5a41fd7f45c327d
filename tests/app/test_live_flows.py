"""End to end, through a real uvicorn process; the same tests run under both backends (``live``)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.app import flows
from tests.app.live import LiveApp, wait_until
from tests.app.media import sales_csv

pytestmark = pytest.mark.slow


def test_health_names_the_backend(live: LiveApp) -> None:
    with live.client() as client:
        assert client.get("/health").json() == {"status": "ok", "backend": live.backend}


def test_image_thumbnails_and_the_periodic_check_remakes_lost_ones(live: LiveApp) -> None:
    with live.client() as client:
        image_id = flows.image_flow(live, client)
        flows.upkeep_flow(live, client, image_id)


def test_project_pipeline_completes(live: LiveApp) -> None:
    with live.client() as client:
        flows.project_flow(client)


def test_bad_csv_ends_in_error_with_line_column_and_traceback(live: LiveApp) -> None:
    with live.client() as client:
        flows.bad_project_flow(client)


def test_notifications_now_scheduled_retried_and_failed(live: LiveApp) -> None:
    with live.client() as client:
        flows.notification_flow(live, client)


def test_processing_project_refuses_a_second_run_with_409(live: LiveApp) -> None:
    with live.client() as client:
        project_id = flows.create_project(client, sales_csv(60_000, seed=3))
        first = client.post(f"/projects/{project_id}/process")
        second = client.post(f"/projects/{project_id}/process")

        assert first.status_code == 202
        assert second.status_code == 409, second.text
        assert "already processing" in second.json()["detail"]
        assert flows.wait_for_project(client, project_id)["status"] == "completed"
        flows.wait_for_task(client, first.json()["task_id"])
        # The unique key frees itself once the task ends (within a second or two on Celery).

        def accepted_again() -> httpx.Response | None:
            response = client.post(f"/projects/{project_id}/process")
            return response if response.status_code == 202 else None

        again = wait_until(accepted_again, timeout_s=10, what="the project's unique key to free")
        assert flows.wait_for_project(client, project_id)["task_id"] == again.json()["task_id"]


def test_projects_process_at_the_same_time_and_report_real_progress(live: LiveApp) -> None:
    with live.client() as client:
        project_ids = [flows.create_project(client, sales_csv(60_000, seed=seed)) for seed in (4, 5)]
        seen: dict[str, list[float]] = {project_id: [] for project_id in project_ids}
        task_ids = [client.post(f"/projects/{project_id}/process").json()["task_id"] for project_id in project_ids]

        def watch(project_id: str) -> None:
            with live.client() as watcher:
                while True:
                    project = watcher.get(f"/projects/{project_id}").json()
                    seen[project_id].append(project["progress"])
                    if project["status"] != "processing":
                        return
                    time.sleep(0.02)

        watchers = [threading.Thread(target=watch, args=(project_id,)) for project_id in project_ids]
        for thread in watchers:
            thread.start()
        for thread in watchers:
            thread.join(timeout=flows.TASK_TIMEOUT_S)

        tasks = [flows.wait_for_task(client, task_id) for task_id in task_ids]
        assert [task["status"] for task in tasks] == ["succeeded", "succeeded"]
        first, second = (
            (datetime.fromisoformat(task["started_at"]), datetime.fromisoformat(task["finished_at"])) for task in tasks
        )
        assert first[0] < second[1] and second[0] < first[1], f"the two runs did not overlap: {first} {second}"
        for project_id, progress in seen.items():
            assert progress == sorted(progress), f"progress went backwards: {progress}"
            assert any(0 < value < 100 for value in progress), f"no intermediate progress seen for {project_id}"
            assert client.get(f"/projects/{project_id}").json()["result"]["rows"] == 60_000


def test_cancelling_a_scheduled_notification_is_reflected(live: LiveApp) -> None:
    with live.client() as client:
        accepted = flows.post_notification(client, "ada@example.com", datetime.now(UTC) + timedelta(days=1))
        assert client.delete(f"/tasks/{accepted['task_id']}").status_code == 401  # admin only
        cancelled = client.delete(f"/tasks/{accepted['task_id']}", headers=live.admin_headers)

        assert cancelled.status_code == 200 and cancelled.json()["cancelled"] is True
        notification = client.get(f"/notifications/{accepted['id']}").json()
        assert notification["status"] == "cancelled"


def test_task_listing_is_for_admins_only(live: LiveApp) -> None:
    with live.client() as client:
        image = flows.upload_image(client, (flows.SAMPLES / "photo.jpg").read_bytes())
        assert client.get("/tasks").status_code == 401
        listed = client.get("/tasks", headers=live.admin_headers, params={"limit": 5})
        assert listed.status_code == 200 and 1 <= len(listed.json()) <= 5
        flows.wait_for_thumbnails(client, image["id"])
