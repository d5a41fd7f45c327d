"""Task records held in memory, with every status transition: the state machine that the in-process
``memory://`` store and ``FakeTaskService`` share, so neither can drift from the other.

The SQLite store and the Celery backend's Lua scripts implement the same transitions atomically in
their own stores, from the same status sets (``taskservice.models``):

- ``insert``: a new record, ``pending`` or ``scheduled``; ``TaskConflict`` while its unique_key is held
- ``claim``: claimable (``pending``/``scheduled``/``retrying``) -> ``running``, attempts + 1
- ``record``: ``running`` -> ``succeeded``/``failed``/``retrying``, only for the current attempt
- ``cancel``: claimable -> ``cancelled``; ``finish``: any active status -> a final one, freeing the key

``MemoryRecords`` does no locking: its owner holds its own lock around every call.
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

from taskservice.attempts import Outcome
from taskservice.errors import TaskConflict
from taskservice.models import CLAIMABLE_STATUSES, TaskResult, TaskStatus
from taskservice.service import TaskCall, TaskQuery


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
        self.active_keys: dict[str, str] = {}  # unique_key -> id of the active task holding it
        self.finished: collections.deque[tuple[datetime, str]] = collections.deque()

    def insert(self, call: TaskCall) -> MemoryRecord:
        key = call.options.unique_key
        if key is not None:
            holder = self.active_keys.get(key)
            if holder is not None:
                raise TaskConflict(key, holder)
            self.active_keys[key] = call.id
        record = MemoryRecord(call, call.initial_status)
        self.records[call.id] = record
        return record

    def get(self, task_id: str) -> MemoryRecord | None:
        return self.records.get(task_id)

    def claim(self, task_id: str, now: datetime) -> int | None:
        """The attempt number if the task may run now, else None (cancelled, finished, running)."""
        record = self.records.get(task_id)
        if record is None or record.status not in CLAIMABLE_STATUSES:
            return None
        record.status = TaskStatus.RUNNING
        record.attempts += 1
        record.started_at = now
        record.progress = record.progress_message = None
        return record.attempts

    def record(self, outcome: Outcome) -> MemoryRecord | None:
        """Apply an attempt's outcome if that attempt is still the current one; the record, or None."""
        record = self.records.get(outcome.task_id)
        if record is None or record.status is not TaskStatus.RUNNING or record.attempts != outcome.attempt:
            return None  # a later attempt, a stop or a recovery already decided this task
        if outcome.status is TaskStatus.RETRYING:
            record.status = TaskStatus.RETRYING
            record.error, record.traceback = outcome.error, outcome.traceback
        else:
            record.result = outcome.result
            self.finish(record, outcome.status, outcome.at, outcome.error, outcome.traceback)
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
        self, record: MemoryRecord, status: TaskStatus, at: datetime, error: str | None, traceback: str | None = None
    ) -> None:
        """End the task with a final status, free its key, queue it for pruning."""
        record.status = status
        record.finished_at = at
        record.error, record.traceback = error, traceback
        key = record.call.options.unique_key
        if key is not None and self.active_keys.get(key) == record.id:
            del self.active_keys[key]
        self.finished.append((at, record.id))

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
            self.records.pop(task_id, None)
            forgotten += 1
        return forgotten


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
