"""The in-process backend's task stores: every transition rule, on memory:// and on a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backends.inprocess.process_identity import RunOwner, host_id, pid_is_running, process_start
from backends.inprocess.store.base import (
    DROPPED_BY_STOP,
    INTERRUPTED_BY_CRASH,
    INTERRUPTED_BY_STOP,
    Outcome,
    TaskStore,
)
from backends.inprocess.store.memory import MemoryTaskStore
from backends.inprocess.store.sqlite import SQLiteTaskStore
from taskservice import TaskConflict, TaskStatus, TooManyActiveTasks, task
from taskservice.codec import encode_arguments
from taskservice.errors import BackendUnavailable
from taskservice.registry import Task
from taskservice.service import TaskCall, TaskQuery


@task(name="tests.stores.add")
def add(a: int, b: int) -> int:
    return a + b


def make_call(
    handle: Task[..., Any] = add, *args: Any, run_at: datetime | None = None, unique_key: str | None = None
) -> TaskCall:
    args = args or (1, 2)
    if unique_key is not None:
        handle = handle.options(unique_key=unique_key)
    return TaskCall(
        id=str(uuid.uuid4()),
        task=handle,
        arguments=encode_arguments(handle.name, handle.func, args, {}, 10_000),
        options=handle.default_options,
        enqueued_at=datetime.now(UTC),
        run_at=run_at,
    )


def now() -> datetime:
    return datetime.now(UTC)


def succeeded(call: TaskCall, attempt: int = 1, result: Any = 3) -> Outcome:
    return Outcome(call.id, attempt, TaskStatus.SUCCEEDED, now(), result=result)


def failed(call: TaskCall, attempt: int = 1, status: TaskStatus = TaskStatus.FAILED) -> Outcome:
    return Outcome(call.id, attempt, status, now(), error="ValueError: no", traceback="Traceback ...")


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    opened: TaskStore = MemoryTaskStore() if request.param == "memory" else SQLiteTaskStore(str(tmp_path / "t.db"))
    opened.begin_run(RunOwner.for_this_process())
    yield opened
    opened.close()


def dead_pid() -> int:
    """The pid of a real process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- both stores ------------------------------------------------------------------------


def test_insert_get_and_a_snapshot_of_every_field(store: TaskStore) -> None:
    call = make_call()
    store.insert(call)
    snapshot = store.get(call.id)
    assert snapshot is not None
    assert (snapshot.id, snapshot.name, snapshot.status, snapshot.attempts) == (
        call.id,
        "tests.stores.add",
        "pending",
        0,
    )
    assert snapshot.enqueued_at == call.enqueued_at  # to the microsecond
    assert snapshot.run_at is None and snapshot.started_at is None and snapshot.result is None
    assert store.get("no-such-id") is None

    later = make_call(run_at=now() + timedelta(hours=1))
    store.insert(later)
    scheduled = store.get(later.id)
    assert scheduled is not None and scheduled.status == TaskStatus.SCHEDULED and scheduled.run_at == later.run_at


def test_list_is_newest_first_filtered_and_limited(store: TaskStore) -> None:
    calls = [make_call() for _ in range(5)]
    for call in calls:
        store.insert(call)
    store.claim([calls[1].id], now())
    store.record_outcomes([failed(calls[1])])

    assert [r.id for r in store.list_tasks(TaskQuery(limit=10))] == [c.id for c in reversed(calls)]
    assert [r.id for r in store.list_tasks(TaskQuery(limit=2))] == [calls[4].id, calls[3].id]
    assert [r.id for r in store.list_tasks(TaskQuery(status=TaskStatus.FAILED, limit=10))] == [calls[1].id]
    assert [r.id for r in store.list_tasks(TaskQuery(status=TaskStatus.PENDING, limit=10))] == [
        calls[4].id,
        calls[3].id,
        calls[2].id,
        calls[0].id,
    ]
    assert store.list_tasks(TaskQuery(status=TaskStatus.SUCCEEDED, limit=10)) == []


def test_claim_runs_each_task_once_and_counts_attempts(store: TaskStore) -> None:
    call, cancelled = make_call(), make_call()
    store.insert(call)
    store.insert(cancelled)
    assert store.cancel(cancelled.id, now()) is True

    assert store.claim([call.id, cancelled.id, "unknown"], now()) == {call.id: 1}
    assert store.claim([call.id], now()) == {}, "a running task cannot be claimed again"
    running = store.get(call.id)
    assert running is not None and running.status == TaskStatus.RUNNING and running.started_at is not None

    store.record_outcomes([failed(call, status=TaskStatus.RETRYING)])
    retrying = store.get(call.id)
    assert retrying is not None and (retrying.status, retrying.error) == (TaskStatus.RETRYING, "ValueError: no")
    assert store.claim([call.id], now()) == {call.id: 2}
    store.record_outcomes([succeeded(call, attempt=2)])
    done = store.get(call.id)
    assert done is not None
    assert (done.status, done.result, done.attempts, done.error, done.traceback) == ("succeeded", 3, 2, None, None)
    assert done.finished_at is not None


