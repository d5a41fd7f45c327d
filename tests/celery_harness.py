"""The Celery backend, for real: a private redis-server, a prefork worker, and a service bound to them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from backends.celery.settings import CelerySettings
from taskservice import TaskService
from tests.processes import RedisServer, base_env, celery_worker, redis_server

WORKER_CONCURRENCY = 4  # contract tests hold some tasks on gates while others must still run


def celery_env(redis: RedisServer, modules: str = "tests.tasks", **overrides: str) -> dict[str, str]:
    """The environment of a worker/beat/Flower process bound to ``redis``."""
    return base_env(TASK_BACKEND="celery", REDIS_URL=redis.url, TASK_MODULES=modules, **overrides)


def celery_settings(redis: RedisServer, modules: str = "tests.tasks", **overrides: object) -> CelerySettings:
    return CelerySettings(backend="celery", redis_url=redis.url, modules=modules, **overrides)  # type: ignore[arg-type]


@contextlib.contextmanager
def celery_service(
    directory: Path, modules: str = "tests.tasks", sink_path: str | None = None
) -> Iterator[TaskService]:
    """A ``CeleryTaskService`` whose tasks run in a real worker on a private Redis; all torn down after."""
    from backends.celery.service import CeleryTaskService

    with redis_server(directory / "redis") as redis:
        extra = {"TASKSERVICE_CONTRACT_SINK": sink_path} if sink_path else {}
        env = celery_env(redis, modules, **extra)
        with celery_worker(env, directory / "worker.log", concurrency=WORKER_CONCURRENCY):
            service = CeleryTaskService(celery_settings(redis, modules))
            try:
                yield service
            finally:
                service.close()
