"""The in-process backend under a real uvicorn: after the response, owned by the runner, never starving requests.

This module is also the app those servers run (``tests.unit.test_inprocess_uvicorn:app``): a
small FastAPI app wired the way the README says, with endpoints that enqueue test tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from backends.inprocess.store.base import INTERRUPTED_BY_STOP
from backends.inprocess.store.sqlite import SQLiteTaskStore
from taskservice import (
    TaskServiceDep,
    TaskServiceMiddleware,
    TaskStatus,
    create_tasks_router,
    task,
    task_service_lifespan,
)
from taskservice.testing import processes
from tests.processes import (
    VENV_BIN,
    base_env,
    free_port,
    spawn,
    stop_process,
    uvicorn_server,
    wait_for_log,
    wait_for_port,
)

pytestmark = pytest.mark.slow  # real uvicorn processes
APP = "tests.unit.test_inprocess_uvicorn:app"


@task(name="tests.inprocess.http.stamp")
async def stamp(marker: str, delay_s: float = 0.0) -> float:
    await asyncio.sleep(delay_s)
    moment = time.time()
    Path(marker).write_text(repr(moment))
    return moment


@task(name="tests.inprocess.http.sync_stamp")
def sync_stamp(marker: str) -> float:
    moment = time.time()
    Path(marker).write_text(repr(moment))
    return moment


@task(name="tests.inprocess.http.fail")
async def fail() -> None:
    raise RuntimeError("this task fails; the next one runs anyway")


@task(name="tests.inprocess.http.pid")
async def task_pid() -> int:
    return os.getpid()


@task(name="tests.inprocess.http.nap")
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


app = FastAPI(lifespan=task_service_lifespan)
app.add_middleware(TaskServiceMiddleware)
app.include_router(create_tasks_router(admin_dependencies=[]))


@app.get("/ping")
def ping() -> dict[str, float]:  # a sync endpoint: it needs a thread of the server's request pool
    return {"at": time.time()}


@app.get("/pid")
async def pid() -> int:
    return os.getpid()


@app.post("/task-pid")
async def enqueue_task_pid(service: TaskServiceDep) -> str:
    return service.enqueue(task_pid)


@app.post("/async-defer")
async def async_defer(marker: str, service: TaskServiceDep) -> dict[str, Any]:
    task_id = service.enqueue(stamp, marker)
    await asyncio.sleep(0.3)
    return {"task_id": task_id, "started_during_request": Path(marker).exists(), "returned_at": time.time()}


@app.post("/sync-defer")
def sync_defer(marker: str, service: TaskServiceDep) -> dict[str, Any]:
    task_id = service.enqueue(sync_stamp, marker)
    time.sleep(0.3)
    return {"task_id": task_id, "started_during_request": Path(marker).exists(), "returned_at": time.time()}


@app.get("/stream")
async def stream(marker: str, service: TaskServiceDep) -> StreamingResponse:
    task_id = service.enqueue(stamp, marker, 0.5)

    async def body() -> AsyncIterator[bytes]:
        yield f"{task_id}\n".encode()
        await asyncio.sleep(30)  # the client leaves long before this
        yield b"never sent\n"

    return StreamingResponse(body(), media_type="text/plain")


@app.post("/then-crash")
async def then_crash(marker: str, service: TaskServiceDep) -> None:
    Path(marker + ".id").write_text(service.enqueue(stamp, marker))
    raise RuntimeError("the endpoint fails after enqueueing")


@app.post("/failing-then-fine")
async def failing_then_fine(marker: str, service: TaskServiceDep) -> list[str]:
    return [service.enqueue(fail), service.enqueue(stamp, marker)]


@app.post("/flood")
def flood(count: int, seconds: float, service: TaskServiceDep) -> list[str]:
    return [service.enqueue(nap, seconds) for _ in range(count)]


# -- the tests ----------------------------------------------------------------------------

Server = tuple[str, "subprocess.Popen[bytes]", Path, Path]  # base URL, process, its SQLite file, its log


def start_uvicorn(env: dict[str, str], log: Path, *extra: str) -> tuple[str, subprocess.Popen[bytes]]:
    """A real uvicorn serving this module's app, with ``extra`` command-line options."""
    port = free_port()
    args = [str(VENV_BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port), "--log-level", "info", *extra]
    return f"http://127.0.0.1:{port}", spawn(args, env, log)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("uvicorn")
    database = directory / "tasks.db"
    env = base_env(
        TASK_BACKEND="fastapi",
        TASK_STORE_URL=f"sqlite:///{database}",
        TASK_MODULES="tests.unit.test_inprocess_uvicorn",
        TASK_THREAD_CONCURRENCY="2",
        TASK_SHUTDOWN_GRACE_S="0.5",
    )
    log = directory / "uvicorn.log"
    url, process = start_uvicorn(env, log)
    try:
        wait_for_port(int(url.rsplit(":", 1)[1]), timeout_s=30, process=process)
        yield url, process, database, log
    finally:
        stop_process(process, timeout_s=15)


