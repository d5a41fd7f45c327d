"""``MemoryTaskStore``: the in-process backend's records in this process's memory (``memory://``).

The transitions are ``taskservice.memory_records`` (shared with ``FakeTaskService``); this adds the
lock, the bounds on records, and what a stop does to a store that does not outlive it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, TypeVar

from backends.inprocess.process_identity import RunOwner
from backends.inprocess.store.base import (
    CLAIMABLE,
    DROPPED_BY_STOP,
    INTERRUPTED_BY_STOP,
    NOTHING_DECIDED,
    PRUNE_CHUNK,
    Admission,
    Adopted,
    Decided,
    Done,
    Ended,
)
from taskservice.attempts import Outcome
from taskservice.errors import ServiceStopped, TooManyActiveTasks
from taskservice.memory_records import MemoryRecord, MemoryRecords
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.service import TaskCall, TaskQuery


class MemoryTaskStore:
    """Records in this process's memory: fast, gone with the process, invisible to other processes.

    Finished records are pruned by age (``prune``) and, so memory stays bounded whatever the
    TTL, the oldest finished ones are forgotten past ``max_finished_records``. Active ones
    (each may hold a timer) are bounded by ``max_active_tasks``: past it, ``insert`` raises
    ``TooManyActiveTasks`` (a ``BackendUnavailable``: a 503 at the edge) instead of growing.
    """

    keeps_tasks_across_restarts = False

    def __init__(self, max_finished_records: int = 100_000, max_active_tasks: int = 100_000) -> None:
        self.max_finished_records = max_finished_records
        self.max_active_tasks = max_active_tasks
        self._lock = threading.Lock()
        self._records = MemoryRecords()
        self._running = False  # between begin_run and end_run: new records are taken
        self._ended: list[Ended] = []  # decided by a cancel (its dependents), not yet reported

    def begin_run(self, owner: RunOwner) -> list[Adopted]:
        with self._lock:
            self._running = True
        return []  # nothing outlives the process, and the last stop ended every task

    def heartbeat(self) -> list[Adopted]:
        return []

    def take_ended(self) -> list[Ended]:
        with self._lock:
            ended, self._ended = self._ended, []
        return ended

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
                self._records.finish(record, TaskStatus.FAILED, now, error)
                ended.append(Ended(record.id, record.call.task.name, record.attempts, error))
            _ready, failed = self._records.take_decided()  # dependents the loop found already ended
            ended += [_ended(record) for record in failed]
            self._trim()
        return ended

    def insert(self, call: TaskCall) -> Admission | Ended:
        with self._lock:
            if not self._running:  # a stop that this call raced has ended the run
                raise ServiceStopped("the task service is stopped: start it again to enqueue")
            if self._records.active_count >= self.max_active_tasks:
                raise TooManyActiveTasks(
                    f"the memory:// task store holds {self.max_active_tasks} active tasks, its limit "
                    "(TASK_MEMORY_MAX_ACTIVE_TASKS): try again later, or use TASK_STORE_URL=sqlite:///PATH"
                )
            records = self._records
            record = records.insert(call)
            if call.options.after is None:
                return Admission.READY
            records.take_decided()  # at insert, only this record can have been decided
            if record.status.is_final:
                self._trim()
                return _ended(record)
            return Admission.WAITING if record.waits_for is not None else Admission.READY

    def get(self, task_id: str) -> TaskResult | None:
        with self._lock:
            record = self._records.get(task_id)
            copied = record.copy() if record is not None else None
        return copied.snapshot() if copied is not None else None

    def list_tasks(self, query: TaskQuery) -> list[TaskResult]:
        with self._lock:  # copies under the lock, snapshots (the slow part) outside it
            found = [record.copy() for record in self._records.matching(query)]
        return [record.snapshot() for record in found]

    def stats(self) -> TaskStats:
        with self._lock:
            return TaskStats(
                counts=dict(self._records.counts), oldest_pending_enqueued_at=self._records.oldest_pending()
            )

    def unfinished(self, task_ids: Collection[str]) -> set[str]:
        with self._lock:
            records = self._records.records
            return {task_id for task_id in task_ids if task_id in records and records[task_id].status.is_active}

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

    def record_outcomes(self, outcomes: Sequence[Outcome], holding_keys: Collection[str] = ()) -> Decided:
        with self._lock:
            finished = False
            for outcome in outcomes:
                hold = outcome.task_id in holding_keys
                if (
                    self._records.record(outcome, hold_key=hold) is not None
                    and outcome.status is not TaskStatus.RETRYING
                ):
                    finished = True
            if finished:
                self._trim()
            return self._decided()

    def release_keys(self, task_ids: Collection[str]) -> None:
        with self._lock:
            for task_id in task_ids:
                self._records.release_key(task_id)

    def report_progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None:
        with self._lock:
            self._records.report_progress(task_id, attempt, percent, message)

    def cancel(self, task_id: str, now: datetime) -> bool | None:
        with self._lock:
            cancelled = self._records.cancel(task_id, now)
            if cancelled:
                self._ended += self._decided().ended
                self._trim()
            return cancelled

    def abandon(self, task_id: str, now: datetime) -> None:
        with self._lock:
            record = self._records.get(task_id)
            if record is not None and record.status in CLAIMABLE:
                self._records.finish(record, TaskStatus.FAILED, now, DROPPED_BY_STOP)
                self._ended += self._decided().ended
                self._trim()

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

    # -- for the runner: nothing here blocks, so they run at once --------------------------

    def submit_insert(self, call: TaskCall, loop: asyncio.AbstractEventLoop, done: Done[Admission | Ended]) -> None:
        _answer(done, self.insert, call)

    def submit_claim(
        self, task_ids: Sequence[str], now: datetime, loop: asyncio.AbstractEventLoop, done: Done[dict[str, int]]
    ) -> None:
        _answer(done, self.claim, task_ids, now)

    def submit_outcomes(
        self,
        outcomes: Sequence[Outcome],
        holding_keys: Collection[str],
        loop: asyncio.AbstractEventLoop,
        done: Done[Decided],
    ) -> None:
        _answer(done, self.record_outcomes, outcomes, holding_keys)

    def submit_release_keys(self, task_ids: Collection[str], loop: asyncio.AbstractEventLoop) -> None:
        self.release_keys(task_ids)

    # -- internals (the caller holds the lock) ----------------------------------------------

    def _decided(self) -> Decided:
        ready, failed = self._records.take_decided()
        if not ready and not failed:
            return NOTHING_DECIDED
        return Decided([record.call for record in ready], [_ended(record) for record in failed])

    def _trim(self) -> None:
        """Forget the oldest finished records past ``max_finished_records``."""
        excess = len(self._records.finished) - self.max_finished_records
        if excess > 0:
            self._records.forget_finished(lambda _at: True, excess)


def _ended(record: MemoryRecord) -> Ended:
    return Ended(record.id, record.call.task.name, record.attempts, record.error or "")


_R = TypeVar("_R")


def _answer(done: Done[_R], work: Callable[..., _R], *args: Any) -> None:
    """Run ``work`` now and hand ``done`` its result or its exception (nothing here waits for I/O)."""
    try:
        result = work(*args)
    except Exception as exc:
        done(exc)
        return
    done(result)
