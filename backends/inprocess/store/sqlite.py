"""``SQLiteTaskStore``: task records in one SQLite file, shared by the processes of one machine.

Durability: WAL with ``synchronous=NORMAL``, so a record is on disk (against a process crash)
once the transaction that wrote it has committed; ``insert`` commits before ``enqueue`` returns,
and ``submit_insert`` (``aenqueue``) calls ``done`` only after its commit.
Sharing: every record names the run that owns it (``sqlite_runs``). Every transition is a
conditional UPDATE inside a transaction (``sqlite_transitions``), so two processes never both
claim a task, and a periodic slot is claimed through a primary key.

One connection per store, guarded by a lock: the sync API uses it from the caller's thread, the
writer thread (``sqlite_writer``) for what the event loop hands over. SQLite's own lock
(``busy_timeout``) orders the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.inprocess.process_identity import RunOwner
from backends.inprocess.store import sqlite_runs, sqlite_transitions
from backends.inprocess.store.base import Admission, Adopted, Decided, Done, Ended
from backends.inprocess.store.sqlite_schema import (
    ACTIVE,
    ADDED_COLUMNS,
    CALL_COLUMNS,
    NOT_SUCCEEDED,
    SCHEMA,
    SNAPSHOT_COLUMNS,
    call_from_row,
    from_us,
    snapshot_from_row,
    to_us,
)
from backends.inprocess.store.sqlite_writer import SQLiteWriter, Work
from taskservice.attempts import Outcome
from taskservice.errors import BackendUnavailable, ServiceStopped
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.service import TaskCall, TaskQuery

log = logging.getLogger("taskservice")
_PRUNE_CHUNK = 2000
PENDING = TaskStatus.PENDING.value
SUCCEEDED = TaskStatus.SUCCEEDED.value


def store_error(exc: BaseException) -> BaseException:
    """``BackendUnavailable`` for a database that cannot be used; a write this one record spoils stays as it is.

    OperationalError (locked, disk I/O, full, unreadable) and a corrupt file are the store's
    trouble; IntegrityError (a constraint, a trigger's RAISE), DataError (too big), binding and
    encoding errors belong to the record being written.
    """
    unusable = isinstance(exc, (sqlite3.OperationalError, OSError)) or type(exc) is sqlite3.DatabaseError
    if not unusable:
        return exc
    # The message reaches callers (a 503's detail): it names the setting, not the server's path.
    error = BackendUnavailable(
        f"the SQLite task store cannot be used: {exc} (check TASK_STORE_URL, that the file and "
        "its directory are writable, and free disk space)"
    )
    error.__cause__ = exc
    return error


def _log_failure(result: object) -> None:
    if isinstance(result, BaseException):
        log.error("taskservice: the SQLite task store could not release unique keys: %s", result)


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
        self._ended: list[Ended] = []  # tasks this store ended by itself, not yet reported
        self._writer = SQLiteWriter(self)
        # aenqueue calls waiting for the writer, per event loop: (call, done) in arrival order
        self._inserts: dict[asyncio.AbstractEventLoop, list[tuple[TaskCall, Done[Admission | Ended]]]] = {}
        self._inserts_lock = threading.Lock()

    # -- runs ---------------------------------------------------------------------------

    def begin_run(self, owner: RunOwner) -> list[Adopted]:
        self._owner = owner
        with self._transaction() as conn:
            sqlite_runs.register(conn, owner)
            adopted, ended = sqlite_runs.recover(conn, owner, self.stale_after_s, look_for_orphans=True)
        self._note_ended(ended)
        return adopted

    def heartbeat(self) -> list[Adopted]:
        owner = self._require_owner()
        with self._transaction() as conn:
            updated = conn.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE token = ?", (to_us(datetime.now(UTC)), owner.token)
            ).rowcount
            if not updated:  # a sibling took this run for dead (a long pause): say it is alive again
                sqlite_runs.register(conn, owner)
            adopted, ended = sqlite_runs.recover(conn, owner, self.stale_after_s, look_for_orphans=False)
        self._note_ended(ended)
        return adopted

    def end_run(self, now: datetime) -> list[Ended]:
        owner = self._owner
        if owner is None:
            return []
        self._writer.close()  # what the loop handed over is committed first
        with self._transaction() as conn:
            ended = sqlite_runs.end_run(conn, owner, now)
        self._owner = None
        return ended

    def take_ended(self) -> list[Ended]:
        with self._lock:
            ended, self._ended = self._ended, []
        return ended

    # -- tasks --------------------------------------------------------------------------

    def insert(self, call: TaskCall) -> Admission | Ended:
        owner = self._require_owner()
        if call.options.after is None:  # the common case: one statement, committed on its own
            with self._using() as conn:
                return sqlite_transitions.insert_task(conn, call, owner.token)
        with self._transaction() as conn:
            return sqlite_transitions.insert_task(conn, call, owner.token)

    def get(self, task_id: str) -> TaskResult | None:
        with self._using() as conn:
            row = conn.execute(f"SELECT {SNAPSHOT_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else snapshot_from_row(row)

    def list_tasks(self, query: TaskQuery) -> list[TaskResult]:
        conditions: list[str] = []
        params: list[Any] = []
        if query.status is TaskStatus.SUCCEEDED:
            conditions.append(f"status = '{SUCCEEDED}'")
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

    def stats(self) -> TaskStats:
        """Counts by status: the unfinished ones from the status index, the succeeded ones by difference."""
        with self._using() as conn:
            rows = conn.execute(f"SELECT status, count(*) FROM tasks WHERE {NOT_SUCCEEDED} GROUP BY status").fetchall()
            (total,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
            (oldest,) = conn.execute(
                f"SELECT min(enqueued_at) FROM tasks WHERE status = '{PENDING}' AND {NOT_SUCCEEDED}"
            ).fetchone()
        counts = dict.fromkeys(TaskStatus, 0)
        for status, count in rows:
            counts[TaskStatus(status)] = count
        counts[TaskStatus.SUCCEEDED] = total - sum(counts.values())
        return TaskStats(counts=counts, oldest_pending_enqueued_at=from_us(oldest))

    def unfinished(self, task_ids: Collection[str]) -> set[str]:
        owner = self._owner
        if owner is None or not task_ids:
            return set()
        with self._using() as conn:
            rows = conn.execute(
                f"SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?)) AND {NOT_SUCCEEDED} "
                f"AND {ACTIVE} AND owner = ?",
                (json.dumps(list(task_ids)), owner.token),
            ).fetchall()
        return {task_id for (task_id,) in rows}

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
            return sqlite_transitions.claim_tasks(conn, task_ids, now, owner.token)

    def record_outcomes(self, outcomes: Sequence[Outcome], holding_keys: Collection[str] = ()) -> Decided:
        token = self._require_owner().token
        with self._transaction() as conn:
            return sqlite_transitions.record_outcomes(conn, outcomes, holding_keys, token)

    def release_keys(self, task_ids: Collection[str]) -> None:
        with self._using() as conn:
            sqlite_transitions.release_keys(conn, task_ids)

    def report_progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None:
        with self._using() as conn:
            conn.execute(
                "UPDATE tasks SET progress = ?, progress_message = ? "
                "WHERE id = ? AND attempts = ? AND status = 'running'",
                (percent, message, task_id, attempt),
            )

    def cancel(self, task_id: str, now: datetime) -> bool | None:
        owner = self._owner
        with self._transaction() as conn:
            cancelled, decided = sqlite_transitions.cancel_task(conn, task_id, to_us(now), owner.token if owner else "")
        self._note_ended(decided.ended)
        return cancelled

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
            sqlite_transitions.insert_task(conn, call, owner.token)
        return True

    def prune(self, finished_before: datetime) -> int:
        cutoff = to_us(finished_before)
        pruned = 0
        while True:  # in chunks, so other threads and processes get the lock in between
            with self._using() as conn:
                deleted = conn.execute(
                    "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE finished_at < ? "
                    "AND key_held IS NULL LIMIT ?)",
                    (cutoff, _PRUNE_CHUNK),
                ).rowcount
            pruned += deleted
            if deleted < _PRUNE_CHUNK:
                break
        with self._using() as conn:
            conn.execute("DELETE FROM periodic_firings WHERE slot < ?", (cutoff,))
        return pruned

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- for the runner and aenqueue: through the writer thread ------------------------------

    def submit_insert(self, call: TaskCall, loop: asyncio.AbstractEventLoop, done: Done[Admission | Ended]) -> None:
        """Inserts handed over from one loop before the writer reaches them go in one ``executemany``."""
        token = self._require_owner().token
        with self._inserts_lock:
            queued = self._inserts.get(loop)
            if queued is not None:
                queued.append((call, done))
                return
            queued = self._inserts[loop] = [(call, done)]

        def work(conn: sqlite3.Connection) -> list[Admission | Ended | BaseException]:
            with self._inserts_lock:  # from here on, new inserts start a new batch
                self._inserts.pop(loop, None)
            return sqlite_transitions.insert_tasks(conn, [call for call, _ in queued], token, store_error)

        def delivered(results: list[Admission | Ended | BaseException] | BaseException) -> None:
            for index, (_call, each_done) in enumerate(queued):
                each_done(results if isinstance(results, BaseException) else results[index])

        self._writer.submit(work, loop, delivered)

    def submit_claim(
        self, task_ids: Sequence[str], now: datetime, loop: asyncio.AbstractEventLoop, done: Done[dict[str, int]]
    ) -> None:
        token = self._require_owner().token
        self._writer.submit(lambda conn: sqlite_transitions.claim_tasks(conn, task_ids, now, token), loop, done)

    def submit_outcomes(
        self,
        outcomes: Sequence[Outcome],
        holding_keys: Collection[str],
        loop: asyncio.AbstractEventLoop,
        done: Done[Decided],
    ) -> None:
        token = self._require_owner().token
        self._writer.submit(
            lambda conn: sqlite_transitions.record_outcomes(conn, outcomes, holding_keys, token), loop, done
        )

    def submit_release_keys(self, task_ids: Collection[str], loop: asyncio.AbstractEventLoop) -> None:
        ids = list(task_ids)
        self._writer.submit(lambda conn: sqlite_transitions.release_keys(conn, ids), loop, _log_failure)

    def run_together(self, works: list[Work]) -> list[Any]:
        """For the writer: ``works`` in one transaction; one that raises is undone alone (savepoints)."""
        with self._lock:
            try:
                conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
            except Exception as exc:
                return [store_error(exc)] * len(works)
            try:
                results = [work(conn) for work in works]
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if len(works) == 1 or not isinstance(exc, Exception):
                    return [store_error(exc)] * len(works)
                return self._run_apart(conn, works)
            try:
                conn.execute("COMMIT")
            except Exception as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                return [store_error(exc)] * len(works)
            return results

    def _run_apart(self, conn: sqlite3.Connection, works: list[Work]) -> list[Any]:
        """Caller holds the lock: one transaction again, each write in its own savepoint."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            results: list[Any] = []
            for work in works:
                conn.execute("SAVEPOINT write")
                try:
                    results.append(work(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    results.append(store_error(exc))
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return [store_error(exc)] * len(works)
        return results

    # -- plumbing -----------------------------------------------------------------------

    def _note_ended(self, ended: list[Ended]) -> None:
        if ended:
            with self._lock:
                self._ended += ended

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
            except (sqlite3.Error, OSError) as exc:
                translated = store_error(exc)
                if translated is exc:
                    raise
                raise translated from exc

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
