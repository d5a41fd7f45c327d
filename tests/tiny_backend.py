"""A backend that lives outside the tree, to show what plugging one in takes: this module and
``TASK_BACKEND=tests.tiny_backend:ThreadTaskService``, with no edit anywhere in taskservice.

Each task runs on a thread of its own, records stay in memory (``MemoryRecords``, the state machine
the built-in memory store uses) and the attempt core decides how each attempt ends. It is a
demonstration, not a product: nothing survives the process.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import ClassVar

from taskservice import TaskNotFound, TaskService, TaskStatus, attempts
from taskservice.attempts import Outcome, attempt_scope
from taskservice.memory_records import MemoryRecordReads, MemoryRecords
from taskservice.models import FINAL_STATUSES
from taskservice.service import TaskCall
from taskservice.settings import TaskSettings
from taskservice.task_context import current_reporter
from taskservice.testing.fake import _run_coroutine, _run_sync, _TimedOut


class ThreadTaskService(MemoryRecordReads, TaskService):
    backend_name: ClassVar[str] = "tiny-threads"
    runs_tasks_in_this_process: ClassVar[bool] = True  # its threads are this process's: stand-ins apply

    def __init__(self, settings: TaskSettings | None = None) -> None:
        super().__init__(settings)
        self._lock = threading.RLock()
        self._records = MemoryRecords()
        self._timers: dict[str, threading.Timer] = {}
        self._waiting: dict[str, list[TaskCall]] = {}  # dependency id -> calls waiting on it (after=)

    def _submit(self, call: TaskCall) -> None:
        dependency = call.options.after
        with self._lock:
            if dependency is not None and self._records.get(dependency) is None:
                raise TaskNotFound(dependency)
            self._records.insert(call)
            if dependency is not None:
                self._waiting.setdefault(dependency, []).append(call)
                ended = self._records.get(dependency)
                if ended is not None and ended.status in FINAL_STATUSES:
                    self._release(dependency, ended.status)
                return
        self._start(call)

    def _start(self, call: TaskCall) -> None:
        delay_s = 0.0 if call.run_at is None else (call.run_at - datetime.now(UTC)).total_seconds()
        self._later(call.id, max(delay_s, 0.0), lambda: self._attempt(call))

    def _later(self, task_id: str, delay_s: float, work: object) -> None:
        timer = threading.Timer(delay_s, work)  # type: ignore[arg-type]
        timer.daemon = True
        with self._lock:
            self._timers[task_id] = timer
        timer.start()

    def _attempt(self, call: TaskCall) -> None:
        with self._lock:
            self._timers.pop(call.id, None)
            attempt = self._records.claim(call.id, datetime.now(UTC))
        if attempt is None:  # cancelled meanwhile
            return
        info = call.attempt_info(attempt)
        current_reporter.set(lambda percent, message: self._progress(call.id, attempt, percent, message))
        args, kwargs = call.arguments.decoded_copy()
        outcome: Outcome
        try:
            with attempt_scope(info, call.headers):
                run = _run_coroutine if call.task.is_async else _run_sync
                value = run(call.task, args, kwargs, call.options.timeout)
            outcome = attempts.succeeded(info, value)
        except _TimedOut as exc:
            outcome = attempts.timed_out(info, stack=exc.stack)
        except BaseException as exc:  # every exception of a task is recorded on it
            outcome = attempts.failed(info, exc)
        with self._lock:
            self._records.record(outcome)
        if outcome.status is TaskStatus.RETRYING:
            self._later(call.id, outcome.retry_delay_s or 0.0, lambda: self._attempt(call))
        else:
            self._release(call.id, outcome.status)

    def _progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None:
        with self._lock:
            self._records.report_progress(task_id, attempt, percent, message)

    def _release(self, dependency: str, status: TaskStatus) -> None:
        """``dependency`` ended: run the calls waiting on it, or fail them without running."""
        with self._lock:
            waiting = self._waiting.pop(dependency, [])
        for call in waiting:
            if status is TaskStatus.SUCCEEDED:
                self._start(call)
                continue
            error = attempts.dependency_error(dependency, status.value)
            with self._lock:
                record = self._records.get(call.id)
                if record is None or record.status in FINAL_STATUSES:
                    continue
                self._records.finish(record, TaskStatus.FAILED, datetime.now(UTC), error)
            attempts.interrupted(call.attempt_info(0), error)
            self._release(call.id, TaskStatus.FAILED)

    def _cancel(self, task_id: str) -> bool | None:
        with self._lock:
            cancelled = self._records.cancel(task_id, datetime.now(UTC))
            timer = self._timers.pop(task_id, None) if cancelled else None
        if timer is not None:
            timer.cancel()
        if cancelled:
            self._release(task_id, TaskStatus.CANCELLED)
        return cancelled

    def close(self) -> None:
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()
