"""Runs in the SQLite store: who owns which task, and what a run that stopped or died leaves behind.

Every record names the run that owns it (``runs``: token, pid, process start, host, heartbeat). A
run that is gone leaves its tasks to the next run that looks (at its start and at every
heartbeat): ``running`` ones end ``failed`` (interrupted), ``pending``, ``scheduled`` and
``retrying`` ones are adopted and still run (a retry at its ``retry_at``), tasks waiting on
``after=`` keep waiting under their new owner. Bodies run inside the caller's transaction and
return what they decided.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from backends.inprocess.process_identity import RunOwner, owner_is_alive
from backends.inprocess.store.base import INTERRUPTED_BY_CRASH, INTERRUPTED_BY_STOP, Adopted, Ended
from backends.inprocess.store.sqlite_schema import (
    ACTIVE,
    ADOPTABLE,
    CALL_COLUMNS,
    INTERRUPTIBLE,
    NOT_SUCCEEDED,
    call_from_row,
    from_us,
    to_us,
)
from backends.inprocess.store.sqlite_transitions import decide_dependents, fail_tasks, stranded_waiters
from taskservice.models import TaskStatus

RETRYING = TaskStatus.RETRYING.value


def register(conn: sqlite3.Connection, owner: RunOwner) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO runs (token, pid, host, process_start, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        (owner.token, owner.pid, owner.host, owner.process_start, to_us(datetime.now(UTC))),
    )


def end_run(conn: sqlite3.Connection, owner: RunOwner, now: datetime) -> list[Ended]:
    """This run stops: its running tasks end interrupted; everything else stays for the next run."""
    now_us = to_us(now)
    ended = fail_tasks(
        conn, f"{NOT_SUCCEEDED} AND {INTERRUPTIBLE} AND owner = ?", (owner.token,), INTERRUPTED_BY_STOP, now_us
    )
    decided = decide_dependents(conn, [task.task_id for task in ended], now_us, owner.token)
    # The tasks it released stay pending. The run's heartbeat is set to "long ago", so the next
    # heartbeat of a sibling, or the next run's start, adopts them with the pending, scheduled and
    # retrying ones. Keys held for timed-out threads are released: this run's threads are abandoned.
    conn.execute("UPDATE tasks SET key_held = NULL WHERE owner = ? AND key_held = 1", (owner.token,))
    conn.execute("UPDATE runs SET heartbeat_at = 0 WHERE token = ?", (owner.token,))
    return ended + decided.ended


def recover(
    conn: sqlite3.Connection, owner: RunOwner, stale_after_s: float, look_for_orphans: bool
) -> tuple[list[Adopted], list[Ended]]:
    """Settle the tasks of runs that are gone: what this run adopts, and what ended.

    A heartbeat reads only the small ``runs`` table; a start also looks for tasks whose run is not
    registered at all (which costs a scan of the active tasks), and for tasks still waiting on a
    dependency that ended without deciding them.
    """
    now_us = to_us(datetime.now(UTC))
    registered: set[str] = {owner.token}
    gone: list[str] = []
    for token, pid, host, started, heartbeat_at in conn.execute(
        "SELECT token, pid, host, process_start, heartbeat_at FROM runs WHERE token <> ?", (owner.token,)
    ).fetchall():
        registered.add(token)
        age_s = (now_us - heartbeat_at) / 1e6
        if not owner_is_alive(pid=pid, host=host, started=started, heartbeat_age_s=age_s, stale_after_s=stale_after_s):
            gone.append(token)
    if look_for_orphans:
        owners = conn.execute(f"SELECT DISTINCT owner FROM tasks WHERE {NOT_SUCCEEDED} AND {ACTIVE}").fetchall()
        gone += [token for (token,) in owners if token not in registered]
    adopted: list[Adopted] = []
    ended: list[Ended] = []
    for token in gone:
        crashed = fail_tasks(
            conn, f"{NOT_SUCCEEDED} AND {INTERRUPTIBLE} AND owner = ?", (token,), INTERRUPTED_BY_CRASH, now_us
        )
        ended += crashed
        ended += decide_dependents(conn, [task.task_id for task in crashed], now_us, owner.token).ended
        conn.execute("UPDATE tasks SET key_held = NULL WHERE owner = ? AND key_held = 1", (token,))
        rows = conn.execute(
            f"UPDATE tasks SET owner = ? WHERE {NOT_SUCCEEDED} AND {ADOPTABLE} AND owner = ? "
            f"RETURNING status, retry_at, waits_for, {CALL_COLUMNS}",
            (owner.token, token),
        ).fetchall()
        adopted += [_adopted(row) for row in rows]
        conn.execute("DELETE FROM runs WHERE token = ?", (token,))
    if look_for_orphans:
        decided = decide_dependents(conn, stranded_waiters(conn), now_us, owner.token)
        adopted += [Adopted(call, call.run_at) for call in decided.ready]
        ended += decided.ended
    adopted.sort(key=lambda task: task.call.enqueued_at)
    return adopted, ended


def _adopted(row: tuple[object, ...]) -> Adopted:
    status, retry_at, waits_for = row[:3]
    call = call_from_row(row[3:])
    due_at = from_us(retry_at) if status == RETRYING and isinstance(retry_at, int) else call.run_at
    if status == RETRYING and due_at is None:
        due_at = datetime.now(UTC)  # a file from before retry_at: retry now
    return Adopted(call, due_at, waits=waits_for is not None)