def test_an_outcome_of_a_stale_attempt_changes_nothing(store: TaskStore) -> None:
    call = make_call()
    store.insert(call)
    store.claim([call.id], now())
    store.record_outcomes([failed(call, status=TaskStatus.RETRYING)])
    store.claim([call.id], now())  # attempt 2 runs
    store.record_outcomes([succeeded(call, attempt=1, result="late")])  # attempt 1's thread, finishing late
    store.report_progress(call.id, 1, 99, "late")
    current = store.get(call.id)
    assert current is not None and (current.status, current.result, current.progress) == ("running", None, None)
    store.report_progress(call.id, 2, 50, "half")
    current = store.get(call.id)
    assert current is not None and (current.progress, current.progress_message) == (50, "half")


def test_cancel_only_what_has_not_started(store: TaskStore) -> None:
    pending, scheduled, running = make_call(), make_call(run_at=now() + timedelta(days=3)), make_call()
    for call in (pending, scheduled, running):
        store.insert(call)
    store.claim([running.id], now())
    assert store.cancel(pending.id, now()) is True
    assert store.cancel(scheduled.id, now()) is True
    assert store.cancel(running.id, now()) is False
    assert store.cancel(pending.id, now()) is False, "already cancelled"
    assert store.cancel("unknown", now()) is None
    cancelled = store.get(scheduled.id)
    assert cancelled is not None and cancelled.status == TaskStatus.CANCELLED and cancelled.finished_at is not None


def test_unique_key_is_held_while_active_and_freed_by_every_ending(store: TaskStore) -> None:
    def hold(key: str) -> TaskCall:
        call = make_call(unique_key=key)
        store.insert(call)
        with pytest.raises(TaskConflict) as caught:
            store.insert(make_call(unique_key=key))
        assert caught.value.active_task_id == call.id
        return call

    by_success, by_failure, by_cancel, by_retry = (hold(f"key-{n}") for n in range(4))
    store.claim([by_success.id, by_failure.id, by_retry.id], now())
    store.record_outcomes([succeeded(by_success), failed(by_failure), failed(by_retry, status=TaskStatus.RETRYING)])
    store.cancel(by_cancel.id, now())
    for key in ("key-0", "key-1", "key-2"):
        store.insert(make_call(unique_key=key))  # free again
    with pytest.raises(TaskConflict):
        store.insert(make_call(unique_key="key-3"))  # a retrying task still holds its key


def test_end_run_interrupts_running_tasks_and_keeps_or_drops_the_rest(store: TaskStore) -> None:
    running, retrying, pending = make_call(unique_key="k"), make_call(), make_call()
    for call in (running, retrying, pending):
        store.insert(call)
    store.claim([running.id, retrying.id], now())
    store.record_outcomes([failed(retrying, status=TaskStatus.RETRYING)])
    store.end_run(now())

    ended = store.get(running.id)
    assert ended is not None and (ended.status, ended.error) == (TaskStatus.FAILED, INTERRUPTED_BY_STOP)
    waiting_retry, left = store.get(retrying.id), store.get(pending.id)
    assert waiting_retry is not None and left is not None
    if store.keeps_tasks_across_restarts:
        assert left.status == TaskStatus.PENDING, "the next run adopts it"
        assert waiting_retry.status == TaskStatus.RETRYING, "and makes its next attempt"
    else:
        assert (left.status, left.error) == (TaskStatus.FAILED, DROPPED_BY_STOP)
        assert (waiting_retry.status, waiting_retry.error) == (TaskStatus.FAILED, INTERRUPTED_BY_STOP)
    store.begin_run(RunOwner.for_this_process())
    store.insert(make_call(unique_key="k"))  # the interrupted task freed its key


def test_prune_forgets_old_finished_records_only(store: TaskStore) -> None:
    old, fresh, active = make_call(), make_call(), make_call()
    for call in (old, fresh, active):
        store.insert(call)
    store.claim([old.id, fresh.id], now())
    store.record_outcomes([Outcome(old.id, 1, TaskStatus.SUCCEEDED, now() - timedelta(hours=2)), succeeded(fresh)])

    assert store.prune(now() - timedelta(hours=1)) == 1
    assert store.get(old.id) is None
    assert store.get(fresh.id) is not None and store.get(active.id) is not None