def wait_final(client: httpx.Client, task_id: str, timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        result: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        if result["status"] in ("succeeded", "failed", "cancelled"):
            return result
        assert time.monotonic() < deadline, f"task still {result['status']}"
        time.sleep(0.02)


@pytest.mark.parametrize("endpoint", ["/async-defer", "/sync-defer"])
def test_a_task_enqueued_in_a_request_starts_after_the_response(server: Server, tmp_path: Path, endpoint: str) -> None:
    url = server[0]
    marker = tmp_path / "started"
    with httpx.Client(base_url=url, timeout=10) as client:
        answer = client.post(endpoint, params={"marker": str(marker)}).json()
        assert answer["started_during_request"] is False
        result = wait_final(client, answer["task_id"])
    assert result["status"] == "succeeded"
    assert result["result"] >= answer["returned_at"], "it started once the endpoint had returned"


def test_a_client_that_disconnects_does_not_cancel_the_task(server: Server, tmp_path: Path) -> None:
    url = server[0]
    marker = tmp_path / "stamped"
    with httpx.Client(base_url=url, timeout=10) as client:
        with client.stream("GET", "/stream", params={"marker": str(marker)}) as response:
            task_id = next(response.iter_lines()).strip()
        # The connection is closed mid-response: the request is cancelled; the task (0.5 s) is not.
        result = wait_final(client, task_id)
    assert result["status"] == "succeeded", result
    assert marker.exists()


def test_an_endpoint_that_fails_after_enqueueing_does_not_stop_the_task(server: Server, tmp_path: Path) -> None:
    url = server[0]
    marker = tmp_path / "stamped"
    with httpx.Client(base_url=url, timeout=10) as client:  # uvicorn closes this connection after the error
        assert client.post("/then-crash", params={"marker": str(marker)}).status_code == 500
    with httpx.Client(base_url=url, timeout=10) as client:
        result = wait_final(client, Path(str(marker) + ".id").read_text())
    assert result["status"] == "succeeded"


def test_a_failing_task_does_not_stop_the_next_one(server: Server, tmp_path: Path) -> None:
    url = server[0]
    with httpx.Client(base_url=url, timeout=10) as client:
        failing, fine = client.post("/failing-then-fine", params={"marker": str(tmp_path / "m")}).json()
        assert wait_final(client, failing)["error"] == "RuntimeError: this task fails; the next one runs anyway"
        assert wait_final(client, fine)["status"] == "succeeded"


def test_sync_tasks_do_not_starve_requests_and_shutdown_records_the_cut_off(
    server: Server,
) -> None:
    url, process, database, log = server
    with httpx.Client(base_url=url, timeout=10) as client:
        # More sleeping sync tasks than the server's request thread pool has threads (40): were they
        # run there, every sync request would wait about nap_s for a thread.
        nap_s = 5.0
        ids = client.post("/flood", params={"count": 60, "seconds": nap_s}).json()
        deadline = time.monotonic() + 5
        while len(client.get("/tasks", params={"status": "running"}).json()) < 2:
            assert time.monotonic() < deadline, "the sync tasks did not start"
            time.sleep(0.05)

        def timed_ping() -> float:
            started = time.monotonic()
            with httpx.Client(base_url=url, timeout=10) as own:
                own.get("/ping").raise_for_status()
            return time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            latencies = list(pool.map(lambda _: timed_ping(), range(30)))
        assert max(latencies) < nap_s / 2, f"sync requests waited behind sync tasks: {max(latencies):.2f} s"
        running = client.get("/tasks", params={"status": "running", "limit": 100}).json()
        assert len(running) == 2, "TASK_THREAD_CONCURRENCY=2"

    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=15)
    assert time.monotonic() - started < nap_s, "the grace period is 0.5 s, not the 5 s the tasks need"
    assert "Application shutdown complete" in log.read_text()

    store = SQLiteTaskStore(str(database))  # read the file the server left, as the next process would
    results = [store.get(task_id) for task_id in ids]
    cut_off = [r for r in results if r is not None and r.status == TaskStatus.FAILED]
    assert len(cut_off) == 2 and all(r.error == INTERRUPTED_BY_STOP for r in cut_off)
    assert all(r is not None and r.status == TaskStatus.PENDING for r in results if r not in cut_off), (
        "never started: left pending for the next run to adopt"
    )
    assert not [r for r in results if r is not None and r.status == TaskStatus.RUNNING]


