"""The record scripts' rules for leases, retention, counters, ``after=`` and recovery, on fakeredis and Redis.

Leases carry the token of the attempt that claimed them: a lapsed lease is taken back by its own
holder, never by another; a stale holder stores nothing. Records expire only once they finished.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from backends.celery.store.records import TaskRecords
from backends.celery.store.worker_records import STALE, WorkerRecords
from taskservice import TaskNotFound, TaskStatus
from taskservice.attempts import dependency_error
from taskservice.service import TaskQuery
from tests import tasks
from tests.celery.test_records import DEFAULTS, claim, finish, insert, make_call


def test_a_lapsed_lease_is_taken_back_by_its_holder(records: WorkerRecords, client: redis.Redis) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    claim(records, call.id, lease_ms=50, token="a")
    time.sleep(0.1)  # a pause longer than the lease: nobody took the task over meanwhile
    assert records.refresh_leases({call.id: "a"}, 5_000) == []
    assert client.get(records.lease_key(call.id)) == b"a"
    assert claim(records, call.id, token="b").verdict == "busy", "the holder has it again"


def test_a_lease_taken_over_is_never_stolen_back_and_the_stale_holder_stores_nothing(
    records: WorkerRecords, client: redis.Redis
) -> None:
    call = make_call(tasks.add, 1, 2, unique_key="k")
    insert(records, call)
    claim(records, call.id, lease_ms=50, token="a")
    time.sleep(0.1)
    assert claim(records, call.id, token="b").attempts == 2, "the copy took over"

    assert records.refresh_leases({call.id: "a"}, 5_000) == [call.id], "the old holder learns it lost"
    assert client.get(records.lease_key(call.id)) == b"b"
    assert finish(records, call.id, token="a") == STALE
    assert client.get(records.meta_key(call.id)) is None, "no Celery meta from the stale holder either"
    progress = records.store(call.id, "progress", "{}", 60, {"progress": "99.0"}, token="a")
    assert progress == STALE
    snapshot = records.read(call.id)
    assert snapshot is not None and (snapshot.status, snapshot.progress) == (TaskStatus.RUNNING, None)

    assert finish(records, call.id, token="b") == "stored"
    assert finish(records, call.id, token="a") == "final", "and it never counts twice"
    assert records.stats().counts[TaskStatus.SUCCEEDED] == 1


def test_the_main_process_stores_for_its_pool_child_but_an_anonymous_store_cannot_end_a_running_task(
    records: WorkerRecords,
) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    claim(records, call.id, token="celery@host|123|7")
    assert finish(records, call.id, token="") == STALE
    assert finish(records, call.id, token="other@host|") == STALE
    assert finish(records, call.id, token="celery@host|") == "stored"


def test_cancel_never_ends_a_running_task_even_with_its_lease_lapsed(records: WorkerRecords) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    claim(records, call.id, lease_ms=50)
    time.sleep(0.1)
    assert records.cancel(call.id, '{"status": "REVOKED"}', 60) is False
    snapshot = records.read(call.id)
    assert snapshot is not None and snapshot.status == TaskStatus.RUNNING


def test_active_records_never_expire_and_finished_ones_go_after_the_ttl(client: redis.Redis) -> None:
    records = WorkerRecords(client, result_ttl_s=1)
    old_scheduled = make_call(tasks.add, 1, 2, run_at=datetime.now(UTC) + timedelta(days=30))
    done = make_call(tasks.add, 1, 2)
    running = make_call(tasks.add.options(max_retries=5, timeout=9), 1, 2)
    for call in (old_scheduled, done, running):
        insert(records, call)
    claim(records, done.id)
    finish(records, done.id)
    claim(records, running.id)
    time.sleep(1.2)
    for call in (make_call(tasks.add, n, n) for n in range(3)):  # later enqueues trim nothing active
        insert(records, call)

    assert records.trim() == 1
    assert records.read(done.id) is None
    listed = {result.id for result in records.recent(TaskQuery(limit=100))}
    assert old_scheduled.id in listed and running.id in listed and done.id not in listed
    again = claim(records, running.id, lease_ms=1, token="later")  # per-call options kept while it is active
    assert again.verdict == "busy" or (again.max_retries, again.timeout_s) == (5, 9.0)


def test_stats_count_every_status_from_the_scripts_counters(records: WorkerRecords) -> None:
    calls = [make_call(tasks.add, n, n) for n in range(6)]
    scheduled = make_call(tasks.add, 1, 2, run_at=datetime.now(UTC) + timedelta(hours=1))
    for call in [*calls, scheduled]:
        insert(records, call)
        time.sleep(0.001)
    for call in calls[:4]:
        claim(records, call.id)
    finish(records, calls[0].id)
    finish(records, calls[1].id, TaskStatus.FAILED)
    fields = {"status": "retrying", "error": "E: x"}
    records.store(calls[2].id, "retry", "{}", 60, fields, retry_delay_s=60, token="worker-1")
    records.cancel(calls[4].id, "{}", 60)

    stats = records.stats()
    expected = {
        TaskStatus.PENDING: 1, TaskStatus.SCHEDULED: 1, TaskStatus.RUNNING: 1, TaskStatus.RETRYING: 1,
        TaskStatus.SUCCEEDED: 1, TaskStatus.FAILED: 1, TaskStatus.CANCELLED: 1,
    }  # fmt: skip
    assert stats.counts == expected
    assert stats.oldest_pending_enqueued_at == calls[5].enqueued_at


def test_after_an_unknown_task_is_not_found_and_nothing_is_enqueued(records: WorkerRecords) -> None:
    ghost = str(uuid.uuid4())
    call = make_call(tasks.add, 1, 2, after=ghost)
    with pytest.raises(TaskNotFound):
        insert(records, call)
    assert records.read(call.id) is None


def test_after_waits_then_runs_once_its_dependency_succeeded(records: WorkerRecords, client: redis.Redis) -> None:
    first = make_call(tasks.add, 1, 2)
    insert(records, first)
    second = make_call(tasks.add, 3, 4, after=first.id, unique_key="chain")
    insert(records, second)
    assert client.llen("celery") == 1, "the dependent's message is held"
    snapshot = records.read(second.id)
    assert snapshot is not None and snapshot.status == TaskStatus.PENDING
    assert claim(records, second.id, token="x").verdict == "waiting"

    claim(records, first.id)
    finish(records, first.id)
    assert client.llen("celery") == 2, "released in the same script as the dependency's final status"
    assert claim(records, second.id, token="y").verdict == "run"


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_after_a_task_that_did_not_succeed_fails_down_the_chain(
    records: WorkerRecords, client: redis.Redis, how: str
) -> None:
    first = make_call(tasks.add, 1, 2)
    insert(records, first)
    second = make_call(tasks.add, 3, 4, after=first.id, unique_key="chain")
    insert(records, second)
    third = make_call(tasks.add, 5, 6, after=second.id)
    insert(records, third)
    if how == "failed":
        claim(records, first.id)
        finish(records, first.id, TaskStatus.FAILED)
    else:
        assert records.cancel(first.id, "{}", 60) is True

    for call, dependency, status in ((second, first, how), (third, second, "failed")):
        snapshot = records.read(call.id)
        assert snapshot is not None
        assert (snapshot.status, snapshot.attempts) == (TaskStatus.FAILED, 0)
        assert snapshot.error == dependency_error(dependency.id, status)
        meta = json.loads(client.get(records.meta_key(call.id)) or b"{}")
        assert meta["status"] == "FAILURE" and meta["task_id"] == call.id
    assert client.llen("celery") == 1, "only the first task's message was ever published"
    insert(records, make_call(tasks.add, 1, 1, unique_key="chain"))  # the key was freed

    late = make_call(tasks.add, 7, 8, after=first.id)  # decided at once by the same rules
    insert(records, late)
    snapshot = records.read(late.id)
    assert snapshot is not None and snapshot.error == dependency_error(first.id, how)


def test_recovery_republishes_a_task_whose_holder_is_gone_once_per_lease(
    records: WorkerRecords, client: redis.Redis
) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    message = client.rpop("celery")
    assert message is not None
    envelope = {"headers": {"id": call.id}, "properties": {"delivery_tag": "tag-1"}, "body": "x"}
    client.hset("unacked", "tag-1", json.dumps([envelope, "", "celery"]))
    client.zadd("unacked_index", {"tag-1": time.time() - 10})
    claim(records, call.id, lease_ms=50)

    assert records.recover(100, "unacked_index", "unacked") == [], "the lease is live"
    time.sleep(0.1)
    assert records.recover(100, "unacked_index", "unacked") == [], "first only suspected: the holder may take it back"
    time.sleep(0.06)
    assert records.recover(100, "unacked_index", "unacked") == [call.id]
    assert records.recover(100, "unacked_index", "unacked") == [], "once per lease period"
    copy = json.loads(client.lindex("celery", -1) or b"{}")
    assert copy["headers"]["id"] == call.id and copy["properties"]["delivery_tag"] != "tag-1"


def test_a_parked_duplicate_of_a_finished_task_is_dropped(records: WorkerRecords, client: redis.Redis) -> None:
    call = make_call(tasks.add, 1, 2)
    insert(records, call)
    claim(records, call.id)
    assert records.defer(call.id, 0.0, "copy") is True
    finish(records, call.id)
    time.sleep(0.01)
    assert records.dispatch_due()[0] == 0
    assert records.defer(call.id, 0.0, "copy") is False


def test_the_api_side_reads_what_the_worker_side_writes(client: redis.Redis) -> None:
    api, worker = TaskRecords(client, 60), WorkerRecords(client, 60)
    call = make_call(tasks.add, 1, 2)
    api.insert(call, "{}", "celery")
    worker.claim(call.id, "t", 1_000, DEFAULTS)
    snapshot = api.read(call.id)
    assert snapshot is not None and snapshot.status == TaskStatus.RUNNING
