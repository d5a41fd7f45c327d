"""A worker handed what it cannot run, a Redis that refuses writes, a clock that runs ahead, a short
retention, errors that cannot be encoded: each on a real redis-server and a real prefork worker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery

from backends.celery.service import CeleryTaskService
from taskservice import TaskStatus
from taskservice.attempts import MAX_RETRY_DELAY_S, RETRY_JITTER
from taskservice.codec import MAX_NESTING_DEPTH
from tests import tasks
from tests.celery import fault_tasks
from tests.celery.fault_tasks import journal_counts
from tests.celery.workers import wait_for
from tests.celery_harness import celery_env, celery_settings
from tests.processes import VENV_BIN, RedisServer, celery_worker, redis_server

pytestmark = pytest.mark.slow

MODULES = "tests.tasks,tests.celery.fault_tasks"


@dataclass
class Worker:
    redis: RedisServer
    service: CeleryTaskService
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker (2 processes) with a retention of 2 s."""
    directory = tmp_path_factory.mktemp("worker-faults")
    with redis_server(directory / "redis") as server:
        env = celery_env(server, MODULES, TASK_RESULT_TTL_S="2")
        with celery_worker(env, directory / "worker.log", concurrency=2):
            service = CeleryTaskService(celery_settings(server, MODULES, result_ttl_s=2))
            try:
                yield Worker(server, service, directory / "worker.log")
            finally:
                service.close()


def test_a_message_nested_too_deep_fails_that_task_and_the_worker_lives_on(worker: Worker, tmp_path: Path) -> None:
    deep: list[object] = []
    for _ in range(500):  # about 1 KB of JSON; without taskservice, nothing checks it before the worker
        deep = [deep]
    raw = Celery("raw", broker=worker.redis.url)
    raw.conf.task_serializer = "json"
    try:
        task_id = raw.send_task("contract.add", args=[deep, 1]).id
    finally:
        raw.close()

    wait_for(lambda: worker.service.exists(task_id), 20, "the refused task has no record")
    result = worker.service.wait(task_id, timeout_s=20)
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 0)
    assert result.error is not None and f"nest deeper than {MAX_NESTING_DEPTH} levels" in result.error
    after = worker.service.wait(worker.service.enqueue(tasks.add, 2, 3), timeout_s=20)
    assert (after.status, after.result) == (TaskStatus.SUCCEEDED, 5), "the worker lives on"
    assert "Unrecoverable error" not in worker.text()


def test_the_retention_counts_from_the_finish_and_keeps_active_and_scheduled_records(
    worker: Worker, tmp_path: Path
) -> None:
    service = worker.service
    far = service.schedule(tasks.add, timedelta(minutes=10), 1, 2)
    journal = tmp_path / "journal"
    task = fault_tasks.journal_sleep.options(max_retries=2, timeout=30, unique_key="long")
    running = service.enqueue(task, str(journal), 4.5)
    time.sleep(3.5)  # longer than the retention: both are still there, with their options
    snapshot = service.get_status(running)
    assert snapshot.status is TaskStatus.RUNNING
    assert far in {result.id for result in service.list_tasks()}, "listed although enqueued before the TTL"
    result = service.wait(running, timeout_s=20)
    assert result.status is TaskStatus.SUCCEEDED
    claimed = worker.redis.client().hmget(f"taskservice:task:{running}", "max_retries", "timeout")
    assert claimed == [b"2", b"30"], "per-call options were never rebuilt from the defaults"
    wait_for(lambda: not service.exists(running), 10, "a finished record outlived the retention")
    assert service.exists(far), "a scheduled task's record stays until it ran"
    service.cancel(far)


def test_an_error_with_a_lone_surrogate_is_retried_and_kept(worker: Worker) -> None:
    result = worker.service.wait(worker.service.enqueue(fault_tasks.surrogate_error, "report"), timeout_s=30)
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 3)
    assert result.error == "FileNotFoundError: cannot open report\\udcff.csv"
    assert result.traceback is not None and "surrogate_error" in result.traceback


def test_a_retry_far_up_the_back_off_is_capped_not_an_overflow(worker: Worker) -> None:
    service = worker.service
    task_id = service.schedule(fault_tasks.always_fails.options(retry_backoff=1.0), timedelta(seconds=1))
    worker.redis.client().hset(f"taskservice:task:{task_id}", "attempts", "998")  # as if it had run 998 times
    wait_for(lambda: service.get_status(task_id).status is TaskStatus.RETRYING, 20, "it did not retry")
    result = service.get_status(task_id)
    assert result.attempts == 999 and result.error == "RuntimeError: fails every time"
    due_s = worker.redis.client().zscore("taskservice:schedule", task_id)
    assert due_s is not None
    wait_s = due_s - time.time()
    assert MAX_RETRY_DELAY_S * (1 - RETRY_JITTER) - 5 <= wait_s <= MAX_RETRY_DELAY_S * (1 + RETRY_JITTER) + 5
    service.cancel(task_id)


