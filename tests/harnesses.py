"""One context manager per backend configuration: build, start, tear down.

The contract suite runs once per entry of ``HARNESSES``; every backend of
``taskservice.factory.BACKENDS`` must have at least one (a test checks it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from taskservice import TaskService, TaskSettings, create_task_service, set_task_service


@contextlib.contextmanager
def inprocess_service(directory: Path, store_url: str) -> Iterator[TaskService]:
    settings = TaskSettings(backend="fastapi", store_url=store_url, modules="tests.tasks", shutdown_grace_s=2)
    service = create_task_service(settings)
    previous = set_task_service(service)  # tasks that enqueue tasks reach this one
    try:
        yield service
    finally:
        set_task_service(previous)
        service.close()


@contextlib.contextmanager
def celery(directory: Path) -> Iterator[TaskService]:
    from tests.celery_harness import celery_service

    with celery_service(directory) as service:
        previous = set_task_service(service)
        try:
            yield service
        finally:
            set_task_service(previous)


Harness = Callable[[Path], AbstractContextManager[TaskService]]

HARNESSES: dict[str, tuple[str, Harness]] = {
    "fastapi-memory": ("fastapi", lambda directory: inprocess_service(directory, "memory://")),
    "fastapi-sqlite": ("fastapi", lambda directory: inprocess_service(directory, f"sqlite:///{directory}/tasks.db")),
    "celery": ("celery", celery),
}
