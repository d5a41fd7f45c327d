"""``wait()`` and ``await_result()`` on the Celery backend: woken by the task's result channel, not by polling.

Every change of a task's result is published on Celery's channel ``celery-task-meta-<id>`` (the
STORE and CANCEL scripts do it in the same round trip as the record change), which is what raw
``AsyncResult.get()`` listens to. A wait subscribes, and only once Redis confirmed the
subscription reads the record: a task that ends in between is then either seen by the read or
announced on the channel, so no wake-up is lost. Each message (or a quiet interval, in case a
status was ever set without a message) leads to another read, until the record is final.

Subscriptions use connections of their own; a finished wait unsubscribes and keeps its
connection for the next wait (one set per process for ``wait``, one per event loop for
``await_result``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from backends.celery.connection import reaching_redis
from backends.celery.settings import CelerySettings
from backends.celery.store.records import TaskRecords
from taskservice.errors import TaskNotFound
from taskservice.models import TaskResult

FIRST_RECHECK_S = 0.05  # a quiet channel leads to a read after this, then after twice as long, ...
MAX_RECHECK_S = 1.0
MAX_IDLE = 32  # subscription connections kept for later waits; more are closed


def _still(task_id: str, result: TaskResult, timeout_s: float) -> TimeoutError:
    return TimeoutError(f"task {task_id} is still {result.status.value} after {timeout_s} s")


def _announces(message: dict[str, Any] | None, channel: bytes, kind: str) -> bool:
    return message is not None and message["type"] == kind and message["channel"] == channel


class ResultWaits:
    """Blocking waits, from any thread; each takes a subscription connection of its own."""

    def __init__(self, client: redis.Redis, settings: CelerySettings) -> None:
        self.client = client
        self.settings = settings
        self._idle: list[redis.client.PubSub] = []
        self._lock = threading.Lock()

    def wait(self, task_id: str, read: Callable[[], TaskResult], timeout_s: float) -> TaskResult:
        """The final snapshot (as ``read()`` returns it); ``TimeoutError`` after ``timeout_s``.

        Errors of ``read`` (``TaskNotFound``, ``BackendUnavailable``) come through as they are.
        """
        deadline = time.monotonic() + timeout_s
        channel = TaskRecords.meta_key(task_id).encode()
        pubsub = self._take()
        reusable = False
        try:
            with reaching_redis(self.settings):
                pubsub.subscribe(channel)
                self._confirmed(pubsub, channel)
            reusable = True  # from here on, only our own errors: the connection stays in step
            result = read()
            recheck_s = FIRST_RECHECK_S
            while not result.status.is_final:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise _still(task_id, result, timeout_s)
                reusable = False
                with reaching_redis(self.settings):
                    woken = self._message(pubsub, channel, min(remaining_s, recheck_s))
                reusable = True
                recheck_s = FIRST_RECHECK_S if woken else min(recheck_s * 2, MAX_RECHECK_S)
                result = read()
            return result
        except (TaskNotFound, TimeoutError):
            raise
        except BaseException:
            reusable = False
            raise
        finally:
            self._give_back(pubsub, channel, reusable)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pubsub in idle:
            pubsub.close()

    def _confirmed(self, pubsub: redis.client.PubSub, channel: bytes) -> None:
        deadline = time.monotonic() + self.settings.redis_timeout_s
        while not _announces(pubsub.get_message(timeout=max(0.0, deadline - time.monotonic())), channel, "subscribe"):
            if time.monotonic() >= deadline:
                raise redis.exceptions.TimeoutError("Redis did not confirm the subscription in time")

    @staticmethod
    def _message(pubsub: redis.client.PubSub, channel: bytes, timeout_s: float) -> bool:
        """Whether the task's channel spoke within ``timeout_s`` (what other channels left behind is skipped)."""
        deadline = time.monotonic() + timeout_s
        while (left_s := deadline - time.monotonic()) > 0:
            if _announces(pubsub.get_message(timeout=left_s), channel, "message"):
                return True
        return False

    def _take(self) -> redis.client.PubSub:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        pubsub: redis.client.PubSub = self.client.pubsub()  # type: ignore[no-untyped-call]  # redis-py: untyped
        return pubsub

    def _give_back(self, pubsub: redis.client.PubSub, channel: bytes, reusable: bool) -> None:
        if reusable:
            try:
                pubsub.unsubscribe(channel)  # type: ignore[no-untyped-call]  # confirmation: skipped by the next wait
            except redis.exceptions.RedisError:
                reusable = False
        with self._lock:
            if reusable and len(self._idle) < MAX_IDLE:
                self._idle.append(pubsub)
                return
        pubsub.close()


class AsyncResultWaits:
    """``ResultWaits`` for one event loop's client; never blocks the loop."""

    def __init__(self, client: redis.asyncio.Redis, settings: CelerySettings) -> None:
        self.client = client
        self.settings = settings
        self._idle: list[redis.asyncio.client.PubSub] = []

    async def wait(self, task_id: str, read: Callable[[], Awaitable[TaskResult]], timeout_s: float) -> TaskResult:
        deadline = time.monotonic() + timeout_s
        channel = TaskRecords.meta_key(task_id).encode()
        pubsub = self._idle.pop() if self._idle else self.client.pubsub()
        reusable = False
        try:
            with reaching_redis(self.settings):
                await pubsub.subscribe(channel)
                await self._confirmed(pubsub, channel)
            reusable = True
            result = await read()
            recheck_s = FIRST_RECHECK_S
            while not result.status.is_final:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise _still(task_id, result, timeout_s)
                reusable = False  # a cancellation mid-read leaves the connection out of step
                with reaching_redis(self.settings):
                    woken = await self._message(pubsub, channel, min(remaining_s, recheck_s))
                reusable = True
                recheck_s = FIRST_RECHECK_S if woken else min(recheck_s * 2, MAX_RECHECK_S)
                result = await read()
            return result
        except (TaskNotFound, TimeoutError):
            raise
        except BaseException:
            reusable = False
            raise
        finally:
            await self._give_back(pubsub, channel, reusable)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for pubsub in idle:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _confirmed(self, pubsub: redis.asyncio.client.PubSub, channel: bytes) -> None:
        deadline = time.monotonic() + self.settings.redis_timeout_s
        while not _announces(
            await pubsub.get_message(timeout=max(0.0, deadline - time.monotonic())), channel, "subscribe"
        ):
            if time.monotonic() >= deadline:
                raise redis.exceptions.TimeoutError("Redis did not confirm the subscription in time")

    @staticmethod
    async def _message(pubsub: redis.asyncio.client.PubSub, channel: bytes, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while (left_s := deadline - time.monotonic()) > 0:
            if _announces(await pubsub.get_message(timeout=left_s), channel, "message"):
                return True
        return False

    async def _give_back(self, pubsub: redis.asyncio.client.PubSub, channel: bytes, reusable: bool) -> None:
        if reusable:
            try:
                await pubsub.unsubscribe(channel)
            except redis.exceptions.RedisError:
                reusable = False
        if reusable and len(self._idle) < MAX_IDLE:
            self._idle.append(pubsub)
        else:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
