"""Readiness of the Celery backend and the count of live workers, against a real Redis and real workers.

Ready means Redis takes writes and a live worker consumes every queue of the service's tasks.
Answers come from a census at most a few seconds old, so a readiness probe is cheap; a worker
that goes away shows within seconds; the async form never blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.celery import readiness
from backends.celery.service import CeleryTaskService
from taskservice import registry, task
from tests.celery.async_support import with_loop_lag
from tests.celery_harness import celery_env, celery_settings
from tests.processes import RedisServer, celery_worker, redis_server

pytestmark = pytest.mark.slow

# `celery -A backends.celery_app worker` is two Celery nodes: the prefork worker and its async pool
NODES_PER_WORKER = 2


@pytest.fixture(autouse=True)
def only_default_queue_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other test modules register tasks on queues of their own; here no worker consumes those."""
    kept = {name: t for name, t in registry._registry.items() if t.default_options.queue is None}
    monkeypatch.setattr(registry, "_registry", kept)


@pytest.fixture(scope="module")
def with_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("readiness")
    with redis_server(directory / "redis") as server, celery_worker(celery_env(server), directory / "worker.log", 1):
        yield server


@pytest.fixture
def service(with_worker: RedisServer) -> Iterator[CeleryTaskService]:
    fresh = CeleryTaskService(celery_settings(with_worker))  # its own cache: no census yet
    try:
        yield fresh
    finally:
        fresh.close()


def test_ready_with_a_worker_on_the_queue(service: CeleryTaskService) -> None:
    assert service.readiness() == []
    assert service.workers_alive() == NODES_PER_WORKER
    assert asyncio.run(service.areadiness()) == []


def test_a_queue_no_worker_consumes_is_named(service: CeleryTaskService) -> None:
    @task(name="tests.readiness.report", queue="reports")
    def report() -> None: ...

    reasons = service.readiness()
    assert len(reasons) == 1
    assert "no Celery worker consumes the queue 'reports'" in reasons[0] and "-Q reports" in reasons[0]
    assert service.workers_alive() == NODES_PER_WORKER


def test_cached_answers_are_instant(service: CeleryTaskService) -> None:
    service.readiness()
    started = time.perf_counter()
    for _ in range(200):
        assert service.readiness() == []
        assert service.workers_alive() == NODES_PER_WORKER
    assert time.perf_counter() - started < 0.1


def test_areadiness_never_blocks_the_loop(service: CeleryTaskService) -> None:
    """The first census waits about a second for the workers' replies; the loop stays free meanwhile."""
    reasons, lag_s = asyncio.run(with_loop_lag(service.areadiness()))
    assert reasons == []
    assert lag_s < 0.05


def test_no_worker_and_a_worker_that_goes_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "REFRESH_S", 0.5)
    with redis_server(tmp_path / "redis") as server:
        service = CeleryTaskService(celery_settings(server))
        try:
            reasons = service.readiness()
            # One reason per queue of the registered tasks ('celery-async' too once an async task is known).
            assert reasons and all("no Celery worker consumes the queue" in reason for reason in reasons)
            assert any("the queue 'celery'" in reason for reason in reasons)
            assert service.workers_alive() == 0
            with celery_worker(celery_env(server), tmp_path / "worker.log", 1):
                _until(lambda: service.readiness() == [], "ready once a worker runs")
                assert service.workers_alive() == NODES_PER_WORKER
            _until(lambda: service.readiness() != [], "not ready once the worker stopped")
            assert service.workers_alive() == 0
        finally:
            service.close()


def test_redis_down_is_not_ready_and_says_what_to_check(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        service = CeleryTaskService(celery_settings(server, redis_timeout_s=1.0))
        try:
            server.stop()
            started = time.monotonic()
            reasons = service.readiness()
            assert time.monotonic() - started < service._readiness.budget_s
            assert len(reasons) == 1 and "check REDIS_URL and that Redis is running" in reasons[0]
            assert service.workers_alive() is None
        finally:
            service.close()


@pytest.mark.parametrize("persistent", [False, True])
def test_a_redis_without_persistence_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, persistent: bool
) -> None:
    extra = ["--appendonly", "yes"] if persistent else []
    with redis_server(tmp_path / "redis", extra) as server:
        service = CeleryTaskService(celery_settings(server))
        try:
            with caplog.at_level(logging.WARNING, logger="taskservice.celery"):
                asyncio.run(service.start())
                service.readiness()
                service._readiness.refresh().result(timeout=10)  # a second census: no second warning
            warnings = [r for r in caplog.records if "persistence off" in r.getMessage()]
            assert len(warnings) == (0 if persistent else 1)
        finally:
            service.close()


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
        time.sleep(0.2)
