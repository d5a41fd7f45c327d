"""The attempt core: how one attempt of a task ends, in the same words and with the same decision on every backend.

The in-process runner, the Celery worker task and ``FakeTaskService`` call these; nothing else
decides about attempts.

- ``AttemptInfo``: the task and the attempt number, as the core needs them
- ``attempt_scope``: entered around the body where it runs: sets ``current_task()``, calls
  ``on_task_started`` hooks, opens instrumentation (tracing)
- ``succeeded`` / ``failed`` / ``timed_out`` / ``interrupted``: the ``Outcome`` of the attempt,
  with the retry decision and delay, one log line through the ``taskservice`` logger (DEBUG for a
  success, WARNING for a retry, ERROR with the traceback for a final failure), and the
  ``on_task_finished`` hooks
- ``describe_error``, ``timeout_error``, ``dependency_error``, ``retry_delay_s``: the words and numbers themselves
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
import random
import time
import traceback as traceback_module
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from taskservice import hooks
from taskservice.codec import encode_result
from taskservice.hooks import TaskFinished, TaskStarted, instrumented, notify_finished, notify_started
from taskservice.models import TaskStatus
from taskservice.task_context import RunningTask, running_task

log = logging.getLogger("taskservice")

MAX_RETRY_DELAY_S = 600.0  # Celery's retry_backoff_max: no retry waits longer (before jitter)
RETRY_JITTER = 0.25  # each delay is the nominal one times a factor in [1 - RETRY_JITTER, 1 + RETRY_JITTER]
MAX_RETRIES = 1000  # the most ``max_retries`` a task may declare
MAX_ERROR_CHARS = 4000
MAX_TRACEBACK_CHARS = 64_000
_MAX_EXPONENT = 60  # 2**60 s is past any cap: a larger exponent only risks overflow


# AttemptInfo and Outcome are built for every attempt: plain slotted classes (a frozen dataclass's
# __init__ costs several times more); nothing changes them once built.
@dataclasses.dataclass(slots=True)
class AttemptInfo:
    """One attempt of one task, and the options that decide what follows a failure."""

    task_id: str
    name: str
    attempt: int  # 1 for the first run
    max_retries: int = 0
    retry_backoff: float = 1.0
    timeout: float | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)  # for durations only

    @property
    def retries_left(self) -> bool:
        return self.attempt <= self.max_retries


@dataclasses.dataclass(slots=True)
class Outcome:
    """How one attempt ended: ``succeeded``, ``failed`` (final) or ``retrying`` (after ``retry_delay_s``)."""

    task_id: str
    attempt: int
    status: TaskStatus
    at: datetime
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    retry_delay_s: float | None = None

    @property
    def retry_at(self) -> datetime | None:
        """When the next attempt is due (``retrying`` only)."""
        if self.retry_delay_s is None:
            return None
        return self.at + timedelta(seconds=self.retry_delay_s)


# -- the words and the numbers ---------------------------------------------------------------


def describe_error(exc: BaseException) -> str:
    """``"ExceptionType: message"``; just the type when the message is empty; safe for any exception."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except BaseException:  # a broken __str__ (raising anything at all) must not lose the failure
        message = f"<exception str() failed: {type(exc).__name__}>"
    return clean_text(f"{name}: {message}" if message else name, MAX_ERROR_CHARS)


def format_traceback(exc: BaseException) -> str:
    try:
        text = "".join(traceback_module.format_exception(exc))
    except Exception:
        text = f"{describe_error(exc)}\n(the traceback could not be formatted)\n"
    return clean_text(text, MAX_TRACEBACK_CHARS)


def timeout_error(timeout_s: float) -> str:
    """The error text of an attempt that ran past its ``timeout``."""
    return f"TimeoutError: task timed out after {timeout_s:g} s"


def dependency_error(dependency_id: str, status: str) -> str:
    """The error text of a task that did not run because the task it waited for (``after=``) did not succeed."""
    return f"DependencyFailed: task {dependency_id} ended {status}, so this task did not run"


def retry_delay_s(retry_backoff: float, attempt: int) -> float:
    """Seconds between failed ``attempt`` and the next: ``retry_backoff * 2**(attempt-1)``, capped, then jittered."""
    low, high = retry_delay_bounds_s(retry_backoff, attempt)
    return random.uniform(low, high)


def retry_delay_bounds_s(retry_backoff: float, attempt: int) -> tuple[float, float]:
    """The shortest and longest delay ``retry_delay_s`` can give for this attempt."""
    exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
    nominal = min(retry_backoff * math.ldexp(1.0, exponent), MAX_RETRY_DELAY_S)
    return nominal * (1 - RETRY_JITTER), nominal * (1 + RETRY_JITTER)


def clean_text(text: str, limit: int) -> str:
    """``text`` as valid UTF-8 (a lone surrogate becomes ``\\udcxx``), the middle cut if it is over ``limit``."""
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        keep = limit // 2 - 20
        text = f"{text[:keep]}\n... ({len(text) - 2 * keep} characters cut) ...\n{text[-keep:]}"
    return text


# -- around the body --------------------------------------------------------------------------


