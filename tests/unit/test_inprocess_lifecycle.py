"""Start, stop and start again: what the in-process backend leaves behind, and what the next run picks up.

A "run" is one start of a service; a new service on the same SQLite file is a new run, as a
restarted process would be (the fault tests do it with real processes and SIGKILL).
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backends.inprocess.process_identity import RunOwner, host_id
from backends.inprocess.scheduler import next_slot
from backends.inprocess.service import FastAPITaskService
from backends.inprocess.store.base import DROPPED_BY_STOP, INTERRUPTED_BY_STOP
from backends.inprocess.store.sqlite import SQLiteTaskStore
from taskservice import TaskNotFound, TaskSettings, TaskStatus, periodic, task
from taskservice.cron import CronSchedule
from taskservice.errors import ServiceStopped
from taskservice.periodic import PeriodicTask
from tests.unit.test_inprocess_runner import async_sleep, sleep_then_mark, sync_where
from tests.unit.test_task_stores import dead_pid, make_call

# The module, not the `periodic` decorator that the package re-exports under the same name.
periodic_registry = importlib.import_module("taskservice.periodic")
ticks: list[float] = []


@task(name="tests.inprocess.tick")
def tick() -> float:
    moment = time.time()
    ticks.append(moment)
    return moment


@task(name="tests.inprocess.flaky_forever", max_retries=5, retry_backoff=0.3)
def flaky_forever() -> None:
    raise RuntimeError("always")


def settings(store_url: str = "memory://", **overrides: object) -> TaskSettings:
    values: dict[str, object] = {"store_url": store_url, "modules": "", "shutdown_grace_s": 0.5}
    values.update(overrides)
    return TaskSettings(**values)  # type: ignore[arg-type]


def wait_for(service: FastAPITaskService, task_id: str, status: TaskStatus, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while service.get_status(task_id).status != status:
        assert time.monotonic() < deadline, f"{task_id} is {service.get_status(task_id).status}, not {status}"
        time.sleep(0.01)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture
def own_periodic_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Periodic tasks declared by a test exist for that test only (the registry is process-wide)."""
    monkeypatch.setattr(periodic_registry, "_periodic", {})
    yield


def test_after_close_enqueue_is_refused_and_records_stay_readable() -> None:
    service = FastAPITaskService(settings())
    done = service.wait(service.enqueue(sync_where))
    service.close()
    with pytest.raises(ServiceStopped, match="start it again"):
        service.enqueue(sync_where)
    assert service.get_status(done.id).status == TaskStatus.SUCCEEDED
    assert [result.id for result in service.list_tasks()] == [done.id]
    service.close()  # twice is fine


def test_a_lifespan_can_start_the_same_service_again_on_a_new_loop() -> None:
    service = FastAPITaskService(settings())

    async def lifespan() -> TaskStatus:
        await service.start()
        await service.start()  # idempotent
        try:
            task_id = service.enqueue(async_sleep, 0.01)
            return (await asyncio.to_thread(service.wait, task_id)).status
        finally:
            await service.stop()

    assert asyncio.run(lifespan()) == TaskStatus.SUCCEEDED
    with pytest.raises(ServiceStopped):
        service.enqueue(async_sleep, 0.01)
    assert asyncio.run(lifespan()) == TaskStatus.SUCCEEDED, "as a second TestClient(app) would"


