"""Leases of the attempts running in a worker process: refreshed from one daemon thread per process.

Each attempt gets its own token (``node|pid|n``); the claim stores it in the record and in the
lease key. A refresh extends the lease, takes a lapsed one back if nobody took the task over
(a pause, Redis away for a while), and never takes one held by another token: an attempt whose
task was taken over *loses* its lease, learns it at the next refresh (``Attempt.lost``, a warning;
an attempt in the async pool is cancelled), and the result backend refuses whatever it stores
afterwards.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from backends.celery.outage import RetryLog
from backends.celery.store.worker_records import WorkerRecords

log = logging.getLogger("taskservice.celery")


@dataclasses.dataclass(eq=False)
class Attempt:
    """One attempt this process runs: its token, and whether it lost the task to another holder."""

    task_id: str
    token: str
    lost: threading.Event = dataclasses.field(default_factory=threading.Event)
    on_lost: Callable[[], Any] | None = None  # e.g. cancel the attempt's coroutine


class LeaseKeeper:
    """Holds the attempts of this process; a prefork child starts its own thread on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, Attempt] = {}
        self._records: WorkerRecords | None = None
        self._lease_ms = 20_000
        self._wake = threading.Event()
        self._pid: int | None = None
        self._counter = itertools.count(1)
        self._retry_log = RetryLog("refresh the leases of running tasks")

    def attempt(self, node: str, task_id: str) -> Attempt:
        """A new attempt of ``task_id`` with a token of its own: claim with ``attempt.token``, then ``hold`` it."""
        with self._lock:
            self._adopt_process()
            return Attempt(task_id, f"{node}|{self._pid}|{next(self._counter)}")

    def hold(self, attempt: Attempt, records: WorkerRecords, lease_ms: int) -> None:
        """Keep refreshing the lease ``attempt`` claimed with, until ``release``."""
        with self._lock:
            self._adopt_process()
            self._held[attempt.task_id] = attempt
            self._records = records
            if lease_ms != self._lease_ms:  # the first task of this process: refresh at its pace from now on
                self._lease_ms = lease_ms
                self._wake.set()

    def release(self, attempt: Attempt) -> None:
        with self._lock:
            if self._held.get(attempt.task_id) is attempt:
                del self._held[attempt.task_id]

    def _adopt_process(self) -> None:
        if self._pid != os.getpid():  # threads do not survive a fork: each process starts its own
            self._pid = os.getpid()
            self._held = {}
            self._wake = threading.Event()
            threading.Thread(target=self._refresh_forever, name="taskservice-lease", daemon=True).start()

    def _refresh_forever(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            with self._lock:
                interval_s = self._lease_ms / 3000
            self._wake.wait(self._retry_log.delay_s(interval_s))
            self._wake.clear()
            with self._lock:
                held, lease, records = dict(self._held), self._lease_ms, self._records
            if not held or records is None:
                continue
            try:
                lost = records.refresh_leases({task_id: a.token for task_id, a in held.items()}, lease)
            except Exception as exc:  # Redis away: a lapsed lease is taken back at the next refresh that works
                self._retry_log.failed(exc)
                continue
            self._retry_log.succeeded()
            for task_id in lost:
                attempt = held[task_id]
                if not attempt.lost.is_set():
                    attempt.lost.set()
                    log.warning(
                        "taskservice: task %s lost its lease to another worker: this attempt's result will be dropped",
                        task_id,
                    )
                    if attempt.on_lost is not None:
                        attempt.on_lost()


LEASES = LeaseKeeper()
