"""Where the task counters of ``taskservice.metrics`` live, so that every process's counts add up once.

- ``LocalCounters``: prometheus_client objects in this process. With several server processes,
  set ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and each process
  writes its own file, summed at scrape time. The in-process backend uses these: its attempts
  run in the server processes.
- ``SharedCounters``: a Redis hash every process adds to (API, each Celery worker process on
  any host, beat). The Celery backend uses these: its attempts run in the workers, so their
  counts must be where the API's ``/metrics`` can read them. Increments are buffered and sent
  once a second (and before a scrape), one pipelined round trip: the enqueue and the worker's
  hot path never wait for Redis because of metrics.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger("taskservice")

ENQUEUED = "taskservice_tasks_enqueued"
FINISHED = "taskservice_tasks_finished"
RETRIES = "taskservice_task_retries"
DURATION = "taskservice_task_duration_seconds"
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HELP = {
    ENQUEUED: "Tasks accepted by enqueue, schedule or retry, by task name",
    FINISHED: "Tasks that reached a final status through an attempt (succeeded or failed), by task name",
    RETRIES: "Attempts that failed and were retried, by task name",
    DURATION: "How long each attempt ran, whatever its outcome, by task name",
}
REDIS_KEY = "taskservice:metrics:v1"
FLUSH_INTERVAL_S = 1.0


class LocalCounters:
    """Counters in this process (or this host's processes, in prometheus_client's multiprocess mode)."""

    def __init__(self) -> None:
        self.enqueued = Counter(ENQUEUED, HELP[ENQUEUED], ["task"])
        self.finished = Counter(FINISHED, HELP[FINISHED], ["task", "status"])
        self.retries = Counter(RETRIES, HELP[RETRIES], ["task"])
        self.duration = Histogram(DURATION, HELP[DURATION], ["task"], buckets=DURATION_BUCKETS_S)

    def add_enqueued(self, task: str) -> None:
        self.enqueued.labels(task).inc()

    def add_finished(self, task: str, status: str) -> None:
        self.finished.labels(task, status).inc()

    def add_retry(self, task: str) -> None:
        self.retries.labels(task).inc()

    def observe_duration(self, task: str, seconds: float) -> None:
        self.duration.labels(task).observe(seconds)

    def collectors(self) -> list[Any]:
        return []  # they sit in prometheus_client's default registry already


def _field(*parts: str) -> str:
    return json.dumps(parts, separators=(",", ":"))


class SharedCounters:
    """Counters in one Redis hash, shared by every process that uses the same Redis."""

    def __init__(self, redis_url: str, timeout_s: float) -> None:
        import redis  # the celery extra brings it; imported only on that backend

        self._client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._pid = os.getpid()
        self._flusher: threading.Thread | None = None

    def _add(self, field: str, amount: float = 1.0) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked worker process: the parent's buffer and thread are not ours
                self._pid, self._pending, self._flusher = os.getpid(), {}, None
            self._pending[field] = self._pending.get(field, 0.0) + amount
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, name="taskservice-metrics", daemon=True)
                self._flusher.start()

    def add_enqueued(self, task: str) -> None:
        self._add(_field("enqueued", task))

    def add_finished(self, task: str, status: str) -> None:
        self._add(_field("finished", task, status))

    def add_retry(self, task: str) -> None:
        self._add(_field("retries", task))

    def observe_duration(self, task: str, seconds: float) -> None:
        bucket = next((str(float(bound)) for bound in DURATION_BUCKETS_S if seconds <= bound), "+Inf")
        self._add(_field("duration_bucket", task, bucket))
        self._add(_field("duration_sum", task), seconds)
        self._add(_field("duration_count", task))

    def _flush_forever(self) -> None:
        me = threading.current_thread()
        while self._flusher is me:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        """Send what this process counted since the last flush; kept for the next one if Redis is away."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for field, amount in pending.items():
                if amount.is_integer():
                    pipe.hincrby(REDIS_KEY, field, int(amount))
                else:
                    pipe.hincrbyfloat(REDIS_KEY, field, amount)
            pipe.execute()
        except Exception as exc:  # Redis away: keep the counts, try again at the next flush
            with self._lock:
                for field, amount in pending.items():
                    self._pending[field] = self._pending.get(field, 0.0) + amount
            log.warning("taskservice: could not send task metrics to Redis (kept for later): %s", exc)

    def read(self) -> dict[tuple[str, ...], float]:
        self.flush()
        raw: dict[Any, Any] = self._client.hgetall(REDIS_KEY)
        return {tuple(json.loads(key)): float(value) for key, value in raw.items()}

    def collectors(self) -> list[Any]:
        return [_SharedCollector(self)]


class _SharedCollector:
    """Renders the Redis hash with the same names and labels ``LocalCounters`` has."""

    def __init__(self, counters: SharedCounters) -> None:
        self.counters = counters

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        values = self.counters.read()
        enqueued = CounterMetricFamily(ENQUEUED, HELP[ENQUEUED], labels=["task"])
        finished = CounterMetricFamily(FINISHED, HELP[FINISHED], labels=["task", "status"])
        retries = CounterMetricFamily(RETRIES, HELP[RETRIES], labels=["task"])
        buckets: dict[str, dict[str, float]] = {}
        sums: dict[str, float] = {}
        for key, value in sorted(values.items()):
            kind, labels = key[0], list(key[1:])
            if kind == "enqueued":
                enqueued.add_metric(labels, value)
            elif kind == "finished":
                finished.add_metric(labels, value)
            elif kind == "retries":
                retries.add_metric(labels, value)
            elif kind == "duration_bucket":
                buckets.setdefault(labels[0], {})[labels[1]] = value
            elif kind == "duration_sum":
                sums[labels[0]] = value
        duration = HistogramMetricFamily(DURATION, HELP[DURATION], labels=["task"])
        for task, counts in sorted(buckets.items()):
            running = 0.0
            cumulative: list[tuple[str, float]] = []
            for bound in [*(str(float(b)) for b in DURATION_BUCKETS_S), "+Inf"]:
                running += counts.get(bound, 0.0)
                cumulative.append((bound, running))
            duration.add_metric([task], cumulative, sums.get(task, 0.0))
        yield from (enqueued, finished, retries, duration)