def test_a_redis_that_refuses_writes_is_an_outage_logged_one_line_per_step(worker: Worker, tmp_path: Path) -> None:
    client = worker.redis.client()
    journal = tmp_path / "journal"
    task_id = worker.service.schedule(fault_tasks.journal_sleep, timedelta(seconds=1), str(journal), 0.1)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used // 2))  # out of memory: every write is refused
    try:
        wait_for(lambda: "it is out of memory" in worker.text(), 20, "the worker did not say why")
        time.sleep(6)
        assert journal_counts(journal) == (0, 0)
    finally:
        client.config_set("maxmemory", "0")
    result = worker.service.wait(task_id, timeout_s=40)
    assert result.status is TaskStatus.SUCCEEDED and journal_counts(journal) == (1, 1), "nothing was lost"
    text = worker.text()
    outage = text[text.index("it is out of memory") - 300 :]
    lines = [line for line in outage.splitlines() if "taskservice: could not" in line]
    assert 2 <= len(lines) <= 12, "one line per retry step, backing off"
    assert "Traceback" not in outage and "Unrecoverable error" not in outage
    assert "Redis answers again" in outage


def test_a_worker_whose_clock_runs_ahead_fires_nothing_early(tmp_path: Path) -> None:
    shifted = tmp_path / "clock"
    shifted.mkdir()
    (shifted / "sitecustomize.py").write_text(
        "import time\n"
        "_time, _time_ns = time.time, time.time_ns\n"
        "time.time = lambda: _time() + 120.0\n"
        "time.time_ns = lambda: _time_ns() + 120_000_000_000\n"
    )
    journal, flaky_dir = tmp_path / "journal", tmp_path / "flaky"
    flaky_dir.mkdir()
    with redis_server(tmp_path / "redis") as server:
        env = celery_env(server, MODULES)
        env["PYTHONPATH"] = f"{shifted}:{env['PYTHONPATH']}"  # this worker's clock is 120 s ahead
        service = CeleryTaskService(celery_settings(server, MODULES))
        try:
            with celery_worker(env, tmp_path / "worker.log", concurrency=1):
                due = datetime.now(UTC) + timedelta(seconds=6)
                service.schedule(fault_tasks.journal_sleep, due, str(journal), 0.0)
                retried = service.enqueue(tasks.flaky.options(retry_backoff=4.0), str(flaky_dir), 1)
                time.sleep(2.5)
                assert journal_counts(journal) == (0, 0), "a schedule fired early"
                assert service.get_status(retried).status is TaskStatus.RETRYING, "a retry came early"
                wait_for(lambda: journal_counts(journal)[1] == 1, 20, "the scheduled task never ran")
                assert datetime.now(UTC) >= due - timedelta(seconds=0.5)
                assert service.wait(retried, timeout_s=20).attempts == 2
        finally:
            service.close()


def test_a_worker_says_when_its_redis_persists_nothing(tmp_path: Path) -> None:
    logs = {}
    for label, extra in (("volatile", ()), ("durable", ("--appendonly", "yes"))):
        with redis_server(tmp_path / label, extra) as server:
            log = tmp_path / f"{label}.log"
            with celery_worker(celery_env(server, MODULES, TASK_ASYNC_WORKER="0"), log, concurrency=1):
                pass
            logs[label] = log.read_text()
    assert "Redis persists nothing (appendonly no, save '')" in logs["volatile"]
    assert "persists nothing" not in logs["durable"]


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_worker_or_beat_without_task_modules_refuses_in_one_line(command: str, tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        env = celery_env(server, modules="")
        finished = subprocess.run(
            [str(VENV_BIN / "celery"), "-A", "backends.celery_app", command],
            env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
    assert finished.returncode != 0
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    assert lines == [line for line in lines if line.startswith("taskservice: TASK_MODULES is empty")], lines
    assert len(lines) == 1 and sys.executable


def test_with_redis_down_a_worker_logs_one_line_per_retry_step(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with redis_server(tmp_path / "redis") as server, celery_worker(celery_env(server, MODULES), log, concurrency=1):
        mark = len(log.read_text())
        server.stop()
        time.sleep(12)
        outage = log.read_text()[mark:]
        server.restart()
        service = CeleryTaskService(celery_settings(server, MODULES))
        try:
            assert service.wait(service.enqueue(tasks.add, 1, 2), timeout_s=40).result == 3, "it recovers"
        finally:
            service.close()
    ours = [line for line in outage.splitlines() if "taskservice: could not" in line]
    assert ours and all("trying again in" in line for line in ours)
    # the worker and its async pool each dispatch: 1, 2, 4, 8 s in 12 s, not one line a second
    assert sum("could not dispatch scheduled tasks" in line for line in ours) <= 10, ours
    assert outage.count("Traceback") <= 2, outage[-3000:]