class attempt_scope:
    """Where the body runs: ``current_task()`` answers, ``on_task_started`` has run, instrumentation is open.

    A class rather than a generator: it is on every task's path, and with no hooks and no
    instrumentation it only sets and resets one context variable.
    """

    __slots__ = ("_headers", "_info", "_instrumented", "_token")

    def __init__(self, info: AttemptInfo, headers: Mapping[str, str] | None = None) -> None:
        self._info = info
        self._headers = headers
        self._instrumented: contextlib.AbstractContextManager[None] | None = None
        self._token: contextvars.Token[RunningTask | None] | None = None

    def __enter__(self) -> None:
        info = self._info
        self._token = running_task.set(RunningTask(info.task_id, info.name, info.attempt))
        if hooks.has_started_hooks() or hooks.has_instrumentation():
            started = TaskStarted(info.task_id, info.name, info.attempt)
            try:
                notify_started(started)
                self._instrumented = instrumented(started, self._headers or {})
                self._instrumented.__enter__()
            except BaseException:
                self._reset()
                raise

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._instrumented is not None:
                self._instrumented.__exit__(*exc_info)
        finally:
            self._reset()

    def _reset(self) -> None:
        if self._token is not None:
            running_task.reset(self._token)
            self._token = None


# -- how it ended -----------------------------------------------------------------------------


def succeeded(info: AttemptInfo, value: Any) -> Outcome:
    """The body returned ``value``; a value that cannot be stored fails the attempt with that ``TypeError``."""
    try:
        result = encode_result(info.name, value)
    except TypeError as exc:
        return failed(info, exc)
    outcome = Outcome(info.task_id, info.attempt, TaskStatus.SUCCEEDED, _now(), result=result)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "taskservice: task %s %s succeeded on attempt %d",
            info.name,
            info.task_id,
            info.attempt,
            extra=_extra(info, outcome),
        )
    if hooks.has_finished_hooks():
        notify_finished(TaskFinished(info.task_id, info.name, info.attempt, outcome.status, duration_s=_duration(info)))
    return outcome


def failed(info: AttemptInfo, exc: BaseException, *, retryable: bool = True) -> Outcome:
    """The body raised ``exc``: retried while retries remain (and ``retryable``), else final."""
    return _settle_failure(info, describe_error(exc), format_traceback(exc), exc, retryable)


def timed_out(
    info: AttemptInfo, *, exception: BaseException | None = None, stack: str | None = None, retryable: bool = True
) -> Outcome:
    """The attempt ran past ``info.timeout``; ``stack`` is where a thread that cannot be stopped was at the time."""
    error = timeout_error(info.timeout or 0)
    if stack is not None:
        trace = clean_text(f"{stack}{error}\n", MAX_TRACEBACK_CHARS)
    elif exception is not None:
        trace = format_traceback(exception)
        trace = trace if trace.rstrip().endswith(error) else f"{trace}\n{error}\n"
    else:
        trace = None
    return _settle_failure(info, error, trace, exception, retryable)


def interrupted(info: AttemptInfo, error: str) -> Outcome:
    """The attempt was cut off (a stop, a crash found later): a final failure with ``error``, never retried."""
    return _settle_failure(info, clean_text(error, MAX_ERROR_CHARS), None, None, retryable=False)


def _settle_failure(
    info: AttemptInfo, error: str, trace: str | None, exc: BaseException | None, retryable: bool
) -> Outcome:
    now = _now()
    if retryable and info.retries_left:
        delay_s = retry_delay_s(info.retry_backoff, info.attempt)
        outcome = Outcome(info.task_id, info.attempt, TaskStatus.RETRYING, now, None, error, trace, delay_s)
        log.warning(
            "taskservice: task %s %s failed on attempt %d, retrying in %.3g s: %s",
            info.name,
            info.task_id,
            info.attempt,
            delay_s,
            error,
            extra=_extra(info, outcome),
        )
    else:
        outcome = Outcome(info.task_id, info.attempt, TaskStatus.FAILED, now, None, error, trace)
        details = "" if exc is not None or trace is None else f"\n{trace.rstrip()}"
        log.error(
            "taskservice: task %s %s failed on attempt %d: %s%s",
            info.name,
            info.task_id,
            info.attempt,
            error,
            details,
            exc_info=exc,
            extra=_extra(info, outcome),
        )
    if hooks.has_finished_hooks():
        notify_finished(
            TaskFinished(
                info.task_id,
                info.name,
                info.attempt,
                outcome.status,
                error=error,
                traceback=trace,
                exception=exc,
                duration_s=_duration(info),
                retry_delay_s=outcome.retry_delay_s,
            )
        )
    return outcome


def _extra(info: AttemptInfo, outcome: Outcome) -> dict[str, Any]:
    """The fields a JSON log formatter picks up from the record."""
    return {
        "task_id": info.task_id,
        "task_name": info.name,
        "attempt": info.attempt,
        "task_status": outcome.status.value,
        "error": outcome.error,
        "retry_delay_s": outcome.retry_delay_s,
    }


def _duration(info: AttemptInfo) -> float:
    return max(time.monotonic() - info.started, 0.0)


def _now() -> datetime:
    return datetime.now(UTC)
