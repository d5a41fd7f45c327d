"""The raw side of the Celery comparison: a plain Celery app and a plain ``@app.task``.

Same broker and result store settings as taskservice's Celery app with its default
``TaskSettings`` (JSON, late acks, prefetch 1, visibility timeout 300 s, Redis for both),
none of taskservice's own bookkeeping. Started as
``celery -A bench.raw_celery worker`` with the same flags as the taskservice worker.
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench-raw"  # never the queue of a taskservice worker on the same Redis

app = Celery("bench_raw", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    event_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    result_expires=7 * 24 * 3600,
    timezone="UTC",
    enable_utc=True,
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=3.0,
    # the transport options taskservice's defaults give its own app, so only code differs
    broker_transport_options={
        "visibility_timeout": 300,
        "unacked_restore_interval": 10.0,
        "unacked_restore_throttle": 1,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 3.0,
    },
    redis_socket_connect_timeout=3.0,
    redis_socket_timeout=5.0,
    redis_retry_on_timeout=True,
    worker_hijack_root_logger=False,
    task_default_queue=QUEUE,
)


def configure(redis_url: str) -> None:
    """Point this process's producer at ``redis_url`` (workers read ``REDIS_URL`` instead)."""
    app.conf.update(broker_url=redis_url, result_backend=redis_url)


@app.task(name="bench.raw.noop")  # type: ignore[untyped-decorator]
def noop(i: int) -> None:
    """Do nothing: what is measured is the machinery around the call."""
    return None
