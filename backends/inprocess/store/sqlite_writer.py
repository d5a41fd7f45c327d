"""``SQLiteWriter``: one thread that commits what event loops hand the SQLite store, many writes per transaction.

``aenqueue`` calls, the runner's claims and its outcomes are queued here instead of blocking the
event loop on SQLite (whose lock another process may hold for up to ``busy_timeout``). The thread
takes everything queued, runs it in one transaction and commits: group commit, so N concurrent
``aenqueue`` calls cost about one commit, not N. Each ``done`` callback then runs on its own loop,
after the commit that holds its write (durable against a process crash: WAL, ``synchronous=NORMAL``).

One bad write must not sink the others: when the shared transaction fails, it is run again with a
savepoint around each write, so only the write that failed gets its exception.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Protocol

from backends.inprocess.store.base import Done

log = logging.getLogger("taskservice")

MAX_JOBS_PER_TRANSACTION = 5000  # a longer transaction would keep the store's other users waiting

Work = Callable[[sqlite3.Connection], Any]


class Transactions(Protocol):
    """What the writer needs of its store."""

    def run_together(self, works: list[Work]) -> list[Any]:
        """Run ``works`` in one transaction; each result, or the exception that write raised."""


@dataclasses.dataclass(slots=True)
class _Job:
    work: Work
    loop: asyncio.AbstractEventLoop
    done: Done[Any]


class SQLiteWriter:
    """A daemon thread started on the first ``submit``; ``close`` lets it finish what is queued, then end."""

    def __init__(self, store: Transactions) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, work: Work, loop: asyncio.AbstractEventLoop, done: Done[Any]) -> None:
        """Run ``work(connection)`` in the next transaction; then ``done(result or exception)`` on ``loop``."""
        self._queue.put(_Job(work, loop, done))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name="taskservice-sqlite", daemon=True)
                    self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(None)
        if thread is not threading.current_thread():
            thread.join(timeout_s)

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < MAX_JOBS_PER_TRANSACTION:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            try:
                results = self._store.run_together([job.work for job in jobs])
            except BaseException as exc:  # the store's own guard failed: every write gets the error
                log.exception("taskservice: the SQLite writer failed")
                results = [exc] * len(jobs)
            _deliver(jobs, results)
            if stop:
                return


def _deliver(jobs: list[_Job], results: list[Any]) -> None:
    """One hand-over per loop: each ``done`` runs there, in submission order."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Done[Any], Any]]] = collections.defaultdict(list)
    for job, result in zip(jobs, results, strict=True):
        by_loop[job.loop].append((job.done, result))
    for loop, calls in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting for these any more
            loop.call_soon_threadsafe(_run_callbacks, calls)


def _run_callbacks(calls: list[tuple[Done[Any], Any]]) -> None:
    for done, result in calls:
        try:
            done(result)
        except Exception:  # one caller's callback must not stop the others'
            log.exception("taskservice: a callback of the SQLite writer failed")
