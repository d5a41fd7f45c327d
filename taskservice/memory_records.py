"""Task records held in memory, with every status transition: the state machine that the in-process
``memory://`` store and ``FakeTaskService`` share, so neither can drift from the other.

The SQLite store and the Celery backend's Lua scripts implement the same transitions atomically in
their own stores, from the same status sets (``taskservice.models``):

- ``insert``: a new record, ``pending`` or ``scheduled``; ``TaskConflict`` while its unique_key is held.
  With ``after=`` (``TaskOptions.after``): ``TaskNotFound`` if no such task, else the record waits
  (``waits_for``) while that task is active, and is decided at once if it has already ended
- ``claim``: claimable (``pending``/``scheduled``/``retrying``) and not waiting -> ``running``, attempts + 1
- ``record``: ``running`` -> ``succeeded``/``failed``/``retrying``, only for the current attempt
- ``cancel``: claimable -> ``cancelled``; ``finish``: any active status -> a final one, freeing the key
  (unless ``hold_key``: then ``release_key`` frees it later)

Every ``finish`` decides the records waiting on the one that ended, in the same step: if it
succeeded they may run (their ``waits_for`` is cleared), otherwise they end ``failed`` with
``attempts.dependency_error`` (and so do the ones waiting on them). The owner collects those
decisions with ``take_decided()`` after each call and acts on them (start the ready ones; log and
hook the failed ones with ``attempts.interrupted``).

``counts`` and ``oldest_pending()`` answer ``stats()`` without a scan. ``MemoryRecords`` does no
locking: its owner holds its own lock around every call.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import json
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from taskservice.attempts import Outcome, dependency_error
from taskservice.errors import TaskConflict, TaskNotFound
from taskservice.models import CLAIMABLE_STATUSES, TaskResult, TaskStatus
from taskservice.service import TaskCall, TaskQuery

_WAITING_STATUSES = (TaskStatus.PENDING, TaskStatus.SCHEDULED)  # where a task waits for its dependency


@dataclasses.dataclass(slots=True, eq=False)
class MemoryRecord:
    call: TaskCall
    status: TaskStatus
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    retried_as: list[str] = dataclasses.field(default_factory=list)
    waits_for: str | None = None  # the task this one waits for (``after=``) until that one ends

    @property
    def id(self) -> str:
        return self.call.id

    def copy(self) -> MemoryRecord:
        """A copy to snapshot outside the owner's lock."""
        return dataclasses.replace(self, retried_as=list(self.retried_as))

    def snapshot(self) -> TaskResult:
        """A ``TaskResult`` that shares no mutable state with the record (arguments decoded afresh)."""
        result = self.result
        if isinstance(result, (list, dict)):
            result = json.loads(json.dumps(result))
        call = self.call
        args, kwargs = call.arguments.decoded_copy()
        return TaskResult(
            id=call.id,
            name=call.task.name,
            status=self.status,
            result=result,
            error=self.error,
            traceback=self.traceback,
            progress=self.progress,
            progress_message=self.progress_message,
            attempts=self.attempts,
            enqueued_at=call.enqueued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            run_at=call.run_at,
            args=args,
            kwargs=kwargs,
            retry_of=call.retry_of,
            retried_as=list(self.retried_as),
        )


