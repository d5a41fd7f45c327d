"""``Outstanding``: the tasks this process accepted and has not yet seen end, which ``drain()`` waits for.

Entries are added where work enters a run (an enqueue, before its start is deferred to the end of
the response; an adoption; a periodic firing; a dependency released) and removed where the run
learns that a task ended (its final outcome recorded, a claim that found it gone, a cancel, a stop).
A task counts while it waits in the inbox or a ready queue, runs, waits for a retry, or waits on
``after=``; a scheduled one only if it is due before the drain's deadline.

A waiter sleeps until an entry goes (no polling); every ``RECONCILE_S`` it also asks the store which
of the ones left are still active and this run's, so a task another process took over (a sibling
released it, or adopted it after a long pause) cannot keep a drain waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

RECONCILE_S = 0.25

Reconcile = Callable[[Collection[str]], set[str]]  # of these ids, the ones still active and owned here


class Outstanding:
    """Task ids with their names and when they may run (None: as soon as possible); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tasks: dict[str, tuple[str, datetime | None]] = {}
        self._due_now = 0  # entries with no due time: while there is one, a drain is not done
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._waiting_threads = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._tasks)

    def add(self, task_id: str, name: str, due_at: datetime | None = None) -> None:
        with self._lock:
            previous = self._tasks.get(task_id)
            if previous is not None and previous[1] is None:
                self._due_now -= 1
            self._tasks[task_id] = (name, due_at)
            if due_at is None:
                self._due_now += 1

    def discard(self, task_ids: Collection[str]) -> None:
        if not task_ids:
            return
        with self._lock:
            tasks = self._tasks
            for task_id in task_ids:
                entry = tasks.pop(task_id, None)
                if entry is not None and entry[1] is None:
                    self._due_now -= 1
            if (self._async_waiters or self._waiting_threads) and not self._due_now:
                self._notify()  # only a change that may end a drain wakes its waiters

    def wait(self, timeout_s: float, reconcile: Reconcile) -> None:
        """Until nothing due before ``timeout_s`` from now is left; ``TimeoutError`` naming what is."""
        deadline = time.monotonic() + timeout_s
        horizon = datetime.now(UTC) + timedelta(seconds=timeout_s)
        next_check = time.monotonic() + RECONCILE_S
        while True:
            with self._lock:
                if not self._busy(horizon):
                    return
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError(f"{describe(self._left(horizon))} after {timeout_s} s")
                if now < next_check:
                    self._waiting_threads += 1
                    try:
                        self._changed.wait(min(deadline, next_check) - now)
                    finally:
                        self._waiting_threads -= 1
                    continue
                left = self._left(horizon)
            self._reconcile(left, reconcile)
            next_check = time.monotonic() + RECONCILE_S

    async def await_idle(self, timeout_s: float, reconcile: Reconcile) -> None:
        """``wait`` for async code: sleeps on an event, never blocks the loop (``reconcile`` runs on a thread)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        deadline = time.monotonic() + timeout_s
        horizon = datetime.now(UTC) + timedelta(seconds=timeout_s)
        next_check = time.monotonic() + RECONCILE_S
        with self._lock:
            self._async_waiters.add(waiter)
        try:
            while True:
                with self._lock:
                    busy = self._busy(horizon)
                    event.clear()
                if not busy:
                    return
                now = time.monotonic()
                if now >= deadline:
                    with self._lock:
                        left = self._left(horizon)
                    raise TimeoutError(f"{describe(left)} after {timeout_s} s")
                if now >= next_check:
                    with self._lock:
                        left = self._left(horizon)
                    await asyncio.to_thread(self._reconcile, left, reconcile)
                    next_check = time.monotonic() + RECONCILE_S
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(deadline, next_check) - now)
        finally:
            with self._lock:
                self._async_waiters.discard(waiter)

    # -- internals ----------------------------------------------------------------------------

    def _left(self, horizon: datetime) -> list[tuple[str, str]]:
        """Caller holds the lock: (id, name) of what counts."""
        return [(task_id, name) for task_id, (name, due) in self._tasks.items() if due is None or due < horizon]

    def _busy(self, horizon: datetime) -> bool:
        """Caller holds the lock: whether anything counts (without listing it: a wake-up is frequent)."""
        return bool(self._due_now) or any(due is not None and due < horizon for _name, due in self._tasks.values())

    def _reconcile(self, left: list[tuple[str, str]], reconcile: Reconcile) -> None:
        ids = [task_id for task_id, _name in left]
        still = reconcile(ids)
        self.discard([task_id for task_id in ids if task_id not in still])

    def _notify(self) -> None:
        """Caller holds the lock."""
        self._changed.notify_all()
        for loop, event in self._async_waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed; its waiter is gone with it
                loop.call_soon_threadsafe(event.set)


def describe(left: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"{name} {task_id}" for task_id, name in left[:5])
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    return f"{len(left)} task(s) still outstanding: {shown}{more}"
