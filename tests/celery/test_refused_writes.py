"""Redis up but refusing writes is ``BackendUnavailable`` on every verb, sync and async, saying what to do.

Three real redis-servers, each refusing writes its own way: out of memory (``maxmemory 1mb``,
``maxmemory-policy noeviction``, then filled), a read-only replica (``replicaof`` a second private
server), and MISCONF (save points on, its ``dir`` removed, so the save fails). Verbs that write
raise ``BackendUnavailable`` naming the cause; verbs that only read keep working; readiness says
why the backend is not ready; the reference app answers 503, not 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from backends.celery.service import CeleryTaskService
from taskservice import BackendUnavailable, TaskStatus
from tests import tasks
from tests.app.live import app_env
from tests.celery_harness import celery_settings
from tests.processes import RedisServer, redis_server, uvicorn_server

pytestmark = pytest.mark.slow

NOEVICTION = ["--maxmemory-policy", "noeviction"]  # and ``maxmemory 1mb`` once the test's own tasks are in
CAUSES = {
    "out of memory": "out of memory (maxmemory reached, maxmemory-policy noeviction)",
    "read-only replica": "is a read-only replica (after a failover?): point REDIS_URL at the primary",
    "MISCONF": "its last save to disk failed (MISCONF)",
}


@dataclass
class Refusing:
    service: CeleryTaskService
    pending: str  # a task that is still pending
    finished: str  # a task that has finished (cancelled)
    cause: str


def _known_tasks(service: CeleryTaskService) -> tuple[str, str]:
    pending = service.enqueue(tasks.add, 1, 2)
    finished = service.schedule(tasks.add, timedelta(hours=1), 1, 2)
    assert service.cancel(finished)
    return pending, finished


def _fill(server: RedisServer) -> None:
    """Cap Redis at 1 MB (what a bare server already holds, about), then write until it refuses."""
    client = server.client()
    try:
        client.config_set("maxmemory", "1mb")
        with pytest.raises(redis.exceptions.OutOfMemoryError):  # fills until Redis refuses
            for i in range(100_000):
                client.set(f"filler:{i}", b"x" * 1000)
    finally:
        client.close()


@contextlib.contextmanager
def _refusing(cause: str, directory: Path) -> Iterator[Refusing]:
    if cause == "out of memory":
        with redis_server(directory / "redis", NOEVICTION) as server:
            service = CeleryTaskService(celery_settings(server))
            pending, finished = _known_tasks(service)
            _fill(server)
            try:
                yield Refusing(service, pending, finished, CAUSES[cause])
            finally:
                service.close()
    elif cause == "read-only replica":
        with redis_server(directory / "primary") as primary:
            writer = CeleryTaskService(celery_settings(primary))
            pending, finished = _known_tasks(writer)
            writer.close()
            with redis_server(directory / "replica", ["--replicaof", "127.0.0.1", str(primary.port)]) as replica:
                client = replica.client()
                deadline = time.monotonic() + 20
                while client.info("replication").get("master_link_status") != "up" or not client.exists(
                    f"taskservice:task:{pending}"
                ):
                    assert time.monotonic() < deadline, "the replica never caught up"
                    time.sleep(0.05)
                client.close()
                service = CeleryTaskService(celery_settings(replica))
                try:
                    yield Refusing(service, pending, finished, CAUSES[cause])
                finally:
                    service.close()
    else:
        data_dir = directory / "misconf"
        with redis_server(data_dir, ["--save", "3600 1"]) as server:
            service = CeleryTaskService(celery_settings(server))
            pending, finished = _known_tasks(service)
            client = server.client()
            shutil.rmtree(data_dir)  # the next save cannot write its file
            client.bgsave()
            deadline = time.monotonic() + 20
            while client.info("persistence")["rdb_last_bgsave_status"] != "err":
                assert time.monotonic() < deadline, "the save did not fail"
                time.sleep(0.05)
            client.close()
            try:
                yield Refusing(service, pending, finished, CAUSES[cause])
            finally:
                service.close()


@pytest.fixture(scope="module", params=list(CAUSES))
def refusing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refusing]:
    with _refusing(request.param, tmp_path_factory.mktemp(request.param.replace(" ", "-"))) as refused:
        yield refused


def _writes(r: Refusing) -> list[tuple[str, Callable[[], Any]]]:
    s = r.service
    return [
        ("enqueue", lambda: s.enqueue(tasks.add, 1, 2)),
        ("schedule", lambda: s.schedule(tasks.add, timedelta(minutes=5), 1, 2)),
        ("cancel", lambda: s.cancel(r.pending)),
        ("retry", lambda: s.retry(r.finished)),
    ]


def _async_writes(r: Refusing) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    s = r.service
    return [
        ("aenqueue", lambda: s.aenqueue(tasks.add, 1, 2)),
        ("aschedule", lambda: s.aschedule(tasks.add, timedelta(minutes=5), 1, 2)),
        ("acancel", lambda: s.acancel(r.pending)),
        ("aretry", lambda: s.aretry(r.finished)),
    ]


def test_every_write_is_backend_unavailable_saying_why(refusing: Refusing) -> None:
    for name, call in _writes(refusing):
        with pytest.raises(BackendUnavailable) as caught:
            call()
        assert refusing.cause in str(caught.value), name

    async def scenario() -> None:
        for name, call in _async_writes(refusing):
            with pytest.raises(BackendUnavailable) as caught:
                await call()
            assert refusing.cause in str(caught.value), name

    asyncio.run(scenario())


def test_reads_keep_working(refusing: Refusing) -> None:
    s = refusing.service
    assert s.get_status(refusing.pending).status == TaskStatus.PENDING
    assert s.wait(refusing.finished, timeout_s=5).status == TaskStatus.CANCELLED
    assert {r.id for r in s.list_tasks()} >= {refusing.pending, refusing.finished}
    assert s.stats().counts[TaskStatus.CANCELLED] == 1

    async def scenario() -> None:
        assert (await s.aget_status(refusing.pending)).status == TaskStatus.PENDING
        assert (await s.await_result(refusing.finished, timeout_s=5)).status == TaskStatus.CANCELLED
        assert {r.id for r in await s.alist_tasks()} >= {refusing.pending, refusing.finished}
        assert (await s.astats()).counts[TaskStatus.PENDING] == 1

    asyncio.run(scenario())


def test_readiness_says_why(refusing: Refusing) -> None:
    """At once, even while a revoke broadcast is stuck (kombu retries it for seconds on such a Redis)."""
    refusing.service._control.revoke_soon(refusing.pending)
    started = time.monotonic()
    reasons = refusing.service.readiness()
    assert time.monotonic() - started < 2.0
    assert len(reasons) == 1 and refusing.cause in reasons[0]
    assert refusing.service.workers_alive() is None


def test_the_reference_app_answers_503_with_the_cause(tmp_path: Path) -> None:
    env = app_env("celery", tmp_path)
    with redis_server(tmp_path / "redis", NOEVICTION) as server:
        env["REDIS_URL"] = server.url
        with uvicorn_server(env, tmp_path / "api.log") as base_url, httpx.Client(base_url=base_url) as client:
            accepted = client.post("/notifications", json={"to": "ada@example.com", "subject": "s", "body": "b"})
            assert accepted.status_code == 202, accepted.text
            _fill(server)
            refused = client.post("/notifications", json={"to": "ada@example.com", "subject": "s", "body": "b"})
            assert refused.status_code == 503, refused.text
            assert CAUSES["out of memory"] in refused.json()["detail"]
            assert client.get(f"/tasks/{accepted.json()['task_id']}").status_code == 200
    log = (tmp_path / "api.log").read_text(errors="replace")
    assert "Exception in ASGI application" not in log
