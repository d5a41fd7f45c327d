"""Celery's remote control from the API process, on one thread of its own: revokes and worker censuses.

kombu's broadcast and its reply queue are synchronous and not meant to be shared across threads,
so every call runs on one ``taskservice-control`` thread with one Celery app, made on first use.
Nobody waits for a revoke (the durable mark in Redis is what keeps a cancelled task from running;
the broadcast only lets workers drop a message they hold and Flower show it revoked); a census is
a future the caller may wait on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from backends.celery.settings import CelerySettings

log = logging.getLogger("taskservice.celery")
T = TypeVar("T")


class WorkerControl:
    """Remote control of the workers on a Redis broker; ``close()`` ends its thread and app."""

    def __init__(self, settings: CelerySettings) -> None:
        self.settings = settings
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._app: Any = None  # only touched on the control thread
        self._lock = threading.Lock()

    def submit(self, job: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        """Run ``job(celery_app)`` on the control thread."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child (a pool process) has none of its parent's threads
                self._executor, self._app, self._pid = None, None, os.getpid()
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="taskservice-control")
            return self._executor.submit(self._run, job)

    def revoke_soon(self, task_id: str) -> None:
        self.submit(lambda app: _revoke(app, task_id))

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close_app)
            executor.shutdown(wait=False)

    def _run(self, job: Callable[[Any], T]) -> T:
        if self._app is None:
            from backends.celery.config import create_celery_app

            self._app = create_celery_app(self.settings)
        return job(self._app)

    def _close_app(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None


def _revoke(app: Any, task_id: str) -> None:
    try:
        app.control.revoke(task_id)
    except Exception:  # best effort: the durable mark in Redis is what keeps it from running
        log.warning("taskservice: could not broadcast the revoke of task %s", task_id, exc_info=True)


def active_queues(app: Any, timeout_s: float) -> dict[str, list[str]]:
    """Each worker that answers within ``timeout_s`` and the queues it consumes (a job for ``submit``)."""
    replies = app.control.inspect(timeout=timeout_s).active_queues() or {}
    return {worker: [queue["name"] for queue in queues or ()] for worker, queues in replies.items()}
