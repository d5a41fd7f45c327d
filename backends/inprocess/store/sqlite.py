"""``SQLiteTaskStore``: task records in one SQLite file, shared by the processes of one machine.

Durability: WAL with ``synchronous=NORMAL``, so a record is on disk (against a process crash)
once the statement that wrote it returns; ``insert`` commits before ``enqueue`` returns.
Sharing: every record names the run that owns it (``runs`` table: token, pid, start time,
heartbeat). A run that is gone leaves its tasks to the next run that looks (at start and at
every heartbeat): ``running``/``retrying`` ones end ``failed`` (interrupted), ``pending`` and
``scheduled`` ones are adopted and still run. Every transition is one conditional UPDATE,
so two processes never both claim a task, and a periodic slot is claimed through a primary key.

One connection per store, guarded by a lock; SQLite's own lock (``busy_timeout``) orders the
processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.inprocess.process_identity import RunOwner, owner_is_alive
from backends.inprocess.store.base import INTERRUPTED_BY_CRASH, INTERRUPTED_BY_STOP, Ended
from backends.inprocess.store.sqlite_schema import (
    ACTIVE,
    ADDED_COLUMNS,
    ADOPTABLE,
    CALL_COLUMNS,
    CLAIMABLE,
    INSERT,
    INTERRUPTIBLE,
    NOT_SUCCEEDED,
    SCHEMA,
    SNAPSHOT_COLUMNS,
    call_from_row,
    insert_params,
    snapshot_from_row,
    to_us,
)
from taskservice.attempts import Outcome
from taskservice.errors import BackendUnavailable, ServiceStopped, TaskConflict
from taskservice.models import TaskResult, TaskStatus
from taskservice.service import TaskCall, TaskQuery

FAILED = TaskStatus.FAILED.value
RUNNING = TaskStatus.RUNNING.value
CANCELLED = TaskStatus.CANCELLED.value
_PRUNE_CHUNK = 2000


class SQLiteTaskStore:
    """Records in a SQLite file: they survive restarts and are shared by the processes using the file."""

    keeps_tasks_across_restarts = True

    def __init__(self, path: str, *, stale_after_s: float = 60.0, busy_timeout_s: float = 5.0) -> None:
        if sqlite3.sqlite_version_info < (3, 35):
            raise BackendUnavailable(
                f"the sqlite:// store needs SQLite >= 3.35, this Python has {sqlite3.sqlite_version}"
            )
        # Resolved once: a later chdir of the process must not move the store (a relative PATH is
        # relative to the working directory the service was created in).
        self.path = os.path.abspath(path)
        self.stale_after_s = stale_after_s  # a run whose heartbeat is this old counts as dead
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._owner: RunOwner | None = None
        self._ended: list[Ended] = []  # tasks of dead runs this store failed, not yet reported

    # -- runs ---------------------------------------------------------------------------

    def begin_run(self, owner: RunOwner) -> list[TaskCall]:
        self._owner = owner
        with self._transaction() as conn:
            self._register(conn, owner)
            return self._recover(conn, owner, look_for_orphans=True)

    def heartbeat(self) -> list[TaskCall]:
        owner = self._require_owner()
        with self._transaction() as conn:
            updated = conn.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE token = ?", (to_us(datetime.now(UTC)), owner.token)
            ).rowcount
            if not updated:  # a sibling took this run for dead (a long pause): say it is alive again
                self._register(conn, owner)
            return self._recover(conn, owner, look_for_orphans=False)

    def end_run(self, now: datetime) -> list[Ended]:
        owner = self._owner
        if owner is None:
            return []
        with self._transaction() as conn:
            rows = conn.execute(
                f"UPDATE tasks SET status = '{FAILED}', error = ?, traceback = NULL, finished_at = ? "
                f"WHERE {NOT_SUCCEEDED} AND {INTERRUPTIBLE} AND owner = ? RETURNING id, name, attempts",
                (INTERRUPTED_BY_STOP, to_us(now), owner.token),
            ).fetchall()
            # Its pending and scheduled tasks stay. The run's heartbeat is set to "long ago", so the
            # next heartbeat of a sibling, or the next run's start, adopts them.
            conn.execute("UPDATE runs SET heartbeat_at = 0 WHERE token = ?", (owner.token,))
        self._owner = None
        return [Ended(task_id, name, attempts, INTERRUPTED_BY_STOP) for task_id, name, attempts in rows]

    def take_ended(self) -> list[Ended]:
        with self._lock:
            ended, self._ended = self._ended, []
        return ended

    def _register(self, conn: sqlite3.Connection, owner: RunOwner) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO runs (token, pid, host, process_start, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
            (owner.token, owner.pid, owner.host, owner.process_start, to_us(datetime.now(UTC))),
        )

    def _recover(self, conn: sqlite3.Connection, owner: RunOwner, look_for_orphans: bool) -> list[TaskCall]:
        """In a transaction: settle the tasks of runs that are gone; return the calls adopted.

        A heartbeat reads only the small ``runs`` table; a start also looks for tasks whose run is
        not registered at all (which costs a scan of the active tasks).
        """
        now_us = to_us(datetime.now(UTC))
        registered: set[str] = {owner.token}
        gone: list[str] = []
        for token, pid, host, started, heartbeat_at in conn.execute(
            "SELECT token, pid, host, process_start, heartbeat_at FROM runs WHERE token <> ?", (owner.token,)
        ).fetchall():
            registered.add(token)
            age_s = (now_us - heartbeat_at) / 1e6
            if not owner_is_alive(
                pid=pid, host=host, started=started, heartbeat_age_s=age_s, stale_after_s=self.stale_after_s
            ):
                gone.append(token)
        if look_for_orphans:
            owners = conn.execute(f"SELECT DISTINCT owner FROM tasks WHERE {NOT_SUCCEEDED} AND {ACTIVE}").fetchall()
            gone += [token for (token,) in owners if token not in registered]
        adopted: list[TaskCall] = []
        for token in gone:
            ended = conn.execute(
                f"UPDATE tasks SET status = '{FAILED}', error = ?, traceback = NULL, finished_at = ? "
                f"WHERE {NOT_SUCCEEDED} AND {INTERRUPTIBLE} AND owner = ? RETURNING id, name, attempts",
                (INTERRUPTED_BY_CRASH, now_us, token),
            ).fetchall()
            self._ended += [Ended(task_id, name, attempts, INTERRUPTED_BY_CRASH) for task_id, name, attempts in ended]
            rows = conn.execute(
                f"UPDATE tasks SET owner = ? WHERE {NOT_SUCCEEDED} AND {ADOPTABLE} "
                f"AND owner = ? RETURNING {CALL_COLUMNS}",
                (owner.token, token),
            ).fetchall()
            adopted.extend(call_from_row(row) for row in rows)
            conn.execute("DELETE FROM runs WHERE token = ?", (token,))
        adopted.sort(key=lambda call: call.enqueued_at)
        return adopted

    # -- tasks --------------------------------------------------------------------------

    def insert(self, call: TaskCall) -> None:
        owner = self._require_owner()
        with self._using() as conn:
            try:
                conn.execute(INSERT, insert_params(call, owner.token))
            except sqlite3.IntegrityError as exc:
                key = call.options.unique_key
                if key is None or "unique_key" not in str(exc):
                    raise
                holder = conn.execute(f"SELECT id FROM tasks WHERE unique_key = ? AND {ACTIVE}", (key,)).fetchone()
                raise TaskConflict(key, holder[0] if holder else None) from None

    def get(self, task_id: str) -> TaskResult | None:
        with self._using() as conn:
            row = conn.execute(f"SELECT {SNAPSHOT_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else snapshot_from_row(row)

    def list_tasks(self, query: TaskQuery) -> list[TaskResult]:
        conditions: list[str] = []
        params: list[Any] = []
        if query.status is TaskStatus.SUCCEEDED:
            conditions.append(f"status = '{TaskStatus.SUCCEEDED.value}'")
        elif query.status is not None:
            conditions += ["status = ?", NOT_SUCCEEDED]  # NOT_SUCCEEDED: the partial index applies
            params.append(query.status.value)
        if query.name is not None:
            conditions.append("name = ?")
            params.append(query.name)
        if query.enqueued_after is not None:
            conditions.append("enqueued_at >= ?")
            params.append(to_us(query.enqueued_after))
        if query.enqueued_before is not None:
            conditions.append("enqueued_at < ?")
            params.append(to_us(query.enqueued_before))
        if query.cursor is not None:
            conditions.append("(enqueued_at, id) < (?, ?)")
            params += [to_us(query.cursor[0]), query.cursor[1]]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {SNAPSHOT_COLUMNS} FROM tasks {where} ORDER BY enqueued_at DESC, id DESC LIMIT ?"
        with self._using() as conn:
            rows = conn.execute(sql, (*params, query.limit)).fetchall()
        return [snapshot_from_row(row) for row in rows]

    def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        with self._using() as conn:
            row = conn.execute(f"SELECT status, {CALL_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else (TaskStatus(row[0]), call_from_row(row[1:]))

    def link_retry(self, original_id: str, retry_id: str) -> None:
        with self._using() as conn:
            conn.execute(
                "UPDATE tasks SET retried_as = json_insert(coalesce(retried_as, '[]'), '$[#]', ?) WHERE id = ?",
                (retry_id, original_id),
            )

    def claim(self, task_ids: Sequence[str], now: datetime) -> dict[str, int]:
        owner = self._require_owner()
        with self._using() as conn:
            rows = conn.execute(
                f"UPDATE tasks SET status = '{RUNNING}', attempts = attempts + 1, started_at = ?, owner = ?, "
                f"progress = NULL, progress_message = NULL "
                f"WHERE id IN (SELECT value FROM json_each(?)) AND {CLAIMABLE} RETURNING id, attempts",
                (to_us(now), owner.token, json.dumps(list(task_ids))),
            ).fetchall()
        return dict(rows)

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        params = [
            (
                outcome.status.value,
                None if outcome.status is not TaskStatus.SUCCEEDED else json.dumps(outcome.result),
                outcome.error,
                outcome.traceback,
                None if outcome.status is TaskStatus.RETRYING else to_us(outcome.at),
                outcome.task_id,
                outcome.attempt,
            )
            for outcome in outcomes
        ]
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE tasks SET status = ?, result = ?, error = ?, traceback = ?, finished_at = ? "
                f"WHERE id = ? AND attempts = ? AND status = '{RUNNING}'",
                params,
            )

    def report_progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None:
        with self._using() as conn:
            conn.execute(
                "UPDATE tasks SET progress = ?, progress_message = ? "
                f"WHERE id = ? AND attempts = ? AND status = '{RUNNING}'",
                (percent, message, task_id, attempt),
            )

    def cancel(self, task_id: str, now: datetime) -> bool | None:
        with self._using() as conn:
            changed = conn.execute(
                f"UPDATE tasks SET status = '{CANCELLED}', finished_at = ? WHERE id = ? AND {CLAIMABLE}",
                (to_us(now), task_id),
            ).rowcount
            if changed:
                return True
            return False if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() else None

    def abandon(self, task_id: str, now: datetime) -> None:
        """Nothing to do: once this run has ended, its pending tasks are adopted by the next run."""

    def claim_periodic_slot(self, call: TaskCall, slot: datetime) -> bool:
        owner = self._require_owner()
        with self._transaction() as conn:
            firing = conn.execute(
                "INSERT OR IGNORE INTO periodic_firings (name, slot, task_id) VALUES (?, ?, ?)",
                (call.task.name, to_us(slot), call.id),
            )
            if not firing.rowcount:
                return False
            conn.execute(INSERT, insert_params(call, owner.token))
        return True

    def prune(self, finished_before: datetime) -> int:
        cutoff = to_us(finished_before)
        pruned = 0
        while True:  # in chunks, so other threads and processes get the lock in between
            with self._using() as conn:
                deleted = conn.execute(
                    "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE finished_at < ? LIMIT ?)",
                    (cutoff, _PRUNE_CHUNK),
                ).rowcount
            pruned += deleted
            if deleted < _PRUNE_CHUNK:
                break
        with self._using() as conn:
            conn.execute("DELETE FROM periodic_firings WHERE slot < ?", (cutoff,))
        return pruned

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- plumbing -----------------------------------------------------------------------

    def _require_owner(self) -> RunOwner:
        if self._owner is None:  # never begun, or ended by a stop that this call raced
            raise ServiceStopped("the task service is stopped: start it again to enqueue")
        return self._owner

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a failing database becomes ``BackendUnavailable``."""
        with self._lock:
            try:
                yield self._connect()
            except sqlite3.IntegrityError:
                raise
            except (sqlite3.Error, OSError) as exc:
                # The message reaches callers (a 503's detail): it names the setting, not the server's path.
                raise BackendUnavailable(
                    f"the SQLite task store cannot be used: {exc} (check TASK_STORE_URL, that the file and "
                    "its directory are writable, and free disk space)"
                ) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._using() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable against a process crash
                # A checkpoint (with its fsyncs) runs inside whichever commit crosses this many WAL
                # pages: rarer checkpoints copy hot pages (index tails) fewer times. 4000 pages = 16 MB.
                conn.execute("PRAGMA wal_autocheckpoint = 4000")
                conn.execute("PRAGMA journal_size_limit = 67108864")  # the WAL file shrinks back after checkpoints
                conn.execute("PRAGMA cache_size = -16384")  # 16 MB of pages, per process
                conn.execute("BEGIN IMMEDIATE")  # one process creates or upgrades it, the others wait
                try:
                    existing = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
                    for column, kind in ADDED_COLUMNS.items():
                        if existing and column not in existing:  # a file from an older taskservice
                            conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
            self._connection = conn
        return self._connection
