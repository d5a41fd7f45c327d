"""Leases under faults, with real redis-server and real prefork workers; body starts and ends are counted.

A lease that lapses once (Redis hung, the holder frozen) is taken back by its holder if nobody took
the task over, and never stolen back if someone did; the stale holder's late result is dropped.
A worker whose whole process group is SIGKILLed has its tasks completed by another within 60 s,
with the visibility timeout left at 300 s; a task whose holder is alive runs once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from backends.celery.service import CeleryTaskService
from taskservice import TaskConflict, TaskStatus
from tests.celery import fault_tasks
from tests.celery.fault_tasks import journal_counts
from tests.celery.workers import pgid_of, started_by, wait_for
from tests.celery_harness import celery_env, celery_settings
from tests.processes import celery_worker, redis_server

pytestmark = pytest.mark.slow

MODULES = "tests.tasks,tests.celery.fault_tasks"


def test_a_lease_that_lapsed_while_redis_hung_is_taken_back_and_the_task_runs_once(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with redis_server(tmp_path / "redis") as server:
        env = celery_env(server, MODULES, TASK_VISIBILITY_TIMEOUT_S="4")  # a lease of 1 s
        service = CeleryTaskService(celery_settings(server, MODULES, visibility_timeout_s=4))
        try:
            with celery_worker(env, tmp_path / "worker.log", concurrency=2):
                task = fault_tasks.journal_sleep.options(unique_key="only-one")
                task_id = service.enqueue(task, str(journal), 6.0)
                wait_for(lambda: journal_counts(journal)[0] == 1, 20, "the task did not start")
                os.kill(server.process.pid, signal.SIGSTOP)  # Redis answers nothing for longer than the lease
                time.sleep(2.5)
                os.kill(server.process.pid, signal.SIGCONT)
                time.sleep(0.5)
                assert service.cancel(task_id) is False, "it is running: cancel says so"
                with pytest.raises(TaskConflict):
                    service.enqueue(task, str(journal), 0.1)
                result = service.wait(task_id, timeout_s=30)
                time.sleep(4.5)  # the broker redelivered the message at 4 s: its copy is parked, then dropped
                log = (tmp_path / "worker.log").read_text()
        finally:
            service.close()
    assert (result.status, result.attempts) == (TaskStatus.SUCCEEDED, 1)
    assert journal_counts(journal) == (1, 1), "one body start, one completion"
    assert f"task {task_id} lost its lease" not in log


def test_a_frozen_worker_loses_its_task_to_a_live_one_and_its_late_result_is_dropped(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with redis_server(tmp_path / "redis") as server:
        env = celery_env(server, MODULES, TASK_VISIBILITY_TIMEOUT_S="4", TASK_ASYNC_WORKER="0")
        service = CeleryTaskService(celery_settings(server, MODULES, visibility_timeout_s=4))
        try:
            with (
                celery_worker(env, tmp_path / "a.log", concurrency=1) as first,
                celery_worker(env, tmp_path / "b.log", concurrency=1) as second,
            ):
                task_id = service.enqueue(fault_tasks.journal_sleep, str(journal), 8.0)
                wait_for(lambda: journal_counts(journal)[0] == 1, 20, "the task did not start")
                frozen = first if pgid_of(started_by(journal)[0]) == first.pid else second
                os.killpg(frozen.pid, signal.SIGSTOP)  # the whole worker, longer than the lease
                try:
                    wait_for(lambda: journal_counts(journal)[0] == 2, 20, "no live worker took the task over")
                finally:
                    os.killpg(frozen.pid, signal.SIGCONT)  # it resumes mid-body, finishes before the new attempt
                result = service.wait(task_id, timeout_s=30)
                wait_for(lambda: journal_counts(journal)[1] == 2, 20, "the frozen body did not finish")
                time.sleep(1.0)  # its late result reaches the result backend, which refuses it
                final = service.get_status(task_id)
                stats = service.stats()
                frozen_log = (tmp_path / ("a.log" if frozen is first else "b.log")).read_text()
        finally:
            service.close()
    assert (result.status, result.attempts) == (TaskStatus.SUCCEEDED, 2)
    live_pid = started_by(journal)[1]
    assert pgid_of(live_pid) != frozen.pid
    assert final.result == live_pid and final.attempts == 2, "the stale result did not overwrite the record"
    assert stats.counts[TaskStatus.SUCCEEDED] == 1, "nor did it count twice"
    assert f"task {task_id} lost its lease to another worker" in frozen_log, "the stale attempt learns of it"
    assert f"task {task_id} is held by another attempt now: this result was dropped" in frozen_log
    assert journal_counts(journal) == (2, 2)


def test_the_tasks_of_a_sigkilled_worker_complete_on_another_within_60_s(tmp_path: Path) -> None:
    journals = [tmp_path / f"journal-{n}" for n in range(6)]
    long_journal = tmp_path / "long"
    with redis_server(tmp_path / "redis") as server:
        env = celery_env(server, MODULES, TASK_ASYNC_WORKER="0")  # the default visibility timeout: 300 s
        service = CeleryTaskService(celery_settings(server, MODULES))
        try:
            with celery_worker(env, tmp_path / "b.log", concurrency=3) as survivor:
                long_id = service.enqueue(fault_tasks.journal_sleep, str(long_journal), 45.0)
                wait_for(lambda: journal_counts(long_journal)[0] == 1, 20, "the long task did not start")
                with celery_worker(env, tmp_path / "a.log", concurrency=4) as doomed:
                    ids = [service.enqueue(fault_tasks.journal_sleep, str(j), 3.0) for j in journals]
                    wait_for(lambda: all(journal_counts(j)[0] for j in journals), 30, "not every task started")
                    on_doomed = [j for j in journals if pgid_of(started_by(j)[0]) == doomed.pid]
                    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool, mid-task
                    killed_at = time.monotonic()
                    doomed.wait(timeout=10)
                results = [service.wait(task_id, timeout_s=60) for task_id in ids]
                recovered_s = time.monotonic() - killed_at
                long_result = service.wait(long_id, timeout_s=60)
                assert survivor.poll() is None
        finally:
            service.close()
    assert on_doomed, "the killed worker ran none of the tasks"
    assert all(result.status is TaskStatus.SUCCEEDED for result in results)
    assert recovered_s < 60, f"recovered after {recovered_s:.1f} s"
    for journal in journals:
        assert journal_counts(journal) == ((2, 1) if journal in on_doomed else (1, 1)), journal.name
    assert (long_result.status, long_result.attempts) == (TaskStatus.SUCCEEDED, 1)
    assert journal_counts(long_journal) == (1, 1), "a task whose holder is alive runs once, however long"
    print(f"{len(on_doomed)} tasks of a SIGKILLed worker completed {recovered_s:.1f} s after the kill")
