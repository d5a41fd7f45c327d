"""The SQLite store's status transitions, each a body that runs inside a transaction its caller opened.

The store runs them one transaction each for the sync API, and its writer thread runs many in one
transaction for the runner and ``aenqueue``. So a body changes nothing but the database: what it
decided (tasks to start, tasks it ended) is returned, and applied by the caller once committed.

Every transition that ends a task also decides, in the same transaction, the tasks that wait on it
(``after=``): released (and owned by the run that ended it, which starts them) if it succeeded,
else ended ``failed`` without running, with ``attempts.dependency_error``; and so on down the chain.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

from backends.inprocess.store.base import NOTHING_DECIDED, Admission, Decided, Ended
from backends.inprocess.store.sqlite_schema import (
    CALL_COLUMNS,
    CLAIMABLE,
    FINAL,
    HOLDS_KEY,
    INSERT,
    RUNNABLE,
    WAITING,
    call_from_row,
    insert_params,
    to_us,
)
from taskservice.attempts import Outcome, dependency_error
from taskservice.errors import TaskConflict, TaskNotFound
from taskservice.models import TaskStatus
from taskservice.service import TaskCall

log = logging.getLogger("taskservice")
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

FAILED = TaskStatus.FAILED.value
RUNNING = TaskStatus.RUNNING.value
CANCELLED = TaskStatus.CANCELLED.value
SUCCEEDED = TaskStatus.SUCCEEDED.value
RETRYING = TaskStatus.RETRYING.value
MISSING = "missing"  # the status named for a dependency whose record is gone (a file from before after=)

RECORD_OUTCOME = (
    "UPDATE tasks SET status = ?, result = ?, error = ?, traceback = ?, finished_at = ?, retry_at = ?, "
    f"key_held = ? WHERE id = ? AND attempts = ? AND status = '{RUNNING}'"
)


def insert_task(conn: sqlite3.Connection, call: TaskCall, owner_token: str) -> Admission | Ended:
    """A new record; ``TaskConflict`` for a held key, ``TaskNotFound`` for an unknown ``after``."""
    after = call.options.after
    status: str | None = None
    if after is not None:
        row = conn.execute("SELECT status FROM tasks WHERE id = ?", (after,)).fetchone()
        if row is None:
            raise TaskNotFound(after)
        status = row[0]
    try:
        conn.execute(INSERT, insert_params(call, owner_token))
    except sqlite3.IntegrityError as exc:
        key = call.options.unique_key
        if key is None or "unique_key" not in str(exc):
            raise
        holder = conn.execute(f"SELECT id FROM tasks WHERE {HOLDS_KEY} AND unique_key = ?", (key,)).fetchone()
        raise TaskConflict(key, holder[0] if holder else None) from None
    if after is None:
        return Admission.READY
    if status not in (SUCCEEDED, FAILED, CANCELLED):
        return Admission.WAITING
    decided = decide_dependents(conn, [after], to_us(call.enqueued_at), owner_token)
    return decided.ended[0] if decided.ended else Admission.READY


def insert_tasks(
    conn: sqlite3.Connection,
    calls: Sequence[TaskCall],
    owner_token: str,
    translate: Callable[[BaseException], BaseException],
) -> list[Admission | Ended | BaseException]:
    """Many new records at once: one ``executemany``; if a row fails (a held key), each in its own savepoint."""
    if all(call.options.after is None for call in calls):
        conn.execute("SAVEPOINT many_inserts")
        try:
            conn.executemany(INSERT, [insert_params(call, owner_token) for call in calls])
        except sqlite3.Error:
            conn.execute("ROLLBACK TO many_inserts")
        else:
            conn.execute("RELEASE many_inserts")
            return [Admission.READY] * len(calls)
        conn.execute("RELEASE many_inserts")
    results: list[Admission | Ended | BaseException] = []
    for call in calls:
        conn.execute("SAVEPOINT one_insert")
        try:
            results.append(insert_task(conn, call, owner_token))
        except Exception as exc:
            conn.execute("ROLLBACK TO one_insert")
            results.append(translate(exc))
        conn.execute("RELEASE one_insert")
    return results


def claim_tasks(conn: sqlite3.Connection, task_ids: Sequence[str], now: datetime, owner_token: str) -> dict[str, int]:
    rows = conn.execute(
        f"UPDATE tasks SET status = '{RUNNING}', attempts = attempts + 1, started_at = ?, owner = ?, "
        f"progress = NULL, progress_message = NULL, retry_at = NULL "
        f"WHERE id IN (SELECT value FROM json_each(?)) AND {RUNNABLE} RETURNING id, attempts",
        (to_us(now), owner_token, json.dumps(list(task_ids))),
    ).fetchall()
    return dict(rows)


def record_outcomes(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], holding_keys: Collection[str], owner_token: str
) -> Decided:
    params: list[tuple[object, ...]] = []
    finished: list[str] = []
    succeeded = TaskStatus.SUCCEEDED
    retrying = TaskStatus.RETRYING
    for outcome in outcomes:
        status = outcome.status
        task_id = outcome.task_id
        if status is retrying:
            retry_at = outcome.retry_at
            retry_us = None if retry_at is None else to_us(retry_at)
            error, trace = outcome.error, outcome.traceback
            params.append((RETRYING, None, error, trace, None, retry_us, None, task_id, outcome.attempt))
            continue
        finished.append(task_id)
        result = result_json(outcome.result) if status is succeeded else None
        held = 1 if holding_keys and task_id in holding_keys else None
        error, trace = outcome.error, outcome.traceback
        params.append((status.value, result, error, trace, to_us(outcome.at), None, held, task_id, outcome.attempt))
    conn.executemany(RECORD_OUTCOME, params)
    if not finished:
        return NOTHING_DECIDED
    return decide_dependents(conn, finished, to_us(outcomes[-1].at), owner_token)


def result_json(value: object) -> str:
    """A result (already through the codec) as JSON text; the common scalars without the encoder."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    return _ENCODER.encode(value)


