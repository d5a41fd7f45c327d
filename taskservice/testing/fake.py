"""``FakeTaskService``: records what callers enqueue, and runs it only when a test asks.

It is a real ``TaskService``: ``enqueue``/``schedule`` go through the same base validation
as every backend (``TaskService.enqueue`` -> ``_prepare`` -> ``_submit``), so a bad argument
fails in a caller's unit test exactly as in production, and ``unique_key`` conflicts are
raised among its active tasks. ``run_all``/``run_next``/``run`` then execute tasks the way
a worker would, in the calling thread: on decoded copies of the arguments, results
through JSON, failures recorded as ``"Type: message"`` with a traceback, retries per the
task's options (without the waiting), ``set_progress`` recorded.

``installed_task_service`` and ``override_task_service`` swap a service in for a test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, TypeVar

from taskservice.codec import Arguments, encode_result
from taskservice.errors import TaskConflict, TaskNotFound
from taskservice.factory import set_task_service
from taskservice.failures import describe_error
from taskservice.integration import task_service_dependency
from taskservice.models import TaskResult, TaskStatus
from taskservice.progress import current_reporter
from taskservice.registry import Task, TaskOptions, resolve_task
from taskservice.service import TaskCall, TaskService, utcnow
from taskservice.settings import TaskSettings

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


@dataclasses.dataclass(eq=False)
class _Record:
    """The fake's mutable bookkeeping of one task; handed out only as ``TaskResult`` snapshots."""

    call: RecordedCall
    arguments: Arguments
    status: TaskStatus
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress_history: list[tuple[float, str | None]] = dataclasses.field(default_factory=list)

    def snapshot(self) -> TaskResult:
        return TaskResult(
            id=self.call.id,
            name=self.call.name,
            status=self.status,
            result=self.result,
            error=self.error,
            traceback=self.traceback,
            progress=self.progress,
            progress_message=self.progress_message,
            attempts=self.attempts,
            enqueued_at=self.call.enqueued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            run_at=self.call.run_at,
        )

    @property
    def ready_at(self) -> datetime:
        return self.call.run_at if self.call.run_at is not None else self.call.enqueued_at


