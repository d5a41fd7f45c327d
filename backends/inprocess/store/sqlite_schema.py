"""The SQLite store's schema and how its rows become snapshots and calls again.

Times are integer microseconds since the epoch, so they come back exactly. A row whose task
this process does not know (its module is not imported) becomes a call whose task fails with
a ``LookupError`` that names ``TASK_MODULES``, so it ends ``failed`` instead of waiting forever.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from taskservice.codec import Arguments
from taskservice.models import ACTIVE_STATUSES, CLAIMABLE_STATUSES, FINAL_STATUSES, TaskResult, TaskStatus, in_order
from taskservice.registry import Task, TaskOptions, registered_tasks
from taskservice.service import TaskCall

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def status_list(statuses: frozenset[TaskStatus]) -> str:
    """``('pending', 'scheduled', ...)`` for SQL, generated from the enum's sets in the enum's order."""
    return "(" + ", ".join(f"'{status.value}'" for status in in_order(statuses)) + ")"


# Generated once and used both in the partial indexes and in the queries, spelled identically,
# so SQLite's planner can use the indexes.
ACTIVE = f"status IN {status_list(ACTIVE_STATUSES)}"
CLAIMABLE = f"status IN {status_list(CLAIMABLE_STATUSES)}"
NOT_SUCCEEDED = f"status <> '{TaskStatus.SUCCEEDED.value}'"
# What a stop or a crash cuts off. A retrying task is not: its next attempt is due at retry_at, and the
# run that adopts it (the next start, a live sibling) makes that attempt, as it runs a scheduled task.
INTERRUPTIBLE = f"status IN {status_list(frozenset({TaskStatus.RUNNING}))}"
ADOPTABLE = CLAIMABLE

WAITING = f"status IN {status_list(frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED}))}"
FINAL = f"status IN {status_list(FINAL_STATUSES)}"
# Claimable and not waiting for its dependency (``after=``).
RUNNABLE = f"{CLAIMABLE} AND waits_for IS NULL"
# A unique_key is held while its task is active, and after a sync attempt's timeout until its thread returns.
HOLDS_KEY = f"unique_key IS NOT NULL AND ({ACTIVE} OR key_held = 1)"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,            -- insertion order: newest first is seq DESC
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,              -- the encoded arguments
    max_retries INTEGER NOT NULL,
    retry_backoff REAL NOT NULL,
    timeout REAL,
    queue TEXT,
    unique_key TEXT,
    owner TEXT NOT NULL,                -- runs.token of the run that owns it
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,                        -- JSON
    error TEXT,
    traceback TEXT,
    progress REAL,
    progress_message TEXT,
    enqueued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    run_at INTEGER,
    headers TEXT,                       -- JSON object carried with the task (e.g. traceparent)
    retry_of TEXT,                      -- id of the task this one retries
    retried_as TEXT,                    -- JSON list of the ids of tasks that retried this one
    after TEXT,                         -- the option: id of the task this one runs after
    waits_for TEXT,                     -- while set, it waits for that task to end (cleared when decided)
    retry_at INTEGER,                   -- retrying: when the next attempt is due (it survives a restart)
    key_held INTEGER                    -- 1: final, but a timed-out thread still runs, so its key stays held
);
DROP INDEX IF EXISTS tasks_active_unique_key;
CREATE UNIQUE INDEX IF NOT EXISTS tasks_held_unique_key ON tasks (unique_key) WHERE {HOLDS_KEY};
CREATE INDEX IF NOT EXISTS tasks_newest ON tasks (enqueued_at, id);
CREATE INDEX IF NOT EXISTS tasks_by_status_newest ON tasks (status, enqueued_at, id) WHERE {NOT_SUCCEEDED};
CREATE INDEX IF NOT EXISTS tasks_by_finished_at ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_waiting ON tasks (waits_for) WHERE waits_for IS NOT NULL;
CREATE TABLE IF NOT EXISTS runs (
    token TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    process_start TEXT,
    heartbeat_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS periodic_firings (
    name TEXT NOT NULL,
    slot INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (name, slot)
) WITHOUT ROWID;
"""

