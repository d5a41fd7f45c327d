"""Many idle event streams against the reference app on a real uvicorn (in-process backend, SQLite store):
the caps hold (per client, per task, in total) and the API stays responsive while they are open."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.app.live import app_env
from tests.processes import uvicorn_server

pytestmark = pytest.mark.slow

ADDRESSES = [f"127.0.0.{n}" for n in range(2, 10)]  # 8 client addresses, all loopback
STREAMS_PER_ADDRESS = 60  # the reference app's per-client burst
TASKS = 30  # 480 streams over 30 tasks: 16 per task, under the per-task cap of 20


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory: Path = tmp_path_factory.mktemp("streams")
    env = app_env("fastapi", directory)
    env["TASK_STORE_URL"] = f"sqlite:///{directory / 'tasks.sqlite3'}"
    with uvicorn_server(env, directory / "api.log") as url:
        yield url


async def latencies_ms(client: httpx.AsyncClient, paths: list[str], rounds: int = 40) -> list[float]:
    timings = []
    for index in range(rounds):
        started = time.perf_counter()
        response = await client.get(paths[index % len(paths)])
        assert response.status_code == 200, response.text
        timings.append((time.perf_counter() - started) * 1000)
    return timings


# The text iterator of each open stream: dropping one would close its stream.
_readers: list[object] = []


async def open_stream(client: httpx.AsyncClient, task_id: str) -> httpx.Response:
    request = client.build_request("GET", f"/tasks/{task_id}/events")
    response = await client.send(request, stream=True)
    if response.status_code == 200:
        chunks = response.aiter_text()
        _readers.append(chunks)
        first = await anext(chunks)
        assert "event: status" in first and '"status":"scheduled"' in first
    return response


async def scenario(url: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as plain:
        send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        task_ids = []
        for index in range(TASKS):
            body = {"to": f"u{index}@example.com", "subject": "s", "body": "b", "send_at": send_at}
            task_ids.append((await plain.post("/notifications", json=body)).json()["task_id"])
        paths = ["/health", f"/tasks/{task_ids[0]}", "/notifications/unknown-id-0000"][:2]
        baseline = await latencies_ms(plain, paths)

        clients = [
            httpx.AsyncClient(
                base_url=url,
                timeout=30,
                transport=httpx.AsyncHTTPTransport(local_address=address),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=0),
            )
            for address in [*ADDRESSES, "127.0.0.10"]
        ]
        held: list[httpx.Response] = []
        try:
            opened = await asyncio.gather(
                *(
                    open_stream(client, task_ids[(a * STREAMS_PER_ADDRESS + s) % TASKS])
                    for a, client in enumerate(clients[:-1])
                    for s in range(STREAMS_PER_ADDRESS)
                )
            )
            held += opened
            statuses = [response.status_code for response in opened]
            # One client past its burst: the bucket refilled by only a few while the 480 opened.
            per_client = await asyncio.gather(*(open_stream(clients[0], task_ids[i]) for i in range(15)))
            held += per_client
            extra = [await open_stream(clients[-1], task_ids[i % TASKS]) for i in range(40)]
            held += extra
            await asyncio.sleep(6)  # the pollers back off to their longest interval
            loaded = await latencies_ms(plain, paths, rounds=80)
            return {
                "statuses": statuses,
                "per_client": [response.status_code for response in per_client],
                "extra": [response.status_code for response in extra],
                "baseline_ms": baseline,
                "loaded_ms": loaded,
            }
        finally:
            for response in held:
                await response.aclose()
            for client in clients:
                await client.aclose()
            _readers.clear()


def test_many_idle_streams_are_capped_and_the_api_stays_responsive(sqlite_app: str) -> None:
    result = asyncio.run(scenario(sqlite_app))
    statuses = result["statuses"]
    assert isinstance(statuses, list) and statuses.count(200) == len(ADDRESSES) * STREAMS_PER_ADDRESS
    per_client = result["per_client"]
    assert isinstance(per_client, list) and 429 in per_client and set(per_client) <= {200, 429}, per_client
    extra = result["extra"]
    assert isinstance(extra, list)
    admitted = len(statuses) + per_client.count(200)
    assert extra.count(200) == 500 - admitted and set(extra[extra.count(200) :]) == {503}, extra

    baseline, loaded = result["baseline_ms"], result["loaded_ms"]
    assert isinstance(baseline, list) and isinstance(loaded, list)
    base_median, loaded_median = statistics.median(baseline), statistics.median(loaded)
    print(f"median latency: {base_median:.1f} ms idle, {loaded_median:.1f} ms with 500 idle streams open")
    assert loaded_median < max(5 * base_median, base_median + 25), (base_median, loaded_median)