def test_snapshots_share_nothing_with_the_store(store: TaskStore) -> None:
    call = make_call()
    store.insert(call)
    store.claim([call.id], now())
    store.record_outcomes([succeeded(call, result={"items": [1, 2]})])
    first = store.get(call.id)
    assert first is not None
    first.result["items"].append(3)
    again = store.get(call.id)
    assert again is not None and again.result == {"items": [1, 2]}


def test_periodic_slot_records_a_normal_task(store: TaskStore) -> None:
    slot = datetime(2030, 1, 1, tzinfo=UTC)
    call = make_call()
    assert store.claim_periodic_slot(call, slot) is True
    recorded = store.get(call.id)
    assert recorded is not None and recorded.status == TaskStatus.PENDING


# -- memory:// ----------------------------------------------------------------------------


def test_memory_store_stays_bounded_whatever_the_ttl() -> None:
    store = MemoryTaskStore(max_finished_records=10)
    store.begin_run(RunOwner.for_this_process())
    calls = [make_call() for _ in range(25)]
    for call in calls:
        store.insert(call)
    store.claim([call.id for call in calls], now())
    store.record_outcomes([succeeded(call) for call in calls])
    assert len(store.list_tasks(TaskQuery(limit=100))) == 10
    assert store.get(calls[0].id) is None and store.get(calls[-1].id) is not None


# -- sqlite:// ----------------------------------------------------------------------------


def sqlite_pair(tmp_path: Path) -> tuple[SQLiteTaskStore, SQLiteTaskStore]:
    first, second = SQLiteTaskStore(str(tmp_path / "shared.db")), SQLiteTaskStore(str(tmp_path / "shared.db"))
    first.begin_run(RunOwner.for_this_process())
    second.begin_run(RunOwner.for_this_process())
    return first, second


def test_two_stores_on_one_file_share_records_keys_and_claims(tmp_path: Path) -> None:
    first, second = sqlite_pair(tmp_path)
    call = make_call(unique_key="shared")
    first.insert(call)
    seen = second.get(call.id)
    assert seen is not None and seen.status == TaskStatus.PENDING
    with pytest.raises(TaskConflict):
        second.insert(make_call(unique_key="shared"))
    assert second.cancel(call.id, now()) is True
    assert first.claim([call.id], now()) == {}, "cancelled in another process: it never runs"


def test_concurrent_claims_from_two_connections_never_both_win(tmp_path: Path) -> None:
    first, second = sqlite_pair(tmp_path)
    calls = [make_call(run_at=now()) for _ in range(200)]
    for call in calls:
        first.insert(call)
    ids = [call.id for call in calls]
    won: dict[str, list[str]] = {"first": [], "second": []}

    def claim_all(name: str, store: SQLiteTaskStore) -> None:
        for start in range(0, len(ids), 5):
            won[name] += list(store.claim(ids[start : start + 5], now()))

    threads = [threading.Thread(target=claim_all, args=item) for item in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won["first"] + won["second"]) == sorted(ids), "every task claimed exactly once"


def test_a_periodic_slot_is_claimed_once_across_stores(tmp_path: Path) -> None:
    first, second = sqlite_pair(tmp_path)
    slot = datetime(2030, 1, 1, 12, tzinfo=UTC)
    first_call, second_call = make_call(), make_call()
    assert first.claim_periodic_slot(first_call, slot) is True
    assert second.claim_periodic_slot(second_call, slot) is False
    assert second.get(second_call.id) is None, "the losing firing leaves no record"
    assert second.claim_periodic_slot(make_call(), slot + timedelta(minutes=1)) is True


