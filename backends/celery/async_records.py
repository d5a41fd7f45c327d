"""The API side of the task records over an asyncio Redis client: what ``TaskRecords`` does, without a thread.

Same keys, same Lua scripts, same arguments and the same replies as the synchronous
``TaskRecords`` (a test writes one call through each and compares the records byte for byte),
so a record written by ``aenqueue`` is indistinguishable from one written by ``enqueue``. The key
layout and the TTL come from the ``TaskRecords`` this is built on; no I/O goes through it.
Redis errors are raised as they come; the service turns them into ``BackendUnavailable``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio

from backends.celery.async_batch import ScriptBatch
from backends.celery.store import scripts as celery_scripts
from backends.celery.store.records import (
    CALL_FIELDS,
    READ_FIELDS,
    TaskRecords,
    cancel_outcome,
    retry_call,
)
from backends.celery.store.snapshots import from_us, listing_page, score_bounds, stats_of, to_seconds
from backends.celery.store.snapshots import snapshot as _snapshot
from backends.celery.store.snapshots import text as _text
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.service import TaskCall, TaskQuery

ScriptArguments = tuple[list[str], list[Any]]  # (KEYS, ARGV) of one script call


class AsyncTaskRecords:
    """Reads and atomic writes of task records for one event loop's client."""

    def __init__(self, client: redis.asyncio.Redis, records: TaskRecords) -> None:
        self.client = client
        self.records = records
        self._insert = ScriptBatch(client, celery_scripts.INSERT)  # enqueues of one loop turn share a round trip
        self._cancel = client.register_script(celery_scripts.CANCEL)
        self._link_retry = client.register_script(celery_scripts.LINK_RETRY)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def insert(self, call: TaskCall, message: str, queue: str) -> None:
        """Write the record and publish (or park) the message in one round trip: ``TaskRecords.insert``'s
        arguments and reply, so ``TaskConflict`` and ``TaskNotFound`` (after=) come the same way."""
        keys, args = self.records.insert_arguments(call, message, queue)
        self.records.insert_outcome(call, await self._insert(keys, args))

    async def read(self, task_id: str) -> TaskResult | None:
        return _snapshot(task_id, await self.client.hmget(self.records.record_key(task_id), READ_FIELDS))

    async def recent(self, query: TaskQuery, page_size: int = 500) -> list[TaskResult]:
        """``TaskRecords.recent``: newest first as ``query`` says; expired records leave the index on the way."""
        found: list[TaskResult] = []
        high, low = score_bounds(query)
        start = 0
        index_key = self.records.index_key
        while len(found) < query.limit:
            raw = await self.client.zrevrangebyscore(index_key, high, low, start=start, num=page_size)
            ids = [_text(item) for item in raw]
            if not ids:
                break
            async with self.client.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hmget(self.records.record_key(task_id), READ_FIELDS)
                rows = await pipe.execute()
            page, gone = listing_page(query, ids, rows)
            found += page
            if gone:
                await self.client.zrem(index_key, *gone)
            start += len(ids) - len(gone)
            if len(ids) < page_size:
                break
        return found[: query.limit]

    async def stats(self) -> TaskStats:
        """``TaskRecords.stats``: counts from the counters the scripts keep, in one round trip."""
        records = self.records
        # reads only, so no MULTI: a Redis over its maxmemory refuses every command inside one
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(records.counts_key)
            pipe.zcard(records.pending_key)
            pipe.zrange(records.pending_key, 0, 0)
            transitions, pending, oldest = await pipe.execute()
        oldest_s: float | None = None
        if oldest:
            enqueued = await self.client.hget(records.record_key(_text(oldest[0])), "enqueued_at")
            moment = from_us(_text(enqueued)) if enqueued is not None else None
            oldest_s = to_seconds(moment) if moment is not None else None
        return stats_of({_text(k): int(v) for k, v in transitions.items()}, int(pending), oldest_s)

    async def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        return retry_call(task_id, await self.client.hmget(self.records.record_key(task_id), CALL_FIELDS))

    async def link_retry(self, original_id: str, retry_id: str) -> None:
        await self._link_retry(keys=[self.records.record_key(original_id)], args=[retry_id])

    async def cancel(self, task_id: str, revoked_meta: str, meta_expires_s: int | None) -> bool | None:
        """True: it will never run; False: it already ran or is running; None: no such task."""
        keys, args = self.records.cancel_arguments(task_id, revoked_meta, meta_expires_s)
        return cancel_outcome(await self._cancel(keys=keys, args=args))
