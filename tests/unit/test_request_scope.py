"""TaskServiceMiddleware: work deferred during a request starts only after its response is sent,
and is released in every other ending too (an error, a client that went away, a cancelled request)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskservice import TaskServiceMiddleware
from taskservice.request_scope import defer_until_response_sent, in_request_scope

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
HTTP_SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": []}


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def recording_send(log: list[str]) -> Send:
    async def send(message: Message) -> None:
        more = " (more)" if message.get("more_body") else ""
        log.append(f"sent {message['type']}{more}")

    return send


def streaming_app(log: list[str], chunks: int = 2) -> Callable[..., Awaitable[None]]:
    """Defers a start while handling the request, then streams ``chunks`` parts and a last one."""

    async def app(scope: Message, receive: Any, send: Send) -> None:
        assert in_request_scope()
        assert defer_until_response_sent(lambda: log.append("task started")) is True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            log.append("app sent a part")
        await send({"type": "http.response.body", "body": b"end", "more_body": False})
        log.append("app returned")

    return app


def test_deferred_work_starts_after_the_last_body_chunk_is_sent() -> None:
    log: list[str] = []
    asyncio.run(TaskServiceMiddleware(streaming_app(log))(HTTP_SCOPE, no_body, recording_send(log)))

    assert log == [
        "sent http.response.start",
        "sent http.response.body (more)",
        "app sent a part",
        "sent http.response.body (more)",
        "app sent a part",
        "sent http.response.body",
        "task started",  # after the whole body was handed to the server, before the app even returned
        "app returned",
    ]


def test_several_deferred_starts_keep_their_order() -> None:
    log: list[str] = []

    async def app(scope: Message, receive: Any, send: Send) -> None:
        for name in ("a", "b", "c"):
            defer_until_response_sent(functools.partial(log.append, f"start {name}"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    asyncio.run(TaskServiceMiddleware(app)(HTTP_SCOPE, no_body, recording_send(log)))
    assert log == ["sent http.response.start", "sent http.response.body", "start a", "start b", "start c"]


def test_released_when_the_app_fails_before_responding() -> None:
    log: list[str] = []

    async def app(scope: Message, receive: Any, send: Send) -> None:
        defer_until_response_sent(lambda: log.append("task started"))
        raise RuntimeError("handler crashed")

    with pytest.raises(RuntimeError, match="handler crashed"):
        asyncio.run(TaskServiceMiddleware(app)(HTTP_SCOPE, no_body, recording_send(log)))
    assert log == ["task started"]


def test_released_when_the_client_goes_away_mid_body() -> None:
    log: list[str] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client disconnected")
        log.append(f"sent {message['type']}")

    with pytest.raises(OSError, match="client disconnected"):
        asyncio.run(TaskServiceMiddleware(streaming_app(log))(HTTP_SCOPE, no_body, send))
    assert log == ["sent http.response.start", "task started"]


def test_released_when_the_request_is_cancelled() -> None:
    log: list[str] = []
    holding = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Send) -> None:
        defer_until_response_sent(lambda: log.append("task started"))
        holding.set()
        await asyncio.sleep(60)  # a server cancels this when the client disconnects

    async def main() -> None:
        request = asyncio.create_task(TaskServiceMiddleware(app)(HTTP_SCOPE, no_body, recording_send(log)))
        await holding.wait()
        assert log == [], "nothing starts while the request is still being handled"
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(main())
    assert log == ["task started"]


def test_one_failing_start_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []

    def broken() -> None:
        raise RuntimeError("runner is gone")

    async def app(scope: Message, receive: Any, send: Send) -> None:
        defer_until_response_sent(broken)
        defer_until_response_sent(lambda: log.append("second started"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with caplog.at_level(logging.ERROR, logger="taskservice"):
        asyncio.run(TaskServiceMiddleware(app)(HTTP_SCOPE, no_body, recording_send(log)))
    assert log[-1] == "second started"
    assert "could not start a deferred task" in caplog.text and "runner is gone" in caplog.text


def test_after_the_response_and_outside_requests_nothing_is_deferred() -> None:
    results: dict[str, bool] = {}

    async def app(scope: Message, receive: Any, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        results["after the response"] = defer_until_response_sent(lambda: None)

    asyncio.run(TaskServiceMiddleware(app)(HTTP_SCOPE, no_body, recording_send([])))
    results["outside a request"] = defer_until_response_sent(lambda: None)

    assert results == {"after the response": False, "outside a request": False}
    assert not in_request_scope()


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
def test_other_scopes_pass_through_without_a_batch(scope_type: str) -> None:
    seen: list[bool] = []

    async def app(scope: Message, receive: Any, send: Send) -> None:
        seen.append(in_request_scope())
        seen.append(defer_until_response_sent(lambda: None))

    asyncio.run(TaskServiceMiddleware(app)({"type": scope_type}, no_body, recording_send([])))
    assert seen == [False, False]


def test_concurrent_requests_each_wait_only_for_their_own_response() -> None:
    log: list[str] = []
    release_slow = asyncio.Event()

    def app_for(name: str, gate: asyncio.Event | None) -> Callable[..., Awaitable[None]]:
        async def app(scope: Message, receive: Any, send: Send) -> None:
            defer_until_response_sent(lambda: log.append(f"{name} task started"))
            if gate is not None:
                await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": name.encode()})
            log.append(f"{name} responded")

        return app

    async def main() -> None:
        slow = asyncio.create_task(
            TaskServiceMiddleware(app_for("slow", release_slow))(HTTP_SCOPE, no_body, recording_send([]))
        )
        await TaskServiceMiddleware(app_for("fast", None))(HTTP_SCOPE, no_body, recording_send([]))
        assert log == ["fast task started", "fast responded"], "the slow request's work waits for its response"
        release_slow.set()
        await slow

    asyncio.run(main())
    assert log[2:] == ["slow task started", "slow responded"]


def test_in_a_fastapi_app_sync_and_async_endpoints_are_in_the_request_scope() -> None:
    """The batch is a context variable: it reaches sync endpoints, which run on a thread pool."""
    log: list[str] = []
    app = FastAPI()
    app.add_middleware(TaskServiceMiddleware)

    @app.post("/sync")
    def sync_endpoint() -> dict[str, bool]:
        deferred = defer_until_response_sent(lambda: log.append("sync task started"))
        log.append("sync handled")
        return {"deferred": deferred}

    @app.post("/async")
    async def async_endpoint() -> dict[str, bool]:
        deferred = defer_until_response_sent(lambda: log.append("async task started"))
        log.append("async handled")
        return {"deferred": deferred}

    with TestClient(app) as client:
        assert client.post("/sync").json() == {"deferred": True}
        assert client.post("/async").json() == {"deferred": True}
    assert log == ["sync handled", "sync task started", "async handled", "async task started"]
