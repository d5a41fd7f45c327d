"""``MemoryTaskStore``: the in-process backend's records in this process's memory (``memory://``).

The transitions are ``taskservice.memory_records`` (shared with ``FakeTaskService``); this adds the
lock, the bound on finished records, and what a stop does to a store that does not outlive it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from backends.inprocess.process_identity import RunOwner
from backends.inprocess.store.base import CLAIMABLE, DROPPED_BY_STOP, INTERRUPTED_BY_STOP, PRUNE_CHUNK, Ended
from taskservice.attempts import Outcome
from taskservice.errors import ServiceStopped
from taskservice.memory_records import MemoryRecord, MemoryRecords
from taskservice.models import TaskResult, TaskStatus
from taskservice.service import TaskCall, TaskQuery


class MemoryTaskStore:
    """Records in this process's memory: fast, gone with the process, invisible to other processes.

    Finished records are pruned by age (``prune``) and, so memory stays bounded whatever the
    TTL, the oldest finished ones are forgotten past ``max_finished_records``.
    """

    keeps_tasks_across_restarts = False

    def __init__(self, max_finished_records: int = 100_000) -> None:
        self.max_finished_records = max_finished_records
        self._lock = threading.Lock()
        self._records = MemoryRecords()
        self._running = False  # between begin_run and end_run: new records are taken

    def begin_run(self, owner: RunOwner) -> list[TaskCall]:
        with self._lock:
            self._running = True
        return []  # nothing outlives the process, and the last stop ended every task

    def heartbeat(self) -> list[TaskCall]:
        return []

    def take_ended(self) -> list[Ended]:
        return []

    def end_run(self, now: datetime) -> list[Ended]:
        ended: list[Ended] = []
        with self._lock:
            self._running = False
            for record in list(self._records.records.values()):
                if record.status is TaskStatus.RUNNING or record.status is TaskStatus.RETRYING:
                    error = INTERRUPTED_BY_STOP
                elif record.status in CLAIMABLE:
                    error = DROPPED_BY_STOP
                else:
                    continue
                self._finish(record, TaskStatus.FAILED, now, error)
                ended.append(Ended(record.id, record.call.task.name, record.attempts, error))
        return ended

    def insert(self, call: TaskCall) -> None:
        with self._lock:
            if not self._running:  # a stop that this call raced has ended the run
                raise ServiceStopped("the task service is stopped: start it again to enqueue")
            self._records.insert(call)

    def get(self, task_id: str) -> TaskResult | None:
        with self._lock:
            record = self._records.get(task_id)
            copied = record.copy() if record is not None else None
        return copied.snapshot() if copied is not None else None

    def list_tasks(self, query: TaskQuery) -> list[TaskResult]:
        with self._lock:  # copies under the lock, snapshots (the slow part) outside it
            found = [record.copy() for record in self._records.matching(query)]
        return [record.snapshot() for record in found]

    def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        with self._lock:
            record = self._records.get(task_id)
            return None if record is None else (record.status, record.call)

    def link_retry(self, original_id: str, retry_id: str) -> None:
        with self._lock:
            self._records.link_retry(original_id, retry_id)

    def claim(self, task_ids: Sequence[str], now: datetime) -> dict[str, int]:
        claimed: dict[str, int] = {}
        with self._lock:
            for task_id in task_ids:
                attempt = self._records.claim(task_id, now)
                if attempt is not None:
                    claimed[task_id] = attempt
        return claimed

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        with self._lock:
            for outcome in outcomes:
                if self._records.record(outcome) is not None and outcome.status is not TaskStatus.RETRYING:
                    self._trim()

    def report_progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None:
        with self._lock:
            self._records.report_progress(task_id, attempt, percent, message)

    def cancel(self, task_id: str, now: datetime) -> bool | None:
        with self._lock:
            cancelled = self._records.cancel(task_id, now)
            if cancelled:
                self._trim()
            return cancelled

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
                chunk = self._records.forget_finished(lambda at: at < finished_before, PRUNE_CHUNK)
            pruned += chunk
            if chunk < PRUNE_CHUNK:
                return pruned

    def close(self) -> None:
        pass

    def _finish(self, record: MemoryRecord, status: TaskStatus, at: datetime, error: str | None) -> None:
        """Caller holds the lock."""
        self._records.finish(record, status, at, error)
        self._trim()

    def _trim(self) -> None:
        """Caller holds the lock: forget the oldest finished records past ``max_finished_records``."""
        excess = len(self._records.finished) - self.max_finished_records
        if excess > 0:
            self._records.forget_finished(lambda _at: True, excess)
