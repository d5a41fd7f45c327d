"""HTTP: req/s and latency of endpoints that enqueue a no-op, taskservice next to the raw tools.

One uvicorn process serves the app under test; ``bench.loadgen`` drives it from a second
process with closed-loop keep-alive connections. Celery endpoints run with no worker
attached (the tasks stay queued): what is measured is the API side of the hand-off. The
in-process servers (``memory://``, and the default SQLite store with ``aenqueue``) run their
tasks themselves; after each load the harness waits until it has
none left unfinished and also reports the sustained rate: requests over the time until the
last of their tasks finished (raw ``BackgroundTasks`` finish a request's task before the
connection takes its next request, so there both rates are the same).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from bench import raw_celery
from bench.config import Config
from bench.processes import REPO_ROOT, RedisServer, base_env, uvicorn_servers
from bench.stats import Row, median_of


@dataclass(frozen=True)
class Pair:
    scenario: str
    ts_server: str
    ts_path: str
    raw_path: str
    raw_label: str


PAIRS = (
    Pair("HTTP celery, sync task", "ts-celery", "/ts/sync", "/raw/celery", "apply_async"),
    Pair("HTTP celery, async task", "ts-celery", "/ts/async", "/raw/celery", "apply_async"),
    Pair("HTTP in-process, sync task", "ts-inprocess", "/ts/sync", "/raw/bg-sync", "BackgroundTasks"),
    Pair("HTTP in-process, async task", "ts-inprocess", "/ts/async", "/raw/bg-async", "BackgroundTasks"),
    # the default store, durable: each request awaits the commit of its task's record (group commit)
    Pair("HTTP in-process (sqlite), sync task", "ts-sqlite", "/ts/aenqueue-sync", "/raw/bg-sync", "BackgroundTasks"),
    Pair("HTTP in-process (sqlite), async task", "ts-sqlite", "/ts/aenqueue-async", "/raw/bg-async", "BackgroundTasks"),
)
IN_PROCESS_SERVERS = ("ts-inprocess", "ts-sqlite")
BACKLOG_POLL_S = 0.01


def load(config: Config, server: tuple[str, int], path: str, duration_s: float) -> dict[str, float]:
    """Run ``bench.loadgen`` in its own process against one endpoint; its figures."""
    host, port = server
    args = [sys.executable, "-m", "bench.loadgen", host, str(port), path]
    args += ["--connections", str(config.http_connections), "--duration-s", str(duration_s)]
    done = subprocess.run(
        args, cwd=REPO_ROOT, env=base_env(), capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed on {path}:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["requests"] == 0:
        raise RuntimeError(f"no successful request to {path} ({figures['errors']} errors)")
    return figures


def backlog_clear_ms(server: tuple[str, int]) -> float:
    """How long after the load the in-process server still had unfinished tasks (0: none left)."""
    started = time.perf_counter()
    url = f"http://{server[0]}:{server[1]}/ts/active"
    while True:
        with urllib.request.urlopen(url, timeout=30) as response:
            if not json.load(response)["active"]:
                return (time.perf_counter() - started) * 1000
        if time.perf_counter() - started > 60:
            raise TimeoutError("the in-process server still has unfinished tasks 60 s after the load")
        time.sleep(BACKLOG_POLL_S)


def run(config: Config, redis: RedisServer) -> list[Row]:
    """Every endpoint once per repetition, in turn, so drift on a shared machine hits all alike."""
    logs = config.work_dir
    redis.reset()
    celery_env = base_env(TASK_BACKEND="celery", REDIS_URL=redis.url, TASK_MODULES="bench.tasks")
    inprocess_env = base_env(TASK_BACKEND="fastapi", TASK_STORE_URL="memory://", TASK_MODULES="bench.tasks")
    sqlite_env = base_env(
        TASK_BACKEND="fastapi", TASK_STORE_URL=f"sqlite:///{logs / 'http-tasks.sqlite3'}", TASK_MODULES="bench.tasks"
    )
    client = redis.client()
    # servers not under load sit idle (the Celery ones with no worker: nothing to run)
    with uvicorn_servers(
        ("bench.http_app:ts_app", celery_env, logs / "http-ts-celery.log"),
        ("bench.http_app:ts_app", inprocess_env, logs / "http-ts-fastapi.log"),
        ("bench.http_app:ts_app", sqlite_env, logs / "http-ts-sqlite.log"),
        ("bench.http_app:raw_app", base_env(REDIS_URL=redis.url), logs / "http-raw.log"),
    ) as (ts_celery_server, ts_inprocess_server, ts_sqlite_server, raw_server):
        servers = {
            "ts-celery": ts_celery_server,
            "ts-inprocess": ts_inprocess_server,
            "ts-sqlite": ts_sqlite_server,
            "raw": raw_server,
        }
        endpoints = list(
            dict.fromkeys(
                endpoint for pair in PAIRS for endpoint in ((pair.ts_server, pair.ts_path), ("raw", pair.raw_path))
            )
        )
        if config.http_warmup_s > 0:
            for name, path in endpoints:
                load(config, servers[name], path, config.http_warmup_s)
        runs: dict[tuple[str, str], list[dict[str, float]]] = {endpoint: [] for endpoint in endpoints}
        for _ in range(config.repetitions):
            for endpoint in endpoints:
                name, path = endpoint
                figures = load(config, servers[name], path, config.http_duration_s)
                # in-process: a request is only done when its task is; count until the last one finished
                backlog_s = backlog_clear_ms(servers[name]) / 1000 if name in IN_PROCESS_SERVERS else 0.0
                load_s = figures["requests"] / figures["req_per_s"]
                figures["sustained_req_per_s"] = figures["requests"] / (load_s + backlog_s)
                figures["backlog_ms"] = backlog_s * 1000
                runs[endpoint].append(figures)
                # queued messages nobody runs (taskservice's queue is Celery's default): keep Redis the same size
                client.delete("celery", raw_celery.QUEUE)
    client.close()
    rows: list[Row] = []
    for pair in PAIRS:
        ts, raw = median_of(runs[pair.ts_server, pair.ts_path]), median_of(runs["raw", pair.raw_path])
        notes = []
        if ts["errors"] or raw["errors"]:
            notes.append(f"errors: {ts['errors']:.0f} / {raw['errors']:.0f}")
        if ts["backlog_ms"] > 50:
            notes.append(f"tasks still running {ts['backlog_ms']:.0f} ms after the load")
        rows += [
            Row(
                pair.scenario,
                "throughput",
                "req/s",
                ts["req_per_s"],
                raw["req_per_s"],
                pair.raw_label,
                True,
                "; ".join(notes),
            ),
            Row(pair.scenario, "latency p50", "ms", ts["p50_ms"], raw["p50_ms"], pair.raw_label, False),
            Row(pair.scenario, "latency p99", "ms", ts["p99_ms"], raw["p99_ms"], pair.raw_label, False),
        ]
        if pair.ts_server in IN_PROCESS_SERVERS:
            rows.append(
                Row(
                    pair.scenario,
                    "sustained throughput",
                    "req/s",
                    ts["sustained_req_per_s"],
                    raw["sustained_req_per_s"],
                    pair.raw_label,
                    True,
                    "until the last task finished",
                )
            )
    return rows
