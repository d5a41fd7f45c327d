"""What a running task can know about itself (``current_task``) and report (``set_progress``).

Both read context variables the backend sets around each attempt, so concurrent async tasks
on one loop, and sync tasks on pool threads, each see their own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import NamedTuple

ProgressReporter = Callable[[float, str | None], None]


class RunningTask(NamedTuple):
    """The task whose attempt runs here (a named tuple: made for every attempt, so it must be cheap)."""

    id: str
    name: str
    attempt: int  # 1 for the first run


current_reporter: contextvars.ContextVar[ProgressReporter | None] = contextvars.ContextVar(
    "taskservice_progress_reporter", default=None
)
running_task: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar(
    "taskservice_running_task", default=None
)


def current_task() -> RunningTask | None:
    """The task running here (id, name, attempt), or None outside a task."""
    return running_task.get()


def set_progress(percent: float, message: str | None = None) -> None:
    """Record progress (0-100) of the task running here; outside a task it does nothing."""
    if not 0 <= percent <= 100:
        raise ValueError(f"progress must be between 0 and 100, got {percent}")
    reporter = current_reporter.get()
    if reporter is not None:
        reporter(float(percent), message)
