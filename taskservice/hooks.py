"""Hooks: code of yours that runs when a task is enqueued, starts an attempt, or ends one, on every backend.

``on_task_started`` and ``on_task_finished`` run in the process that runs the attempt (the API
process in-process, the Celery worker otherwise), ``on_task_enqueued`` in the process that
enqueues. A hook that raises is logged and ignored: it never changes what happens to the task::

    from taskservice import TaskFinished, on_task_finished

    @on_task_finished
    def report(event: TaskFinished) -> None:
        if event.status == "failed":
            sentry_sdk.capture_message(f"{event.name} failed: {event.error}")

``Instrumentation`` is the lower-level hook tracing uses: headers captured at enqueue travel
with the task, and a context manager wraps each attempt where it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Protocol, TypeVar

from taskservice.models import TaskStatus

log = logging.getLogger("taskservice")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskEnqueued:
    task_id: str
    name: str
    queue: str | None
    run_at: datetime | None  # None: as soon as possible


@dataclasses.dataclass(frozen=True, slots=True)
class TaskStarted:
    task_id: str
    name: str
    attempt: int  # 1 for the first run


@dataclasses.dataclass(frozen=True, slots=True)
class TaskFinished:
    """How one attempt ended: ``succeeded``, ``failed`` (final), or ``retrying`` (another attempt follows)."""

    task_id: str
    name: str
    attempt: int
    status: TaskStatus
    error: str | None = None
    traceback: str | None = None
    exception: BaseException | None = None  # None for a timeout of a sync task, an interruption, a success
    duration_s: float | None = None  # None when the attempt's start is unknown here (an interruption)
    retry_delay_s: float | None = None  # for ``retrying``: seconds until the next attempt


class Instrumentation(Protocol):
    """What tracing plugs in: headers at enqueue, a scope around each attempt."""

    def headers(self) -> Mapping[str, str]:
        """Called at enqueue, in the caller's context: what the task carries along (e.g. ``traceparent``)."""

    def attempt(self, started: TaskStarted, headers: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
        """Entered around the attempt's body where it runs, with the headers captured at enqueue."""


E = TypeVar("E")
Hook = Callable[[E], None]
_F = TypeVar("_F", bound=Callable[..., None])

_lock = threading.Lock()
_enqueued: list[Hook[TaskEnqueued]] = []
_started: list[Hook[TaskStarted]] = []
_finished: list[Hook[TaskFinished]] = []
_instrumentations: list[Instrumentation] = []


def on_task_enqueued(hook: Hook[TaskEnqueued]) -> Hook[TaskEnqueued]:
    """Call ``hook(TaskEnqueued)`` after every accepted ``enqueue``/``schedule`` (usable as a decorator)."""
    return _add(_enqueued, hook)


def on_task_started(hook: Hook[TaskStarted]) -> Hook[TaskStarted]:
    """Call ``hook(TaskStarted)`` before every attempt's body runs (usable as a decorator)."""
    return _add(_started, hook)


def on_task_finished(hook: Hook[TaskFinished]) -> Hook[TaskFinished]:
    """Call ``hook(TaskFinished)`` once per attempt, however it ended (usable as a decorator)."""
    return _add(_finished, hook)


def remove_hook(hook: Callable[..., None]) -> None:
    """Forget ``hook`` wherever it was added."""
    with _lock:
        for hooks in (_enqueued, _started, _finished):
            while hook in hooks:
                hooks.remove(hook)


def add_instrumentation(instrumentation: Instrumentation) -> None:
    with _lock:
        if instrumentation not in _instrumentations:
            _instrumentations.append(instrumentation)


def remove_instrumentation(instrumentation: Instrumentation) -> None:
    with _lock:
        if instrumentation in _instrumentations:
            _instrumentations.remove(instrumentation)


def _add(hooks: list[Hook[E]], hook: Hook[E]) -> Hook[E]:
    with _lock:
        hooks.append(hook)
    return hook


def has_enqueued_hooks() -> bool:
    return bool(_enqueued)


def has_started_hooks() -> bool:
    return bool(_started)


def has_finished_hooks() -> bool:
    return bool(_finished)


def has_instrumentation() -> bool:
    return bool(_instrumentations)


def notify_enqueued(event: TaskEnqueued) -> None:
    if _enqueued:
        _notify(_enqueued, event)


def notify_started(event: TaskStarted) -> None:
    if _started:
        _notify(_started, event)


def notify_finished(event: TaskFinished) -> None:
    if _finished:
        _notify(_finished, event)


def _notify(hooks: list[Hook[E]], event: E) -> None:
    for hook in list(hooks):
        try:
            hook(event)
        except Exception:  # a hook must never change what happens to a task
            log.exception("taskservice: hook %r failed on %r", hook, event)


NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})  # shared by every call that carries none


def enqueue_headers() -> Mapping[str, str]:
    """Headers every instrumentation wants carried with a task enqueued from here."""
    if not _instrumentations:
        return NO_HEADERS
    headers: dict[str, str] = {}
    for instrumentation in list(_instrumentations):
        try:
            headers.update(instrumentation.headers())
        except Exception:
            log.exception("taskservice: instrumentation %r failed at enqueue", instrumentation)
    return headers


@contextlib.contextmanager
def instrumented(started: TaskStarted, headers: Mapping[str, str]) -> Iterator[None]:
    """Every instrumentation's scope around one attempt; one that fails to open is skipped, not fatal."""
    if not _instrumentations:
        yield
        return
    with contextlib.ExitStack() as stack:
        for instrumentation in list(_instrumentations):
            try:
                stack.enter_context(instrumentation.attempt(started, headers))
            except Exception:
                log.exception("taskservice: instrumentation %r failed to open an attempt", instrumentation)
        yield
