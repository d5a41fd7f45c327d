"""How worker threads live through a Redis outage: one log line per retry step, with back-off, no tracebacks.

``refusal`` words what Redis answered (unreachable, hung, or up and refusing writes: out of
memory, a read-only replica, MISCONF) the way the API side does, as ``BackendUnavailable``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from backends.celery.connection import REDIS_ERRORS
from taskservice.errors import BackendUnavailable

log = logging.getLogger("taskservice.celery")

_REFUSALS = (
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.MasterDownError,
)
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0


def is_outage(exc: BaseException) -> bool:
    """Redis cannot take the work now (unreachable, hung, refusing writes), as opposed to a bug."""
    if isinstance(exc, (*REDIS_ERRORS, *_REFUSALS)):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(("MISCONF", "OOM", "READONLY"))


def unavailable(exc: BaseException) -> BackendUnavailable:
    """``BackendUnavailable`` naming what Redis answered and what to check."""
    text = str(exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
        reason = "refuses writes: it is out of memory (maxmemory reached, maxmemory-policy noeviction)"
    elif isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith("READONLY"):
        reason = "is a read-only replica (after a failover?): point REDIS_URL at the primary"
    elif text.startswith("MISCONF"):
        reason = "refuses writes because its last save to disk failed (MISCONF)"
    else:
        reason = f"cannot be reached ({type(exc).__name__}: {text})"
    return BackendUnavailable(f"Redis {reason}")


class RetryLog:
    """Back-off and logging for a loop that talks to Redis: a WARNING line per failed step, doubling
    the wait (1 s up to 30 s), and an INFO line once it works again. Failures reported faster than
    the back-off (a caller that does not wait) are counted, not logged."""

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self._failures = 0
        self._next_line_at = 0.0
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def delay_s(self, normal_s: float) -> float:
        """How long to wait before the next step: ``normal_s``, or the back-off while failing."""
        with self._lock:
            if not self._failures:
                return normal_s
            return float(min(FIRST_RETRY_S * 2 ** (self._failures - 1), MAX_RETRY_S))

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next_line_at:
                return
            self._failures += 1
            wait_s = min(FIRST_RETRY_S * 2 ** (self._failures - 1), MAX_RETRY_S)
            self._next_line_at = now + wait_s * 0.9
        if is_outage(exc):
            log.warning("taskservice: could not %s: %s; trying again in %.0f s", self.doing, unavailable(exc), wait_s)
        else:  # not Redis being away: a defect worth its traceback, once per step all the same
            log.error("taskservice: could not %s; trying again in %.0f s", self.doing, wait_s, exc_info=exc)

    def succeeded(self) -> None:
        with self._lock:
            failures, self._failures, self._next_line_at = self._failures, 0, 0.0
        if failures:
            log.info("taskservice: Redis answers again (%s)", self.doing)


PATIENCE_S = 300.0  # how long a claim or a result waits for Redis before giving up (the lease then recovers it)


def persist(fun: Any, args: tuple[Any, ...], doing: str, patience_s: float = PATIENCE_S) -> Any:
    """``fun(*args)``, tried again with back-off while Redis is away or refusing writes (one line per step);
    the last error after ``patience_s``. Other errors are raised at once."""
    retry_log = RetryLog(doing)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            result = fun(*args)
        except Exception as exc:
            if not is_outage(exc) or time.monotonic() >= deadline:
                raise
            retry_log.failed(exc)
            time.sleep(retry_log.delay_s(0.0))
            continue
        retry_log.succeeded()
        return result
