"""The worker step that keeps tasks moving: due schedules, recovery of dead workers' tasks, retention.

In a thread of every worker's main process:

- ``schedule()``, retry back-offs and parked duplicates wait in a Redis sorted set instead of the
  broker (see ``lease_ms`` in the config for why); each is pushed onto its queue when due by Redis's clock;
- every few seconds, ``RECOVER`` re-publishes the tasks of workers that are gone: a task running
  without a lease (its holder stopped refreshing) or taken and never claimed, so it completes on a
  live worker within about a lease plus a few seconds, not after the visibility timeout;
- every half minute, records that finished more than ``TASK_RESULT_TTL_S`` ago are removed.

Each step is one Lua script, so any number of workers run this side by side and each entry is
pushed once. With Redis away, it logs one line per retry step and backs off.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import bootsteps

from backends.celery.outage import RetryLog
from backends.celery.persistence import persistence_warning

log = logging.getLogger("taskservice.celery")

POLL_INTERVAL_S = 0.25  # the longest a due task waits for its dispatch
BATCH = 200
RECOVER_INTERVAL_S = 2.0
TRIM_INTERVAL_S = 30.0
TRIM_BATCH = 1000


def unacked_keys(app: Any) -> tuple[str, str]:
    """The transport's keys for taken messages (the index by delivery time, the hash of messages)."""
    options = app.conf.broker_transport_options or {}
    prefix = options.get("global_keyprefix", "")
    return prefix + options.get("unacked_index_key", "unacked_index"), prefix + options.get("unacked_key", "unacked")


class ScheduleDispatcher(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no type hints
    """Runs due dispatch, recovery and retention in a thread for as long as the worker runs."""

    label = "taskservice schedule dispatcher"
    requires = ("celery.worker.components:Pool",)  # start after the pool forked its processes

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        backend = worker.app.backend
        warning = persistence_warning(backend.client)
        if warning:
            log.warning("taskservice: %s", warning)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._dispatch_forever,
            args=(backend.records, backend.lease_ms, unacked_keys(worker.app)),
            name="taskservice-dispatcher",
            daemon=True,
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _dispatch_forever(self, records: Any, lease_ms: int, unacked: tuple[str, str]) -> None:
        retry_log = RetryLog("dispatch scheduled tasks")
        next_recovery = next_trim = 0.0
        while not self._stopping.is_set():
            try:
                moved, next_due_s, now_s = records.dispatch_due(BATCH)
                if time.monotonic() >= next_recovery:
                    next_recovery = time.monotonic() + min(RECOVER_INTERVAL_S, lease_ms / 4000)
                    for task_id in records.recover(lease_ms, *unacked):
                        log.info("taskservice: task %s had no live worker; published it again", task_id)
                if time.monotonic() >= next_trim:  # a short retention (tests) is trimmed more often
                    next_trim = time.monotonic() + min(TRIM_INTERVAL_S, max(1.0, records.result_ttl_s / 4))
                    for _ in range(10):
                        if records.trim(TRIM_BATCH) < TRIM_BATCH:
                            break
            except Exception as exc:  # Redis away: one line per step, then back off
                retry_log.failed(exc)
                self._stopping.wait(retry_log.delay_s(0.0))
                continue
            retry_log.succeeded()
            if moved:
                log.debug("taskservice: dispatched %d scheduled task(s)", moved)
            if moved >= BATCH:
                continue
            wait_s = POLL_INTERVAL_S if next_due_s is None else min(POLL_INTERVAL_S, next_due_s - now_s)
            self._stopping.wait(max(0.0, wait_s))
