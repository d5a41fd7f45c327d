"""kombu's Redis transport, with the bookkeeping of taken messages sent as plain pipelines.

kombu records each message a worker takes (a ZADD and an HSET) and forgets it at the ack (a ZREM
and an HDEL), each pair in a MULTI/EXEC transaction: four commands per task that buy nothing here.
The pair goes to Redis in one write either way, and the window that matters (between the BRPOP
that takes a message and the write that records it) is the same with or without the transaction.
Everything else, the restore after the visibility timeout included, is kombu's own code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis


class QoS(kombu_redis.QoS):
    @contextlib.contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        if pipe:
            yield pipe
        else:
            with self.channel.conn_or_acquire(client) as connection:
                yield connection.pipeline(transaction=False)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
