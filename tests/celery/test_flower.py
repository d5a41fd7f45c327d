"""Flower on taskservice's Celery app: authentication on by default, loopback by default, tasks by name."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends.celery.service import CeleryTaskService
from tests import tasks
from tests.celery_harness import celery_env, celery_settings
from tests.processes import (
    VENV_BIN,
    RedisServer,
    celery_worker,
    free_port,
    redis_server,
    spawn,
    stop_process,
    wait_for_port,
)

pytestmark = pytest.mark.slow

FLOWER = [str(VENV_BIN / "celery"), "-A", "backends.celery_app", "flower"]
AUTH = ("admin", "correct-horse")


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("flower-redis")) as server:
        yield server


def test_flower_refuses_to_start_without_credentials(redis: RedisServer, tmp_path: Path) -> None:
    result = subprocess.run(
        [*FLOWER, f"--port={free_port()}"], env=celery_env(redis), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH=user:password" in result.stderr


@pytest.mark.parametrize(
    ("argv", "environ"),
    [(["--auth="], {}), (["--basic-auth="], {}), (["--basic-auth=admin:"], {}), ([], {"FLOWER_BASIC_AUTH": "admin:"})],
)
def test_flower_refuses_empty_credentials_wherever_they_come_from(
    redis: RedisServer, argv: list[str], environ: dict[str, str]
) -> None:
    result = subprocess.run(
        [*FLOWER, f"--port={free_port()}", *argv],
        env=celery_env(redis, **environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Flower will not start without authentication" in result.stderr


def test_flower_asks_for_credentials_and_shows_tasks_by_name(redis: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    env = celery_env(redis, FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}")
    with celery_worker(env, tmp_path / "worker.log", concurrency=1):
        flower = spawn([*FLOWER, f"--port={port}"], env, tmp_path / "flower.log")
        try:
            wait_for_port(port, timeout_s=30, process=flower)
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{base}/", timeout=10).status_code == 401
            assert httpx.get(f"{base}/api/tasks", timeout=10).status_code == 401
            assert httpx.get(f"{base}/", auth=("admin", "wrong"), timeout=10).status_code == 401
            assert httpx.get(f"{base}/", auth=AUTH, timeout=10).status_code == 200
            assert f"Visit me at http://127.0.0.1:{port}" in (tmp_path / "flower.log").read_text()

            service = CeleryTaskService(celery_settings(redis))
            try:
                seen: dict[str, object] = {}
                deadline = time.monotonic() + 30
                while not seen and time.monotonic() < deadline:  # Flower turns the worker's events on first
                    task_id = service.enqueue(tasks.add, 2, 3)
                    service.wait(task_id)
                    time.sleep(0.5)
                    listed = httpx.get(f"{base}/api/tasks", auth=AUTH, timeout=10).json()
                    seen = {key: value for key, value in listed.items() if value.get("name") == "contract.add"}
            finally:
                service.close()
            assert seen, "Flower never showed a contract.add task"
            registered = subprocess.run(
                [str(VENV_BIN / "celery"), "-A", "backends.celery_app", "inspect", "registered", "--timeout=5"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "* contract.add" in registered.stdout, "remote control answers with the tasks' own names"
            assert any(task["state"] == "SUCCESS" for task in seen.values())  # type: ignore[index]
        finally:
            stop_process(flower)
