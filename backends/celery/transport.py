"""kombu's Redis transport, with the bookkeeping of taken messages sent as plain pipelines.

kombu records each message a worker takes (a ZADD and an HSET) and forgets it at the ack (a ZREM
and an HDEL), each pair in a MULTI/EXEC transaction: four commands per task that buy nothing here,
and through a Redis client built anew for each (one is kept per connection pool here).
The pair goes to Redis in one write either way, and the window that matters (between the BRPOP
that takes a message and the write that records it) is the same with or without the transaction.

A Redis that refuses that write (out of memory under ``noeviction``, a read-only replica) would
make kombu raise in the consumer: the worker exits and the message it had just taken is lost. Here
the write is tried again with back-off until Redis takes it, one log line per step (``persist``), and
the periodic restore of old messages is skipped until Redis takes writes again.

Everything else, the restore after the visibility timeout included, is kombu's own code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from backends.celery.outage import RetryLog, is_outage, persist

_RESTORE_LOG = RetryLog("restore messages past the visibility timeout")
_BINDINGS_LOG = RetryLog("refresh the remote-control bindings")


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: Any) -> None:
        persist(super().append, (message, delivery_tag), "record a message this worker took")

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        # periodic and best effort: a Redis that refuses the lock's write now is asked again next time
        try:
            super().restore_visible(*args, **kwargs)  # type: ignore[no-untyped-call]
        except Exception as exc:
            if not is_outage(exc):
                raise
            _RESTORE_LOG.failed(exc)
        else:
            _RESTORE_LOG.succeeded()

    @contextlib.contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        if pipe:
            yield pipe
        else:
            with self.channel.conn_or_acquire(client) as connection:
                yield connection.pipeline(transaction=False)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client: Any = None

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        # kombu builds a new client for each of these calls (two per task), and building one costs
        # more CPU than the round trip it serves; one client per pool does the same work
        if client:
            yield client
            return
        cached = self._sync_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._sync_client = self._create_client()  # type: ignore[no-untyped-call]
        yield cached

    def maybe_refresh_binding_expiry(self) -> None:
        # kombu logs a traceback on every poll while Redis refuses the script: once per back-off step here
        try:
            super().maybe_refresh_binding_expiry()  # type: ignore[no-untyped-call]
        except Exception as exc:
            if not is_outage(exc):
                raise
            _BINDINGS_LOG.failed(exc)  # most calls run no script: a quiet one does not say it works again


class Transport(kombu_redis.Transport):
    Channel = Channel


# the name Celery's own log lines show for the broker URL ("taskservice-redis://host:port/db")
TRANSPORT = "taskservice-redis"
TRANSPORT_ALIASES.setdefault(TRANSPORT, f"{__name__}:Transport")
