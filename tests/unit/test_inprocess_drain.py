"""``drain``, ``stats`` and the async verbs of the in-process backend, on both stores.

``drain`` knows what this process has outstanding instead of polling the store; ``aenqueue`` with
SQLite commits concurrent calls together and never blocks the event loop, even while another
process holds the database's write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backends.inprocess.service import FastAPITaskService
from backends.inprocess.store.sqlite import SQLiteTaskStore
from taskservice import TaskConflict, TaskSettings, TaskStatus, get_task_service, set_task_service, task
from tests.unit.test_inprocess_lifecycle import fails_first_time, wait_for


@task(name="tests.inprocess.drain.nap")
async def nap(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "rested"


@task(name="tests.inprocess.drain.then")
async def nap_then_enqueue(seconds: float, marker: str) -> str:
    await asyncio.sleep(seconds)
    return get_task_service().enqueue(mark, marker)


@task(name="tests.inprocess.drain.mark")
def mark(marker: str) -> None:
    time.sleep(0.2)
    Path(marker).write_text("done")


def make(store: str, tmp_path: Path, **overrides: object) -> FastAPITaskService:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'tasks.db'}"
    return FastAPITaskService(TaskSettings(store_url=url, modules="", shutdown_grace_s=0.5, **overrides))  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FastAPITaskService]:
    started = make(request.param, tmp_path)
    previous = set_task_service(started)  # tasks that enqueue tasks reach this one
    yield started
    set_task_service(previous)
    started.close()


def statements(store: SQLiteTaskStore) -> list[str]:
    """Every SQL statement the store's connection runs from now on (SQLite's own trace hook)."""
    seen: list[str] = []
    with store._lock:
        store._connect().set_trace_callback(seen.append)
    return seen


def test_drain_waits_for_tasks_enqueued_by_tasks_and_for_retries(service: FastAPITaskService, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    first = service.enqueue(nap_then_enqueue, 0.2, str(marker))
    flaky = service.enqueue(fails_first_time.options(max_retries=1, retry_backoff=0.3), str(tmp_path / "n"))
    service.drain(timeout_s=10)
    assert marker.read_text() == "done", "the follow-up the task enqueued was waited for too"
    follow_up = service.get_status(first).result
    assert service.get_status(follow_up).status == TaskStatus.SUCCEEDED
    assert service.get_status(flaky).status == TaskStatus.SUCCEEDED, "a retry's wait counts"


def test_drain_counts_scheduled_tasks_only_within_its_timeout(service: FastAPITaskService) -> None:
    later = service.schedule(nap, timedelta(hours=1), 0)
    soon = service.schedule(nap, timedelta(seconds=0.4), 0)
    started = time.monotonic()
    service.drain(timeout_s=5)
    assert time.monotonic() - started >= 0.3
    assert service.get_status(soon).status == TaskStatus.SUCCEEDED
    assert service.get_status(later).status == TaskStatus.SCHEDULED


def test_drain_times_out_naming_what_is_left(service: FastAPITaskService) -> None:
    stuck = service.enqueue(nap, 30)
    with pytest.raises(TimeoutError, match=rf"1 task\(s\) still outstanding: {nap.name} {stuck}"):
        service.drain(timeout_s=0.3)
    assert service.cancel(service.schedule(nap, timedelta(seconds=1), 0)) is True
    with pytest.raises(TimeoutError, match="1 task"):  # a cancelled task is not waited for
        service.drain(timeout_s=0.3)


def test_drain_does_not_poll_the_store(tmp_path: Path) -> None:
    service = make("sqlite", tmp_path)
    try:
        service.wait(service.enqueue(nap, 0))
        assert isinstance(service.store, SQLiteTaskStore)
        seen = statements(service.store)
        service.enqueue(nap, 1.0)
        seen.clear()
        service.drain(timeout_s=10)
        # The run's own claim and outcome, a few reconciliations (every 0.25 s): not a poll every few ms.
        assert len(seen) < 40, seen
    finally:
        service.close()


def test_adrain_on_the_home_loop_keeps_it_running_and_drain_there_says_what_to_use(
    tmp_path: Path, service: FastAPITaskService
) -> None:
    async def lifespan() -> int:
        await service.start()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(ticker())
        try:
            await service.aenqueue(nap, 0.3)
            with pytest.raises(RuntimeError, match="adrain"):
                service.drain(timeout_s=1)
            await service.adrain(timeout_s=5)
            return ticks
        finally:
            beat.cancel()
            await service.stop()

    assert asyncio.run(lifespan()) >= 15, "the loop kept running while adrain waited"


def test_stats_count_each_status_and_the_oldest_pending(tmp_path: Path, service: FastAPITaskService) -> None:
    done = service.wait(service.enqueue(nap, 0))
    failed = service.wait(service.enqueue(fails_first_time, str(tmp_path / "once")))
    service.schedule(nap, timedelta(hours=1), 0)
    stats = service.stats()
    assert stats.counts[TaskStatus.SUCCEEDED] == 1 and stats.counts[TaskStatus.FAILED] == 1
    assert stats.counts[TaskStatus.SCHEDULED] == 1 and stats.counts[TaskStatus.PENDING] == 0
    assert stats.oldest_pending_enqueued_at is None
    assert asyncio.run(service.astats()) == stats
    assert (done.status, failed.status) == (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def test_stats_see_the_oldest_pending_task(tmp_path: Path) -> None:
    for store in ("memory", "sqlite"):
        service = make(store, tmp_path / store, async_concurrency=1)
        try:
            blocker = service.enqueue(nap, 30)
            wait_for(service, blocker, TaskStatus.RUNNING)
            oldest = service.enqueue(nap, 0)
            service.enqueue(nap, 0)
            stats = service.stats()
            assert (stats.counts[TaskStatus.RUNNING], stats.counts[TaskStatus.PENDING]) == (1, 2), store
            assert stats.oldest_pending_enqueued_at == service.get_status(oldest).enqueued_at
        finally:
            service.close()


def test_concurrent_aenqueue_calls_share_commits_and_each_row_is_committed_when_it_returns(tmp_path: Path) -> None:
    service = make("sqlite", tmp_path)
    database = tmp_path / "tasks.db"
    try:
        service.wait(service.enqueue(nap, 0))
        assert isinstance(service.store, SQLiteTaskStore)
        seen = statements(service.store)
        reader = sqlite3.connect(database)
        unseen: list[str] = []

        async def one() -> None:
            task_id = await service.aenqueue(nap, 0)
            if reader.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is None:
                unseen.append(task_id)  # another connection must see it: the commit came first

        async def many() -> None:
            await asyncio.gather(*(one() for _ in range(300)))

        asyncio.run(many())
        reader.close()
        assert unseen == []
        commits = sum(1 for statement in seen if statement == "COMMIT")
        assert commits < 100, f"{commits} commits for 300 concurrent aenqueue calls (and their claims and outcomes)"
        service.drain(timeout_s=10)
    finally:
        service.close()


def test_aenqueue_does_not_block_the_loop_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    service = make("sqlite", tmp_path)
    try:
        service.wait(service.enqueue(nap, 0))
        other = sqlite3.connect(tmp_path / "tasks.db", isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process writing (a long prune, say)
        release = threading.Timer(0.5, lambda: other.execute("COMMIT"))

        async def endpoint() -> tuple[float, float]:
            gaps: list[float] = []

            async def ticker() -> None:
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.005)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            beat = asyncio.create_task(ticker())
            started = time.monotonic()
            release.start()
            await service.aenqueue(nap, 0)
            waited = time.monotonic() - started
            beat.cancel()
            return waited, max(gaps)

        waited, worst_gap = asyncio.run(endpoint())
        release.join()
        other.close()
        assert waited >= 0.4, "it did wait for the lock"
        assert worst_gap < 0.1, f"the loop stalled {worst_gap * 1000:.0f} ms"
    finally:
        service.close()


def test_concurrent_aenqueue_calls_committed_together_keep_their_own_errors(tmp_path: Path) -> None:
    service = make("sqlite", tmp_path)
    try:
        service.wait(service.enqueue(nap, 0))

        async def many() -> list[str | BaseException]:
            calls = [service.aenqueue(nap.options(unique_key=f"key-{index % 50}"), 0.5) for index in range(60)]
            return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(many())
        accepted = [result for result in results if isinstance(result, str)]
        refused = [result for result in results if isinstance(result, BaseException)]
        assert len(accepted) == 50 and len(refused) == 10
        assert all(isinstance(error, TaskConflict) for error in refused), refused
        assert {service.get_status(task_id).status for task_id in accepted} <= {TaskStatus.PENDING, TaskStatus.RUNNING}
        service.drain(timeout_s=10)
    finally:
        service.close()


def test_drain_in_a_fresh_process_waits_for_what_it_adopts(tmp_path: Path) -> None:
    first = make("sqlite", tmp_path, async_concurrency=1)
    blocker = first.enqueue(nap, 30)
    left = first.enqueue(nap, 0)  # never started: the one slot is taken
    wait_for(first, blocker, TaskStatus.RUNNING)
    first.close()
    second = make("sqlite", tmp_path)  # a restarted script on the same file
    try:
        second.drain(timeout_s=10)  # its first use adopts the pending task, and waits for it
        assert second.get_status(left).status == TaskStatus.SUCCEEDED
    finally:
        second.close()
