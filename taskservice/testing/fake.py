"""``FakeTaskService``: records what callers enqueue, and runs it only when a test asks.

It is a real ``TaskService``: ``enqueue``/``schedule`` go through the same base validation
as every backend (``TaskService.enqueue`` -> ``_prepare`` -> ``_submit``), so a bad argument
fails in a caller's unit test exactly as in production, and ``unique_key`` conflicts are
raised among its active tasks. ``run_all``/``run_next``/``run`` then execute tasks the way
a worker would, in the calling thread: on decoded copies of the arguments, with the
attempt core (``taskservice.attempts``) deciding how each attempt ended, exactly as on the
real backends (the same error text, results through JSON, retries per the task's options,
without the waiting), and the same record transitions as the in-process memory store.

``installed_task_service`` and ``override_task_service`` swap a service in for a test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import sys
import threading
import traceback as traceback_module
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, TypeVar

from taskservice import attempts
from taskservice.attempts import Outcome, attempt_scope
from taskservice.errors import TaskNotFound
from taskservice.factory import set_task_service
from taskservice.integration import task_service_dependency
from taskservice.memory_records import MemoryRecord, MemoryRecordReads, MemoryRecords
from taskservice.models import CLAIMABLE_STATUSES, FINAL_STATUSES, TaskResult, TaskStatus
from taskservice.registry import Task, TaskOptions, resolve_task
from taskservice.service import TaskCall, TaskService, utcnow
from taskservice.settings import TaskSettings
from taskservice.task_context import current_reporter

ScheduledChoice = Literal["due", "all", "none"]
S = TypeVar("S", bound=TaskService)


@dataclasses.dataclass(frozen=True)
class RecordedCall:
    """One accepted ``enqueue``/``schedule`` call; ``args``/``kwargs`` as a worker would receive them."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: TaskOptions
    enqueued_at: datetime
    run_at: datetime | None  # None: enqueued, not scheduled
    task: Task[..., Any] = dataclasses.field(repr=False)

    @property
    def scheduled(self) -> bool:
        return self.run_at is not None

    @property
    def unique_key(self) -> str | None:
        return self.options.unique_key

    @property
    def queue(self) -> str | None:
        return self.options.queue

    def __str__(self) -> str:
        parts = [repr(value) for value in self.args] + [f"{key}={value!r}" for key, value in self.kwargs.items()]
        text = f"{self.name}({', '.join(parts)})"
        if self.run_at is not None:
            text += f" at {self.run_at.isoformat()}"
        if self.unique_key is not None:
            text += f" [unique_key={self.unique_key!r}]"
        return text