def test_stop_gives_running_tasks_the_grace_period_then_cuts_them_off(tmp_path: Path) -> None:
    service = FastAPITaskService(settings(async_concurrency=2, thread_concurrency=1))
    quick = service.enqueue(async_sleep, 0.1)
    slow = service.enqueue(async_sleep, 30)
    slow_too = service.enqueue(async_sleep, 30)  # starts once quick is done
    waiting = service.enqueue(async_sleep, 0.01)  # no slot left: it never starts
    slow_sync = service.enqueue(sleep_then_mark, 30, str(tmp_path / "never"))
    scheduled = service.schedule(sync_where, timedelta(hours=1))
    wait_for(service, slow_too, TaskStatus.RUNNING)
    wait_for(service, slow_sync, TaskStatus.RUNNING)

    started = time.monotonic()
    service.close()
    assert time.monotonic() - started < 3, "grace is 0.5 s"

    assert service.get_status(quick).status == TaskStatus.SUCCEEDED
    for cut_off in (slow, slow_too, slow_sync):
        result = service.get_status(cut_off)
        assert (result.status, result.error) == (TaskStatus.FAILED, INTERRUPTED_BY_STOP)
        assert result.finished_at is not None
    for dropped in (waiting, scheduled):
        result = service.get_status(dropped)
        assert (result.status, result.error) == (TaskStatus.FAILED, DROPPED_BY_STOP), "memory:// keeps nothing"
    assert all(result.status.is_final for result in service.list_tasks()), "nothing stays pending or running"


def test_a_task_that_ends_within_the_grace_period_succeeds() -> None:
    service = FastAPITaskService(settings(shutdown_grace_s=2))
    task_id = service.enqueue(async_sleep, 0.3)
    wait_for(service, task_id, TaskStatus.RUNNING)
    service.close()
    assert service.get_status(task_id).status == TaskStatus.SUCCEEDED


def test_a_retrying_task_is_not_retried_after_stop() -> None:
    service = FastAPITaskService(settings())
    task_id = service.enqueue(flaky_forever)
    wait_for(service, task_id, TaskStatus.RETRYING)
    service.close()
    result = service.get_status(task_id)
    assert (result.status, result.error, result.attempts) == (TaskStatus.FAILED, INTERRUPTED_BY_STOP, 1)


def test_sqlite_keeps_pending_and_scheduled_tasks_for_the_next_run(sqlite_url: str) -> None:
    first = FastAPITaskService(settings(sqlite_url, async_concurrency=1))
    blocker = first.enqueue(async_sleep, 30)
    pending = first.enqueue(async_sleep, 0.01)  # waits for the one slot
    scheduled = first.schedule(sync_where, timedelta(seconds=1.5))
    wait_for(first, blocker, TaskStatus.RUNNING)
    first.close()
    assert first.get_status(blocker).error == INTERRUPTED_BY_STOP
    assert first.get_status(pending).status == TaskStatus.PENDING
    assert first.get_status(scheduled).status == TaskStatus.SCHEDULED

    second = FastAPITaskService(settings(sqlite_url))  # the next process, started on the same file
    try:
        assert second.wait(pending, timeout_s=10).status == TaskStatus.SUCCEEDED
        result = second.wait(scheduled, timeout_s=10)
        assert result.status == TaskStatus.SUCCEEDED
        assert result.run_at is not None and result.started_at is not None and result.started_at >= result.run_at
    finally:
        second.close()


