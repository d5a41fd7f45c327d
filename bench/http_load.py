"""HTTP: req/s and latency of endpoints that enqueue a no-op, taskservice next to the raw tools.

One uvicorn process serves the app under test; ``bench.loadgen`` drives it from a second
process with closed-loop keep-alive connections. Celery endpoints run with no worker
attached (the tasks stay queued): what is measured is the API side of the hand-off.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from bench.config import Config
from bench.processes import REPO_ROOT, RedisServer, base_env, uvicorn_servers
from bench.stats import Row, median_of


@dataclass(frozen=True)
class Pair:
    scenario: str
    ts_path: str
    raw_path: str
    raw_label: str


CELERY_PAIRS = (
    Pair("HTTP celery, sync task", "/ts/sync", "/raw/celery", "apply_async"),
    Pair("HTTP celery, async task", "/ts/async", "/raw/celery", "apply_async"),
)
INPROCESS_PAIRS = (
    Pair("HTTP in-process, sync task", "/ts/sync", "/raw/bg-sync", "BackgroundTasks"),
    Pair("HTTP in-process, async task", "/ts/async", "/raw/bg-async", "BackgroundTasks"),
)


def load(config: Config, host: str, port: int, path: str, duration_s: float) -> dict[str, float]:
    """Run ``bench.loadgen`` in its own process against one endpoint; its figures."""
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


def measure_pairs(
    config: Config, pairs: tuple[Pair, ...], ts_server: tuple[str, int], raw_server: tuple[str, int]
) -> list[Row]:
    """Alternate taskservice and raw endpoints, ``repetitions`` times; one row per metric per pair."""
    rows: list[Row] = []
    for pair in pairs:
        for (host, port), path in ((ts_server, pair.ts_path), (raw_server, pair.raw_path)):
            if config.http_warmup_s > 0:
                load(config, host, port, path, config.http_warmup_s)
        ts_runs, raw_runs = [], []
        for _ in range(config.repetitions):
            ts_runs.append(load(config, *ts_server, pair.ts_path, config.http_duration_s))
            raw_runs.append(load(config, *raw_server, pair.raw_path, config.http_duration_s))
        ts, raw = median_of(ts_runs), median_of(raw_runs)
        errors = f"errors: {ts['errors']:.0f} / {raw['errors']:.0f}" if ts["errors"] or raw["errors"] else ""
        rows += [
            Row(pair.scenario, "throughput", "req/s", ts["req_per_s"], raw["req_per_s"], pair.raw_label, True, errors),
            Row(pair.scenario, "latency p50", "ms", ts["p50_ms"], raw["p50_ms"], pair.raw_label, False),
            Row(pair.scenario, "latency p99", "ms", ts["p99_ms"], raw["p99_ms"], pair.raw_label, False),
        ]
    return rows


def run(config: Config, redis: RedisServer) -> list[Row]:
    logs = config.work_dir
    redis.reset()
    celery_env = base_env(TASK_BACKEND="celery", REDIS_URL=redis.url, TASK_MODULES="bench.tasks")
    inprocess_env = base_env(TASK_BACKEND="fastapi", TASK_STORE_URL="memory://", TASK_MODULES="bench.tasks")
    # servers not under load sit idle (the Celery ones with no worker: nothing to run)
    with uvicorn_servers(
        ("bench.http_app:ts_app", celery_env, logs / "http-ts-celery.log"),
        ("bench.http_app:ts_app", inprocess_env, logs / "http-ts-fastapi.log"),
        ("bench.http_app:raw_app", base_env(REDIS_URL=redis.url), logs / "http-raw.log"),
    ) as (ts_celery, ts_inprocess, raw):
        return measure_pairs(config, CELERY_PAIRS, ts_celery, raw) + measure_pairs(
            config, INPROCESS_PAIRS, ts_inprocess, raw
        )
