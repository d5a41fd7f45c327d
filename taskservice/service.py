"""The ``TaskService`` interface. Validation and the rules every backend shares live here, once.

A backend subclasses ``TaskService`` and fills in the underscore methods: ``_submit`` (record and
dispatch a validated ``TaskCall``), ``_read``, ``_cancel``, ``_list``, ``_retry_source`` and
``_link_retry``. Everything a caller sees (``enqueue``, ``get_status`` raising ``TaskNotFound``,
``retry`` refusing an active task, the async verbs) is built on those here. Async verbs run the
sync ones off the event loop unless a backend offers a native ``_asubmit``/``_aread``/...
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from taskservice.attempts import AttemptInfo
from taskservice.codec import Arguments, encode_arguments
from taskservice.errors import TaskNotFound, TaskServiceError, TaskStillActive
from taskservice.hooks import NO_HEADERS, TaskEnqueued, enqueue_headers, has_enqueued_hooks, notify_enqueued
from taskservice.models import (
    ACTIVE_STATUSES,
    TaskResult,
    TaskStats,
    TaskStatus,
    decode_cursor,
)
from taskservice.registry import Task, TaskOptions, registered_tasks, resolve_task
from taskservice.request_scope import chained_after, note_submitted
from taskservice.settings import TaskSettings

_READINESS_PROBE_ID = "00000000-0000-4000-8000-000000000000"  # never a real task: reading it only reaches the store


@dataclasses.dataclass(slots=True)  # not frozen: built on every enqueue, and frozen init costs 4x; read-only by use
class TaskCall:
    """One validated request to run a task, as a backend receives it (backends read it, never change it)."""

    id: str
    task: Task[..., Any]
    arguments: Arguments
    options: TaskOptions
    enqueued_at: datetime
    run_at: datetime | None  # None: as soon as possible
    headers: Mapping[str, str] = dataclasses.field(default_factory=lambda: NO_HEADERS)  # e.g. traceparent
    retry_of: str | None = None  # the task this call retries (``service.retry``)

    @property
    def initial_status(self) -> TaskStatus:
        return TaskStatus.SCHEDULED if self.run_at is not None else TaskStatus.PENDING

    def attempt_info(self, attempt: int) -> AttemptInfo:
        """What the attempt core needs to decide how attempt number ``attempt`` of this call ended."""
        options = self.options
        return AttemptInfo(
            self.id, self.task.name, attempt, options.max_retries, options.retry_backoff, options.timeout
        )


@dataclasses.dataclass(frozen=True)
class TaskQuery:
    """What ``list_tasks`` asks a backend for: newest first, filtered, from a cursor on."""

    status: TaskStatus | None = None
    name: str | None = None
    enqueued_after: datetime | None = None  # inclusive
    enqueued_before: datetime | None = None  # exclusive
    cursor: tuple[datetime, str] | None = None  # (enqueued_at, id): only tasks listed after that one
    limit: int = 100

    def matches(self, result: TaskResult) -> bool:
        """For backends that filter in Python: does ``result`` belong in this listing?"""
        if self.status is not None and result.status != self.status:
            return False
        if self.name is not None and result.name != self.name:
            return False
        if self.enqueued_after is not None and result.enqueued_at < self.enqueued_after:
            return False
        if self.enqueued_before is not None and result.enqueued_at >= self.enqueued_before:
            return False
        return self.cursor is None or (result.enqueued_at, result.id) < self.cursor


# os.urandom in blocks: one system call per 256 ids instead of one each. Each call gives up the GIL,
# and with a busy second thread (a store's writer) getting it back took up to a switch interval.
class _RandomHex:
    """Random hex digits drawn from one ``os.urandom`` call per 256 ids (a system call per id cost more
    than the rest of an enqueue); a forked child starts with none of its parent's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.text = ""
        self.at = 0

    def take32(self) -> str:
        with self.lock:
            if self.at + 32 > len(self.text):
                self.text, self.at = os.urandom(4096).hex(), 0
            self.at += 32
            return self.text[self.at - 32 : self.at]

    def forget(self) -> None:
        self.text, self.at = "", 0


_random_hex = _RandomHex()
os.register_at_fork(after_in_child=_random_hex.forget)
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122: 10xx


def new_task_id() -> str:
    """A random (version 4) UUID string: 122 unguessable bits, the shape Celery ids have."""
    h = _random_hex.take32()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_T = TypeVar("_T")


