"""200 concurrent uploads and process calls through the live server: every request answered, nothing lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.models import Image, Project
from tests.app.live import LiveApp
from tests.app.media import jpeg_bytes, sales_csv

pytestmark = pytest.mark.slow

UPLOADS = 100
PROJECTS = 100
IN_FLIGHT = 50
DEADLINE_S = 120.0


async def _drive(live: LiveApp) -> tuple[list[str], list[str], dict[str, str]]:
    """Run every request with at most ``IN_FLIGHT`` at once; return image ids, project ids, task id -> kind."""
    image = jpeg_bytes(800, 600)
    limiter = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=live.base_url, timeout=60.0, limits=limits) as client:

        async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
            async with limiter:
                return await client.request(method, url, **kwargs)

        async def upload(index: int) -> dict[str, Any]:
            response = await call("POST", "/images", files={"file": (f"img-{index}.jpg", image, "image/jpeg")})
            assert response.status_code == 202, response.text
            return dict(response.json())

        async def process(index: int) -> dict[str, Any]:
            csv = sales_csv(200, seed=index)
            created = await call("POST", "/projects", files={"file": (f"p-{index}.csv", csv, "text/csv")})
            assert created.status_code == 201, created.text
            started = await call("POST", f"/projects/{created.json()['id']}/process")
            assert started.status_code == 202, started.text
            return dict(started.json())

        answers = await asyncio.gather(
            *(upload(index) for index in range(UPLOADS)), *(process(index) for index in range(PROJECTS))
        )
        uploads, processes = answers[:UPLOADS], answers[UPLOADS:]
        tasks = {item["task_id"]: "thumbnails" for item in uploads} | {
            item["task_id"]: "pipeline" for item in processes
        }

        pending = set(tasks)
        deadline = time.monotonic() + DEADLINE_S
        while pending and time.monotonic() < deadline:
            statuses = await asyncio.gather(*(call("GET", f"/tasks/{task_id}") for task_id in sorted(pending)))
            for response in statuses:
                assert response.status_code == 200, response.text
                task = response.json()
                if task["status"] in ("succeeded", "failed", "cancelled"):
                    assert task["status"] == "succeeded", task
                    pending.discard(task["id"])
            await asyncio.sleep(0.2)
        assert not pending, f"{len(pending)} of {len(tasks)} tasks did not finish within {DEADLINE_S} s"
    return [item["id"] for item in uploads], [item["project_id"] for item in processes], tasks


def test_200_concurrent_uploads_and_process_calls_all_finish(live: LiveApp) -> None:
    started = time.monotonic()
    image_ids, project_ids, tasks = asyncio.run(_drive(live))
    elapsed_s = time.monotonic() - started

    assert len(set(tasks)) == UPLOADS + PROJECTS  # every request got its own task
    with live.database.session() as session:
        images = session.scalars(select(Image).where(Image.id.in_(image_ids))).all()
        projects = session.scalars(select(Project).where(Project.id.in_(project_ids))).all()
    assert len(images) == UPLOADS and all(image.thumbnail_ready and image.sha256 for image in images)
    assert len(projects) == PROJECTS
    assert all(project.status == "completed" and project.result["rows"] == 200 for project in projects)  # type: ignore[index]
    for image_id in image_ids:
        assert all((live.data_dir / "images" / image_id / f"thumb_{size}.jpg").is_file() for size in (150, 300, 600))
    print(f"\n[{live.backend}] {UPLOADS} uploads + {PROJECTS} create/process, all tasks done in {elapsed_s:.1f} s")
