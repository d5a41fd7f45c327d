"""Async tasks on Celery workers: TASK_ASYNC_CONCURRENCY at a time in the async pool, with the same
timeouts, progress, retries and leases as sync tasks; sync tasks keep the prefork pool's cores."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.celery.service import CeleryTaskService
from taskservice import TaskStatus
from taskservice.attempts import timeout_error
from tests import tasks
from tests.celery import fault_tasks
from tests.celery.workers import pgid_of
from tests.celery_harness import celery_env, celery_settings
from tests.processes import celery_worker, redis_server

pytestmark = pytest.mark.slow

MODULES = "tests.tasks,tests.celery.fault_tasks"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryTaskService]:
    directory = tmp_path_factory.mktemp("async-pool")
    with redis_server(directory / "redis") as server:
        env = celery_env(server, MODULES, TASK_ASYNC_CONCURRENCY="50")
        with celery_worker(env, directory / "worker.log", concurrency=1) as worker:
            service = CeleryTaskService(celery_settings(server, MODULES))
            service.worker_pgid = worker.pid  # type: ignore[attr-defined]
            try:
                yield service
            finally:
                service.close()


def test_async_tasks_run_concurrently_on_one_worker(service: CeleryTaskService) -> None:
    started = time.monotonic()
    ids = [service.enqueue(tasks.async_sleep_for, 1.0) for _ in range(40)]
    results = [service.wait(task_id, timeout_s=30) for task_id in ids]
    elapsed_s = time.monotonic() - started
    assert all(result.status is TaskStatus.SUCCEEDED for result in results)
    assert elapsed_s < 6, f"40 tasks of 1 s took {elapsed_s:.1f} s: they did not run concurrently"


def test_the_async_pool_bounds_concurrency(service: CeleryTaskService) -> None:
    started = time.monotonic()
    ids = [service.enqueue(tasks.async_sleep_for, 1.0) for _ in range(100)]  # 50 at a time: two rounds
    for task_id in ids:
        service.wait(task_id, timeout_s=30)
    assert 1.9 < time.monotonic() - started < 8


def test_an_async_timeout_progress_and_retries_behave_as_for_sync_tasks(
    service: CeleryTaskService, tmp_path: Path
) -> None:
    timed_out = service.wait(service.enqueue(tasks.async_sleep_for.options(timeout=0.5), 10.0), timeout_s=20)
    assert (timed_out.status, timed_out.error) == (TaskStatus.FAILED, timeout_error(0.5))
    gate = tmp_path / "gate"
    gate.mkdir()
    held = service.enqueue(tasks.async_wait_for_gate, str(gate), 40.0, "halfway")
    deadline = time.monotonic() + 20
    while service.get_status(held).progress != 40.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (service.get_status(held).progress_message, service.get_status(held).status) == (
        "halfway", TaskStatus.RUNNING,
    )  # fmt: skip
    (gate / "open").touch()
    assert service.wait(held, timeout_s=20).status is TaskStatus.SUCCEEDED
    failed = service.wait(service.enqueue(tasks.async_fail.options(max_retries=2, retry_backoff=0.05), "x"))
    assert (failed.status, failed.attempts, failed.error) == (TaskStatus.FAILED, 3, "KeyError: 'x'")


def test_sync_tasks_stay_on_the_prefork_pool_and_async_ones_in_the_async_pool(
    service: CeleryTaskService, tmp_path: Path
) -> None:
    sync_pid = service.wait(service.enqueue(fault_tasks.journal_sleep, str(tmp_path / "s"), 0.0)).result
    async_pid = service.wait(service.enqueue(fault_tasks.async_journal_sleep, str(tmp_path / "a"), 0.0)).result
    assert isinstance(sync_pid, int) and isinstance(async_pid, int) and sync_pid != async_pid
    worker_pgid = service.worker_pgid  # type: ignore[attr-defined]
    assert pgid_of(sync_pid) == pgid_of(async_pid) == worker_pgid, "both pools belong to the one worker command"
