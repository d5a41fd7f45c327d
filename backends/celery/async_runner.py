"""Where a Celery worker runs the coroutine of an async task.

- In a prefork pool child (or the solo pool), the task's thread is the process's main thread: the
  coroutine runs on that process's own loop, one at a time, and Celery's soft time limit still
  arrives as an exception inside it.
- In the async pool (``--pool=threads``, what ``ASYNC_QUEUE`` is consumed with), each pool thread
  hands its coroutine to the one event loop of the process, which runs in a thread of its own: as
  many coroutines run at once as the pool has threads (``TASK_ASYNC_CONCURRENCY``).

A coroutine cut off (a time limit, a lost lease) is cancelled, never left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any


class _OwnLoop:
    """One event loop per process for async tasks run on the process's main thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if self._loop is None or self._loop.is_closed() or self._pid != os.getpid():
            self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
        loop = self._loop
        future = loop.create_task(coroutine)
        try:
            return loop.run_until_complete(future)
        except BaseException:  # the soft time limit arrives as an exception raised inside the loop
            if not future.done():
                future.cancel()
                with contextlib.suppress(BaseException):  # cancelled on purpose; the first error is what counts
                    loop.run_until_complete(future)
            raise


class _SharedLoop:
    """The event loop of an async pool's process, in a daemon thread; pool threads submit to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=serve, name="taskservice-async-loop", daemon=True).start()
                ready.wait()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, Any], on_started: Callable[[Callable[[], None]], None]) -> Any:
        """Run ``coroutine`` on the shared loop and wait for it; ``on_started`` gets a thread-safe canceller."""
        loop = self.loop()
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, loop)

        def cancel() -> None:
            loop.call_soon_threadsafe(future.cancel)

        on_started(cancel)
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:
            raise asyncio.CancelledError() from exc
        except BaseException:  # e.g. the pool thread is told to stop: the coroutine must not run on
            future.cancel()
            raise


OWN_LOOP = _OwnLoop()
SHARED_LOOP = _SharedLoop()


def run_coroutine(coroutine: Coroutine[Any, Any, Any], on_started: Callable[[Callable[[], None]], None]) -> Any:
    """Run an async task's coroutine where this worker runs them (see the module docstring)."""
    if threading.current_thread() is threading.main_thread():
        return OWN_LOOP.run(coroutine)
    return SHARED_LOOP.run(coroutine, on_started)
