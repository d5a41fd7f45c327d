"""TaskServiceMiddleware: work deferred during a request starts only after its response is sent,
and is released in every other ending too (an error, a client that went away, a cancelled request).
Under ``finish_request_tasks`` a request runs its tasks to completion, in order, before it returns."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskservice import (
    TaskService,
    TaskServiceDep,
    TaskServiceMiddleware,
    TaskSettings,
    TaskStatus,
    create_task_service,
    task,
)
from taskservice.request_scope import defer_until_response_sent, in_request_scope
from taskservice.testing import FakeTaskService, RequestTaskFailed, finish_request_tasks, installed_task_service

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


# --- finish_request_tasks: BackgroundTasks' test semantics on the real in-process backend ---------------

ORDER: list[str] = []


@task(name="scope.record")
def record(text: str, delay_s: float = 0.0) -> str:
    time.sleep(delay_s)
    ORDER.append(text)
    return text


@task(name="scope.record_async")
async def record_async(text: str) -> str:
    ORDER.append(text)
    return text


@task(name="scope.explode")
def explode(reason: str) -> None:
    raise ValueError(f"exploded: {reason}")


def scope_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(TaskServiceMiddleware)

    @app.post("/three")
    def three(service: TaskServiceDep) -> dict[str, list[str]]:
        # The first is the slowest: run concurrently, it would finish last.
        return {
            "ids": [
                service.enqueue(record, "first", 0.3),
                service.enqueue(record, "second", 0.1),
                service.enqueue(record, "third"),
            ]
        }

    @app.post("/mixed")
    async def mixed(service: TaskServiceDep) -> dict[str, str]:
        first = await service.aenqueue(record_async, "async first")
        later = service.schedule(record, timedelta(hours=1), "scheduled")
        service.enqueue(record, "sync second")
        return {"first": first, "later": later}

    @app.post("/explode")
    def explode_endpoint(service: TaskServiceDep) -> dict[str, str]:
        return {"id": service.enqueue(explode, "on purpose")}

    return app


@pytest.fixture
def inprocess() -> Iterator[TaskService]:
    service = create_task_service(TaskSettings(backend="fastapi", store_url="memory://"))
    ORDER.clear()
    with installed_task_service(service):
        yield service
    service.close()


def test_a_request_finishes_its_tasks_in_enqueue_order_before_testclient_returns(inprocess: TaskService) -> None:
    with finish_request_tasks(), TestClient(scope_app()) as client:
        ids = client.post("/three").json()["ids"]
        assert ORDER == ["first", "second", "third"]
    results = [inprocess.get_status(task_id) for task_id in ids]
    assert [(r.status, r.result) for r in results] == [(TaskStatus.SUCCEEDED, t) for t in ("first", "second", "third")]
    assert results[0].finished_at is not None and results[1].started_at is not None
    assert results[0].finished_at <= results[1].started_at, "the second started before the first had finished"


def test_the_same_with_httpx_asgi_transport_async_tasks_and_scheduled_ones_left_alone(inprocess: TaskService) -> None:
    async def main() -> dict[str, str]:
        transport = httpx.ASGITransport(app=scope_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/mixed")
            assert ORDER == ["async first", "sync second"]
            return dict(response.json())

    with finish_request_tasks():
        ids = asyncio.run(main())
    assert inprocess.get_status(ids["later"]).status is TaskStatus.SCHEDULED, "not due: not waited for"


def test_each_task_is_chained_to_the_one_before_it_so_order_holds_on_every_backend(inprocess: TaskService) -> None:
    with finish_request_tasks(), TestClient(scope_app()) as client:
        first, second, third = client.post("/three").json()["ids"]
    calls = {task_id: inprocess._retry_source(task_id) for task_id in (first, second, third)}
    assert [source[1].options.after if source else "?" for source in calls.values()] == [None, first, second]


def test_without_the_switch_nothing_waits_and_nothing_is_chained(inprocess: TaskService) -> None:
    with TestClient(scope_app()) as client:
        _, second, _ = client.post("/three").json()["ids"]
        assert "first" not in ORDER, "a 0.3 s task cannot have finished before the response"
        inprocess.drain(10)
    source = inprocess._retry_source(second)
    assert source is not None and source[1].options.after is None


def test_a_failed_task_fails_the_request_with_its_traceback(inprocess: TaskService) -> None:
    with (
        finish_request_tasks() as policy,
        TestClient(scope_app()) as client,
        pytest.raises(RequestTaskFailed) as raised,
    ):
        client.post("/explode")
    message = str(raised.value)
    assert "task scope.explode" in message and "enqueued by POST /explode" in message
    assert "ValueError: exploded: on purpose" in message
    assert 'raise ValueError(f"exploded: {reason}")' in message, "the task's own traceback"
    assert policy.failures == [message]


def test_errors_can_be_turned_off(inprocess: TaskService) -> None:
    with finish_request_tasks(raise_errors=False) as policy, TestClient(scope_app()) as client:
        task_id = client.post("/explode").json()["id"]
        assert inprocess.get_status(task_id).status is TaskStatus.FAILED
    assert len(policy.failures) == 1 and "exploded: on purpose" in policy.failures[0]


def test_a_task_that_does_not_finish_in_time_fails_the_request(inprocess: TaskService) -> None:
    with finish_request_tasks(timeout_s=0.05), TestClient(scope_app()) as client:
        with pytest.raises(RequestTaskFailed, match=r"did not finish within 0.05 s"):
            client.post("/three")
        inprocess.drain(10)


def test_the_fake_is_not_waited_for(fake_task_service: FakeTaskService) -> None:
    ORDER.clear()
    with finish_request_tasks(), TestClient(scope_app()) as client:
        client.post("/three")
    assert [call.name for call in fake_task_service.calls] == ["scope.record"] * 3
    assert ORDER == [] and all(call.options.after is None for call in fake_task_service.calls)
