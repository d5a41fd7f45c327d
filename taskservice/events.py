"""Server-sent events of one task's status and progress, bounded so that idle streams cannot wear a server down.

- ``StreamLimits``: how many streams may be open in total and per task, how long one lasts, how
  polling backs off. Past a cap a new stream is refused before it starts (503 in total, 429 per
  task, each with ``Retry-After``); a stream that reaches ``max_stream_s`` ends, and the browser's
  ``EventSource`` reconnects after the ``retry`` delay the stream announced.
- ``TaskStreams``: the open streams of one router (or dashboard). All streams of one task share
  one poller, which reads the task through the async API (never the server's request thread
  pool), right away after a change and then less and less often, up to ``max_poll_interval_s``.

The wire format: ``event: status``, ``id: <status>-<attempts>-<progress>``, ``data: <TaskResult JSON>``
per change; ``: ping`` comments every ``keepalive_s``; the stream ends after the final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import HTTPException
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from taskservice.errors import BackendUnavailable, TaskNotFound
from taskservice.models import TaskResult
from taskservice.service import TaskService

Redact = Callable[[TaskResult], TaskResult]


@dataclasses.dataclass(frozen=True)
class StreamLimits:
    """Bounds on the event streams one router serves (per server process)."""

    max_streams: int = 500  # open streams in total; the next one gets 503
    max_streams_per_task: int = 20  # open streams following one task; the next one gets 429
    max_stream_s: float = 600.0  # a stream ends after this; EventSource reconnects by itself
    poll_interval_s: float = 0.25  # the first look after a change
    max_poll_interval_s: float = 5.0  # an unchanged task is read at most this seldom
    keepalive_s: float = 15.0  # a comment line this often, so proxies keep the connection and a dead client is seen
    reconnect_ms: int = 3000  # the ``retry`` the stream announces

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_streams_per_task < 1:
            raise ValueError("max_streams and max_streams_per_task must be at least 1")
        if not 0 < self.poll_interval_s <= self.max_poll_interval_s:
            raise ValueError("need 0 < poll_interval_s <= max_poll_interval_s")
        if self.max_stream_s <= 0 or self.keepalive_s <= 0:
            raise ValueError("max_stream_s and keepalive_s must be positive")


def _change_key(result: TaskResult | None) -> tuple[Any, ...]:
    if result is None:
        return ("gone",)
    return (result.status, result.progress, result.progress_message, result.attempts, tuple(result.retried_as))


class _Watch:
    """One task's latest snapshot, polled once for every stream that follows it."""

    def __init__(self, service: TaskService, first: TaskResult, limits: StreamLimits) -> None:
        self.service = service
        self.task_id = first.id
        self.limits = limits
        self.snapshot: TaskResult | None = first
        self.version = 0
        self.subscribers = 0
        self.changed = asyncio.Condition()
        self.poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.poller is None and not self.finished:
            self.poller = asyncio.get_running_loop().create_task(self._poll())

    @property
    def finished(self) -> bool:
        return self.snapshot is None or self.snapshot.status.is_final

    async def _poll(self) -> None:
        interval_s = self.limits.poll_interval_s
        while not self.finished:
            await asyncio.sleep(interval_s)
            try:
                current: TaskResult | None = await self.service.aget_status(self.task_id)
            except TaskNotFound:
                current = None
            except BackendUnavailable:  # an outage: keep the streams, look again later
                interval_s = self.limits.max_poll_interval_s
                continue
            if _change_key(current) != _change_key(self.snapshot):
                async with self.changed:
                    self.snapshot = current
                    self.version += 1
                    self.changed.notify_all()
                interval_s = self.limits.poll_interval_s
            else:
                interval_s = min(interval_s * 2, self.limits.max_poll_interval_s)

    async def wait_for_change(self, seen_version: int, timeout_s: float) -> None:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.version != seen_version), timeout_s)

    def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            self.poller = None


class TaskStreams:
    """The event streams of one router: admission against ``StreamLimits``, and one poller per followed task."""

    def __init__(self, limits: StreamLimits | None = None) -> None:
        self.limits = limits or StreamLimits()
        self._watches: dict[str, _Watch] = {}
        self._open = 0

    @property
    def open_streams(self) -> int:
        return self._open

    def response(self, service: TaskService, first: TaskResult, redact: Redact | None = None) -> StreamingResponse:
        """The stream of ``first``'s task; ``HTTPException`` 503/429 when a cap is reached (nothing is held then)."""
        if self._open >= self.limits.max_streams:
            raise HTTPException(
                status_code=503,
                detail=f"too many open event streams (at most {self.limits.max_streams}): try again later",
                headers={"Retry-After": str(max(1, math.ceil(self.limits.reconnect_ms / 1000)))},
            )
        watch = self._watches.get(first.id)
        if watch is not None and watch.subscribers >= self.limits.max_streams_per_task:
            raise HTTPException(
                status_code=429,
                detail=f"too many open event streams for this task (at most {self.limits.max_streams_per_task})",
                headers={"Retry-After": str(max(1, math.ceil(self.limits.reconnect_ms / 1000)))},
            )
        if watch is None or watch.service is not service:
            watch = _Watch(service, first, self.limits)
            self._watches[first.id] = watch
        watch.subscribers += 1
        self._open += 1
        return _EventStream(self._events(watch, redact), release=lambda: self._release(watch))

    def _release(self, watch: _Watch) -> None:
        self._open -= 1
        watch.subscribers -= 1
        if watch.subscribers <= 0:
            watch.stop()
            if self._watches.get(watch.task_id) is watch:
                del self._watches[watch.task_id]

    async def _events(self, watch: _Watch, redact: Redact | None) -> AsyncIterator[str]:
        limits = self.limits
        watch.start()
        ends_at = time.monotonic() + limits.max_stream_s
        retry_field = f"retry: {limits.reconnect_ms}\n"  # sent with the first event, so no event lacks data
        seen_version = -1
        while True:
            if watch.version != seen_version:
                seen_version = watch.version
                snapshot = watch.snapshot
                if snapshot is None:  # the record expired while followed: nothing more to say
                    return
                yield retry_field + _format(redact(snapshot) if redact is not None else snapshot)
                retry_field = ""
                if snapshot.status.is_final:
                    return
            left_s = ends_at - time.monotonic()
            if left_s <= 0:
                yield ": this stream reached its time limit; reconnect to follow on\n\n"
                return
            await watch.wait_for_change(seen_version, min(limits.keepalive_s, left_s))
            if watch.version == seen_version and ends_at - time.monotonic() > 0:
                yield ": ping\n\n"


def _format(result: TaskResult) -> str:
    event_id = f"{result.status.value}-{result.attempts}-{result.progress}"
    return f"event: status\nid: {event_id}\ndata: {result.model_dump_json()}\n\n"


class _EventStream(StreamingResponse):
    """A ``text/event-stream`` response that gives its slot back however it ends, even if it never started."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:  # a response that was built but never sent must not hold its slot forever
        self.release()
