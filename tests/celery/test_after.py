"""``after=`` on a real worker: B waits for A, runs once A succeeded, fails without running otherwise;
and a claim or park that meets a Redis blip is tried again instead of being lost."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.celery.outage import persist
from backends.celery.service import CeleryTaskService
from backends.celery.store.worker_records import WorkerRecords
from taskservice import TaskNotFound, TaskStatus
from taskservice.attempts import dependency_error
from tests import tasks
from tests.celery import fault_tasks
from tests.celery.fault_tasks import journal_counts
from tests.celery_harness import celery_env, celery_settings
from tests.processes import celery_worker, redis_server

pytestmark = pytest.mark.slow

MODULES = "tests.tasks,tests.celery.fault_tasks"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryTaskService]:
    directory = tmp_path_factory.mktemp("after")
    with (
        redis_server(directory / "redis") as server,
        celery_worker(celery_env(server, MODULES), directory / "worker.log", concurrency=2),
    ):
        service = CeleryTaskService(celery_settings(server, MODULES))
        try:
            yield service
        finally:
            service.close()


def test_b_runs_after_a_succeeded_and_not_before(service: CeleryTaskService, tmp_path: Path) -> None:
    journal = tmp_path / "b"
    first = service.enqueue(fault_tasks.journal_sleep, str(tmp_path / "a"), 1.5)
    second = service.enqueue(fault_tasks.journal_sleep.options(after=first, unique_key="b"), str(journal), 0.0)
    time.sleep(0.8)
    assert service.get_status(second).status is TaskStatus.PENDING and journal_counts(journal) == (0, 0)
    done = service.wait(second, timeout_s=20)
    assert done.status is TaskStatus.SUCCEEDED and done.started_at is not None
    first_done = service.get_status(first).finished_at
    assert first_done is not None and done.started_at >= first_done


def test_b_fails_without_running_when_a_failed_and_an_unknown_a_is_not_found(
    service: CeleryTaskService, tmp_path: Path
) -> None:
    journal = tmp_path / "b"
    first = service.enqueue(tasks.fail, "no")
    second = service.enqueue(fault_tasks.journal_sleep.options(after=first), str(journal), 0.0)
    result = service.wait(second, timeout_s=20)
    assert (result.status, result.attempts, result.error) == (TaskStatus.FAILED, 0, dependency_error(first, "failed"))
    assert journal_counts(journal) == (0, 0)
    late = service.wait(service.enqueue(tasks.add.options(after=first), 1, 2), timeout_s=5)
    assert late.error == dependency_error(first, "failed"), "decided at once by the same rules"
    with pytest.raises(TaskNotFound):
        service.enqueue(tasks.add.options(after=str(uuid.uuid4())), 1, 2)
    assert service.stats().counts[TaskStatus.FAILED] >= 3


def test_parking_a_duplicate_survives_a_redis_blip(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis", ("--appendonly", "yes")) as server:
        client = server.client()
        records = WorkerRecords(client, 60)
        service = CeleryTaskService(celery_settings(server))
        try:
            task_id = service.enqueue(tasks.add, 1, 2)
            server.stop(signal.SIGTERM)  # its append-only file keeps the record
            restarted = threading.Timer(1.5, server.restart)
            restarted.start()
            started = time.monotonic()
            parked = persist(records.defer, (task_id, 30.0, "copy"), "park the duplicate", patience_s=30)
            restarted.join()
        finally:
            service.close()
            client.close()
    assert parked is True and time.monotonic() - started >= 1.0
