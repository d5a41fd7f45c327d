"""The worker step that moves due scheduled tasks from Redis onto their Celery queues.

``schedule()``, retry back-offs and parked duplicates wait in a Redis sorted set instead of
the broker (see ``celery_config`` for why). Every worker runs this dispatcher in its main
process; the move is one Lua script, so any number of workers can run it side by side and
each entry is pushed exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import bootsteps

log = logging.getLogger("taskservice.celery")

POLL_INTERVAL_S = 0.25  # the longest a due task waits for its dispatch
BATCH = 200


class ScheduleDispatcher(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no type hints
    """Runs ``TaskRecords.dispatch_due`` in a thread for as long as the worker runs."""

    label = "taskservice schedule dispatcher"
    requires = ("celery.worker.components:Pool",)  # start after the pool forked its processes

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        records = worker.app.backend.records
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._dispatch_forever, args=(records,), name="taskservice-dispatcher", daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _dispatch_forever(self, records: Any) -> None:
        while not self._stopping.is_set():
            try:
                moved, next_due_s = records.dispatch_due(time.time(), BATCH)
            except Exception:  # Redis away: the broker connection will say so too; try again shortly
                log.warning("taskservice: could not dispatch scheduled tasks", exc_info=True)
                self._stopping.wait(1.0)
                continue
            if moved:
                log.debug("taskservice: dispatched %d scheduled task(s)", moved)
            if moved >= BATCH:
                continue
            wait_s = POLL_INTERVAL_S if next_due_s is None else min(POLL_INTERVAL_S, next_due_s - time.time())
            self._stopping.wait(max(0.0, wait_s))
