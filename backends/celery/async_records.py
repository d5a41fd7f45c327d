"""The API side of the task records over an asyncio Redis client: what ``TaskRecords`` does, without a thread.

Same keys, same Lua scripts, same arguments and the same replies as the synchronous
``TaskRecords`` (a test writes one call through each and compares the records byte for byte),
so a record written by ``aenqueue`` is indistinguishable from one written by ``enqueue``. The key
layout and the TTL come from the ``TaskRecords`` this is built on; no I/O goes through it.
Redis errors are raised as they come; the service turns them into ``BackendUnavailable``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio

from backends.celery.async_batch import ScriptBatch
from backends.celery.store import scripts as celery_scripts
from backends.celery.store.records import (
    CALL_FIELDS,
    READ_FIELDS,
    TaskRecords,
    _expiry,
    _snapshot,
    _text,
    _unregistered,
    to_seconds,
    to_us,
)
from taskservice.codec import Arguments
from taskservice.errors import TaskConflict
from taskservice.models import TaskResult, TaskStatus
from taskservice.registry import Task, TaskOptions, registered_tasks
from taskservice.service import TaskCall, TaskQuery

ScriptArguments = tuple[list[str], list[Any]]  # (KEYS, ARGV) of one script call


def insert_arguments(records: TaskRecords, call: TaskCall, message: str, queue: str, now: datetime) -> ScriptArguments:
    """KEYS and ARGV of the INSERT script for ``call``, exactly as ``TaskRecords.insert`` sends them."""
    delay_s = max(0.0, to_seconds(call.run_at) - to_seconds(now)) if call.run_at is not None else 0.0
    ttl_ms = records.result_ttl_ms + int(delay_s * 1000)  # a far-future task keeps its record until it ran
    options = call.options
    fields: list[str | int | float] = [
        "name", call.task.name,
        "status", call.initial_status.value,
        "enqueued_at", to_us(call.enqueued_at),
        "queue", queue,
        "max_retries", options.max_retries,
        "retry_backoff", options.retry_backoff,
        "args", call.arguments.encoded,
    ]  # fmt: skip
    if options.timeout is not None:
        fields += ["timeout", options.timeout]
    if options.unique_key is not None:
        fields += ["unique_key", options.unique_key]
    if call.run_at is not None:
        fields += ["run_at", to_us(call.run_at)]
    if call.headers:
        fields += ["headers", json.dumps(dict(call.headers))]
    if call.retry_of is not None:
        fields += ["retry_of", call.retry_of]
    unique = records.unique_key(options.unique_key) if options.unique_key is not None else records.record_key(call.id)
    target = records.schedule_key if call.run_at is not None else queue
    due = repr(to_seconds(call.run_at)) if call.run_at is not None else ""
    cutoff = to_seconds(now) - records.result_ttl_ms / 1000
    keys = [records.record_key(call.id), records.index_key, unique, target]
    args = [records.prefix, call.id, ttl_ms, to_seconds(call.enqueued_at), cutoff, message, due,
            "1" if options.unique_key is not None else "0", *fields]  # fmt: skip
    return keys, args


def retry_call(task_id: str, values: Sequence[Any]) -> tuple[TaskStatus, TaskCall] | None:
    """The status and call of a record from its ``CALL_FIELDS`` (as ``TaskRecords.retry_source`` reads them)."""
    text = {name: None if value is None else _text(value) for name, value in zip(CALL_FIELDS, values, strict=True)}
    if text["status"] is None or text["name"] is None:
        return None
    payload = text["args"] or '{"args": [], "kwargs": {}}'
    decoded = json.loads(payload)
    timeout = text["timeout"]
    options = TaskOptions(
        max_retries=int(text["max_retries"] or 0),
        retry_backoff=float(text["retry_backoff"] or 1.0),
        timeout=float(timeout) if timeout else None,
        queue=text["queue"],
        unique_key=text["unique_key"],
    )
    handle = registered_tasks().get(text["name"]) or Task(_unregistered, text["name"], options)
    call = TaskCall(
        id=task_id,
        task=handle,
        arguments=Arguments(decoded["args"], decoded["kwargs"], payload),
        options=options,
        enqueued_at=datetime.now(UTC),
        run_at=None,
        headers=json.loads(text["headers"]) if text["headers"] else {},
    )
    return TaskStatus(text["status"]), call


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
        """Write the record and publish (or park) the message in one round trip; ``TaskConflict`` if its key is held."""
        keys, args = insert_arguments(self.records, call, message, queue, datetime.now(UTC))
        holder = await self._insert(keys, args)
        if holder is not None:
            assert call.options.unique_key is not None
            raise TaskConflict(call.options.unique_key, _text(holder))

    async def read(self, task_id: str) -> TaskResult | None:
        return _snapshot(task_id, await self.client.hmget(self.records.record_key(task_id), READ_FIELDS))

    async def recent(self, query: TaskQuery, page_size: int = 500) -> list[TaskResult]:
        """``TaskRecords.recent``: newest first as ``query`` says; expired records leave the index on the way."""
        found: list[TaskResult] = []
        high = "+inf" if query.enqueued_before is None else repr(to_seconds(query.enqueued_before))
        if query.cursor is not None:  # inclusive: equal scores are sorted out below by (enqueued_at, id)
            high = repr(min(float(high), to_seconds(query.cursor[0])))
        low = "-inf" if query.enqueued_after is None else repr(to_seconds(query.enqueued_after) - 1e-3)
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
            gone = []
            page: list[TaskResult] = []
            for task_id, row in zip(ids, rows, strict=True):
                snapshot = _snapshot(task_id, row)
                if snapshot is None:
                    gone.append(task_id)
                elif query.matches(snapshot):
                    page.append(snapshot)
            found += sorted(page, key=lambda r: (r.enqueued_at, r.id), reverse=True)
            if gone:
                await self.client.zrem(index_key, *gone)
            start += len(ids) - len(gone)
            if len(ids) < page_size:
                break
        return found[: query.limit]

    async def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        return retry_call(task_id, await self.client.hmget(self.records.record_key(task_id), CALL_FIELDS))

    async def link_retry(self, original_id: str, retry_id: str) -> None:
        await self._link_retry(keys=[self.records.record_key(original_id)], args=[retry_id])

    async def cancel(self, task_id: str, revoked_meta: str, meta_expires_s: int | None) -> bool | None:
        """True: it will never run; False: it already ran or is running; None: no such task."""
        records = self.records
        outcome = await self._cancel(
            keys=[records.record_key(task_id), records.schedule_key, records.meta_key(task_id)],
            args=[records.prefix, task_id, to_us(datetime.now(UTC)), records.result_ttl_ms, revoked_meta,
                  _expiry(meta_expires_s)],
        )  # fmt: skip
        return None if int(outcome) < 0 else bool(int(outcome))
