"""``TaskThreadPool``: the in-process backend's own bounded threads for sync tasks.

Not the server's request thread pool (anyio's), so sync work never starves request handling,
and not a ``ThreadPoolExecutor``, whose threads the interpreter joins at exit: a sync task
that overran its timeout cannot be killed, and must not keep the process from exiting.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("taskservice")


class TaskThreadPool:
    """Up to ``max_threads`` daemon threads, started on demand; ``submit`` never blocks."""

    def __init__(self, max_threads: int, name: str = "taskservice-sync") -> None:
        self.max_threads = max_threads
        self.name = name
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` on a pool thread; it waits only if every thread is busy."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the task thread pool is shut down")
            self._work.put(work)
            if self._idle:
                self._idle -= 1  # that idle thread takes this work
            elif len(self._threads) < self.max_threads:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def shutdown(self) -> None:
        """Threads exit once their current work returns; nothing waits for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._work.put(None)

    @property
    def size(self) -> int:
        return len(self._threads)

    def _serve(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            try:
                work()
            except BaseException:  # the work records its own failures; this is a last resort
                log.exception("taskservice: a sync task thread failed outside its task")
            with self._lock:
                self._idle += 1
