"""One asyncio Redis client per event loop: never shared across loops or threads, closed with its loop.

An asyncio connection belongs to the loop that opened it: using it from another loop (a second
``asyncio.run``, a pytest loop per test, a thread with its own loop) fails or hangs. ``PerLoop``
hands every running loop its own value (a client and what is built on it), made on first use in
that loop. It is closed when the loop shuts down (``asyncio.run``, uvicorn and the pytest plugins
all run ``loop.shutdown_asyncgens()`` last, which finalizes a guard generator started in the loop),
when the service's lifespan stops (``close_current``), or with the service (``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclasses.dataclass
class _Entry(Generic[T]):
    value: T
    guard: AsyncGenerator[None, None] | None = None  # kept alive here: the loop only holds it weakly


class PerLoop(Generic[T]):
    """``await per_loop.current()``: this loop's value, made by ``make()``; ``aclose(value)`` ends it."""

    def __init__(self, make: Callable[[], T], aclose: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._aclose = aclose
        self._lock = threading.Lock()  # loops in different threads add and drop entries concurrently
        self._entries: dict[asyncio.AbstractEventLoop, _Entry[T]] = {}
        self._closing: set[asyncio.Future[None]] = set()  # close() tasks, referenced until they ran

    async def current(self) -> T:
        """The running loop's value, made on its first use (after ``close`` too: a closed service reconnects)."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None:
            return entry.value
        with self._lock:
            self._drop_closed_loops()
            entry = self._entries[loop] = _Entry(self._make())
        # The guard's ``finally`` runs when the loop finalizes its async generators, while it still runs.
        entry.guard = self._guard(loop, entry)
        await entry.guard.asend(None)
        return entry.value

    async def close_current(self) -> None:
        """Close the running loop's value now (the lifespan's end); the next use makes a new one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.pop(loop, None)
        if entry is not None:
            await self._aclose(entry.value)

    def close(self) -> None:
        """Close every loop's value, from any thread: at once in a running loop, soon in another thread's."""
        with self._lock:
            entries, self._entries = self._entries, {}
        for loop, entry in entries.items():
            if loop.is_closed() or not loop.is_running():
                continue  # nothing can run there any more; its sockets close when collected
            if _running_loop() is loop:
                task = loop.create_task(self._close_value(entry.value))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            else:
                with contextlib.suppress(RuntimeError):  # the loop stopped in between
                    asyncio.run_coroutine_threadsafe(self._close_value(entry.value), loop)

    async def _close_value(self, value: T) -> None:  # a coroutine, as run_coroutine_threadsafe needs
        await self._aclose(value)

    async def _guard(self, loop: asyncio.AbstractEventLoop, entry: _Entry[T]) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                mine = self._entries.get(loop) is entry
                if mine:
                    del self._entries[loop]
            if mine:
                await self._aclose(entry.value)

    def _drop_closed_loops(self) -> None:
        """Forget loops closed without finalizing their generators (``loop.close()`` by hand)."""
        for loop in [loop for loop in self._entries if loop.is_closed()]:
            del self._entries[loop]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
