"""Does enqueueing block the event loop? Loop lag and req/s of async endpoints while Redis answers late.

One uvicorn process serves ``bench.loop_lag_app``; its Redis is a private redis-server behind
``taskservice.testing.delay_proxy``, which holds every answer ``loop_lag_delay_s`` (20 ms in the
full run): a Redis across a slow network, or an overloaded one. ``bench.loadgen`` keeps
``http_connections`` (50) keep-alive connections busy on one endpoint at a time:

- raw ``apply_async`` and sync ``service.enqueue`` wait for Redis on the loop, so every request
  of the process waits with them, and the loop lag grows with the delay;
- ``await service.aenqueue`` waits off the loop: the lag stays what the CPU work costs.

Two floors are measured with them: the loop with no request at all, and the same requests with
nothing enqueued (what serving HTTP alone costs the loop at that rate).

The same again with ``loop_lag_light_connections`` (10): with 50 connections and a 20 ms round trip
any endpoint that does not block offers about 2,500 req/s, more than one uvicorn process on this
machine serves, so there the loop is saturated by the requests' own CPU (the "no enqueue" floor
shows how much); at the light load it is not, and what is left is what enqueueing adds.

No worker runs: what is measured is the API side of the hand-off. Queues are emptied between runs.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench import raw_celery
from bench.config import Config
from bench.http_load import load
from bench.processes import RedisServer, base_env, uvicorn_servers
from bench.stats import Row, median_of
from taskservice.testing.delay_proxy import delay_proxy


@dataclass(frozen=True)
class Side:
    label: str
    path: str


NONE = Side("no enqueue", "/none")
RAW = Side("raw apply_async", "/raw")
SYNC = Side("sync enqueue", "/sync")
ASYNC = Side("aenqueue", "/async")
SIDES = (NONE, RAW, SYNC, ASYNC)


def scenario(config: Config) -> str:
    delay_ms = config.loop_lag_delay_s * 1000
    return f"async endpoint, Celery, Redis +{delay_ms:g} ms, {config.http_connections} connections"


def _lag(server: tuple[str, int], reset: bool = False) -> dict[str, float]:
    host, port = server
    path, method = ("/lag/reset", "POST") if reset else ("/lag", "GET")
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        figures: dict[str, float] = json.load(response)
    return figures


def measure(
    config: Config, server: tuple[str, int], client: Any, idle: list[dict[str, float]]
) -> dict[int, dict[str, list[dict[str, float]]]]:
    """Every side at both loads, once per repetition, in turn; the idle loop before each repetition."""
    runs: dict[int, dict[str, list[dict[str, float]]]] = {n: {side.label: [] for side in SIDES} for n in _loads(config)}
    for _ in range(config.repetitions):
        # the floor: the same loop with no request at all (other work on the machine shows here)
        _lag(server, reset=True)
        time.sleep(min(3.0, config.loop_lag_duration_s / 3))
        idle.append({f"lag_{key}": value for key, value in _lag(server).items()})
        for connections, duration_s in _loads(config).items():
            at_load = dataclasses.replace(config, http_connections=connections)
            for side in SIDES:
                _lag(server, reset=True)
                figures = load(at_load, server, side.path, duration_s)
                lag = _lag(server)
                runs[connections][side.label].append({**figures, **{f"lag_{k}": v for k, v in lag.items()}})
                client.delete("celery", raw_celery.QUEUE)  # nobody runs them: keep Redis the same size
    return runs


def _loads(config: Config) -> dict[int, float]:
    """Connections -> seconds: the issue's load, then a light one the loop can carry without saturating."""
    return {
        config.http_connections: config.loop_lag_duration_s,
        config.loop_lag_light_connections: config.loop_lag_duration_s / 2,
    }


def run(config: Config, redis: RedisServer) -> list[Row]:
    redis.reset()
    client = redis.client()
    idle: list[dict[str, float]] = []
    with delay_proxy(redis.port, config.loop_lag_delay_s, config.work_dir / "loop-lag-proxy.log") as port:
        url = f"redis://127.0.0.1:{port}/0"
        env = base_env(TASK_BACKEND="celery", REDIS_URL=url, TASK_MODULES="bench.tasks")
        with uvicorn_servers(("bench.loop_lag_app:app", env, config.work_dir / "loop-lag-api.log")) as (server,):
            # every side opens its connections through the slow link before it is measured
            for side in SIDES:
                load(config, server, side.path, max(config.http_warmup_s, 0.5))
            runs = measure(config, server, client, idle)
    client.close()
    floor = median_of(idle)["lag_p99_ms"]
    rows: list[Row] = []
    for connections, at_load in runs.items():
        rows += _rows(dataclasses.replace(config, http_connections=connections), at_load, floor)
    return rows


def _rows(config: Config, runs: dict[str, list[dict[str, float]]], floor_ms: float) -> list[Row]:
    raw, http = median_of(runs[RAW.label]), median_of(runs[NONE.label])
    rows: list[Row] = []
    for side in (SYNC, ASYNC):
        measured = median_of(runs[side.label])
        name = f"{scenario(config)}, {side.label}"
        note = (
            f"max {measured['lag_max_ms']:.1f} ms vs {raw['lag_max_ms']:.1f} ms; idle loop p99 {floor_ms:.1f} ms; "
            f"the request alone (no enqueue): p99 {http['lag_p99_ms']:.1f} ms at {http['req_per_s']:,.0f} req/s"
        )
        rows += [
            Row(name, "event-loop lag p99", "ms", measured["lag_p99_ms"], raw["lag_p99_ms"], RAW.label, False, note),
            Row(name, "event-loop lag p50", "ms", measured["lag_p50_ms"], raw["lag_p50_ms"], RAW.label, False),
            Row(name, "throughput", "req/s", measured["req_per_s"], raw["req_per_s"], RAW.label, True),
            Row(name, "latency p99", "ms", measured["p99_ms"], raw["p99_ms"], RAW.label, False),
        ]
    sync, aenqueue = median_of(runs[SYNC.label]), median_of(runs[ASYNC.label])
    print(
        f"bench: {config.http_connections} connections: loop lag p99 "
        + ", ".join(f"{label} {median_of(runs[label])['lag_p99_ms']:.1f} ms" for label in runs)
        + f"; req/s aenqueue/apply_async {aenqueue['req_per_s'] / raw['req_per_s']:.1f}x, "
        + f"aenqueue/enqueue {aenqueue['req_per_s'] / sync['req_per_s']:.1f}x; idle loop p99 {floor_ms:.1f} ms",
        flush=True,
    )
    return rows