def release_keys(conn: sqlite3.Connection, task_ids: Collection[str]) -> None:
    conn.execute(
        "UPDATE tasks SET key_held = NULL WHERE id IN (SELECT value FROM json_each(?)) AND key_held = 1",
        (json.dumps(list(task_ids)),),
    )


def cancel_task(conn: sqlite3.Connection, task_id: str, now_us: int, owner_token: str) -> tuple[bool | None, Decided]:
    changed = conn.execute(
        f"UPDATE tasks SET status = '{CANCELLED}', finished_at = ?, waits_for = NULL, retry_at = NULL "
        f"WHERE id = ? AND {CLAIMABLE}",
        (now_us, task_id),
    ).rowcount
    if changed:
        return True, decide_dependents(conn, [task_id], now_us, owner_token)
    exists = conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return (False if exists else None), NOTHING_DECIDED


def fail_tasks(conn: sqlite3.Connection, where: str, params: Sequence[object], error: str, now_us: int) -> list[Ended]:
    """End the tasks ``where`` selects ``failed`` with ``error`` (a stop, a crash), without deciding dependents.

    A record the database refuses to change (a constraint, a trigger) is left as it was, alone.
    """
    update = (
        f"UPDATE tasks SET status = '{FAILED}', error = ?, traceback = NULL, finished_at = ?, retry_at = NULL, "
        "key_held = NULL WHERE {where} RETURNING id, name, attempts"
    )
    try:
        rows = conn.execute(update.format(where=where), (error, now_us, *params)).fetchall()
    except (sqlite3.IntegrityError, sqlite3.DataError):
        rows = []
        for (task_id,) in conn.execute(f"SELECT id FROM tasks WHERE {where}", tuple(params)).fetchall():
            try:
                rows += conn.execute(update.format(where="id = ?"), (error, now_us, task_id)).fetchall()
            except (sqlite3.IntegrityError, sqlite3.DataError):
                log.error("taskservice: the SQLite store refused to end task %s (%s)", task_id, error)
    return [Ended(task_id, name, attempts, error) for task_id, name, attempts in rows]


def decide_dependents(conn: sqlite3.Connection, ended_ids: Sequence[str], now_us: int, owner_token: str) -> Decided:
    """The tasks waiting on ``ended_ids`` (and, down the chain, on those): released or failed.

    Reads each dependency's status as stored, so an outcome that did not apply (a stale attempt)
    decides nothing. One indexed look-up when nothing waits, which is the usual case.
    """
    ready: list[TaskCall] = []
    ended: list[Ended] = []
    frontier = list(ended_ids)
    while frontier:
        rows = conn.execute(
            f"SELECT waiting.id, waiting.name, waiting.waits_for, dependency.status FROM tasks AS waiting "
            f"LEFT JOIN tasks AS dependency ON dependency.id = waiting.waits_for "
            f"WHERE waiting.waits_for IN (SELECT value FROM json_each(?)) AND waiting.{WAITING}",
            (json.dumps(frontier),),
        ).fetchall()
        frontier = []
        released: list[str] = []
        for task_id, name, dependency_id, status in rows:
            if status == SUCCEEDED:
                released.append(task_id)
            elif status in (FAILED, CANCELLED) or status is None:
                error = dependency_error(dependency_id, status or MISSING)
                conn.execute(
                    f"UPDATE tasks SET status = '{FAILED}', error = ?, finished_at = ?, waits_for = NULL WHERE id = ?",
                    (error, now_us, task_id),
                )
                ended.append(Ended(task_id, name, 0, error))
                frontier.append(task_id)
        if released:
            calls = conn.execute(
                f"UPDATE tasks SET waits_for = NULL, owner = ? WHERE id IN (SELECT value FROM json_each(?)) "
                f"RETURNING {CALL_COLUMNS}",
                (owner_token, json.dumps(released)),
            ).fetchall()
            ready += [call_from_row(row) for row in calls]
    return Decided(ready, ended) if ready or ended else NOTHING_DECIDED


def stranded_waiters(conn: sqlite3.Connection) -> list[str]:
    """Dependencies whose waiting tasks were never decided (they ended, or vanished, outside a transition)."""
    rows = conn.execute(
        f"SELECT DISTINCT waiting.waits_for FROM tasks AS waiting "
        f"LEFT JOIN tasks AS dependency ON dependency.id = waiting.waits_for "
        f"WHERE waiting.waits_for IS NOT NULL AND waiting.{WAITING} "
        f"AND (dependency.id IS NULL OR dependency.{FINAL})"
    ).fetchall()
    return [dependency_id for (dependency_id,) in rows]
