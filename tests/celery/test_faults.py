"""Reliability of the Celery backend, measured with real redis-server and real worker processes.

A worker SIGKILLed mid-task, a message redelivered while its task still runs, a schedule far
beyond the visibility timeout, Redis stopped or hung, and messages the worker must refuse.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from backends.celery.service import CeleryTaskService
from taskservice import BackendUnavailable, TaskNotFound, TaskStatus
from tests import tasks
from tests.celery import fault_tasks
from tests.celery.fault_tasks import journal_counts
from tests.celery_harness import celery_env, celery_settings
from tests.processes import RedisServer, celery_worker, redis_server

pytestmark = pytest.mark.slow

MODULES = "tests.tasks,tests.celery.fault_tasks"
SHORT_VISIBILITY_S = "2"  # far below the task and schedule lengths used here: redelivery will happen


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.05)


@dataclass
class Cluster:
    redis: RedisServer
    service: CeleryTaskService
    worker_log: Path

    def log_text(self) -> str:
        return self.worker_log.read_text(errors="replace")


@pytest.fixture(scope="module")
def short_visibility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One worker (3 processes) whose broker redelivers any message unacknowledged for 2 s."""
    directory = tmp_path_factory.mktemp("short-visibility")
    with redis_server(directory / "redis") as server:
        env = celery_env(server, MODULES, TASK_VISIBILITY_TIMEOUT_S=SHORT_VISIBILITY_S)
        with celery_worker(env, directory / "worker.log", concurrency=3, extra_args=("-Q", "celery,reports")):
            service = CeleryTaskService(celery_settings(server, MODULES, visibility_timeout_s=2))
            try:
                yield Cluster(server, service, directory / "worker.log")
            finally:
                service.close()


def test_unknown_ids_are_not_found_where_raw_celery_says_pending(short_visibility: Cluster) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(TaskNotFound):
        short_visibility.service.get_status(unknown)
    with pytest.raises(TaskNotFound):
        short_visibility.service.cancel(unknown)
    raw = Celery("raw", broker=short_visibility.redis.url, backend=short_visibility.redis.url)
    try:
        assert raw.AsyncResult(unknown).state == "PENDING"  # what taskservice improves on
    finally:
        raw.close()


def test_celery_tooling_still_reads_the_results(short_visibility: Cluster) -> None:
    service = short_visibility.service
    raw = Celery("raw", broker=short_visibility.redis.url, backend=short_visibility.redis.url)
    raw.conf.update(result_serializer="json", accept_content=["json"], result_accept_content=["json"])
    try:
        assert raw.AsyncResult(service.enqueue(tasks.add, 20, 22)).get(timeout=20) == 42
        with pytest.raises(ValueError, match="broken"):
            raw.AsyncResult(service.enqueue(tasks.fail, "broken")).get(timeout=20)
    finally:
        raw.close()


def test_a_task_goes_to_the_queue_its_options_name(short_visibility: Cluster) -> None:
    client = redis.Redis.from_url(short_visibility.redis.url)
    try:
        task_id = short_visibility.service.schedule(tasks.add.options(queue="reports"), timedelta(seconds=30), 1, 2)
        message = client.hget(f"taskservice:task:{task_id}", "message")
        assert message is not None and b'"routing_key":"reports"' in message
        short_visibility.service.cancel(task_id)
    finally:
        client.close()
    result = short_visibility.service.wait(short_visibility.service.enqueue(tasks.add.options(queue="reports"), 1, 2))
    assert (result.status, result.result) == (TaskStatus.SUCCEEDED, 3)


