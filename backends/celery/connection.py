"""Reaching Redis from any taskservice process: clients that give up in time, errors that say what to do.

``connect_redis`` (threads) and ``connect_async_redis`` (one event loop) build clients with the
same limits. ``reaching_redis`` turns what Redis answers when it cannot take the work into
``BackendUnavailable``: unreachable or hung, but also up and refusing writes (out of memory
under ``noeviction``, a read-only replica after a failover, MISCONF after a failed save), each
with a message that names the cause and the fix, and never the password.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from backends.celery.settings import CelerySettings
from taskservice.errors import BackendUnavailable

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
ASYNC_CLIENT_NAME = "taskservice-async"  # what CLIENT LIST shows for the async verbs' connections


def connect_redis(settings: CelerySettings) -> redis.Redis:
    """A client that gives up within ``TASK_REDIS_TIMEOUT_S``: one quick retry for a dropped connection only."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        # A connection Redis closed (a restart) is retried once at once; a timeout is not
        # retried, so the caller hears within the timeout, never after several of them.
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        health_check_interval=0,
    )


def connect_async_redis(settings: CelerySettings) -> redis.asyncio.Redis:
    """``connect_redis`` for one event loop: the same timeouts and the same single retry.

    A client belongs to the loop that first uses it; ``backends.celery.async_clients`` keeps one per loop.
    """
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        client_name=ASYNC_CLIENT_NAME,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        retry=AsyncRetry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        health_check_interval=0,
    )


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def refusal(settings: CelerySettings, exc: BaseException) -> BackendUnavailable | None:
    """The ``BackendUnavailable`` that ``exc`` from Redis stands for, or None if it is not an outage."""
    where = f"Redis at {safe_url(settings.redis_url)}"
    text = str(exc)
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return BackendUnavailable(f"{where} refused the credentials: check the user and password in REDIS_URL")
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return BackendUnavailable(f"{where} is still loading its data set after a restart: try again in a moment")
    if isinstance(exc, REDIS_ERRORS):
        return BackendUnavailable(
            f"cannot reach {where} ({type(exc).__name__}: {exc}): "
            f"check REDIS_URL and that Redis is running and reachable "
            f"(TASK_REDIS_TIMEOUT_S={settings.redis_timeout_s:g})"
        )
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return BackendUnavailable(
            f"{where} refuses writes: it is out of memory (maxmemory reached, maxmemory-policy noeviction): "
            "raise its maxmemory or free memory there; a shorter TASK_RESULT_TTL_S keeps fewer finished records"
        )
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return BackendUnavailable(f"{where} is a read-only replica (after a failover?): point REDIS_URL at the primary")
    if isinstance(exc, redis.exceptions.MasterDownError):
        return BackendUnavailable(
            f"{where} is a replica that lost its primary and serves no data: point REDIS_URL at the primary"
        )
    if isinstance(exc, redis.exceptions.ResponseError) and text.startswith("MISCONF"):
        return BackendUnavailable(
            f"{where} refuses writes because its last save to disk failed (MISCONF): "
            "check the disk and the 'dir' of that server (its log says why the save failed)"
        )
    return None


@contextlib.contextmanager
def reaching_redis(settings: CelerySettings) -> Iterator[None]:
    """Turn Redis being unreachable, or up but refusing the work, into ``BackendUnavailable`` saying what to do.

    Works around ``await`` too: ``with reaching_redis(settings): await client.get(...)``.
    """
    try:
        yield
    except redis.exceptions.RedisError as exc:
        unavailable = refusal(settings, exc)
        if unavailable is None:
            raise
        raise unavailable from exc
