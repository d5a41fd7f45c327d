"""Task records of the Celery backend, in Redis: what raw Celery lacks, each change one atomic round trip.

A record is written at enqueue (so an unknown id is ``TaskNotFound``, never "PENDING forever"),
claimed by the worker before the body runs (so a cancelled, finished or still-running task is
not run again by a redelivered message), and finished by the result backend in the same round
trip as Celery's own result. The Lua scripts and the key layout are described with ``INSERT`` and its siblings; the
worker's side (claim, store, leases, recovery, retention) is ``WorkerRecords``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from backends.celery.store import scripts as celery_scripts
from backends.celery.store.messages import dependency_failure_meta
from backends.celery.store.snapshots import (
    CALL_FIELDS,
    EPOCH,
    READ_FIELDS,
    from_us,
    listing_page,
    score_bounds,
    snapshot,
    stats_of,
    text,
    to_seconds,
    to_us,
)
from taskservice import attempts
from taskservice.attempts import AttemptInfo
from taskservice.codec import Arguments
from taskservice.errors import TaskConflict, TaskNotFound
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.registry import Task, TaskOptions, registered_tasks
from taskservice.service import TaskCall, TaskQuery

__all__ = ["CALL_FIELDS", "EPOCH", "KEY_PREFIX", "READ_FIELDS", "TaskRecords", "from_us", "to_seconds", "to_us"]

KEY_PREFIX = "taskservice:"
CELERY_META_PREFIX = "celery-task-meta-"  # Celery's redis result backend key for a task's result
# the dependency's id and status, filled in by the scripts (a chain fails link by link)
DEPENDENCY_ERROR_TEMPLATE = attempts.dependency_error("\1", "\2")

ScriptArguments = tuple[list[str], list[Any]]  # (KEYS, ARGV) of one script call


class TaskRecords:
    """Reads and atomic writes of task records; raises redis errors as they come (callers translate)."""

    def __init__(self, client: redis.Redis, result_ttl_s: float, prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self.result_ttl_s = max(1, int(result_ttl_s))
        self.result_ttl_ms = self.result_ttl_s * 1000
        self.index_key = prefix + "index"
        self.schedule_key = prefix + "schedule"
        self.pending_key = prefix + "pending"
        self.counts_key = prefix + "counts"
        self._insert = client.register_script(celery_scripts.INSERT)
        self._cancel = client.register_script(celery_scripts.CANCEL)
        self._link_retry = client.register_script(celery_scripts.LINK_RETRY)

    def record_key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def lease_key(self, task_id: str) -> str:
        return f"{self.prefix}lease:{task_id}"

    def unique_key(self, key: str) -> str:
        return f"{self.prefix}unique:{key}"

    @staticmethod
    def meta_key(task_id: str) -> str:
        return CELERY_META_PREFIX + task_id

    # --- the API side ---------------------------------------------------------------------------

    def insert_arguments(self, call: TaskCall, message: str, queue: str) -> ScriptArguments:
        """KEYS and ARGV of the INSERT script for ``call`` (the async client sends the very same)."""
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
        unique = self.unique_key(options.unique_key) if options.unique_key is not None else self.record_key(call.id)
        target = self.schedule_key if call.run_at is not None else queue
        due = repr(to_seconds(call.run_at)) if call.run_at is not None else ""
        after = options.after or ""
        keys = [self.record_key(call.id), self.index_key, unique, target]
        args = [self.prefix, call.id, "", to_seconds(call.enqueued_at), call.initial_status.value, message, due,
                "1" if options.unique_key is not None else "0", after,
                DEPENDENCY_ERROR_TEMPLATE if after else "", dependency_failure_meta() if after else "",
                self.result_ttl_s, *fields]  # fmt: skip
        return keys, args

    def insert_outcome(self, call: TaskCall, reply: Any) -> None:
        """Act on the INSERT script's reply: ``TaskConflict``, ``TaskNotFound`` (after=), or log a task
        decided at once because the task it waits for did not succeed."""
        verdict = text(reply[0])
        if verdict == "conflict":
            assert call.options.unique_key is not None
            raise TaskConflict(call.options.unique_key, text(reply[1]))
        if verdict == "notfound":
            assert call.options.after is not None
            raise TaskNotFound(call.options.after)
        if verdict == "failed":
            assert call.options.after is not None
            attempts.interrupted(call.attempt_info(0), attempts.dependency_error(call.options.after, text(reply[1])))

    def insert(self, call: TaskCall, message: str, queue: str) -> None:
        """Write the record and publish (or park, if scheduled or waiting) the message.

        ``TaskConflict`` if its unique_key is held, ``TaskNotFound`` if ``after`` names no task.
        """
        keys, args = self.insert_arguments(call, message, queue)
        self.insert_outcome(call, self._insert(keys=keys, args=args))

    def read(self, task_id: str) -> TaskResult | None:
        """The record as a snapshot, or None if there is none."""
        return snapshot(task_id, self.client.hmget(self.record_key(task_id), READ_FIELDS))

    def recent(self, query: TaskQuery, page_size: int = 500) -> list[TaskResult]:
        """Newest first, as ``query`` says; ids whose record is gone are dropped from the index on the way."""
        found: list[TaskResult] = []
        high, low = score_bounds(query)
        start = 0
        while len(found) < query.limit:
            raw = self.client.zrevrangebyscore(self.index_key, high, low, start=start, num=page_size)
            ids = [text(item) for item in raw]
            if not ids:
                break
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hmget(self.record_key(task_id), READ_FIELDS)
                rows = pipe.execute()
            page, gone = listing_page(query, ids, rows)
            found += page
            if gone:
                self.client.zrem(self.index_key, *gone)
            start += len(ids) - len(gone)
            if len(ids) < page_size:
                break
        return found[: query.limit]

    def stats(self) -> TaskStats:
        """Counts per status from the counters the scripts keep (one round trip, whatever the number of tasks)."""
        # reads only, so no MULTI: a Redis over its maxmemory refuses every command inside one
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.counts_key)
            pipe.zcard(self.pending_key)
            pipe.zrange(self.pending_key, 0, 0)
            transitions, pending, oldest = pipe.execute()
        oldest_s: float | None = None
        if oldest:
            enqueued = self.client.hget(self.record_key(text(oldest[0])), "enqueued_at")
            if enqueued is not None:
                moment = from_us(text(enqueued))
                oldest_s = to_seconds(moment) if moment is not None else None
        return stats_of({text(k): int(v) for k, v in transitions.items()}, int(pending), oldest_s)

    def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        """The record's status and the call it was made from, or None if there is no record."""
        return retry_call(task_id, self.client.hmget(self.record_key(task_id), CALL_FIELDS))

    def link_retry(self, original_id: str, retry_id: str) -> None:
        self._link_retry(keys=[self.record_key(original_id)], args=[retry_id])

    def cancel_arguments(self, task_id: str, revoked_meta: str, meta_expires_s: int | None) -> ScriptArguments:
        keys = [self.record_key(task_id), self.schedule_key, self.meta_key(task_id)]
        args = [self.prefix, task_id, to_us(datetime.now(UTC)), "", revoked_meta, expiry(meta_expires_s),
                DEPENDENCY_ERROR_TEMPLATE, dependency_failure_meta()]  # fmt: skip
        return keys, args

    def cancel(self, task_id: str, revoked_meta: str, meta_expires_s: int | None) -> bool | None:
        """True: it will never run; False: it already ran or is running; None: no such task."""
        keys, args = self.cancel_arguments(task_id, revoked_meta, meta_expires_s)
        return cancel_outcome(self._cancel(keys=keys, args=args))