class FakeTaskService(TaskService):
    """A ``TaskService`` for unit tests: records every call, runs tasks only on ``run_all``/``run_next``/``run``.

    ``raise_errors=True`` re-raises a task's exception from the ``run*`` call (after it is recorded).
    """

    backend_name = "fake"
    cancels_running_tasks = False

    def __init__(self, settings: TaskSettings | None = None, *, raise_errors: bool = False) -> None:
        super().__init__(settings)
        self.raise_errors = raise_errors
        self._records: dict[str, _Record] = {}  # in enqueue order
        # Re-entrant: a task run by the fake may enqueue, or read its own status.
        self._lock = threading.RLock()

    # --- the TaskService contract -------------------------------------------------------

    def _submit(self, call: TaskCall) -> None:
        args, kwargs = call.arguments.decoded_copy()
        recorded = RecordedCall(
            call.id, call.task.name, args, kwargs, call.options, call.enqueued_at, call.run_at, call.task
        )
        with self._lock:
            key = call.options.unique_key
            if key is not None:
                for record in self._records.values():
                    if record.call.unique_key == key and record.status.is_active:
                        raise TaskConflict(key, record.call.id)
            self._records[call.id] = _Record(recorded, call.arguments, call.initial_status)

    def get_status(self, task_id: str) -> TaskResult:
        with self._lock:
            return self._record(task_id).snapshot()

    def cancel(self, task_id: str) -> bool:
        with self._lock:
            record = self._record(task_id)
            if record.status not in (TaskStatus.PENDING, TaskStatus.SCHEDULED):
                return False
            record.status = TaskStatus.CANCELLED
            record.finished_at = utcnow()
            return True

    def list_tasks(self, status: TaskStatus | None = None, limit: int = 100) -> list[TaskResult]:
        with self._lock:
            records = [r for r in reversed(self._records.values()) if status is None or r.status == status]
            return [record.snapshot() for record in records[:limit]]

    def wait(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """Run the task now if it has not run yet (the fake has no worker to wait for); its final snapshot."""
        with self._lock:
            runnable = self._record(task_id).status in (TaskStatus.PENDING, TaskStatus.SCHEDULED)
        if runnable:
            return self.run(task_id)
        return super().wait(task_id, timeout_s, poll_interval_s)  # running in another thread, or final

    # --- what was recorded --------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """Every accepted ``enqueue`` and ``schedule`` call, oldest first."""
        with self._lock:
            return [record.call for record in self._records.values()]

    def enqueued(self, task_or_name: Any = None) -> list[RecordedCall]:
        """The ``enqueue`` calls (of one task, given a ``@task`` or its name), oldest first."""
        return [call for call in self._calls_of(task_or_name) if not call.scheduled]

    def scheduled(self, task_or_name: Any = None) -> list[RecordedCall]:
        """The ``schedule`` calls (of one task, given a ``@task`` or its name), oldest first."""
        return [call for call in self._calls_of(task_or_name) if call.scheduled]

    def progress_history(self, task_id: str) -> list[tuple[float, str | None]]:
        """Every ``set_progress(percent, message)`` the task reported, in order."""
        with self._lock:
            return list(self._record(task_id).progress_history)

    def clear(self) -> None:
        """Forget every recorded call (for instance those made while setting a test up)."""
        with self._lock:
            self._records.clear()

    # --- running on demand --------------------------------------------------------------

    def run_next(self, *, scheduled: ScheduledChoice = "due", raise_errors: bool | None = None) -> TaskResult | None:
        """Run the task that would start first; None when nothing is runnable.

        ``scheduled``: ``"due"`` runs scheduled tasks whose ``run_at`` has passed, ``"all"``
        runs them whatever their time, ``"none"`` runs only enqueued tasks.
        """
        record = self._claim_next(scheduled)
        return None if record is None else self._execute(record, raise_errors)

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
            record = self._claim_next(scheduled)
            if record is None:
                return results
            results.append(self._execute(record, raise_errors))

    def run(self, task_id: str, *, raise_errors: bool | None = None) -> TaskResult:
        """Run this pending or scheduled task now (whatever its ``run_at``); its final snapshot."""
        with self._lock:
            record = self._record(task_id)
            if record.status not in (TaskStatus.PENDING, TaskStatus.SCHEDULED):
                raise ValueError(f"task {task_id} is {record.status.value}: only pending or scheduled tasks can run")
            record.status = TaskStatus.RUNNING
        return self._execute(record, raise_errors)

    # --- internals ----------------------------------------------------------------------

    def _record(self, task_id: str) -> _Record:
        record = self._records.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record

    def _calls_of(self, task_or_name: Any) -> list[RecordedCall]:
        name = None if task_or_name is None else task_name_of(task_or_name)
        return [call for call in self.calls if name is None or call.name == name]

    def _next_runnable(self, scheduled: ScheduledChoice) -> _Record | None:
        if scheduled not in ("due", "all", "none"):
            raise ValueError(f"scheduled must be 'due', 'all' or 'none', got {scheduled!r}")
        now = utcnow()
        candidates = [
            record
            for record in self._records.values()
            if record.status == TaskStatus.PENDING
            or (
                record.status == TaskStatus.SCHEDULED
                and (scheduled == "all" or (scheduled == "due" and record.ready_at <= now))
            )
        ]
        return min(candidates, key=lambda record: record.ready_at, default=None)  # min is stable: FIFO on ties

    def _claim_next(self, scheduled: ScheduledChoice) -> _Record | None:
        with self._lock:
            record = self._next_runnable(scheduled)
            if record is not None:
                record.status = TaskStatus.RUNNING
            return record

    def _execute(self, record: _Record, raise_errors: bool | None) -> TaskResult:
        """Run a claimed task to its final status, retrying per its options."""
        options = record.call.options
        failure: Exception | None = None
        for attempt in range(1, options.max_retries + 2):
            with self._lock:
                record.status = TaskStatus.RUNNING
                record.attempts = attempt
                if record.started_at is None:
                    record.started_at = utcnow()
            try:
                value = self._attempt(record)
            except Exception as exc:
                failure = exc
                with self._lock:
                    record.error = describe_error(exc)
                    record.traceback = traceback.format_exc()
                    record.status = TaskStatus.RETRYING if attempt <= options.max_retries else TaskStatus.FAILED
                continue
            failure = None
            with self._lock:
                record.status = TaskStatus.SUCCEEDED
                record.result = value
                record.error = record.traceback = None
            break
        with self._lock:
            record.finished_at = utcnow()
            snapshot = record.snapshot()
        if failure is not None and (self.raise_errors if raise_errors is None else raise_errors):
            raise failure
        return snapshot

    def _attempt(self, record: _Record) -> Any:
        """One run of the task body on fresh decoded arguments; the JSON-encoded result."""
        handle = record.call.task
        timeout_s = record.call.options.timeout
        args, kwargs = record.arguments.decoded_copy()

        def report(percent: float, message: str | None) -> None:
            with self._lock:
                record.progress, record.progress_message = percent, message
                record.progress_history.append((percent, message))

        token = current_reporter.set(report)
        try:
            if handle.is_async:
                value = _run_coroutine(handle, args, kwargs, timeout_s)
            else:
                started = time.monotonic()
                value = handle.func(*args, **kwargs)
                # A sync body cannot be interrupted here; past its timeout it fails as it would in production.
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    raise _timed_out(timeout_s)
        finally:
            current_reporter.reset(token)
        return encode_result(handle.name, value)


def _timed_out(timeout_s: float) -> TimeoutError:
    return TimeoutError(f"task timed out after {timeout_s:g} s")


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
                raise _timed_out(timeout_s) from None
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
