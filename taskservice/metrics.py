"""Prometheus metrics of tasks, with the same names and labels on every backend (needs the ``metrics`` extra).

Two calls::

    from taskservice.metrics import install_task_metrics, create_metrics_router

    install_task_metrics()                      # in a module the API AND the workers import (your tasks module)
    app.include_router(create_metrics_router())  # GET /metrics, Prometheus text

``install_task_metrics`` adds hooks that count in the process where things happen: enqueues
where they are enqueued, attempts where they run (the API process in-process, the Celery
workers otherwise). Counters go to ``LocalCounters`` (prometheus_client; several server
processes: set ``PROMETHEUS_MULTIPROC_DIR``) or, on Celery, to ``SharedCounters`` in Redis;
see ``taskservice.metrics_counters``. The gauges (tasks by current status, the age of the oldest
pending task, workers alive) are read from the durable records at scrape time, so they are the
same whichever process answers.

| metric | type | labels |
|---|---|---|
| ``taskservice_tasks_enqueued_total`` | counter | ``task`` |
| ``taskservice_tasks_finished_total`` | counter | ``task``, ``status`` (``succeeded``, ``failed``) |
| ``taskservice_task_retries_total`` | counter | ``task`` |
| ``taskservice_task_duration_seconds`` | histogram | ``task`` |
| ``taskservice_tasks`` | gauge | ``status`` (each of the seven) |
| ``taskservice_oldest_pending_task_age_seconds`` | gauge | |
| ``taskservice_backend_up`` | gauge | |
| ``taskservice_workers_alive`` | gauge (Celery) | |
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from taskservice.errors import BackendUnavailable
from taskservice.factory import get_task_service
from taskservice.hooks import TaskEnqueued, TaskFinished, on_task_enqueued, on_task_finished
from taskservice.integration import TaskServiceDep
from taskservice.metrics_counters import LocalCounters, SharedCounters
from taskservice.models import TaskStatus
from taskservice.service import TaskService

__all__ = ["create_metrics_router", "install_task_metrics", "render_metrics"]

_lock = threading.Lock()
_installed = False
_counters: LocalCounters | SharedCounters | None = None


def _counters_for(service: TaskService) -> LocalCounters | SharedCounters:
    """One counter store per process, chosen by the backend the first time something is counted."""
    global _counters
    with _lock:
        if _counters is None:
            redis_url = getattr(service.settings, "redis_url", None)
            if service.backend_name == "celery" and isinstance(redis_url, str):
                timeout_s = float(getattr(service.settings, "redis_timeout_s", 3.0))
                _counters = SharedCounters(redis_url, timeout_s)
            else:
                _counters = LocalCounters()
        return _counters


def _count_enqueued(event: TaskEnqueued) -> None:
    _counters_for(get_task_service()).add_enqueued(event.name)


def _count_finished(event: TaskFinished) -> None:
    counters = _counters_for(get_task_service())
    if event.status is TaskStatus.RETRYING:
        counters.add_retry(event.name)
    else:
        counters.add_finished(event.name, event.status.value)
    if event.duration_s is not None:
        counters.observe_duration(event.name, event.duration_s)


def install_task_metrics() -> None:
    """Count enqueues and attempts in this process from now on; calling it again does nothing."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    on_task_enqueued(_count_enqueued)
    on_task_finished(_count_finished)


class _StateCollector:
    """Gauges read from the durable records when scraped."""

    def __init__(self, service: TaskService) -> None:
        self.service = service

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("taskservice_backend_up", "1 when the task backend answered this scrape, else 0")
        try:
            stats = self.service.stats()
        except BackendUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_status = GaugeMetricFamily(
            "taskservice_tasks", "Tasks in each status now (durable records)", labels=["status"]
        )
        for status in TaskStatus:
            by_status.add_metric([status.value], stats.counts.get(status, 0))
        yield by_status
        oldest = stats.oldest_pending_enqueued_at
        age_s = 0.0 if oldest is None else max((datetime.now(UTC) - oldest).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "taskservice_oldest_pending_task_age_seconds",
            "How long the oldest pending task has waited (0 when none is pending)",
            value=age_s,
        )
        try:
            alive = self.service.workers_alive()  # None where tasks run in this process, or nobody could be asked
        except BackendUnavailable:
            return
        if alive is not None:
            yield GaugeMetricFamily("taskservice_workers_alive", "Celery workers that answered", value=float(alive))


def render_metrics(service: TaskService) -> bytes:
    """The Prometheus text: this host's prometheus_client metrics (all processes in multiprocess mode),
    the shared counters on Celery, and the gauges from the records. Blocking: call it off the event loop."""
    counters = _counters_for(service)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        base = CollectorRegistry()
        MultiProcessCollector(base)  # type: ignore[no-untyped-call]
    else:
        base = REGISTRY
    extra = CollectorRegistry(auto_describe=False)
    extra.register(_StateCollector(service))
    for collector in counters.collectors():
        extra.register(collector)
    return generate_latest(base) + generate_latest(extra)


def create_metrics_router(*, path: str = "/metrics", dependencies: Sequence[Any] = ()) -> APIRouter:
    """``GET path``: Prometheus text of the process-wide service; guard it with ``dependencies`` if needed."""
    router = APIRouter(dependencies=list(dependencies))

    @router.get(
        path,
        tags=["metrics"],
        summary="Prometheus metrics of tasks",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics(service: TaskServiceDep) -> Response:
        body = await asyncio.to_thread(render_metrics, service)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
