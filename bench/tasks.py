"""The taskservice side's tasks: no-ops, so what is measured is the machinery around them.

Celery workers import this module through ``TASK_MODULES=bench.tasks``.
"""

from __future__ import annotations

import asyncio

from taskservice import task

# In-process latency: a task sets the event registered under its token (same process only).
EVENTS: dict[str, asyncio.Event] = {}


@task(name="bench.noop")
def noop(i: int) -> None:
    """A sync no-op (in-process: runs on the thread pool)."""
    return None


@task(name="bench.async_noop")
async def async_noop(i: int) -> None:
    """An async no-op (in-process: runs on the event loop)."""
    return None


@task(name="bench.async_signal")
async def async_signal(token: str) -> None:
    """Set the in-process event registered under ``token``: the body has run."""
    event = EVENTS.pop(token, None)
    if event is not None:
        event.set()


@task(name="bench.async_io")
async def async_io(seconds: float) -> None:
    """Await ``seconds`` of I/O (an HTTP or LLM call stands behind it in real code)."""
    await asyncio.sleep(seconds)