def test_a_task_redelivered_while_it_runs_is_not_run_again(short_visibility: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    task_id = short_visibility.service.enqueue(fault_tasks.journal_sleep, str(journal), 6.0)

    result = short_visibility.service.wait(task_id, timeout_s=30)

    assert (result.status, result.attempts) == (TaskStatus.SUCCEEDED, 1)
    assert f"task {task_id} is running elsewhere" in short_visibility.log_text(), "no duplicate was delivered"
    time.sleep(2.5)  # duplicates parked during the run come back once more, and are dropped
    assert journal_counts(journal) == (1, 1)


def test_a_far_future_schedule_runs_exactly_once(short_visibility: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    service = short_visibility.service
    task_id = service.schedule(fault_tasks.journal_sleep, timedelta(seconds=6), str(journal), 0.2)
    client = redis.Redis.from_url(short_visibility.redis.url)
    try:
        time.sleep(3)  # past the visibility timeout: a broker-held ETA would be redelivered by now
        assert service.get_status(task_id).status == TaskStatus.SCHEDULED
        assert client.hexists(f"taskservice:task:{task_id}", "message"), "the message waits in Redis"
        assert not any(task_id.encode() in raw for raw in client.lrange("celery", 0, -1))
        assert not any(task_id.encode() in raw for raw in client.hvals("unacked"))
    finally:
        client.close()

    result = service.wait(task_id, timeout_s=20)
    assert (result.status, result.attempts) == (TaskStatus.SUCCEEDED, 1)
    assert result.started_at is not None and result.run_at is not None and result.started_at >= result.run_at
    time.sleep(2.5)
    assert journal_counts(journal) == (1, 1)


def test_even_a_raw_celery_countdown_past_the_visibility_timeout_runs_once(
    short_visibility: Cluster, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    raw = Celery("raw", broker=short_visibility.redis.url)
    raw.conf.update(task_serializer="json", broker_transport_options={"visibility_timeout": 2})
    try:
        task_id = raw.send_task("faults.journal_sleep", args=[str(journal), 0.5], countdown=5).id
    finally:
        raw.close()

    wait_for(lambda: short_visibility.service.exists(task_id), 20, "no worker claimed it")  # claiming records it
    result = short_visibility.service.wait(task_id, timeout_s=30)
    assert result.status == TaskStatus.SUCCEEDED
    time.sleep(3)
    log_text = short_visibility.log_text()
    assert log_text.count(f"Task faults.journal_sleep[{task_id}] received") >= 2, "the broker redelivered it"
    assert journal_counts(journal) == (1, 1)


def test_messages_the_worker_must_refuse_are_not_executed(short_visibility: Cluster, tmp_path: Path) -> None:
    pickled, unregistered, control = tmp_path / "pickled", tmp_path / "unregistered", tmp_path / "control"
    raw = Celery("raw", broker=short_visibility.redis.url)
    try:
        raw.send_task("contract.touch", args=[str(pickled)], serializer="pickle")
        raw.send_task("os.system", args=[f"touch {unregistered}"], serializer="json")
        raw.send_task("contract.touch", args=[str(control)], serializer="json")
    finally:
        raw.close()

    wait_for(control.exists, 20, "the JSON control message did not run")
    wait_for(lambda: "untrusted content of type pickle" in short_visibility.log_text(), 10, "no pickle refusal")
    wait_for(lambda: "unregistered task of type 'os.system'" in short_visibility.log_text(), 10, "no refusal")
    assert not pickled.exists(), "a pickle message was executed"
    assert not unregistered.exists(), "an unregistered task name was executed"


def test_a_task_of_a_killed_worker_completes_on_a_new_worker(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with redis_server(tmp_path / "redis") as server:
        env = celery_env(server, MODULES, TASK_VISIBILITY_TIMEOUT_S="4")
        service = CeleryTaskService(celery_settings(server, MODULES, visibility_timeout_s=4))
        try:
            with celery_worker(env, tmp_path / "first.log", concurrency=1) as first:
                task_id = service.enqueue(fault_tasks.journal_sleep, str(journal), 3.0)
                wait_for(lambda: journal_counts(journal)[0] == 1, 20, "the task did not start")
                os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool processes, mid-task
                killed_at = time.monotonic()
                first.wait(timeout=10)
            assert service.get_status(task_id).status == TaskStatus.RUNNING
            # cancelled while no worker runs: the revoke reaches nobody, the mark in Redis still holds
            cancelled = service.enqueue(tasks.touch, str(tmp_path / "cancelled-ran"))
            assert service.cancel(cancelled) is True

            with celery_worker(env, tmp_path / "second.log", concurrency=1):
                result = service.wait(task_id, timeout_s=60)
                recovered_s = time.monotonic() - killed_at
                wait_for(
                    lambda: f"task {cancelled} is already cancelled" in (tmp_path / "second.log").read_text(),
                    20,
                    "the new worker never saw the cancelled task's message",
                )
        finally:
            service.close()

    assert (result.status, result.attempts) == (TaskStatus.SUCCEEDED, 2)
    assert journal_counts(journal) == (2, 1), "the body ran to completion exactly once"
    assert recovered_s < 60
    assert not (tmp_path / "cancelled-ran").exists(), "a task cancelled before the worker restarted ran"
    print(f"task of a SIGKILLed worker completed {recovered_s:.1f} s after the kill")


def test_redis_down_fails_fast_and_the_same_service_recovers(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        service = CeleryTaskService(celery_settings(server))
        try:
            known = service.enqueue(tasks.add, 1, 2)
            server.stop()
            calls: list[tuple[str, Callable[[], Any]]] = [
                ("enqueue", lambda: service.enqueue(tasks.add, 1, 2)),
                ("schedule", lambda: service.schedule(tasks.add, timedelta(minutes=5), 1, 2)),
                ("get_status", lambda: service.get_status(known)),
                ("cancel", lambda: service.cancel(known)),
                ("list_tasks", lambda: service.list_tasks()),
            ]
            for name, call in calls:
                started = time.monotonic()
                with pytest.raises(BackendUnavailable, match="check REDIS_URL and that Redis is running"):
                    call()
                assert time.monotonic() - started < 5, f"{name} took too long to give up"

            server.restart()
            task_id = service.enqueue(tasks.add, 1, 2)
            assert service.get_status(task_id).status == TaskStatus.PENDING

            os.kill(server.process.pid, signal.SIGSTOP)  # hung: connections open, nothing answers
            try:
                started = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    service.get_status(task_id)
                hung_s = time.monotonic() - started
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            assert hung_s < 5
            assert service.get_status(task_id).status == TaskStatus.PENDING
        finally:
            service.close()
