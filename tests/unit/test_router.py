"""The /tasks router on a FastAPI app, served by a FakeTaskService: status, listing, cancelling, events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from taskservice import TaskStatus, create_tasks_router, set_progress, task
from taskservice.events import StreamLimits
from taskservice.testing import FakeTaskService, override_task_service

TOKEN = "s3cret"
GATES: dict[str, threading.Event] = {}


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task
def halfway_then_wait(gate: str) -> str:
    """Report 50 %, then hold until the test sets the gate."""
    set_progress(50, "halfway")
    if not GATES[gate].wait(timeout=20):
        raise TimeoutError("the test never released the gate")
    set_progress(100, "done")
    return "released"


def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(status_code=401, detail="missing or wrong token", headers={"WWW-Authenticate": "Bearer"})


def make_app(**router_options: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(create_tasks_router(events_poll_interval_s=0.01, **router_options))
    return app


Serve = Callable[..., TestClient]


@pytest.fixture
def serve(fake_task_service: FakeTaskService) -> Iterator[Serve]:
    """``serve(**router_options)`` -> a TestClient of an app whose tasks router sees the fake."""
    with contextlib.ExitStack() as overrides:

        def build(**router_options: Any) -> TestClient:
            app = make_app(**router_options)
            overrides.enter_context(override_task_service(app, fake_task_service))
            return TestClient(app)

        yield build


# --- reading one task -------------------------------------------------------------------


def test_get_one_task(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve()
    task_id = fake_task_service.enqueue(add, 2, 3)

    pending = client.get(f"/tasks/{task_id}")
    assert pending.status_code == 200
    assert pending.json()["status"] == "pending" and pending.json()["name"] == add.name

    fake_task_service.run_all()
    done = client.get(f"/tasks/{task_id}").json()
    assert (done["id"], done["status"], done["result"], done["attempts"]) == (task_id, "succeeded", 5, 1)
    assert set(done) == {
        "id", "name", "status", "result", "error", "traceback", "progress", "progress_message",
        "attempts", "enqueued_at", "started_at", "finished_at", "run_at", "args", "kwargs", "retry_of", "retried_as",
    }  # fmt: skip


def test_get_a_failed_task_shows_the_error_and_the_traceback_to_admins_only(
    serve: Serve, fake_task_service: FakeTaskService
) -> None:
    client = serve(admin_dependencies=[Depends(require_token)])
    task_id = fake_task_service.enqueue(fail, "disk is full")
    fake_task_service.run_all()

    open_body = client.get(f"/tasks/{task_id}").json()
    assert (open_body["status"], open_body["error"]) == ("failed", "ValueError: disk is full")
    assert (open_body["traceback"], open_body["args"], open_body["kwargs"]) == (None, None, None)
    wrong = client.get(f"/tasks/{task_id}", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 200 and wrong.json()["traceback"] is None

    admin_body = client.get(f"/tasks/{task_id}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert "Traceback" in admin_body["traceback"] and "disk is full" in admin_body["traceback"]
    assert admin_body["args"] == ["disk is full"]


def test_closed_router_never_shows_tracebacks(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve()  # no admin_dependencies: closed
    task_id = fake_task_service.enqueue(fail, "disk is full")
    fake_task_service.run_all()
    assert client.get(f"/tasks/{task_id}", headers={"Authorization": f"Bearer {TOKEN}"}).json()["traceback"] is None


def test_admin_check_honours_dependency_overrides(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve(admin_dependencies=[Depends(require_token)])
    client.app.dependency_overrides[require_token] = lambda: None  # type: ignore[attr-defined]
    task_id = fake_task_service.enqueue(fail, "disk is full")
    fake_task_service.run_all()
    assert "Traceback" in client.get(f"/tasks/{task_id}").json()["traceback"]


def test_unknown_id_is_404(serve: Serve) -> None:
    response = serve().get("/tasks/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "no task with id" in response.json()["detail"]


# --- listing and cancelling: closed unless the app authorizes them ------------------------


def test_listing_and_cancelling_are_closed_by_default(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve()
    task_id = fake_task_service.enqueue(add, 1, 1)

    for response in (client.get("/tasks"), client.delete(f"/tasks/{task_id}")):
        assert response.status_code == 403
        assert "admin_dependencies" in response.json()["detail"]
    assert fake_task_service.get_status(task_id).status == TaskStatus.PENDING
    assert client.get(f"/tasks/{task_id}").status_code == 200, "reading one task by its id stays open"


def test_open_when_the_app_says_so(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve(admin_dependencies=[])
    first = fake_task_service.enqueue(add, 1, 1)
    failing = fake_task_service.enqueue(fail, "boom")
    fake_task_service.run_all()
    newest = fake_task_service.enqueue(add, 2, 2)

    listed = client.get("/tasks")
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()] == [newest, failing, first]
    assert [item["id"] for item in client.get("/tasks", params={"status": "failed"}).json()] == [failing]
    assert [item["id"] for item in client.get("/tasks", params={"limit": 1}).json()] == [newest]
    assert client.get("/tasks", params={"status": "lost"}).status_code == 422
    assert client.get("/tasks", params={"limit": 0}).status_code == 422

    cancelled = client.delete(f"/tasks/{newest}")
    assert cancelled.status_code == 200
    assert cancelled.json() == {"id": newest, "cancelled": True, "status": "cancelled"}
    assert client.delete(f"/tasks/{first}").json() == {"id": first, "cancelled": False, "status": "succeeded"}
    assert client.delete("/tasks/unknown").status_code == 404


def test_guarded_by_a_token(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve(admin_dependencies=[Depends(require_token)])
    task_id = fake_task_service.enqueue(add, 1, 1)
    good = {"Authorization": f"Bearer {TOKEN}"}

    assert client.get("/tasks").status_code == 401
    assert client.get("/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.delete(f"/tasks/{task_id}").status_code == 401
    assert fake_task_service.get_status(task_id).status == TaskStatus.PENDING

    assert [item["id"] for item in client.get("/tasks", headers=good).json()] == [task_id]
    assert client.delete(f"/tasks/{task_id}", headers=good).json()["cancelled"] is True
    assert client.get(f"/tasks/{task_id}").status_code == 200


def test_read_dependencies_guard_reading_too(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve(read_dependencies=[Depends(require_token)], prefix="/jobs")
    task_id = fake_task_service.enqueue(add, 1, 1)
    assert client.get(f"/jobs/{task_id}").status_code == 401
    assert client.get(f"/jobs/{task_id}/events").status_code == 401
    assert client.get(f"/jobs/{task_id}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


# --- the events stream -------------------------------------------------------------------


def read_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into dicts of its fields, ``data`` decoded from JSON."""
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
            continue
        if line.startswith(":"):  # a comment: FastAPI's keep-alive ping
            continue
        field, _, value = line.partition(":")
        event[field] = json.loads(value.strip()) if field == "data" else value.strip()
    if event:
        yield event