class MemoryRecords:
    """Records by id in enqueue order, the unique_keys held, and finished ids in finishing order."""

    def __init__(self) -> None:
        self.records: dict[str, MemoryRecord] = {}
        self.active_keys: dict[str, str] = {}  # unique_key -> id of the task holding it
        self.finished: collections.deque[tuple[datetime, str]] = collections.deque()
        self.counts: dict[TaskStatus, int] = dict.fromkeys(TaskStatus, 0)  # records in each status
        self.active_count = 0  # records pending, scheduled, running or retrying (none ever becomes active again)
        self._pending: dict[str, None] = {}  # ids of pending records, oldest first
        self._dependents: dict[str, list[str]] = {}  # task id -> ids of the records waiting on it
        self._decided_ready: list[MemoryRecord] = []
        self._decided_failed: list[MemoryRecord] = []

    def oldest_pending(self) -> datetime | None:
        """When the oldest pending record was enqueued."""
        for task_id in self._pending:
            return self.records[task_id].call.enqueued_at
        return None

    def insert(self, call: TaskCall) -> MemoryRecord:
        """A new record; ``TaskNotFound`` for an unknown ``after``, ``TaskConflict`` for a held key."""
        after = call.options.after
        dependency = None
        if after is not None:
            dependency = self.records.get(after)
            if dependency is None:
                raise TaskNotFound(after)
        key = call.options.unique_key
        if key is not None:
            holder = self.active_keys.get(key)
            if holder is not None:
                raise TaskConflict(key, holder)
            self.active_keys[key] = call.id
        status = TaskStatus.SCHEDULED if call.run_at is not None else TaskStatus.PENDING
        record = MemoryRecord(call, status)
        self.records[call.id] = record
        self.counts[status] += 1
        self.active_count += 1
        if status is TaskStatus.PENDING:
            self._pending[call.id] = None
        if dependency is not None:
            record.waits_for = dependency.id
            if dependency.status.is_final:
                self._decide(record, dependency, dependency.finished_at or call.enqueued_at)
            else:
                self._dependents.setdefault(dependency.id, []).append(record.id)
        return record

    def get(self, task_id: str) -> MemoryRecord | None:
        return self.records.get(task_id)

    def claim(self, task_id: str, now: datetime) -> int | None:
        """The attempt number if the task may run now, else None (cancelled, finished, running, waiting)."""
        record = self.records.get(task_id)
        if record is None or record.waits_for is not None:
            return None
        old = record.status
        if old is TaskStatus.PENDING:  # the common case, inline: this runs once per task
            del self._pending[task_id]
        elif old not in CLAIMABLE_STATUSES:
            return None
        counts = self.counts
        counts[old] -= 1
        counts[TaskStatus.RUNNING] += 1
        record.status = TaskStatus.RUNNING
        record.attempts += 1
        record.started_at = now
        record.progress = record.progress_message = None
        return record.attempts

    def record(self, outcome: Outcome, *, hold_key: bool = False) -> MemoryRecord | None:
        """Apply an attempt's outcome if that attempt is still the current one; the record, or None."""
        record = self.records.get(outcome.task_id)
        if record is None or record.status is not TaskStatus.RUNNING or record.attempts != outcome.attempt:
            return None  # a later attempt, a stop or a recovery already decided this task
        if outcome.status is TaskStatus.RETRYING:
            self._move(record, TaskStatus.RETRYING)
            record.error, record.traceback = outcome.error, outcome.traceback
        else:
            record.result = outcome.result
            self.finish(record, outcome.status, outcome.at, outcome.error, outcome.traceback, hold_key=hold_key)
        return record

    def report_progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None:
        record = self.records.get(task_id)
        if record is not None and record.status is TaskStatus.RUNNING and record.attempts == attempt:
            record.progress, record.progress_message = percent, message

    def cancel(self, task_id: str, now: datetime) -> bool | None:
        record = self.records.get(task_id)
        if record is None:
            return None
        if record.status not in CLAIMABLE_STATUSES:
            return False
        self.finish(record, TaskStatus.CANCELLED, now, None)
        return True

    def finish(
        self,
        record: MemoryRecord,
        status: TaskStatus,
        at: datetime,
        error: str | None,
        traceback: str | None = None,
        *,
        hold_key: bool = False,
    ) -> None:
        """End the task with a final status, free its key (unless ``hold_key``), decide its dependents."""
        self._move(record, status)
        self.active_count -= 1
        record.finished_at = at
        record.error, record.traceback = error, traceback
        record.waits_for = None
        key = record.call.options.unique_key
        if key is not None and not hold_key and self.active_keys.get(key) == record.id:
            del self.active_keys[key]
        self.finished.append((at, record.id))
        if self._dependents:
            for dependent_id in self._dependents.pop(record.id, ()):
                dependent = self.records.get(dependent_id)
                if dependent is not None and dependent.waits_for == record.id:
                    self._decide(dependent, record, at)

    def release_key(self, task_id: str) -> None:
        """The key a finished task kept (``finish(hold_key=True)``) is free again."""
        record = self.records.get(task_id)
        key = record.call.options.unique_key if record is not None else None
        if record is not None and key is not None and record.status.is_final and self.active_keys.get(key) == task_id:
            del self.active_keys[key]

    def take_decided(self) -> tuple[list[MemoryRecord], list[MemoryRecord]]:
        """Records decided since the last call: (may run now, ended failed because their dependency did)."""
        ready, failed = self._decided_ready, self._decided_failed
        if ready or failed:
            self._decided_ready, self._decided_failed = [], []
        return ready, failed

    def link_retry(self, original_id: str, retry_id: str) -> None:
        record = self.records.get(original_id)
        if record is not None and retry_id not in record.retried_as:
            record.retried_as.append(retry_id)

    def matching(self, query: TaskQuery) -> list[MemoryRecord]:
        """Up to ``query.limit`` records that match, newest first by ``(enqueued_at, id)``."""
        return heapq.nlargest(
            query.limit,
            (r for r in self.records.values() if _may_match(r, query)),
            key=lambda r: (r.call.enqueued_at, r.id),
        )

    def forget_finished(self, expired: Callable[[datetime], bool], limit: int) -> int:
        """Forget up to ``limit`` of the earliest finished records that are ``expired``."""
        forgotten = 0
        while forgotten < limit and self.finished and expired(self.finished[0][0]):
            _, task_id = self.finished.popleft()
            record = self.records.pop(task_id, None)
            if record is not None:
                self.counts[record.status] -= 1
                key = record.call.options.unique_key
                if key is not None and self.active_keys.get(key) == task_id:
                    del self.active_keys[key]  # a key still held by a forgotten record would never free
            forgotten += 1
        return forgotten

    # -- internals ----------------------------------------------------------------------------

    def _decide(self, dependent: MemoryRecord, dependency: MemoryRecord, at: datetime) -> None:
        """``dependency`` has ended: ``dependent`` may run, or it ends failed without running."""
        if dependent.status not in _WAITING_STATUSES:
            return
        if dependency.status is TaskStatus.SUCCEEDED:
            dependent.waits_for = None
            self._decided_ready.append(dependent)
        else:
            self._decided_failed.append(dependent)
            self.finish(dependent, TaskStatus.FAILED, at, dependency_error(dependency.id, dependency.status.value))

    def _move(self, record: MemoryRecord, status: TaskStatus) -> None:
        counts = self.counts
        old = record.status
        counts[old] -= 1
        counts[status] += 1
        if old is TaskStatus.PENDING:
            del self._pending[record.call.id]
        record.status = status


def _may_match(record: MemoryRecord, query: TaskQuery) -> bool:
    call = record.call
    if query.status is not None and record.status is not query.status:
        return False
    if query.name is not None and call.task.name != query.name:
        return False
    if query.enqueued_after is not None and call.enqueued_at < query.enqueued_after:
        return False
    if query.enqueued_before is not None and call.enqueued_at >= query.enqueued_before:
        return False
    return query.cursor is None or (call.enqueued_at, call.id) < query.cursor


class MemoryRecordReads:
    """The reading verbs of a ``TaskService`` whose records are a ``MemoryRecords`` under ``_lock``."""

    _lock: threading.RLock
    _records: MemoryRecords

    def _read(self, task_id: str) -> TaskResult | None:
        with self._lock:
            record = self._records.get(task_id)
            return None if record is None else record.snapshot()

    def _list(self, query: TaskQuery) -> list[TaskResult]:
        with self._lock:
            return [record.snapshot() for record in self._records.matching(query)]

    def _retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        with self._lock:
            record = self._records.get(task_id)
            return None if record is None else (record.status, record.call)

    def _link_retry(self, original_id: str, retry_id: str) -> None:
        with self._lock:
            self._records.link_retry(original_id, retry_id)
