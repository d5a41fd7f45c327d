"""Reaching Redis from any taskservice process: a client that gives up in time, errors that say what to check."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backends.celery.settings import CelerySettings
from taskservice.errors import BackendUnavailable

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


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


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


@contextlib.contextmanager
def reaching_redis(settings: CelerySettings) -> Iterator[None]:
    """Turn a Redis connection failure into ``BackendUnavailable`` saying what to check."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(
            f"cannot reach Redis at {safe_url(settings.redis_url)} ({type(exc).__name__}: {exc}): "
            f"check REDIS_URL and that Redis is running and reachable "
            f"(TASK_REDIS_TIMEOUT_S={settings.redis_timeout_s:g})"
        ) from exc