class FakeTaskService(MemoryRecordReads, TaskService):
    """A ``TaskService`` for unit tests: records every call, runs tasks only on ``run_all``/``run_next``/``run``.

    ``raise_errors=True`` re-raises a task's exception from the ``run*`` call (after it is recorded).
    """

    backend_name = "fake"
    cancels_running_tasks = False
    runs_in_background = False
    waits_between_retries = False
    runs_tasks_in_this_process = True

    def __init__(self, settings: TaskSettings | None = None, *, raise_errors: bool = False) -> None:
        super().__init__(settings)
        self.raise_errors = raise_errors
        self._records = MemoryRecords()  # the same transitions as the in-process memory store
        self._progress: dict[str, list[tuple[float, str | None]]] = {}
        # Re-entrant: a task run by the fake may enqueue, or read its own status.
        self._lock = threading.RLock()

    # --- the TaskService contract -------------------------------------------------------

    def _submit(self, call: TaskCall) -> None:
        dependency = call.options.after
        with self._lock:
            if dependency is not None and self._records.get(dependency) is None:
                raise TaskNotFound(dependency)
            self._records.insert(call)
            self._progress[call.id] = []
        if dependency is not None:
            self._settle_dependents(dependency)

    def _cancel(self, task_id: str) -> bool | None:
        with self._lock:
            cancelled = self._records.cancel(task_id, utcnow())
        if cancelled:
            self._settle_dependents(task_id)
        return cancelled

    def wait(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """Run the task now if it has not run yet (the fake has no worker to wait for); its final snapshot."""
        with self._lock:
            record = self._record(task_id)
            dependency = record.call.options.after
            waiting = record.status in (TaskStatus.PENDING, TaskStatus.SCHEDULED)
        if waiting and dependency is not None:
            self.wait(dependency, timeout_s, poll_interval_s)  # what it waits for (after=) runs first
        with self._lock:
            runnable = record.status in (TaskStatus.PENDING, TaskStatus.SCHEDULED)
        if runnable:
            return self.run(task_id)
        return super().wait(task_id, timeout_s, poll_interval_s)  # running in another thread, or final

    async def await_result(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """``wait`` for async code: runs the task now if it has not run yet."""
        return await asyncio.to_thread(self.wait, task_id, timeout_s, poll_interval_s)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Run everything that is due, including what those tasks enqueue (the fake's drain is ``run_all``)."""
        self.run_all()

    async def adrain(self, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self.run_all)

    # --- what was recorded --------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """Every accepted ``enqueue`` and ``schedule`` call, oldest first."""
        with self._lock:
            return [_recorded(record.call) for record in self._records.records.values()]

    def enqueued(self, task_or_name: Any = None) -> list[RecordedCall]:
        """The ``enqueue`` calls (of one task, given a ``@task`` or its name), oldest first."""
        return [call for call in self._calls_of(task_or_name) if not call.scheduled]

    def scheduled(self, task_or_name: Any = None) -> list[RecordedCall]:
        """The ``schedule`` calls (of one task, given a ``@task`` or its name), oldest first."""
        return [call for call in self._calls_of(task_or_name) if call.scheduled]

    def progress_history(self, task_id: str) -> list[tuple[float, str | None]]:
        """Every ``set_progress(percent, message)`` the task reported, in order."""
        with self._lock:
            self._record(task_id)
            return list(self._progress.get(task_id, []))

    def clear(self) -> None:
        """Forget every recorded call (for instance those made while setting a test up)."""
        with self._lock:
            self._records = MemoryRecords()
            self._progress.clear()

    # --- running on demand --------------------------------------------------------------

    def run_next(self, *, scheduled: ScheduledChoice = "due", raise_errors: bool | None = None) -> TaskResult | None:
        """Run the task that would start first; None when nothing is runnable.

        ``scheduled``: ``"due"`` runs scheduled tasks whose ``run_at`` has passed, ``"all"``
        runs them whatever their time, ``"none"`` runs only enqueued tasks.
        """
        claimed = self._claim_next(scheduled)
        return None if claimed is None else self._execute(*claimed, raise_errors)

    def run_all(
        self, *, scheduled: ScheduledChoice = "due", raise_errors: bool | None = None, max_runs: int = 1000
    ) -> list[TaskResult]:
        """Run tasks until none is runnable, including those the tasks enqueue; their final snapshots.

        ``RuntimeError`` after ``max_runs`` tasks (a task that keeps enqueuing itself).
        """
        results: list[TaskResult] = []
        while True:
            if len(results) >= max_runs and self._next_runnable(scheduled) is not None:
                raise RuntimeError(f"run_all ran {max_runs} tasks and more are waiting: does a task enqueue itself?")
            claimed = self._claim_next(scheduled)
            if claimed is None:
                return results
            results.append(self._execute(*claimed, raise_errors))

    def run(self, task_id: str, *, raise_errors: bool | None = None) -> TaskResult:
        """Run this pending or scheduled task now (whatever its ``run_at``); its final snapshot."""
        with self._lock:
            record = self._record(task_id)
            if record.status not in (TaskStatus.PENDING, TaskStatus.SCHEDULED):
                raise ValueError(f"task {task_id} is {record.status.value}: only pending or scheduled tasks can run")
            if not self._dependency_succeeded(record):
                raise ValueError(f"task {task_id} waits for task {record.call.options.after} (after=): run that first")
            attempt = self._records.claim(task_id, utcnow())
            assert attempt is not None
        return self._execute(record, attempt, raise_errors)

    # --- internals ----------------------------------------------------------------------

    def _record(self, task_id: str) -> MemoryRecord:
        record = self._records.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record

    def _calls_of(self, task_or_name: Any) -> list[RecordedCall]:
        name = None if task_or_name is None else task_name_of(task_or_name)
        return [call for call in self.calls if name is None or call.name == name]

    def _next_runnable(self, scheduled: ScheduledChoice) -> MemoryRecord | None:
        if scheduled not in ("due", "all", "none"):
            raise ValueError(f"scheduled must be 'due', 'all' or 'none', got {scheduled!r}")
        now = utcnow()
        candidates = [
            record
            for record in self._records.records.values()
            if (
                record.status == TaskStatus.PENDING
                or (
                    record.status == TaskStatus.SCHEDULED
                    and (scheduled == "all" or (scheduled == "due" and _ready_at(record) <= now))
                )
            )
            and self._dependency_succeeded(record)
        ]
        return min(candidates, key=_ready_at, default=None)  # min is stable: FIFO on ties

    def _dependency_succeeded(self, record: MemoryRecord) -> bool:
        """Whether a task may run as far as ``after=`` goes (no dependency, or it succeeded)."""
        dependency = record.call.options.after
        if dependency is None:
            return True
        ended = self._records.get(dependency)
        return ended is not None and ended.status is TaskStatus.SUCCEEDED

    def _settle_dependents(self, dependency: str) -> None:
        """``dependency`` may have ended without succeeding: its waiting tasks fail without running."""
        with self._lock:
            ended = self._records.get(dependency)
            if ended is None or ended.status not in FINAL_STATUSES or ended.status is TaskStatus.SUCCEEDED:
                return
            waiting = [
                record
                for record in self._records.records.values()
                if record.call.options.after == dependency and record.status in CLAIMABLE_STATUSES
            ]
            error = attempts.dependency_error(dependency, ended.status.value)
            for record in waiting:
                self._records.finish(record, TaskStatus.FAILED, utcnow(), error)
        for record in waiting:
            attempts.interrupted(record.call.attempt_info(0), error)
            self._settle_dependents(record.id)

    def _claim_next(self, scheduled: ScheduledChoice) -> tuple[MemoryRecord, int] | None:
        with self._lock:
            record = self._next_runnable(scheduled)
            if record is None:
                return None
            attempt = self._records.claim(record.id, utcnow())
            assert attempt is not None
            return record, attempt

    def _execute(self, record: MemoryRecord, attempt: int, raise_errors: bool | None) -> TaskResult:
        """Run a claimed task to its final status, retrying per its options (without the waiting)."""
        failure: BaseException | None = None
        while True:
            outcome, failure = self._attempt(record, attempt)
            with self._lock:
                self._records.record(outcome)
                if outcome.status is not TaskStatus.RETRYING:
                    snapshot = record.snapshot()
                    break
                next_attempt = self._records.claim(record.id, utcnow())
            if next_attempt is None:  # cancelled between attempts
                with self._lock:
                    snapshot = record.snapshot()
                break
            attempt = next_attempt
        self._settle_dependents(record.id)
        raising = self.raise_errors if raise_errors is None else raise_errors
        if failure is not None and snapshot.status is TaskStatus.FAILED and raising:
            raise failure
        return snapshot

    def _attempt(self, record: MemoryRecord, attempt: int) -> tuple[Outcome, BaseException | None]:
        """One run of the task body on fresh decoded arguments, decided by the attempt core."""
        call = record.call
        options = call.options
        info = call.attempt_info(attempt)
        args, kwargs = call.arguments.decoded_copy()

        def report(percent: float, message: str | None) -> None:
            with self._lock:
                self._records.report_progress(call.id, attempt, percent, message)
                self._progress.setdefault(call.id, []).append((percent, message))

        token = current_reporter.set(report)
        try:
            with attempt_scope(info, call.headers):
                if call.task.is_async:
                    value = _run_coroutine(call.task, args, kwargs, options.timeout)
                else:
                    value = _run_sync(call.task, args, kwargs, options.timeout)
        except _TimedOut as exc:
            return attempts.timed_out(info, stack=exc.stack), None
        except BaseException as exc:  # every exception of a task is recorded on it
            return attempts.failed(info, exc), exc
        finally:
            current_reporter.reset(token)
        outcome = attempts.succeeded(info, value)
        return outcome, None


class _TimedOut(Exception):
    def __init__(self, stack: str | None) -> None:
        super().__init__("timed out")
        self.stack = stack


def _recorded(call: TaskCall) -> RecordedCall:
    args, kwargs = call.arguments.decoded_copy()
    return RecordedCall(call.id, call.task.name, args, kwargs, call.options, call.enqueued_at, call.run_at, call.task)


def _ready_at(record: MemoryRecord) -> datetime:
    call = record.call
    return call.run_at if call.run_at is not None else call.enqueued_at


def _run_sync(handle: Task[..., Any], args: list[Any], kwargs: dict[str, Any], timeout_s: float | None) -> Any:
    """Run a sync body here, or, with a timeout, on a thread that is left behind if it overruns (as in-process)."""
    if timeout_s is None:
        return handle.func(*args, **kwargs)
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def body() -> None:
        try:
            box["value"] = context.run(handle.func, *args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"taskservice-fake-{handle.name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        frame = sys._current_frames().get(thread.ident or 0)
        stack = "".join(traceback_module.format_stack(frame)) if frame is not None else None
        raise _TimedOut(stack)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _run_coroutine(handle: Task[..., Any], args: list[Any], kwargs: dict[str, Any], timeout_s: float | None) -> Any:
    """Run an async task body to completion on a private event loop."""

    async def main() -> Any:
        if timeout_s is None:
            return await handle.func(*args, **kwargs)
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                return await handle.func(*args, **kwargs)
        except TimeoutError:
            if deadline.expired():  # not a TimeoutError the task raised itself
                raise _TimedOut(None) from None
            raise

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # Called from async code (an async test, an endpoint): its loop is busy, use a thread of our own,
    # carrying the context so set_progress still reaches this task's record.
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, asyncio.run, main()).result()


def task_name_of(task_or_name: Any) -> str:
    """The task name of a ``@task`` or a name; ``TypeError`` (saying to add ``@task``) otherwise."""
    return task_or_name if isinstance(task_or_name, str) else resolve_task(task_or_name).name


@contextlib.contextmanager
def installed_task_service(service: S) -> Iterator[S]:
    """Make ``service`` the process-wide one (``get_task_service()``) inside the block; restore after."""
    previous = set_task_service(service)
    try:
        yield service
    finally:
        set_task_service(previous)


@contextlib.contextmanager
def override_task_service(app: Any, fake: FakeTaskService | None = None) -> Iterator[FakeTaskService]:
    """Serve ``fake`` (a new one by default) to ``app``'s ``TaskServiceDep`` and to ``get_task_service()``.

    ``app`` is a FastAPI application; its previous override, if any, is restored after the block.
    """
    fake = fake if fake is not None else FakeTaskService()
    overrides = getattr(app, "dependency_overrides", None)
    if not isinstance(overrides, dict):
        raise TypeError(f"override_task_service needs a FastAPI app, got {type(app).__name__}")
    missing = object()
    previous = overrides.get(task_service_dependency, missing)
    overrides[task_service_dependency] = lambda: fake
    try:
        with installed_task_service(fake):
            yield fake
    finally:
        if previous is missing:
            overrides.pop(task_service_dependency, None)
        else:
            overrides[task_service_dependency] = previous