def test_a_dead_runs_tasks_are_settled_and_adopted_a_live_ones_are_not(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    live = SQLiteTaskStore(path)
    live.begin_run(RunOwner.for_this_process())
    live_call = make_call()
    live.insert(live_call)
    live.claim([live_call.id], now())
    dead = SQLiteTaskStore(path)  # registers, then its process is gone (a pid that exited)
    dead.begin_run(RunOwner(uuid.uuid4().hex, dead_pid(), host_id(), "1"))
    running, retrying, pending = make_call(), make_call(), make_call()
    scheduled = make_call(run_at=now() + timedelta(minutes=5))
    for call in (running, retrying, pending, scheduled):
        dead.insert(call)
    dead.claim([running.id, retrying.id], now())
    retry = Outcome(retrying.id, 1, TaskStatus.RETRYING, now(), error="ValueError: no", retry_delay_s=30.0)
    dead.record_outcomes([retry])

    survivor = SQLiteTaskStore(path)
    tasks = survivor.begin_run(RunOwner.for_this_process())

    adopted = [task.call for task in tasks]
    assert [call.id for call in adopted] == [retrying.id, pending.id, scheduled.id]
    assert [task.due_at for task in tasks] == [retry.retry_at, None, scheduled.run_at], "each at its time"
    assert adopted[1].arguments.decoded_copy() == ([1, 2], {})
    assert adopted[1].task.name == "tests.stores.add" and adopted[1].task.func is add.func
    settled = survivor.get(running.id)
    assert settled is not None and (settled.status, settled.error) == (TaskStatus.FAILED, INTERRUPTED_BY_CRASH)
    waiting_retry = survivor.get(retrying.id)
    assert waiting_retry is not None and (waiting_retry.status, waiting_retry.attempts) == (TaskStatus.RETRYING, 1)
    still = survivor.get(live_call.id)
    assert still is not None and still.status == TaskStatus.RUNNING, "a live sibling's task is left alone"
    assert SQLiteTaskStore(path).begin_run(RunOwner.for_this_process()) == [], "adopted once only"


def test_a_run_whose_heartbeat_stopped_counts_as_dead(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    quiet = SQLiteTaskStore(path)
    quiet.begin_run(RunOwner.for_this_process())  # this very process: alive, but it stops beating
    call = make_call()
    quiet.insert(call)
    watcher = SQLiteTaskStore(path, stale_after_s=0.2)
    assert watcher.begin_run(RunOwner.for_this_process()) == []
    threading.Event().wait(0.3)
    assert [adopted.call.id for adopted in watcher.heartbeat()] == [call.id]


def test_a_stopped_runs_pending_and_scheduled_tasks_go_to_the_next_run(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    first = SQLiteTaskStore(path)
    first.begin_run(RunOwner.for_this_process())
    pending, scheduled = make_call(), make_call(run_at=now() + timedelta(hours=1))
    first.insert(pending)
    first.insert(scheduled)
    first.end_run(now())
    first.close()

    nxt = SQLiteTaskStore(path)
    assert {task.call.id for task in nxt.begin_run(RunOwner.for_this_process())} == {pending.id, scheduled.id}


def test_a_live_sibling_adopts_what_a_stopped_run_left_at_its_next_heartbeat(tmp_path: Path) -> None:
    survivor, stopping = sqlite_pair(tmp_path)
    left = make_call(run_at=now() + timedelta(hours=1))
    stopping.insert(left)
    assert survivor.heartbeat() == [], "the sibling is alive: nothing to take"
    stopping.end_run(now())
    assert [task.call.id for task in survivor.heartbeat()] == [left.id]
    assert survivor.heartbeat() == [], "taken once"


def test_an_unknown_task_name_is_adopted_and_fails_clearly_when_run(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    first = SQLiteTaskStore(path)
    first.begin_run(RunOwner(uuid.uuid4().hex, dead_pid(), host_id(), "1"))
    orphan = make_call()
    first.insert(orphan)
    with first._transaction() as conn:  # a task registered by a module this process never imports
        conn.execute("UPDATE tasks SET name = 'tests.stores.gone' WHERE id = ?", (orphan.id,))

    (task,) = SQLiteTaskStore(path).begin_run(RunOwner.for_this_process())
    adopted = task.call
    assert adopted.task.name == "tests.stores.gone" and adopted.task.is_async
    with pytest.raises(LookupError, match="TASK_MODULES"):
        adopted.task.func().send(None)


def test_an_unusable_file_raises_backend_unavailable_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = SQLiteTaskStore(str(blocker / "t.db"))
    with pytest.raises(BackendUnavailable, match="TASK_STORE_URL"):
        store.begin_run(RunOwner.for_this_process())
    broken = tmp_path / "broken.db"
    broken.write_text("this is not a database" * 100)
    with pytest.raises(BackendUnavailable, match="TASK_STORE_URL"):
        SQLiteTaskStore(str(broken)).begin_run(RunOwner.for_this_process())


def test_process_identity_tells_a_reused_pid_apart() -> None:
    me = process_start(os.getpid())
    assert me is not None
    assert pid_is_running(os.getpid(), me)
    assert not pid_is_running(os.getpid(), str(int(me) + 1)), "same pid, another start: dead"
    assert not pid_is_running(dead_pid(), None)


def test_memory_store_bounds_its_active_tasks() -> None:
    store = MemoryTaskStore(max_active_tasks=3)
    store.begin_run(RunOwner.for_this_process())
    later = now() + timedelta(days=30)
    held = [make_call(run_at=later) for _ in range(3)]
    for call in held:
        store.insert(call)
    with pytest.raises(TooManyActiveTasks, match="TASK_MEMORY_MAX_ACTIVE_TASKS") as refused:
        store.insert(make_call())
    assert isinstance(refused.value, BackendUnavailable), "a 503 at the edge, like any backend outage"
    store.cancel(held[0].id, now())  # finished records do not count: only active ones hold timers
    store.insert(make_call())
    assert store.stats().counts[TaskStatus.SCHEDULED] == 2
