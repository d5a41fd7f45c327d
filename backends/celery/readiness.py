"""Is the Celery backend ready to take work? Redis takes writes, and a live worker consumes each queue.

A census asks both: a short-lived write to Redis (so "up but refusing writes", out of memory, a
read-only replica, MISCONF, shows as well as "unreachable", with the same messages the verbs
raise) and Celery's remote control (``inspect().active_queues()``) for the workers that answer
within a second and the queues they consume. A census is slow (the broadcast waits its whole
timeout for replies), so callers get the last one while it is at most ``MAX_AGE_S`` old, and one
older than ``REFRESH_S`` starts the next in the background: a readiness probe answers at once,
except on the very first call or after a long silence, when it waits for a census (a bounded time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import redis

from backends.celery.connection import reaching_redis, safe_url
from backends.celery.control import WorkerControl, active_queues
from backends.celery.settings import CelerySettings
from taskservice.errors import BackendUnavailable

log = logging.getLogger("taskservice.celery")

PROBE_KEY = "taskservice:readiness-probe"
INSPECT_TIMEOUT_S = 1.0
REFRESH_S = 5.0
MAX_AGE_S = 30.0


@dataclasses.dataclass(frozen=True)
class Census:
    reasons: tuple[str, ...]  # why the backend is not ready; empty: ready
    workers_alive: int | None  # workers that answered; None: they could not be asked
    taken_at: float = dataclasses.field(default_factory=time.monotonic)


class Readiness:
    """Cached censuses of one service; ``queues()`` names the queues its tasks go to."""

    def __init__(
        self,
        client: redis.Redis,
        settings: CelerySettings,
        control: WorkerControl,
        queues: Callable[[], Collection[str]],
    ) -> None:
        self.client = client
        self.settings = settings
        self.control = control
        self.queues = queues
        self._last: Census | None = None
        self._running: concurrent.futures.Future[Census] | None = None
        self._lock = threading.Lock()
        self._persistence_checked = False
        self._pid = os.getpid()
        # Redis's own timeout for the probe, then the broadcast's: a census cannot take longer.
        self.budget_s = settings.redis_timeout_s + INSPECT_TIMEOUT_S + 1.0

    def census(self) -> Census:
        """A census at most ``MAX_AGE_S`` old, waiting (at most ``budget_s``) only if there is none."""
        usable = self._usable()
        if usable is not None:
            return usable
        try:
            return self.refresh().result(timeout=self.budget_s)
        except concurrent.futures.TimeoutError:
            return self._too_slow()
        except Exception as exc:  # the check itself broke (the Celery app could not be made): still an answer
            return _failed(exc)

    async def acensus(self) -> Census:
        """``census`` without blocking the event loop."""
        usable = self._usable()
        if usable is not None:
            return usable
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.refresh())), self.budget_s)
        except TimeoutError:
            return self._too_slow()
        except Exception as exc:
            return _failed(exc)

    def refresh(self) -> concurrent.futures.Future[Census]:
        """Start a census on the control thread unless one is under way; its future."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's census never finishes here
                self._running, self._pid = None, os.getpid()
            if self._running is None or self._running.done():
                self._running = self.control.submit(self._take)
                self._running.add_done_callback(self._keep)
            return self._running

    def _usable(self) -> Census | None:
        last = self._last
        if last is None:
            return None
        age_s = time.monotonic() - last.taken_at
        if age_s > REFRESH_S:
            self.refresh()
        return last if age_s <= MAX_AGE_S else None

    def _keep(self, done: concurrent.futures.Future[Census]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._last = done.result()

    def _too_slow(self) -> Census:
        reason = f"the readiness check of Redis and the Celery workers took longer than {self.budget_s:g} s"
        return Census((reason,), None)

    def _take(self, app: Any) -> Census:
        """One census, on the control thread (``app`` is its Celery app)."""
        try:
            with reaching_redis(self.settings):
                self.client.set(PROBE_KEY, b"1", px=60_000)  # a write: a Redis refusing writes is not ready
        except BackendUnavailable as exc:
            return Census((str(exc),), None)
        self._warn_without_persistence()
        try:
            workers = active_queues(app, INSPECT_TIMEOUT_S)
        except Exception as exc:  # kombu's errors are many; any of them means nobody could be asked
            reason = f"cannot ask the Celery workers which queues they consume ({type(exc).__name__}: {exc})"
            return Census((reason,), None)
        consumed = {queue for queues in workers.values() for queue in queues}
        url = safe_url(self.settings.redis_url)
        reasons = [
            f"no Celery worker consumes the queue {queue!r}: start one "
            f"(celery -A backends.celery_app worker -Q {queue}) that reaches REDIS_URL={url}"
            for queue in sorted(set(self.queues()) - consumed)
        ]
        return Census(tuple(reasons), len(workers))

    def _warn_without_persistence(self) -> None:
        """Log once when Redis keeps nothing across a restart (queued tasks, records and schedules would be lost)."""
        if self._persistence_checked:
            return
        self._persistence_checked = True
        warning = persistence_warning(self.client, self.settings)
        if warning is not None:
            log.warning("taskservice: %s", warning)


def _failed(exc: Exception) -> Census:
    return Census((f"the readiness check of the Celery backend failed ({type(exc).__name__}: {exc})",), None)


def persistence_warning(client: redis.Redis, settings: CelerySettings) -> str | None:
    """What to tell an operator whose Redis has persistence off; None if it persists or cannot be asked."""
    try:
        appendonly = client.config_get("appendonly").get("appendonly")
        save = client.config_get("save").get("save")
    except redis.exceptions.RedisError:  # CONFIG may be renamed or forbidden (managed Redis): nothing to say
        return None
    if appendonly != "no" or save:
        return None
    return (
        f"Redis at {safe_url(settings.redis_url)} has persistence off (appendonly no, no save points): "
        "a restart of Redis loses queued tasks, task records and schedules; turn on appendonly"
    )
