"""How one attempt of a task ends, in the words its record keeps; and when the next attempt comes.

- success: the return value as a Celery worker would store it (through JSON; a value JSON
  cannot carry fails the attempt with that ``TypeError``)
- failure: ``"ExceptionType: message"`` and the formatted traceback, for any exception
- timeout: ``TimeoutError: task timed out after N s``, with where the task was at the deadline
- retry delay: ``retry_backoff * 2**(attempt-1)`` seconds, +/-25 % jitter, at most ``MAX_RETRY_DELAY_S``
"""

from __future__ import annotations

import asyncio
import math
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from backends.inprocess.store.base import INTERRUPTED_BY_STOP, Outcome
from taskservice.codec import encode_result
from taskservice.failures import describe_error, timeout_error
from taskservice.models import TaskStatus
from taskservice.service import TaskCall

_UNCHANGED_BY_JSON = (str, int, bool, type(None))


def utcnow() -> datetime:
    return datetime.now(UTC)


async def within(awaitable: Any, timeout: float) -> Any:
    """Await with a deadline; past it, ``TimeoutError`` saying so (chained to where the task was)."""
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await awaitable
    except TimeoutError as exc:
        if scope.expired():
            raise TimeoutError(f"task timed out after {timeout:g} s") from exc
        raise


def success(call: TaskCall, attempt: int, value: Any) -> Outcome:
    if type(value) in _UNCHANGED_BY_JSON or (type(value) is float and math.isfinite(value)):
        result = value  # what JSON would give back anyway, without the round trip
    else:
        result = encode_result(call.task.name, value)  # TypeError: the attempt fails with it
    return Outcome(call.id, attempt, TaskStatus.SUCCEEDED, utcnow(), result=result)


def failure(call: TaskCall, attempt: int, exc: BaseException) -> Outcome:
    return Outcome(
        call.id,
        attempt,
        TaskStatus.FAILED,
        utcnow(),
        error=describe_error(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def thread_timed_out(call: TaskCall, attempt: int, thread_id: int | None) -> Outcome:
    """A sync attempt past its timeout; its "traceback" is the thread's stack at the deadline."""
    error = timeout_error(call.options.timeout or 0)
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
    heading = "Stack of the task's thread at the timeout (it is left to finish in the background):"
    return Outcome(call.id, attempt, TaskStatus.FAILED, utcnow(), error=error, traceback=f"{heading}\n{stack}{error}\n")


def interrupted(call: TaskCall, attempt: int) -> Outcome:
    return Outcome(call.id, attempt, TaskStatus.FAILED, utcnow(), error=INTERRUPTED_BY_STOP)
