"""Hold tasks enqueued during an HTTP request until its response has been sent.

``TaskServiceMiddleware`` opens a batch per request; the in-process backend puts each
new task's start into it, and the batch is released once the last body chunk is sent,
or in any case when the request ends (an error, a client that went away), so no task
is ever left waiting. The tasks themselves are owned by the backend's runner.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("taskservice")

Starter = Callable[[], None]
ASGIApp = Callable[[Any, Any, Any], Any]


class DeferredBatch:
    __slots__ = ("released", "starters")

    def __init__(self) -> None:
        self.starters: list[Starter] = []
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        starters, self.starters = self.starters, []
        for start in starters:
            try:
                start()
            except Exception:  # one task's hand-off must not stop the others'
                log.exception("taskservice: could not start a deferred task")


_current_batch: contextvars.ContextVar[DeferredBatch | None] = contextvars.ContextVar(
    "taskservice_request_batch", default=None
)


def defer_until_response_sent(start: Starter) -> bool:
    """Queue ``start`` behind the current response; False when not inside a request."""
    batch = _current_batch.get()
    if batch is None or batch.released:
        return False
    batch.starters.append(start)
    return True


def in_request_scope() -> bool:
    return _current_batch.get() is not None


class TaskServiceMiddleware:
    """ASGI middleware: tasks enqueued while handling a request start after its response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        batch = DeferredBatch()
        token = _current_batch.set(batch)

        async def send_then_release(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                batch.release()

        try:
            await self.app(scope, receive, send_then_release)
        finally:
            _current_batch.reset(token)
            batch.release()
