"""``MemoryTaskStore``: the in-process backend's records in this process's memory (``memory://``)."""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from backends.inprocess.process_identity import RunOwner
from backends.inprocess.store.base import (
    CLAIMABLE,
    DROPPED_BY_STOP,
    INTERRUPTED_BY_STOP,
    PRUNE_CHUNK,
    Outcome,
)
from taskservice.errors import TaskConflict
from taskservice.models import TaskResult, TaskStatus
from taskservice.service import TaskCall


@dataclasses.dataclass(slots=True)
class _Record:
    id: str
    name: str
    status: TaskStatus
    unique_key: str | None
    enqueued_at: datetime
    run_at: datetime | None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: float | None = None
    progress_message: str | None = None

    def snapshot(self) -> TaskResult:
        result = self.result
        if isinstance(result, (list, dict)):  # a snapshot never shares mutable state with the store
            result = json.loads(json.dumps(result))
        return TaskResult(
            id=self.id,
            name=self.name,
            status=self.status,
            result=result,
            error=self.error,
            traceback=self.traceback,
            progress=self.progress,
            progress_message=self.progress_message,
            attempts=self.attempts,
            enqueued_at=self.enqueued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            run_at=self.run_at,
        )


class MemoryTaskStore:
    """Records in this process's memory: fast, gone with the process, invisible to other processes.

    Finished records are pruned by age (``prune``) and, so memory stays bounded whatever the
    TTL, the oldest finished ones are forgotten past ``max_finished_records``.
    """

    keeps_tasks_across_restarts = False

    def __init__(self, max_finished_records: int = 100_000) -> None:
        self.max_finished_records = max_finished_records
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}  # insertion order = enqueue order
        self._active_keys: dict[str, str] = {}  # unique_key -> id of the active task holding it
        self._finished: collections.deque[tuple[datetime, str]] = collections.deque()  # in finishing order

    def begin_run(self, owner: RunOwner) -> list[TaskCall]:
        return []  # nothing outlives the process, and the last stop ended every task

    def heartbeat(self) -> list[TaskCall]:
        return []

    def end_run(self, now: datetime) -> None:
        with self._lock:
            for record in list(self._records.values()):
                if record.status is TaskStatus.RUNNING or record.status is TaskStatus.RETRYING:
                    self._finish(record, TaskStatus.FAILED, now, INTERRUPTED_BY_STOP)
                elif record.status in CLAIMABLE:
                    self._finish(record, TaskStatus.FAILED, now, DROPPED_BY_STOP)

    def insert(self, call: TaskCall) -> None:
        key = call.options.unique_key
        record = _Record(call.id, call.task.name, call.initial_status, key, call.enqueued_at, call.run_at)
        with self._lock:
            if key is not None:
                holder = self._active_keys.get(key)
                if holder is not None:
                    raise TaskConflict(key, holder)
                self._active_keys[key] = call.id
            self._records[call.id] = record

    def get(self, task_id: str) -> TaskResult | None:
        with self._lock:
            record = self._records.get(task_id)
            return record.snapshot() if record is not None else None

    def list(self, status: TaskStatus | None, limit: int) -> list[TaskResult]:
        found: list[_Record] = []
        with self._lock:  # copies under the lock, snapshots (the slow part) outside it
            for task_id in reversed(self._records):
                record = self._records[task_id]
                if status is None or record.status is status:
                    found.append(dataclasses.replace(record))
                    if len(found) >= limit:
                        break
        return [record.snapshot() for record in found]

    def claim(self, task_ids: Sequence[str], now: datetime) -> dict[str, int]:
        claimed: dict[str, int] = {}
        with self._lock:
            for task_id in task_ids:
                record = self._records.get(task_id)
                if record is not None and record.status in CLAIMABLE:
                    record.status = TaskStatus.RUNNING
                    record.attempts += 1
                    record.started_at = now
                    claimed[task_id] = record.attempts
        return claimed

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        with self._lock:
            for outcome in outcomes:
                record = self._records.get(outcome.task_id)
                if record is None or record.status is not TaskStatus.RUNNING or record.attempts != outcome.attempt:
                    continue  # a later attempt, a stop or a recovery already decided this task
                if outcome.status is TaskStatus.RETRYING:
                    record.status = TaskStatus.RETRYING
                    record.error, record.traceback = outcome.error, outcome.traceback
                else:
                    record.result = outcome.result
                    self._finish(record, outcome.status, outcome.at, outcome.error, outcome.traceback)

    def report_progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None:
        with self._lock:
            record = self._records.get(task_id)
            if record is not None and record.status is TaskStatus.RUNNING and record.attempts == attempt:
                record.progress, record.progress_message = percent, message

    def cancel(self, task_id: str, now: datetime) -> bool | None:
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                return None
            if record.status not in CLAIMABLE:
                return False
            self._finish(record, TaskStatus.CANCELLED, now, None)
            return True

    def abandon(self, task_id: str, now: datetime) -> None:
        with self._lock:
            record = self._records.get(task_id)
            if record is not None and record.status in CLAIMABLE:
                self._finish(record, TaskStatus.FAILED, now, DROPPED_BY_STOP)

    def claim_periodic_slot(self, call: TaskCall, slot: datetime) -> bool:
        self.insert(call)  # one process sees this store: every slot is this run's
        return True

    def prune(self, finished_before: datetime) -> int:
        pruned = 0
        while True:  # in chunks, so enqueues get the lock in between
            with self._lock:
                chunk = self._forget_finished(lambda finished_at: finished_at < finished_before, PRUNE_CHUNK)
            pruned += chunk
            if chunk < PRUNE_CHUNK:
                return pruned

    def close(self) -> None:
        pass

    def _finish(
        self, record: _Record, status: TaskStatus, at: datetime, error: str | None, traceback: str | None = None
    ) -> None:
        """Caller holds the lock: end the task, free its key, queue it for pruning."""
        record.status = status
        record.finished_at = at
        record.error, record.traceback = error, traceback
        if record.unique_key is not None and self._active_keys.get(record.unique_key) == record.id:
            del self._active_keys[record.unique_key]
        self._finished.append((at, record.id))
        excess = len(self._finished) - self.max_finished_records
        if excess > 0:
            self._forget_finished(lambda _finished_at: True, excess)

    def _forget_finished(self, expired: Callable[[datetime], bool], limit: int) -> int:
        """Caller holds the lock: forget up to ``limit`` of the earliest finished records that are ``expired``."""
        forgotten = 0
        while forgotten < limit and self._finished and expired(self._finished[0][0]):
            _, task_id = self._finished.popleft()
            self._records.pop(task_id, None)
            forgotten += 1
        return forgotten
