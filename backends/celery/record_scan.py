"""``stats()`` and ``drain()`` on the Celery backend: one pass over the index reading only the fields they need.

The generic defaults page through ``list_tasks`` (every field of every record, results and
tracebacks included, once per status). Here each record costs one ``HMGET`` of four short fields,
pipelined a page at a time, in a synchronous and an asynchronous form of the same steps.

``outstanding`` closes a race the generic scan has: a task that enqueues another and then
finishes can be seen finished while its child was added to the index after the index was read.
After a scan that found nothing left, the index is read once more and any id new to it is looked
at too: the child's insert happened before the parent's final status that the scan saw, so the
second read of the index holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import redis
import redis.asyncio

from backends.celery.store.records import EPOCH, TaskRecords, _text, from_us
from taskservice.models import TaskResult, TaskStatus

SCAN_FIELDS = ("status", "name", "enqueued_at", "run_at")
PAGE = 1000
_LEFT = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.RETRYING)


def _brief(task_id: str, row: Sequence[Any]) -> TaskResult | None:
    """A snapshot with only the scanned fields, or None for an id whose record expired."""
    status, name, enqueued_at, run_at = (None if value is None else _text(value) for value in row)
    if status is None:
        return None
    return TaskResult(
        id=task_id,
        name=name or "",
        status=TaskStatus(status),
        enqueued_at=from_us(enqueued_at) or EPOCH,
        run_at=from_us(run_at),
    )


def left_before(briefs: Iterable[TaskResult], horizon: datetime) -> list[TaskResult]:
    """Pending, running or retrying, or scheduled to run before ``horizon``."""
    return [
        b for b in briefs if b.status in _LEFT or (b.status is TaskStatus.SCHEDULED and (b.run_at or horizon) < horizon)
    ]


def _ids(raw: Sequence[Any]) -> list[str]:
    return [_text(item) for item in raw]


# --- synchronous ---------------------------------------------------------------------------------


def _read(client: redis.Redis, records: TaskRecords, ids: Sequence[str]) -> list[TaskResult]:
    briefs: list[TaskResult] = []
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        with client.pipeline(transaction=False) as pipe:
            for task_id in page:
                pipe.hmget(records.record_key(task_id), SCAN_FIELDS)
            rows = pipe.execute()
        briefs += [b for b in map(_brief, page, rows) if b is not None]
    return briefs


def outstanding(client: redis.Redis, records: TaskRecords, horizon: datetime) -> list[TaskResult]:
    ids = _ids(client.zrange(records.index_key, 0, -1))
    left = left_before(_read(client, records, ids), horizon)
    if left:
        return left
    seen = set(ids)
    added = [task_id for task_id in _ids(client.zrange(records.index_key, 0, -1)) if task_id not in seen]
    return left_before(_read(client, records, added), horizon)


# --- asynchronous: the same steps ----------------------------------------------------------------


async def _aread(client: redis.asyncio.Redis, records: TaskRecords, ids: Sequence[str]) -> list[TaskResult]:
    briefs: list[TaskResult] = []
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        async with client.pipeline(transaction=False) as pipe:
            for task_id in page:
                pipe.hmget(records.record_key(task_id), SCAN_FIELDS)
            rows = await pipe.execute()
        briefs += [b for b in map(_brief, page, rows) if b is not None]
    return briefs


async def aoutstanding(client: redis.asyncio.Redis, records: TaskRecords, horizon: datetime) -> list[TaskResult]:
    ids = _ids(await client.zrange(records.index_key, 0, -1))
    left = left_before(await _aread(client, records, ids), horizon)
    if left:
        return left
    seen = set(ids)
    added = [task_id for task_id in _ids(await client.zrange(records.index_key, 0, -1)) if task_id not in seen]
    return left_before(await _aread(client, records, added), horizon)