def test_a_task_no_module_registers_fails_clearly_instead_of_waiting_forever(sqlite_url: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    dead = SQLiteTaskStore(path)
    dead.begin_run(RunOwner(uuid.uuid4().hex, dead_pid(), host_id(), "1"))
    orphan = make_call()
    dead.insert(orphan)
    with dead._transaction() as conn:
        conn.execute("UPDATE tasks SET name = 'tests.inprocess.removed' WHERE id = ?", (orphan.id,))
    dead.close()

    service = FastAPITaskService(settings(sqlite_url))
    try:
        result = service.wait(orphan.id)  # the first use recovers the file
        assert result.status == TaskStatus.FAILED
        assert result.error is not None and result.error.startswith("LookupError: no task is registered")
    finally:
        service.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_finished_records_are_pruned_after_their_ttl(store: str, sqlite_url: str) -> None:
    service = FastAPITaskService(settings("memory://" if store == "memory" else sqlite_url, result_ttl_s=0.5))
    try:
        done = service.wait(service.enqueue(sync_where))
        waiting = service.schedule(sync_where, timedelta(hours=1))
        deadline = time.monotonic() + 5
        while service.list_tasks(status=TaskStatus.SUCCEEDED):
            assert time.monotonic() < deadline, "the finished record was never pruned"
            time.sleep(0.05)
        with pytest.raises(TaskNotFound):
            service.get_status(done.id)
        assert service.get_status(waiting).status == TaskStatus.SCHEDULED, "only finished records expire"
    finally:
        service.close()


def test_periodic_tasks_fire_on_their_slots_and_are_listed(own_periodic_registry: None) -> None:
    periodic(every=0.3)(tick)
    ticks.clear()
    service = FastAPITaskService(settings())
    try:
        service.enqueue(sync_where)  # the first use starts the runner and its timers
        time.sleep(1.25)
        fired = [result for result in service.list_tasks() if result.name == "tests.inprocess.tick"]
    finally:
        service.close()
    assert 3 <= len(fired) <= 5
    assert all(result.status == TaskStatus.SUCCEEDED for result in fired if result.status.is_final)
    slots = sorted(round(moment / 0.3) for moment in ticks)
    assert len(slots) == len(set(slots)), "one firing per slot"


def test_periodic_slots_fire_once_across_runs_sharing_a_file(own_periodic_registry: None, sqlite_url: str) -> None:
    periodic(every=0.25)(tick)
    ticks.clear()
    services = [FastAPITaskService(settings(sqlite_url)) for _ in range(3)]
    try:
        for service in services:
            service.enqueue(sync_where)
        time.sleep(1.4)
    finally:
        for service in services:
            service.close()
    slots = [round(moment / 0.25) for moment in ticks]
    assert len(slots) >= 4
    assert len(slots) == len(set(slots)), f"a slot fired more than once: {sorted(slots)}"


def test_periodic_slots_of_every_are_aligned_so_processes_agree() -> None:
    every = PeriodicTask("x", 60.0, None)
    after = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert next_slot(every, after) == datetime(2030, 1, 1, 12, 1, tzinfo=UTC)
    assert next_slot(every, next_slot(every, after)) == datetime(2030, 1, 1, 12, 2, tzinfo=UTC)
    cron = PeriodicTask("y", None, CronSchedule.parse("*/15 * * * *"))
    assert next_slot(cron, after) == datetime(2030, 1, 1, 12, 15, tzinfo=UTC)


def test_an_unimportable_task_module_is_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    service = FastAPITaskService(settings(modules="tests.no_such_module"))
    try:
        assert service.wait(service.enqueue(sync_where)).status == TaskStatus.SUCCEEDED
    finally:
        service.close()
    assert "tests.no_such_module" in caplog.text


@task(name="tests.inprocess.fails_first_time")
def fails_first_time(marker: str) -> int:
    """Fails on its first attempt (a refused delivery), succeeds on the next: the marker counts attempts."""
    path = Path(marker)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    if attempts == 1:
        raise ConnectionError("refused once")
    return attempts


def test_a_retry_wait_survives_a_graceful_restart_with_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    first = FastAPITaskService(settings(sqlite_url))
    marker = tmp_path / "attempts"
    task_id = first.enqueue(fails_first_time.options(max_retries=2, retry_backoff=1.0), str(marker))
    wait_for(first, task_id, TaskStatus.RETRYING)
    first.close()  # a SIGTERM's lifespan shutdown, during the retry's wait
    waiting = first.get_status(task_id)
    assert (waiting.status, waiting.attempts) == (TaskStatus.RETRYING, 1), "not failed by the stop"

    second = FastAPITaskService(settings(sqlite_url))  # the restarted process
    try:
        result = second.wait(task_id, timeout_s=10)
    finally:
        second.close()
    assert (result.status, result.result, result.attempts) == (TaskStatus.SUCCEEDED, 2, 2)
    assert waiting.started_at is not None and result.started_at is not None
    assert (result.started_at - waiting.started_at).total_seconds() >= 0.75, "at its due time, not at once"
