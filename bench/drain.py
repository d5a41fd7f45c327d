"""Drain throughput: N no-op tasks queued first, then drained by one prefork worker.

Both sides run the same worker flags, one after the other, on the same Redis. Tasks/s is
taken from the result store's own completion times (``date_done``), so the harness's
polling does not blur it; Redis commands are counted with ``INFO commandstats`` from just
before the worker starts until the last result is stored, minus the harness's own polls
(commands a Lua script runs count one by one, as Redis counts them). CPU seconds of the
worker's process group and of redis-server per task are the figures least disturbed by
whatever else the machine is doing.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench import raw_celery
from bench.config import Config
from bench.processes import (
    CommandCounter,
    RedisServer,
    Worker,
    base_env,
    celery_workers,
    group_cpu_s,
    process_cpu_s,
)
from bench.stats import Row, Series, median_of

META_PREFIX = "celery-task-meta-"  # Celery's Redis result backend; taskservice keeps it on
FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
POLL_S = 0.02


@dataclass(frozen=True)
class Side:
    label: str
    worker_app: str
    worker_env: dict[str, str]
    producer: Callable[[], contextlib.AbstractContextManager[Callable[[int], str]]]


def sides(redis: RedisServer) -> tuple[Side, Side]:
    ts_env = base_env(TASK_BACKEND="celery", REDIS_URL=redis.url, TASK_MODULES="bench.tasks")
    raw_env = base_env(REDIS_URL=redis.url)
    return (
        Side("taskservice", "backends.celery_app", ts_env, lambda: taskservice_producer(redis.url)),
        Side("raw Celery", "bench.raw_celery", raw_env, lambda: raw_producer(redis.url)),
    )


@contextlib.contextmanager
def taskservice_producer(redis_url: str) -> Iterator[Callable[[int], str]]:
    from bench.tasks import noop
    from taskservice import TaskSettings, create_task_service

    service = create_task_service(TaskSettings(backend="celery", redis_url=redis_url, modules="bench.tasks"))
    try:
        yield lambda i: service.enqueue(noop, i)
    finally:
        service.close()


@contextlib.contextmanager
def raw_producer(redis_url: str) -> Iterator[Callable[[int], str]]:
    """Fill the raw queue with the very messages ``apply_async`` sends, from an app without a result
    backend, so filling does not subscribe to each result (filling is not what is measured)."""
    fill = Celery("bench_raw_fill", broker=redis_url, set_as_current=False)
    fill.conf.update(task_serializer="json", accept_content=["json"], task_default_queue=raw_celery.QUEUE)
    try:
        yield lambda i: str(fill.send_task(raw_celery.noop.name, args=(i,)).id)
    finally:
        fill.close()


def drain_once(redis: RedisServer, side: Side, n: int, concurrency: int, log: Path) -> dict[str, float]:
    """Queue ``n`` tasks, start a worker, wait until all are stored; tasks/s, Redis commands and CPU per task."""
    redis.reset()
    with side.producer() as enqueue:
        ids = [enqueue(i) for i in range(n)]
    client = redis.client()
    counter = CommandCounter(client)
    counter.start()
    own: dict[str, int] = {"get": 0, "mget": 0}
    with celery_workers(Worker(side.worker_app, side.worker_env, log, concurrency)) as (worker,):
        worker_cpu_s, redis_cpu_s = group_cpu_s(worker.pid), process_cpu_s(redis.process.pid)
        deadline = time.monotonic() + 120 + n / 50
        pending = ids
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{side.label}: {len(pending)} of {n} tasks not done after the deadline")
            # the last task queued is among the last to finish: poll it alone, then check the rest at once
            own["get"] += 1
            if _state(client.get(META_PREFIX + pending[-1])) in FINAL_STATES:
                own["mget"] += 1
                metas = client.mget([META_PREFIX + task_id for task_id in pending])
                pending = [
                    task_id for task_id, meta in zip(pending, metas, strict=True) if _state(meta) not in FINAL_STATES
                ]
            if pending:
                time.sleep(POLL_S)
        worker_cpu_s = group_cpu_s(worker.pid) - worker_cpu_s
        redis_cpu_s = process_cpu_s(redis.process.pid) - redis_cpu_s
        commands = counter.stop(own)
    done = [_meta(meta) for meta in _mget_chunks(client, [META_PREFIX + task_id for task_id in ids])]
    client.close()
    failed = sum(1 for meta in done if meta.get("status") != "SUCCESS")
    if failed:
        raise RuntimeError(f"{side.label}: {failed} of {n} tasks did not succeed")
    finished = sorted(datetime.fromisoformat(meta["date_done"]) for meta in done)
    span_s = (finished[-1] - finished[0]).total_seconds()
    return {
        "tasks_per_s": (n - 1) / span_s if span_s > 0 else float("nan"),
        "redis_cmds_per_task": commands / n,
        "worker_cpu_ms_per_task": worker_cpu_s * 1000 / n,
        "redis_cpu_ms_per_task": redis_cpu_s * 1000 / n,
    }


def _meta(raw: Any) -> dict[str, str]:
    return json.loads(raw) if raw else {}


def _state(raw: Any) -> str:
    return _meta(raw).get("status", "")


def _mget_chunks(client: redis.Redis, keys: list[str], size: int = 1000) -> list[Any]:
    values: list[Any] = []
    for start in range(0, len(keys), size):
        values += client.mget(keys[start : start + size])
    return values


def measure(config: Config, redis: RedisServer, n: int, concurrency: int, repetitions: int) -> list[Row]:
    """Drain ``n`` tasks with each side, alternating sides, ``repetitions`` times; the medians as rows."""
    runs: dict[str, list[dict[str, float]]] = {side.label: [] for side in sides(redis)}
    for repetition in range(repetitions):
        for side in sides(redis):
            log = config.work_dir / f"drain-{side.worker_app}-{n}-c{concurrency}-{repetition}.log"
            runs[side.label].append(drain_once(redis, side, n, concurrency, log))
    ts, raw = median_of(runs["taskservice"]), median_of(runs["raw Celery"])
    scenario = f"drain N={n:,}, prefork -c{concurrency}"
    note = "single run" if repetitions == 1 and config.repetitions > 1 else ""
    return [
        Row(scenario, "throughput", "tasks/s", ts["tasks_per_s"], raw["tasks_per_s"], "raw Celery", True, note),
        Row(
            scenario,
            "Redis commands",
            "per task",
            ts["redis_cmds_per_task"],
            raw["redis_cmds_per_task"],
            "raw Celery",
            False,
        ),
        Row(
            scenario,
            "worker CPU",
            "ms/task",
            ts["worker_cpu_ms_per_task"],
            raw["worker_cpu_ms_per_task"],
            "raw Celery",
            False,
        ),
        Row(
            scenario,
            "Redis CPU",
            "ms/task",
            ts["redis_cpu_ms_per_task"],
            raw["redis_cpu_ms_per_task"],
            "raw Celery",
            False,
        ),
    ]


def run(config: Config, redis: RedisServer) -> tuple[list[Row], list[Series]]:
    """The headline drain, the scale series (two pool processes) and a one-process pool for comparison."""
    rows: list[Row] = []
    series = [
        Series("Celery drain, prefork -c2", label, label != "taskservice") for label in ("taskservice", "raw Celery")
    ]
    sizes = tuple(sorted({config.drain_tasks, *config.drain_scale}))
    for n in sizes:
        repetitions = config.drain_repetitions if n == config.drain_tasks else config.repetitions_for(n, sizes)
        measured = measure(config, redis, n, 2, repetitions)
        series[0].points[n], series[1].points[n] = measured[0].taskservice, measured[0].raw
        rows += measured
    rows += measure(config, redis, config.drain_c1_tasks, 1, config.repetitions)
    return rows, series
