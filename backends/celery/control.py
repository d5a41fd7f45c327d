"""Celery's remote control from the API process, on a thread of its own: revokes and worker censuses.

kombu's broadcast and its reply queue are synchronous and not meant to be shared across threads,
so each ``WorkerControl`` runs its calls on one ``taskservice-control`` thread with one Celery app,
made on first use. kombu retries a broadcast for seconds while Redis refuses it, so work that
must not wait behind another kind (a census behind revokes) gets a ``WorkerControl`` of its own.
Nobody waits for a revoke (the durable mark in Redis is what keeps a cancelled task from running;
the broadcast only lets workers drop a message they hold and Flower show it revoked); a census is
a future the caller may wait on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from backends.celery.settings import CelerySettings

log = logging.getLogger("taskservice.celery")
T = TypeVar("T")


_Job = tuple[Callable[[Any], Any], "concurrent.futures.Future[Any]"]


class WorkerControl:
    """Remote control of the workers on a Redis broker; ``close()`` ends its thread and app.

    The thread is a daemon: a broadcast kombu keeps retrying never holds up the process's exit.
    """

    def __init__(self, settings: CelerySettings) -> None:
        self.settings = settings
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def submit(self, job: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        """Run ``job(celery_app)`` on the control thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._pid != os.getpid():  # a forked child (a pool process) has none of its parent's threads
                self._jobs, self._pid = None, os.getpid()
            if self._jobs is None:
                self._jobs = queue.SimpleQueue()
                threading.Thread(
                    target=self._serve, args=(self._jobs,), name="taskservice-control", daemon=True
                ).start()
            self._jobs.put((job, future))
        return future

    def revoke_soon(self, task_id: str) -> None:
        self.submit(lambda app: _revoke(app, task_id))

    def close(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, None
        if jobs is not None:
            jobs.put(None)

    def _serve(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        from backends.celery.config import create_celery_app

        app: Any = None
        try:
            while (item := jobs.get()) is not None:
                job, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    app = app or create_celery_app(self.settings)
                    future.set_result(job(app))
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
        finally:
            if app is not None:
                app.close()


def _revoke(app: Any, task_id: str) -> None:
    try:
        app.control.revoke(task_id)
    except Exception as exc:  # best effort: the durable mark in Redis is what keeps it from running
        log.warning("taskservice: could not broadcast the revoke of task %s (%s)", task_id, type(exc).__name__)


def active_queues(app: Any, timeout_s: float) -> dict[str, list[str]]:
    """Each worker that answers within ``timeout_s`` and the queues it consumes (a job for ``submit``)."""
    replies = app.control.inspect(timeout=timeout_s).active_queues() or {}
    return {worker: [queue["name"] for queue in queues or ()] for worker, queues in replies.items()}
