"""``GET /``, ``/health``, ``/health/ready`` and the offline ``/docs`` of the reference app on a real uvicorn."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.app.live import LiveApp, app_env
from tests.ops.browser import eventually
from tests.processes import celery_worker, redis_server, uvicorn_server

pytestmark = pytest.mark.slow


def test_root_links_and_health(ops_live: LiveApp) -> None:
    with ops_live.client() as client:
        root = client.get("/")
        assert root.status_code == 200
        links = root.json()["links"]
        for name in ("docs", "dashboard", "tasks", "task", "task_events", "health", "ready", "metrics"):
            assert name in links, name
        assert client.get(links["docs"]).status_code == 200
        assert client.get(links["dashboard"], follow_redirects=False).status_code == 303  # to the login page
        assert client.get("/health").json() == {"status": "ok", "backend": ops_live.backend}
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "backend": ops_live.backend, "reasons": []}


def test_docs_work_offline(ops_live: LiveApp) -> None:
    with ops_live.client() as client:
        page = client.get("/docs").text
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
        assert assets and all(asset.startswith("/") for asset in assets), f"every asset from this server: {assets}"
        assert not re.search(r"https?://", page.replace("http://127.0.0.1", "")), "no CDN"
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200 and len(response.content) > 1000, asset
        assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text
        redoc = client.get("/redoc").text
        assert "/docs-assets/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc


def test_ready_is_503_with_a_reason_when_redis_is_down(tmp_path: Path) -> None:
    env = app_env("celery", tmp_path)
    with redis_server(tmp_path / "redis") as redis:
        env["REDIS_URL"] = redis.url
        env["TASK_REDIS_TIMEOUT_S"] = "1"
        with (
            celery_worker(env, tmp_path / "worker.log", concurrency=1),
            uvicorn_server(env, tmp_path / "api.log") as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            eventually(lambda: client.get("/health/ready").status_code == 200, 20, "ready with a worker")
            redis.stop()
            # readiness answers from a check a few seconds old at most, so a probe stays cheap
            eventually(lambda: client.get("/health/ready").status_code == 503, 20, "not ready once Redis is gone")
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "not ready" and body["backend"] == "celery"
            assert any("Redis" in reason for reason in body["reasons"]), body
            assert client.get("/health").status_code == 200, "liveness is not readiness"
            redis.restart()
            eventually(lambda: client.get("/health/ready").status_code == 200, 45, "ready again once Redis is back")


def test_ready_is_503_when_no_worker_consumes(tmp_path: Path) -> None:
    from backends.celery.service import CeleryTaskService

    if not callable(getattr(CeleryTaskService, "readiness", None)):
        pytest.skip("CeleryTaskService.readiness() (workers consuming) is not on this branch yet")
    env = app_env("celery", tmp_path)
    with redis_server(tmp_path / "redis") as redis:
        env["REDIS_URL"] = redis.url
        with uvicorn_server(env, tmp_path / "api.log") as url, httpx.Client(base_url=url, timeout=30) as client:
            ready = client.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["reasons"], ready.text
