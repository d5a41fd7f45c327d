"""In-process pieces of an attempt that the attempt core (``taskservice.attempts``) does not know about.

- ``within``: an async body under its ``timeout``; past it, ``AttemptTimedOut`` (chained to where it was)
- ``thread_stack``: where a sync task's thread is, for the record of a timeout that cannot stop it
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from taskservice.attempts import timeout_error


class AttemptTimedOut(TimeoutError):
    """An attempt ran past its ``timeout`` (not a ``TimeoutError`` the task raised itself)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


async def within(awaitable: Any, timeout: float) -> Any:
    """Await with a deadline; past it, ``AttemptTimedOut`` saying so (chained to where the task was)."""
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await awaitable
    except TimeoutError as exc:
        if scope.expired():
            raise AttemptTimedOut(timeout_error(timeout).removeprefix("TimeoutError: ")) from exc
        raise


def thread_stack(thread_id: int | None) -> str:
    """The stack of a running thread, headed by what it means for the record."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
    return f"Stack of the task's thread at the timeout (it is left to finish in the background):\n{stack}"
