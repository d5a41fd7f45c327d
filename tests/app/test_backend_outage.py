"""Redis stopped under the Celery backend: writes answer 503 within seconds and store nothing, reads keep
working, and the same API process recovers once Redis is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app import flows
from tests.app.live import LiveApp, app_env, wait_until
from tests.processes import RedisServer, redis_server, uvicorn_server

pytestmark = pytest.mark.slow

OUTAGE_ANSWER_S = 5.0
NOTIFICATION = {"to": "ada@example.com", "subject": "x", "body": "x"}


@pytest.fixture(scope="module")
def api_without_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, LiveApp]]:
    """Redis and the API only: tasks are enqueued and wait; nothing here needs them to run."""
    directory = tmp_path_factory.mktemp("outage")
    env = app_env("celery", directory)
    with redis_server(directory / "redis") as redis:
        env["REDIS_URL"] = redis.url
        with uvicorn_server(env, directory / "api.log") as base_url:
            yield (
                redis,
                LiveApp("celery", base_url, Path(env["APP_DATA_DIR"]), env["DATABASE_URL"], directory / "api.log"),
            )


def test_writes_answer_503_and_store_nothing_while_redis_is_down(
    api_without_worker: tuple[RedisServer, LiveApp],
) -> None:
    redis, live = api_without_worker
    photo = (flows.SAMPLES / "photo.jpg").read_bytes()
    with live.client() as client:
        image = flows.upload_image(client, photo)
        project_id = flows.create_project(client, (flows.SAMPLES / "sales.csv").read_bytes())
        assert client.post(f"/projects/{project_id}/process").status_code == 202  # pending: no worker
        before = live.stored()

        writes: list[tuple[str, dict[str, Any]]] = [
            ("/images", {"files": {"file": ("b.jpg", photo, "image/jpeg")}}),
            ("/notifications", {"json": NOTIFICATION}),
            (f"/projects/{project_id}/process", {}),
        ]
        redis.stop()
        try:
            for url, options in writes:
                started = time.monotonic()
                response = client.post(url, **options)
                elapsed_s = time.monotonic() - started
                assert response.status_code == 503, (url, response.text)
                assert "unavailable" in response.json()["detail"]
                assert elapsed_s < OUTAGE_ANSWER_S, f"{url} took {elapsed_s:.1f} s to refuse"
            assert live.stored() == before, "a refused write left something behind"
            assert client.get(f"/images/{image['id']}").status_code == 200
            assert client.get(f"/projects/{project_id}").json()["status"] == "processing"
        finally:
            redis.restart()

        recovered = wait_until(
            lambda: (
                client.post("/notifications", json={"to": "ada@example.com", "subject": "x", "body": "x"}).status_code
                == 202
            ),
            timeout_s=15,
            what="the API to enqueue again after Redis came back",
        )
        assert recovered
