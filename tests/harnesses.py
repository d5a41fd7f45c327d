"""One context manager per backend configuration: build, start, tear down.

The contract suite (``taskservice.testing.contract``) runs once per entry of ``HARNESSES``; every
backend of ``taskservice.factory.BUILTIN_BACKENDS`` must have at least one (a test checks it). Each
harness yields the service and the path of the contract sink that the process running its tasks
writes to (``taskservice.testing.contract.sink``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from taskservice import TaskService, TaskSettings, create_task_service, set_task_service
from taskservice.testing import FakeTaskService
from taskservice.testing.contract import sink

CONTRACT_MODULES = "taskservice.testing.contract.tasks,tests.tasks"


@dataclasses.dataclass(frozen=True)
class HarnessRun:
    service: TaskService
    sink_path: str


@contextlib.contextmanager
def installed(service: TaskService, sink_path: str) -> Iterator[HarnessRun]:
    """``service`` as the process-wide one (tasks that enqueue tasks reach it), closed after."""
    previous = set_task_service(service)
    try:
        yield HarnessRun(service, sink_path)
    finally:
        set_task_service(previous)
        service.close()


def in_this_process(directory: Path, settings: TaskSettings) -> AbstractContextManager[HarnessRun]:
    """A backend whose tasks run in the test process: the sink is installed here."""
    sink_path = str(directory / "sink.jsonl")
    sink.install(sink_path)
    return installed(create_task_service(settings), sink_path)


def inprocess(directory: Path, store_url: str) -> AbstractContextManager[HarnessRun]:
    settings = TaskSettings(backend="fastapi", store_url=store_url, modules=CONTRACT_MODULES, shutdown_grace_s=2)
    return in_this_process(directory, settings)


@contextlib.contextmanager
def celery(directory: Path) -> Iterator[HarnessRun]:
    from tests.celery_harness import celery_service

    sink_path = str(directory / "sink.jsonl")
    with celery_service(directory, modules=CONTRACT_MODULES, sink_path=sink_path) as service:
        previous = set_task_service(service)
        try:
            yield HarnessRun(service, sink_path)
        finally:
            set_task_service(previous)


def fake(directory: Path) -> AbstractContextManager[HarnessRun]:
    sink_path = str(directory / "sink.jsonl")
    sink.install(sink_path)
    return installed(FakeTaskService(), sink_path)


def tiny(directory: Path) -> AbstractContextManager[HarnessRun]:
    """A backend from outside the tree, chosen by a dotted path and nothing else."""
    settings = TaskSettings(backend="tests.tiny_backend:ThreadTaskService", modules=CONTRACT_MODULES)
    return in_this_process(directory, settings)


Harness = Callable[[Path], AbstractContextManager[HarnessRun]]

# name -> (backend it covers, harness); "fake" and the dotted path are not in the factory's table.
HARNESSES: dict[str, tuple[str, Harness]] = {
    "fastapi-memory": ("fastapi", lambda directory: inprocess(directory, "memory://")),
    "fastapi-sqlite": ("fastapi", lambda directory: inprocess(directory, f"sqlite:///{directory}/tasks.db")),
    "celery": ("celery", celery),
    "fake": ("fake", fake),
    "tiny-threads": ("tests.tiny_backend:ThreadTaskService", tiny),
}
