"""``set_progress``: how a running task reports how far it got."""

from __future__ import annotations

import contextvars
from collections.abc import Callable

ProgressReporter = Callable[[float, str | None], None]

# Set by the backend around each task attempt; a context variable so concurrent
# async tasks on one loop, and sync tasks on pool threads, each see their own.
current_reporter: contextvars.ContextVar[ProgressReporter | None] = contextvars.ContextVar(
    "taskservice_progress_reporter", default=None
)


def set_progress(percent: float, message: str | None = None) -> None:
    """Record progress (0-100) of the task running here; outside a task it does nothing."""
    if not 0 <= percent <= 100:
        raise ValueError(f"progress must be between 0 and 100, got {percent}")
    reporter = current_reporter.get()
    if reporter is not None:
        reporter(float(percent), message)