def test_events_stream_status_and_progress_until_the_task_ends(
    serve: Serve, fake_task_service: FakeTaskService
) -> None:
    client = serve()
    GATES["events"] = gate = threading.Event()
    task_id = fake_task_service.enqueue(halfway_then_wait, "events")
    runner = threading.Thread(target=fake_task_service.run, args=(task_id,))

    with client.stream("GET", f"/tasks/{task_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response.iter_lines())

        first = next(events)
        assert first["event"] == "status" and first["data"]["status"] == "pending"

        runner.start()  # the task starts only now, while the stream is open
        seen = [next(events)]
        while seen[-1]["data"]["progress"] != 50:
            seen.append(next(events))
        assert seen[-1]["data"]["status"] == "running"
        assert seen[-1]["data"]["progress_message"] == "halfway"

        gate.set()
        rest = list(events)  # the stream ends by itself once the task is final

    runner.join(timeout=10)
    assert rest, "no event after the task was released"
    last = rest[-1]["data"]
    assert (last["status"], last["result"], last["progress"]) == ("succeeded", "released", 100)
    statuses = [event["data"]["status"] for event in [first, *seen, *rest]]
    assert statuses == sorted(statuses, key=["pending", "running", "succeeded"].index), statuses
    ids = [event["id"] for event in [first, *seen, *rest]]
    assert len(ids) == len(set(ids)), "one event per change, never a repeat"


def test_events_of_a_finished_task_is_one_final_event(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve()
    task_id = fake_task_service.enqueue(add, 4, 5)
    fake_task_service.run_all()
    with client.stream("GET", f"/tasks/{task_id}/events") as response:
        events = list(read_events(response.iter_lines()))
    assert [(event["data"]["status"], event["data"]["result"]) for event in events] == [("succeeded", 9)]


def test_events_of_an_unknown_task_is_404(serve: Serve) -> None:
    response = serve().get("/tasks/unknown/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


# --- the OpenAPI document tells the truth -------------------------------------------------


def responses_of(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    responses: dict[str, Any] = document["paths"][path][method]["responses"]
    return responses


@pytest.mark.parametrize("admin_dependencies", [None, [Depends(require_token)]])
def test_openapi_lists_the_responses(admin_dependencies: Sequence[Any] | None) -> None:
    document = TestClient(make_app(admin_dependencies=admin_dependencies)).get("/openapi.json").json()

    read = responses_of(document, "/tasks/{task_id}", "get")
    assert {"200", "404"} <= set(read)
    assert read["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskResult"}
    assert set(document["components"]["schemas"]["TaskResult"]["properties"]) >= {"status", "progress", "error"}

    listing = responses_of(document, "/tasks", "get")
    assert {"200", "401", "403"} <= set(listing)
    cancel = responses_of(document, "/tasks/{task_id}", "delete")
    assert {"200", "401", "403", "404"} <= set(cancel)

    events = responses_of(document, "/tasks/{task_id}/events", "get")
    assert {"200", "404"} <= set(events)
    assert "text/event-stream" in events["200"]["content"]


# --- filters and cursor pagination ---------------------------------------------------------


def test_list_filters_by_name_and_time_and_pages_with_a_cursor(
    serve: Serve, fake_task_service: FakeTaskService
) -> None:
    client = serve(admin_dependencies=[])
    adds = [fake_task_service.enqueue(add, i, i) for i in range(5)]
    time.sleep(0.01)
    boundary = datetime.now(UTC)
    time.sleep(0.01)
    fails = [fake_task_service.enqueue(fail, str(i)) for i in range(3)]

    by_name = client.get("/tasks", params={"name": fail.name}).json()
    assert [item["id"] for item in by_name] == fails[::-1]
    before = client.get("/tasks", params={"enqueued_before": boundary.isoformat()}).json()
    assert [item["id"] for item in before] == adds[::-1]
    after = client.get("/tasks", params={"enqueued_after": boundary.isoformat()}).json()
    assert [item["id"] for item in after] == fails[::-1]
    naive = boundary.replace(tzinfo=None).isoformat()  # a time without a zone is read as UTC
    assert [item["id"] for item in client.get("/tasks", params={"enqueued_after": naive}).json()] == fails[::-1]

    seen: list[str] = []
    response = client.get("/tasks", params={"name": add.name, "limit": 2})
    while True:
        assert response.status_code == 200
        seen += [item["id"] for item in response.json()]
        if "X-Next-Cursor" not in response.headers:
            break
        assert response.headers["Link"].endswith('rel="next"') and f"name={add.name}" in response.headers["Link"]
        cursor = response.headers["X-Next-Cursor"]
        response = client.get("/tasks", params={"name": add.name, "limit": 2, "cursor": cursor})
    assert seen == adds[::-1], "every task once, newest first, across pages"

    for bad in ("nope", "-5_abc", "99999999999999999999_abc", "1_" + "x" * 300):
        assert client.get("/tasks", params={"cursor": bad}).status_code == 422, bad


# --- the events stream is bounded ----------------------------------------------------------


class CountingFake(FakeTaskService):
    """The fake, counting how often the record of a task is read (to see the polling back off)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def _read(self, task_id: str) -> Any:
        self.reads += 1
        return super()._read(task_id)


def test_event_streams_are_capped_in_total_and_per_task(fake_task_service: FakeTaskService) -> None:
    limits = StreamLimits(max_streams=4, max_streams_per_task=2, poll_interval_s=0.01, keepalive_s=0.05)
    app = FastAPI()
    app.include_router(create_tasks_router(stream_limits=limits))
    a, b, c = (fake_task_service.enqueue(add, i, i) for i in range(3))
    with override_task_service(app, fake_task_service), TestClient(app) as client, contextlib.ExitStack() as open_:
        for task_id in (a, a, b):
            assert open_.enter_context(client.stream("GET", f"/tasks/{task_id}/events")).status_code == 200
        per_task = client.get(f"/tasks/{a}/events")
        assert per_task.status_code == 429 and "Retry-After" in per_task.headers
        assert open_.enter_context(client.stream("GET", f"/tasks/{b}/events")).status_code == 200
        total = client.get(f"/tasks/{c}/events")
        assert total.status_code == 503 and "too many open event streams" in total.json()["detail"]
        open_.close()  # the three streams end: their slots come back
        with client.stream("GET", f"/tasks/{c}/events") as again:
            assert again.status_code == 200


def test_an_event_stream_ends_at_its_time_limit() -> None:
    fake = CountingFake()
    limits = StreamLimits(max_stream_s=0.5, poll_interval_s=0.01, max_poll_interval_s=0.05, keepalive_s=0.1)
    app = FastAPI()
    app.include_router(create_tasks_router(stream_limits=limits))
    with override_task_service(app, fake), TestClient(app) as client:
        task_id = fake.enqueue(add, 1, 1)  # stays pending: the stream has nothing to wait for but its limit
        started = time.monotonic()
        with client.stream("GET", f"/tasks/{task_id}/events") as response:
            lines = list(response.iter_lines())
        elapsed_s = time.monotonic() - started
    assert 0.4 < elapsed_s < 3, elapsed_s
    assert lines[0] == "retry: 3000" and any(line.startswith("data:") for line in lines)
    assert lines[-2] == ": this stream reached its time limit; reconnect to follow on"


def test_polling_of_an_idle_task_backs_off_and_streams_of_one_task_share_it() -> None:
    fake = CountingFake()
    limits = StreamLimits(max_stream_s=1.5, poll_interval_s=0.01, max_poll_interval_s=0.3, keepalive_s=5)
    app = FastAPI()
    app.include_router(create_tasks_router(stream_limits=limits))
    with override_task_service(app, fake), TestClient(app) as client:
        task_id = fake.enqueue(add, 1, 1)

        def follow() -> None:
            with client.stream("GET", f"/tasks/{task_id}/events") as response:
                list(response.iter_lines())

        followers = [threading.Thread(target=follow) for _ in range(5)]
        for follower in followers:
            follower.start()
        for follower in followers:
            follower.join(timeout=10)
    # Without back-off five streams polling every 10 ms for 1.5 s would read ~750 times; shared and backed
    # off, the poller reads 0.01 + 0.02 + ... + 0.3 s apart: about a dozen times, plus one read per request.
    assert fake.reads <= 25, fake.reads


def test_events_hide_the_traceback_from_open_callers(serve: Serve, fake_task_service: FakeTaskService) -> None:
    client = serve(admin_dependencies=[Depends(require_token)])
    task_id = fake_task_service.enqueue(fail, "disk is full")
    fake_task_service.run_all()
    with client.stream("GET", f"/tasks/{task_id}/events") as response:
        (event,) = list(read_events(response.iter_lines()))
    assert event["data"]["error"] == "ValueError: disk is full" and event["data"]["traceback"] is None
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with client.stream("GET", f"/tasks/{task_id}/events", headers=admin) as response:
        (event,) = list(read_events(response.iter_lines()))
    assert "Traceback" in event["data"]["traceback"]