# Columns added after the first release: an older file gets them on open.
ADDED_COLUMNS = {
    "headers": "TEXT",
    "retry_of": "TEXT",
    "retried_as": "TEXT",
    "after": "TEXT",
    "waits_for": "TEXT",
    "retry_at": "INTEGER",
    "key_held": "INTEGER",
}
SNAPSHOT_COLUMNS = (
    "id, name, status, result, error, traceback, progress, progress_message, attempts, "
    "enqueued_at, started_at, finished_at, run_at, payload, retry_of, retried_as"
)
CALL_COLUMNS = (
    "id, name, payload, max_retries, retry_backoff, timeout, queue, unique_key, enqueued_at, run_at, headers, "
    "retry_of, after"
)
INSERT = (
    "INSERT INTO tasks (id, name, status, payload, max_retries, retry_backoff, timeout, queue, unique_key, "
    "owner, enqueued_at, run_at, headers, retry_of, after, waits_for) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_params(call: TaskCall, owner_token: str) -> tuple[Any, ...]:
    options = call.options
    return (
        call.id,
        call.task.name,
        call.initial_status.value,
        call.arguments.encoded,
        options.max_retries,
        options.retry_backoff,
        options.timeout,
        options.queue,
        options.unique_key,
        owner_token,
        to_us(call.enqueued_at),
        None if call.run_at is None else to_us(call.run_at),
        json.dumps(dict(call.headers)) if call.headers else None,
        call.retry_of,
        options.after,
        options.after,  # waits_for: it waits until the insert's own transaction decides otherwise
    )


def to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def snapshot_from_row(row: tuple[Any, ...]) -> TaskResult:
    (
        task_id,
        name,
        status,
        result,
        error,
        traceback,
        progress,
        message,
        attempts,
        enqueued,
        started,
        finished,
        run_at,
        payload,
        retry_of,
        retried_as,
    ) = row
    arguments = json.loads(payload)
    return TaskResult(
        id=task_id,
        name=name,
        status=TaskStatus(status),
        result=None if result is None else json.loads(result),
        error=error,
        traceback=traceback,
        progress=progress,
        progress_message=message,
        attempts=attempts,
        enqueued_at=from_us(enqueued),
        started_at=from_us(started),
        finished_at=from_us(finished),
        run_at=from_us(run_at),
        args=arguments["args"],
        kwargs=arguments["kwargs"],
        retry_of=retry_of,
        retried_as=json.loads(retried_as) if retried_as else [],
    )


def call_from_row(row: tuple[Any, ...]) -> TaskCall:
    """Rebuild an adopted call; a task this process does not know fails with a clear error when it runs."""
    (
        task_id,
        name,
        payload,
        max_retries,
        retry_backoff,
        timeout,
        queue,
        unique_key,
        enqueued,
        run_at,
        headers,
        retry_of,
        after,
    ) = row
    options = TaskOptions(
        max_retries=max_retries,
        retry_backoff=retry_backoff,
        timeout=timeout,
        queue=queue,
        unique_key=unique_key,
        after=after,
    )
    decoded = json.loads(payload)
    handle = registered_tasks().get(name)
    task = handle if handle is not None else unknown_task(name)
    enqueued_at = from_us(enqueued)
    assert enqueued_at is not None
    return TaskCall(
        id=task_id,
        task=task,
        arguments=Arguments(decoded["args"], decoded["kwargs"], payload),
        options=options,
        enqueued_at=enqueued_at,
        run_at=from_us(run_at),
        headers=json.loads(headers) if headers else {},
        retry_of=retry_of,
    )


def unknown_task(name: str) -> Task[..., Any]:
    async def unknown(*args: Any, **kwargs: Any) -> None:
        raise LookupError(
            f"no task is registered under the name {name!r} in this process: is its module in TASK_MODULES?"
        )

    return Task(unknown, name, TaskOptions())