def cancel_outcome(reply: Any) -> bool | None:
    """What the CANCEL script's reply means for ``cancel()``; tasks that failed with it (after=) are logged."""
    if isinstance(reply, list):
        dependents_failed(reply[1])
        return True
    return None if int(reply) < 0 else bool(int(reply))


def dependents_failed(failed: Sequence[Any]) -> None:
    """Log and hook each task that ended failed because the task it waited for (after=) did not succeed."""
    for task_id, name, error in failed:
        attempts.interrupted(AttemptInfo(text(task_id), text(name), 0), text(error))


def retry_call(task_id: str, values: Sequence[Any]) -> tuple[TaskStatus, TaskCall] | None:
    """The status and call of a record from its ``CALL_FIELDS``."""
    fields = {name: None if value is None else text(value) for name, value in zip(CALL_FIELDS, values, strict=True)}
    if fields["status"] is None or fields["name"] is None:
        return None
    payload = fields["args"] or '{"args": [], "kwargs": {}}'
    decoded = json.loads(payload)
    timeout = fields["timeout"]
    options = TaskOptions(
        max_retries=int(fields["max_retries"] or 0),
        retry_backoff=float(fields["retry_backoff"] or 1.0),
        timeout=float(timeout) if timeout else None,
        queue=fields["queue"],
        unique_key=fields["unique_key"],
    )
    handle = registered_tasks().get(fields["name"]) or Task(_unregistered, fields["name"], options)
    call = TaskCall(
        id=task_id,
        task=handle,
        arguments=Arguments(decoded["args"], decoded["kwargs"], payload),
        options=options,
        enqueued_at=datetime.now(UTC),
        run_at=None,
        headers=json.loads(fields["headers"]) if fields["headers"] else {},
    )
    return TaskStatus(fields["status"]), call


class HotScript:
    """A script on every task's path: ``EVALSHA`` with no keys and no wrapper, loaded again if Redis forgot it."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, *args: str | bytes | int | float) -> Any:
        try:
            return self.client.evalsha(self.sha, 0, *args)
        except redis.exceptions.NoScriptError:  # a restarted Redis has an empty script cache
            self.client.script_load(self.source)
            return self.client.evalsha(self.sha, 0, *args)


def expiry(seconds: int | None) -> str:
    return "" if not seconds else str(int(seconds))


def _unregistered(*args: Any, **kwargs: Any) -> None:
    """Stands for a task this process does not import: only its name travels, a worker runs the real one."""
    raise LookupError("this task is not registered in this process: is its module in TASK_MODULES?")


# names other modules of this backend import
_text, _expiry, _snapshot = text, expiry, snapshot
