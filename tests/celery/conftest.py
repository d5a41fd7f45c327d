"""Fixtures of the Redis record tests: each runs on fakeredis and on a private redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis

from backends.celery.store.worker_records import WorkerRecords
from tests.processes import RedisServer, redis_server


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("records-redis")) as server:
        yield server


@pytest.fixture(params=["fakeredis", "redis-server"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "fakeredis":
        fake = fakeredis.FakeRedis()
        yield fake
        fake.close()
        return
    server: RedisServer = request.getfixturevalue("real_redis")
    real = redis.Redis.from_url(server.url)
    real.flushdb()
    yield real
    real.close()


@pytest.fixture
def records(client: redis.Redis) -> WorkerRecords:
    return WorkerRecords(client, result_ttl_s=60)
