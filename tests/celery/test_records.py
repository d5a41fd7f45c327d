"""The Redis pieces of the Celery backend (records, unique keys, leases, cancels, the schedule set).

Every test runs twice: on fakeredis (fast, in-process Lua) and on a private redis-server (the
real thing the scripts are written for).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from backends.celery.store.records import to_seconds, to_us
from backends.celery.store.worker_records import ClaimDefaults, WorkerRecords
from taskservice import TaskConflict, TaskStatus
from taskservice.codec import encode_arguments
from taskservice.registry import Task
from taskservice.service import TaskCall, TaskQuery
from tests import tasks

LEASE_MS = 5_000
DEFAULTS = ClaimDefaults("contract.add", "celery", max_retries=0, retry_backoff_s=1.0, timeout_s=None)


def make_call(handle: Task[..., Any], *args: Any, run_at: datetime | None = None, **options: Any) -> TaskCall:
    if options:
        handle = handle.options(**options)
    arguments = encode_arguments(handle.name, handle.func, args, {}, 1 << 20)
    return TaskCall(str(uuid.uuid4()), handle, arguments, handle.default_options, datetime.now(UTC), run_at)


def insert(records: WorkerRecords, call: TaskCall, queue: str = "celery") -> None:
    records.insert(call, json.dumps({"task": call.id}), queue)


def claim(records: WorkerRecords, task_id: str, lease_ms: int = LEASE_MS, token: str = "worker-1") -> Any:
    return records.claim(task_id, token, lease_ms, DEFAULTS)


def finish(
    records: WorkerRecords, task_id: str, status: TaskStatus = TaskStatus.SUCCEEDED, token: str = "worker-1"
) -> str:
    fields = {"status": status.value, "finished_at": str(to_us(datetime.now(UTC))), "result": "5", "error": None}
    return records.store(task_id, "final", '{"status": "SUCCESS"}', 60, fields, token=token)


def test_enqueue_writes_the_record_and_pushes_the_message_at_once(records: WorkerRecords, client: redis.Redis) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call, queue="reports")

    snapshot = records.read(call.id)
    assert snapshot is not None
    assert (snapshot.status, snapshot.name, snapshot.attempts) == (TaskStatus.PENDING, "contract.add", 0)
    assert snapshot.enqueued_at == call.enqueued_at, "timestamps are kept to the microsecond"
    assert client.lrange("reports", 0, -1) == [json.dumps({"task": call.id}).encode()]
    assert records.read("no-such-id") is None


def test_a_scheduled_task_waits_in_redis_not_in_the_broker(records: WorkerRecords, client: redis.Redis) -> None:
    run_at = datetime.now(UTC) + timedelta(days=30)
    call = make_call(tasks.add, 1, 2, run_at=run_at)
    insert(records, call)

    snapshot = records.read(call.id)
    assert snapshot is not None and (snapshot.status, snapshot.run_at) == (TaskStatus.SCHEDULED, run_at)
    assert client.llen("celery") == 0
    assert client.zscore(records.schedule_key, call.id) == pytest.approx(to_seconds(run_at))
    assert client.pttl(records.record_key(call.id)) == -1, "an active record never expires"


def test_a_held_unique_key_refuses_the_second_task_and_writes_nothing(
    records: WorkerRecords, client: redis.Redis
) -> None:
    first = make_call(tasks.add, 1, 2, unique_key="project:1")
    insert(records, first)
    second = make_call(tasks.add, 3, 4, unique_key="project:1")

    with pytest.raises(TaskConflict) as caught:
        insert(records, second)

    assert (caught.value.unique_key, caught.value.active_task_id) == ("project:1", first.id)
    assert records.read(second.id) is None
    assert client.llen("celery") == 1
    assert [result.id for result in records.recent(TaskQuery(limit=10))] == [first.id]


def test_the_unique_key_frees_when_the_task_ends(records: WorkerRecords, client: redis.Redis) -> None:
    first = make_call(tasks.add, 1, 2, unique_key="project:2")
    insert(records, first)
    assert claim(records, first.id).verdict == "run"
    finish(records, first.id, TaskStatus.FAILED)
    assert client.zscore(records.prefix + "finished", first.id) is not None, "its retention starts now"

    insert(records, make_call(tasks.add, 1, 2, unique_key="project:2"))  # no conflict


def test_a_running_task_keeps_its_unique_key_even_once_its_lease_lapsed(records: WorkerRecords) -> None:
    first = make_call(tasks.add, 1, 2, unique_key="project:3")
    insert(records, first)
    assert claim(records, first.id, lease_ms=50).verdict == "run"
    time.sleep(0.1)  # the worker stopped refreshing: dead, frozen or cut off; recovery runs it again
    with pytest.raises(TaskConflict):
        insert(records, make_call(tasks.add, 1, 2, unique_key="project:3"))
    finish(records, first.id)
    insert(records, make_call(tasks.add, 1, 2, unique_key="project:3"))


def test_claim_runs_once_and_says_why_not_otherwise(records: WorkerRecords) -> None:
    call = make_call(tasks.flaky, "unused-dir", 1, max_retries=2, retry_backoff=0.5, timeout=7)
    insert(records, call)

    first = claim(records, call.id)
    assert (first.verdict, first.attempts, first.max_retries, first.retry_backoff_s, first.timeout_s) == (
        "run", 1, 2, 0.5, 7.0,
    )  # fmt: skip
    snapshot = records.read(call.id)
    assert snapshot is not None and snapshot.status == TaskStatus.RUNNING and snapshot.started_at is not None

    duplicate = claim(records, call.id, token="worker-2")
    assert duplicate.verdict == "busy" and 0 < duplicate.busy_for_s <= LEASE_MS / 1000

    finish(records, call.id)
    assert claim(records, call.id, token="worker-3").verdict == "succeeded"


def test_a_redelivered_task_runs_again_once_its_lease_expired(records: WorkerRecords) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    assert claim(records, call.id, lease_ms=50).verdict == "run"
    time.sleep(0.1)

    again = claim(records, call.id, token="worker-2")
    assert (again.verdict, again.attempts) == ("run", 2)


def test_a_message_sent_without_taskservice_gets_a_record_when_claimed(records: WorkerRecords) -> None:
    task_id = str(uuid.uuid4())
    assert claim(records, task_id).verdict == "run"

    snapshot = records.read(task_id)
    assert snapshot is not None and (snapshot.name, snapshot.status, snapshot.attempts) == (
        "contract.add", TaskStatus.RUNNING, 1,
    )  # fmt: skip
    assert [result.id for result in records.recent(TaskQuery(limit=10))] == [task_id]


def test_a_redelivered_task_whose_key_was_taken_meanwhile_conflicts(
    records: WorkerRecords, client: redis.Redis
) -> None:
    first = make_call(tasks.add, 1, 2, unique_key="project:4")
    insert(records, first)
    second = make_call(tasks.add, 1, 2)
    insert(records, second)
    client.set(records.unique_key("project:4"), second.id)  # e.g. a key taken over by another enqueue path

    verdict = claim(records, first.id, token="worker-2")
    assert (verdict.verdict, verdict.unique_key, verdict.holder) == ("conflict", "project:4", second.id)


def test_cancel_is_durable_and_only_for_tasks_that_did_not_start(records: WorkerRecords, client: redis.Redis) -> None:
    pending, scheduled, running = (
        make_call(tasks.add, 1, 2, unique_key="project:5"),
        make_call(tasks.add, 1, 2, run_at=datetime.now(UTC) + timedelta(hours=1)),
        make_call(tasks.add, 1, 2),
    )
    for call in (pending, scheduled, running):
        insert(records, call)
    claim(records, running.id)

    assert records.cancel(pending.id, '{"status": "REVOKED"}', 60) is True
    assert records.cancel(scheduled.id, '{"status": "REVOKED"}', 60) is True
    assert records.cancel(running.id, '{"status": "REVOKED"}', 60) is False
    assert records.cancel(pending.id, '{"status": "REVOKED"}', 60) is False, "twice reports nothing new"
    assert records.cancel("no-such-id", '{"status": "REVOKED"}', 60) is None

    snapshot = records.read(pending.id)
    assert snapshot is not None and snapshot.status == TaskStatus.CANCELLED and snapshot.finished_at is not None
    assert claim(records, pending.id).verdict == "cancelled", "the worker checks before running"
    assert client.zscore(records.schedule_key, scheduled.id) is None
    assert client.get(records.meta_key(pending.id)) == b'{"status": "REVOKED"}'
    insert(records, make_call(tasks.add, 1, 2, unique_key="project:5"))  # the key is free again


def test_dispatch_moves_each_due_entry_once(records: WorkerRecords, client: redis.Redis) -> None:
    now = datetime.now(UTC)
    due = make_call(tasks.add, 1, 2, run_at=now - timedelta(seconds=1))
    later = make_call(tasks.add, 1, 2, run_at=now + timedelta(minutes=5))
    cancelled = make_call(tasks.add, 1, 2, run_at=now - timedelta(seconds=2))
    for call in (due, later, cancelled):
        insert(records, call)
    records.cancel(cancelled.id, "{}", 60)

    moved, next_due_s, redis_now_s = records.dispatch_due()
    assert moved == 1
    assert next_due_s == pytest.approx(to_seconds(later.run_at))  # type: ignore[arg-type]
    assert redis_now_s == pytest.approx(time.time(), abs=5)
    assert client.lrange("celery", 0, -1) == [json.dumps({"task": due.id}).encode()]
    assert records.dispatch_due()[:2] == (0, next_due_s), "a second dispatcher finds nothing"
    assert client.hget(records.record_key(due.id), "message") is None


def test_a_retry_waits_in_the_schedule_set_with_its_error(records: WorkerRecords, client: redis.Redis) -> None:
    call = make_call(tasks.flaky, "unused-dir", 1, max_retries=1)
    insert(records, call)
    claim(records, call.id)
    fields = {"status": "retrying", "error": "RuntimeError: run 1", "message": "retry-message"}
    records.store(call.id, "retry", '{"status": "RETRY"}', 60, fields, retry_delay_s=0.2, token="worker-1")

    snapshot = records.read(call.id)
    assert snapshot is not None and (snapshot.status, snapshot.error) == (TaskStatus.RETRYING, "RuntimeError: run 1")
    assert client.zscore(records.schedule_key, call.id) == pytest.approx(time.time() + 0.2, abs=2)
    time.sleep(0.3)
    records.dispatch_due()
    assert client.lrange("celery", 0, -1)[0] == b"retry-message"

    assert claim(records, call.id).attempts == 2
    finish(records, call.id)
    final = records.read(call.id)
    assert final is not None and (final.status, final.error, final.result) == (TaskStatus.SUCCEEDED, None, 5)


def test_progress_is_recorded_only_while_running(records: WorkerRecords) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    records.store(call.id, "progress", "{}", 60, {"progress": "10.0", "progress_message": "early"})
    early = records.read(call.id)
    assert early is not None and early.progress is None

    claim(records, call.id)
    records.store(call.id, "progress", "{}", 60, {"progress": "40.0", "progress_message": "halfway"}, token="worker-1")
    running = records.read(call.id)
    assert running is not None and (running.progress, running.progress_message) == (40.0, "halfway")
    records.store(call.id, "progress", "{}", 60, {"progress": "50.0", "progress_message": None}, token="worker-1")
    later = records.read(call.id)
    assert later is not None and (later.progress, later.progress_message) == (50.0, None)


def test_celery_success_is_never_overwritten(records: WorkerRecords, client: redis.Redis) -> None:
    task_id = str(uuid.uuid4())  # a task taskservice never recorded: Celery's own rule still holds
    records.store(task_id, "meta", '{"status": "SUCCESS", "result": 1}', 60)
    records.store(task_id, "final", '{"status": "FAILURE"}', 60, {"status": "failed"})
    assert client.get(records.meta_key(task_id)) == b'{"status": "SUCCESS", "result": 1}'
    assert records.read(task_id) is None

    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    claim(records, call.id)
    finish(records, call.id)
    meta = client.get(records.meta_key(call.id))
    late = records.store(call.id, "final", '{"status": "FAILURE"}', 60, {"status": "failed", "error": "late"})
    final = records.read(call.id)
    assert late == "final" and final is not None and (final.status, final.error) == (TaskStatus.SUCCEEDED, None)
    assert client.get(records.meta_key(call.id)) == meta, "nor is Celery's meta of a final task"


def test_recent_is_newest_first_filters_and_forgets_expired_records(
    records: WorkerRecords, client: redis.Redis
) -> None:
    calls = [make_call(tasks.add, n, n) for n in range(5)]
    for call in calls:
        insert(records, call)
        time.sleep(0.002)
    claim(records, calls[1].id)
    client.delete(records.record_key(calls[0].id))  # expired

    assert [result.id for result in records.recent(TaskQuery(limit=10))] == [call.id for call in reversed(calls[1:])]
    assert [result.id for result in records.recent(TaskQuery(status=TaskStatus.RUNNING, limit=10))] == [calls[1].id]
    assert [result.id for result in records.recent(TaskQuery(limit=2), page_size=1)] == [calls[4].id, calls[3].id]
    assert client.zscore(records.index_key, calls[0].id) is None


def test_leases_are_refreshed(records: WorkerRecords, client: redis.Redis) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    claim(records, call.id, lease_ms=1_000)
    assert records.refresh_leases({call.id: "worker-1"}, 60_000) == []
    assert client.pttl(records.lease_key(call.id)) > 30_000