def test_memory_store_under_several_workers_is_refused_at_start_up(tmp_path: Path) -> None:
    env = base_env(TASK_STORE_URL="memory://", TASK_MODULES="tests.unit.test_inprocess_uvicorn")
    log = tmp_path / "workers.log"
    _url, process = start_uvicorn(env, log, "--workers", "2")
    try:
        wait_for_log(log, "TASK_STORE_URL=memory:// cannot work with several server worker processes", process, 30)
        assert "TASK_STORE_URL=sqlite:///" in log.read_text()
    finally:
        stop_process(process, timeout_s=10)


@pytest.mark.parametrize("extra", [("--workers", "2"), ("--reload", "--reload-dir", "tests/unit")])
def test_what_is_not_refused(tmp_path: Path, extra: tuple[str, ...]) -> None:
    store = f"sqlite:///{tmp_path / 'tasks.db'}" if "--workers" in extra else "memory://"
    env = base_env(TASK_STORE_URL=store, TASK_MODULES="tests.unit.test_inprocess_uvicorn")
    log = tmp_path / "server.log"
    url, process = start_uvicorn(env, log, *extra)
    try:
        wait_for_log(log, "Application startup complete", process, 30)
        with httpx.Client(base_url=url, timeout=10) as client:
            marker = tmp_path / "stamped"
            answer = client.post("/async-defer", params={"marker": str(marker)}).json()
            assert wait_final(client, answer["task_id"])["status"] == "succeeded"
        assert "cannot work" not in log.read_text()
    finally:
        stop_process(process, timeout_s=10)


@pytest.mark.parametrize("server_kind", ["uvicorn", "gunicorn"])
def test_the_default_store_serves_several_workers_out_of_the_box(tmp_path: Path, server_kind: str) -> None:
    if server_kind == "gunicorn" and not (VENV_BIN / "gunicorn").exists():
        pytest.skip("gunicorn is not installed (pip install gunicorn)")
    env = base_env(TASK_MODULES="tests.unit.test_inprocess_uvicorn")  # no TASK_STORE_URL: the default
    port = free_port()
    if server_kind == "uvicorn":
        args = [str(VENV_BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    else:
        args = [str(VENV_BIN / "gunicorn"), APP, "-w", "2", "-k", "uvicorn.workers.UvicornWorker"]
        args += ["-b", f"127.0.0.1:{port}"]
    log = tmp_path / "server.log"
    process = processes.spawn(args, env, log, tmp_path)  # the working directory is the app's, not the checkout
    try:
        wait_for_log(log, "Application startup complete", process, 30)
        url = f"http://127.0.0.1:{port}"
        pids: set[int] = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2:  # a fresh connection each time, until both workers have answered
            assert time.monotonic() < deadline, f"only worker(s) {pids} answered"
            pids.add(httpx.get(f"{url}/pid", timeout=10).json())
        ids = [httpx.post(f"{url}/task-pid", timeout=10).json() for _ in range(20)]
        ran_in: set[int] = set()
        for task_id in ids:
            for _ in range(4):  # each record read through several connections, so through either worker
                with httpx.Client(base_url=url, timeout=10) as client:
                    answer = client.get(f"/tasks/{task_id}")
                    assert answer.status_code == 200, "every worker sees every worker's tasks"
            with httpx.Client(base_url=url, timeout=10) as client:
                ran_in.add(wait_final(client, task_id)["result"])
        assert ran_in <= pids
        assert (tmp_path / ".taskservice" / "tasks.sqlite3").exists(), "the default store, under the working directory"
        assert "cannot work" not in log.read_text()
    finally:
        stop_process(process, timeout_s=15)


def test_memory_store_full_of_active_tasks_refuses_new_work_with_a_503(tmp_path: Path) -> None:
    """The reference app, as served: scheduled notifications fill memory:// up to its bound, then 503."""
    env = base_env(
        TASK_BACKEND="fastapi",
        TASK_STORE_URL="memory://",
        TASK_MEMORY_MAX_ACTIVE_TASKS="3",
        TASK_MODULES="app.tasks",
        APP_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'app.sqlite3'}",
        APP_UPKEEP_INTERVAL_S="86400",
    )
    send_at = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    note = {"to": "ada@example.com", "subject": "Later", "body": "...", "send_at": send_at}
    with uvicorn_server(env, tmp_path / "app.log") as url, httpx.Client(base_url=url, timeout=10) as client:
        accepted = [client.post("/notifications", json=note) for _ in range(3)]
        assert [answer.status_code for answer in accepted] == [202, 202, 202]
        refused = client.post("/notifications", json=note)
        assert refused.status_code == 503, refused.text
        assert "TASK_MEMORY_MAX_ACTIVE_TASKS" in refused.json()["detail"]
        assert client.get("/health").status_code == 200, "the server itself is fine"