def _found(value: _T | None, task_id: str) -> _T:
    """``value``, or ``TaskNotFound`` where the backend found no such task (the rule every backend shares)."""
    if value is None:
        raise TaskNotFound(task_id)
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskService(abc.ABC):
    """Run ``@task`` functions in the background; see each method for what it raises."""

    backend_name: ClassVar[str]
    settings_class: ClassVar[type[TaskSettings]] = TaskSettings  # a backend's own settings, from the environment
    # Capabilities the contract suite reads; a missing one is a visible skip, never a silent one.
    cancels_running_tasks: ClassVar[bool] = False
    runs_in_background: ClassVar[bool] = True  # False: tasks run only when the test asks (the fake)
    waits_between_retries: ClassVar[bool] = True  # False: retries follow at once (the fake)
    # True: tasks run in the process that enqueued them, so a test's patches and stand-ins apply to them
    runs_tasks_in_this_process: ClassVar[bool] = False

    def __init__(self, settings: TaskSettings | None = None) -> None:
        """``settings`` (read from the environment when omitted), as this backend's ``settings_class``."""
        self.settings = settings.for_backend(self.settings_class) if settings is not None else self.settings_class()

    # -- submitting ---------------------------------------------------------------------------

    def enqueue(self, func: Any, /, *args: Any, **kwargs: Any) -> str:
        """Run ``func`` (a ``@task``) soon; return its id. ``TypeError`` for bad arguments, ``TaskConflict``."""
        call = self._prepare(func, None, args, kwargs)
        self._submit(call)
        self._accepted(call)
        return call.id

    def schedule(self, func: Any, run_at: datetime | timedelta, /, *args: Any, **kwargs: Any) -> str:
        """Run ``func`` at ``run_at`` (an aware datetime, or a delay from now); return its id."""
        call = self._prepare(func, run_at_of(run_at), args, kwargs)
        self._submit(call)
        self._accepted(call)
        return call.id

    async def aenqueue(self, func: Any, /, *args: Any, **kwargs: Any) -> str:
        """``enqueue`` for async code: the same checks and errors, and the event loop is never blocked."""
        call = self._prepare(func, None, args, kwargs)
        await self._asubmit(call)
        self._accepted(call)
        return call.id

    async def aschedule(self, func: Any, run_at: datetime | timedelta, /, *args: Any, **kwargs: Any) -> str:
        """``schedule`` for async code."""
        call = self._prepare(func, run_at_of(run_at), args, kwargs)
        await self._asubmit(call)
        self._accepted(call)
        return call.id

    def _prepare(self, func: Any, run_at: datetime | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskCall:
        """Validate a call (task, arguments, size) into a ``TaskCall``; the one way work enters a backend."""
        handle = resolve_task(func)
        arguments = encode_arguments(handle.name, handle.func, args, kwargs, self.settings.max_payload_bytes)
        options = handle.default_options
        # Under the testing switch a request's tasks run in enqueue order: chain each to the one before.
        after = chained_after(self) if run_at is None and options.after is None else None
        return TaskCall(
            id=new_task_id(),
            task=handle,
            arguments=arguments,
            options=options if after is None else dataclasses.replace(options, after=after),
            enqueued_at=utcnow(),
            run_at=run_at,
            headers=enqueue_headers(),
        )

    def _accepted(self, call: TaskCall) -> None:
        note_submitted(self, call.id, scheduled=call.run_at is not None)
        if has_enqueued_hooks():
            notify_enqueued(TaskEnqueued(call.id, call.task.name, call.options.queue, call.run_at))

    @abc.abstractmethod
    def _submit(self, call: TaskCall) -> None:
        """Record and dispatch a validated call; raise ``TaskConflict`` or ``BackendUnavailable``."""

    async def _asubmit(self, call: TaskCall) -> None:
        await asyncio.to_thread(self._submit, call)

    # -- reading ------------------------------------------------------------------------------

    def get_status(self, task_id: str) -> TaskResult:
        """A snapshot of the task; ``TaskNotFound`` if no such id was ever enqueued (or its record expired)."""
        return _found(self._read(task_id), task_id)

    async def aget_status(self, task_id: str) -> TaskResult:
        return _found(await self._aread(task_id), task_id)

    @abc.abstractmethod
    def _read(self, task_id: str) -> TaskResult | None:
        """The task's snapshot, or None if there is no such task."""

    async def _aread(self, task_id: str) -> TaskResult | None:
        return await asyncio.to_thread(self._read, task_id)

    def list_tasks(
        self,
        status: TaskStatus | None = None,
        limit: int = 100,
        *,
        name: str | None = None,
        enqueued_after: datetime | None = None,
        enqueued_before: datetime | None = None,
        cursor: str | None = None,
    ) -> list[TaskResult]:
        """Tasks newest first, filtered; pass the last one's ``.cursor`` as ``cursor`` for the next page.

        ``ValueError`` for a cursor that is not one.
        """
        query = _query(status, limit, name, enqueued_after, enqueued_before, cursor)
        return self._list(query) if query.limit > 0 else []

    async def alist_tasks(
        self,
        status: TaskStatus | None = None,
        limit: int = 100,
        *,
        name: str | None = None,
        enqueued_after: datetime | None = None,
        enqueued_before: datetime | None = None,
        cursor: str | None = None,
    ) -> list[TaskResult]:
        query = _query(status, limit, name, enqueued_after, enqueued_before, cursor)
        return await self._alist(query) if query.limit > 0 else []

    @abc.abstractmethod
    def _list(self, query: TaskQuery) -> list[TaskResult]:
        """At most ``query.limit`` tasks that match, newest first (``enqueued_at``, then ``id``, descending)."""

    async def _alist(self, query: TaskQuery) -> list[TaskResult]:
        return await asyncio.to_thread(self._list, query)

    def stats(self) -> TaskStats:
        """How many tasks are in each status, and when the oldest pending one was enqueued."""
        counts = dict.fromkeys(TaskStatus, 0)
        oldest: datetime | None = None
        cursor: str | None = None
        while True:
            page = self.list_tasks(limit=1000, cursor=cursor)
            for result in page:
                counts[result.status] += 1
                if result.status is TaskStatus.PENDING and (oldest is None or result.enqueued_at < oldest):
                    oldest = result.enqueued_at
            if len(page) < 1000:
                return TaskStats(counts=counts, oldest_pending_enqueued_at=oldest)
            cursor = page[-1].cursor

    async def astats(self) -> TaskStats:
        return await asyncio.to_thread(self.stats)

    def exists(self, task_id: str) -> bool:
        return self._read(task_id) is not None

    # -- changing -----------------------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """Stop a task that has not started: True if it will never run, False if it already ran or is running."""
        return _found(self._cancel(task_id), task_id)

    async def acancel(self, task_id: str) -> bool:
        return _found(await self._acancel(task_id), task_id)

    @abc.abstractmethod
    def _cancel(self, task_id: str) -> bool | None:
        """True: it will never run; False: it runs or ran; None: there is no such task."""

    async def _acancel(self, task_id: str) -> bool | None:
        return await asyncio.to_thread(self._cancel, task_id)

    def retry(self, task_id: str) -> str:
        """A new task with the same name, arguments and options, linked to ``task_id``; return its id.

        ``TaskNotFound`` for an unknown id, ``TaskStillActive`` while the original has not finished,
        ``TaskConflict`` if its ``unique_key`` is held by another task.
        """
        call = self._retry_call(task_id)
        self._submit(call)
        self._link_retry(task_id, call.id)
        self._accepted(call)
        return call.id

    async def aretry(self, task_id: str) -> str:
        call = self._retry_call_of(task_id, await self._aretry_source(task_id))
        await self._asubmit(call)
        await self._alink_retry(task_id, call.id)
        self._accepted(call)
        return call.id

    def _retry_call(self, task_id: str) -> TaskCall:
        return self._retry_call_of(task_id, self._retry_source(task_id))

    def _retry_call_of(self, task_id: str, source: tuple[TaskStatus, TaskCall] | None) -> TaskCall:
        if source is None:
            raise TaskNotFound(task_id)
        status, original = source
        if status in ACTIVE_STATUSES:
            raise TaskStillActive(task_id, status.value)
        handle = registered_tasks().get(original.task.name, original.task)
        return TaskCall(
            id=new_task_id(),
            task=handle,
            arguments=original.arguments,
            options=original.options,
            enqueued_at=utcnow(),
            run_at=None,
            headers=enqueue_headers(),
            retry_of=task_id,
        )

    @abc.abstractmethod
    def _retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        """The task's status and the call it was made from (task, arguments, options); None if unknown."""

    @abc.abstractmethod
    def _link_retry(self, original_id: str, retry_id: str) -> None:
        """Record on the original that ``retry_id`` retries it (``TaskResult.retried_as``)."""

    async def _aretry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        return await asyncio.to_thread(self._retry_source, task_id)

    async def _alink_retry(self, original_id: str, retry_id: str) -> None:
        await asyncio.to_thread(self._link_retry, original_id, retry_id)

    # -- waiting ------------------------------------------------------------------------------

    def wait(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """Block until the task reaches a final status; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause_s = min(0.001, poll_interval_s)  # short tasks end within a few ms: look early, then back off
        while True:
            result = self.get_status(task_id)
            if result.status.is_final:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {result.status.value} after {timeout_s} s")
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, poll_interval_s)

    async def await_result(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """``wait`` for async code: the task's final snapshot; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause_s = min(0.001, poll_interval_s)
        while True:
            result = await self.aget_status(task_id)
            if result.status.is_final:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {result.status.value} after {timeout_s} s")
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, poll_interval_s)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until no work is outstanding: nothing pending, running or retrying, and nothing scheduled
        to run within ``timeout_s`` (tasks enqueued by tasks included). ``TimeoutError`` naming what is left.
        """
        deadline = time.monotonic() + timeout_s
        pause_s = 0.001
        while True:
            left = self._outstanding(utcnow() + timedelta(seconds=max(deadline - time.monotonic(), 0.0)))
            if not left:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{_describe_outstanding(left)} after {timeout_s} s")
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.05)

    async def adrain(self, timeout_s: float = 30.0) -> None:
        """``drain`` for async code."""
        deadline = time.monotonic() + timeout_s
        pause_s = 0.001
        while True:
            left = await self._aoutstanding(utcnow() + timedelta(seconds=max(deadline - time.monotonic(), 0.0)))
            if not left:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{_describe_outstanding(left)} after {timeout_s} s")
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.05)

    async def _aoutstanding(self, horizon: datetime) -> list[TaskResult]:
        return await asyncio.to_thread(self._outstanding, horizon)

    def _outstanding(self, horizon: datetime) -> list[TaskResult]:
        """Tasks that are pending, running or retrying, or scheduled to run before ``horizon``."""
        left: list[TaskResult] = []
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.RETRYING, TaskStatus.SCHEDULED):
            cursor: str | None = None
            while True:
                page = self.list_tasks(status, limit=1000, cursor=cursor)
                left += [r for r in page if status is not TaskStatus.SCHEDULED or (r.run_at or horizon) < horizon]
                if len(page) < 1000:
                    break
                cursor = page[-1].cursor
        return left

    # -- operations ---------------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Why this service cannot take work now, one sentence each that says what to do; empty: ready.

        Cheap enough for a readiness probe (``GET /health/ready`` answers 503 with these): a backend
        that has to ask slow things answers from a check a few seconds old, and waits only when it
        has none, for a bounded time (Celery: ``TASK_REDIS_TIMEOUT_S`` + 2 s at most). Async code
        uses ``areadiness``. This default only checks that the backend's store can be read.
        """
        try:
            self._read(_READINESS_PROBE_ID)
        except TaskServiceError as exc:
            return [str(exc)]
        return []

    async def areadiness(self) -> list[str]:
        """``readiness`` for async code: never blocks the event loop."""
        return await asyncio.to_thread(self.readiness)

    def workers_alive(self) -> int | None:
        """How many worker processes outside this one take this service's tasks (the figure of the last
        readiness check, refreshed as ``readiness`` is); None where tasks run in this process, or if the
        workers could not be asked.
        """
        return None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """True once ``stop()``/``close()`` ended the service: new work raises ``ServiceStopped`` until ``start()``."""
        return False

    async def start(self) -> None:
        """Start runners and schedulers (the FastAPI lifespan calls this); idempotent."""

    async def stop(self) -> None:
        """Stop runners; running tasks get the grace period, the rest end ``failed`` (interrupted)."""

    def close(self) -> None:
        """``stop`` for code without an event loop (scripts, tests)."""


def run_at_of(run_at: datetime | timedelta) -> datetime:
    """``schedule()``'s ``run_at`` as an aware UTC datetime; ``ValueError`` for a naive one."""
    if isinstance(run_at, timedelta):
        return utcnow() + run_at
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ValueError(
                "run_at is a naive datetime: pass an aware one (e.g. datetime.now(timezone.utc) + ...) or a timedelta"
            )
        return run_at.astimezone(UTC)
    raise TypeError(f"run_at must be an aware datetime or a timedelta, got {type(run_at).__name__}")


def _query(
    status: TaskStatus | None,
    limit: int,
    name: str | None,
    enqueued_after: datetime | None,
    enqueued_before: datetime | None,
    cursor: str | None,
) -> TaskQuery:
    for label, moment in (("enqueued_after", enqueued_after), ("enqueued_before", enqueued_before)):
        if moment is not None and moment.utcoffset() is None:
            raise ValueError(f"{label} is a naive datetime: pass an aware one")
    return TaskQuery(
        status=TaskStatus(status) if status is not None else None,
        name=name,
        enqueued_after=enqueued_after,
        enqueued_before=enqueued_before,
        cursor=decode_cursor(cursor) if cursor else None,
        limit=max(limit, 0),
    )


def _describe_outstanding(left: list[TaskResult]) -> str:
    shown = ", ".join(f"{r.name} {r.id} ({r.status.value})" for r in left[:5])
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    return f"{len(left)} task(s) still outstanding: {shown}{more}"
