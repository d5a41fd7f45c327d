"""The raw side of the Celery comparison: a plain Celery app and a plain ``@app.task``.

Same broker and result store settings as taskservice's Celery backend (JSON, late acks,
prefetch 1, Redis for both), none of taskservice's own bookkeeping. Started as
``celery -A bench.raw_celery worker`` with the same flags as the taskservice worker.
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench_raw", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 300},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="bench-raw",  # never the queue of a taskservice worker on the same Redis
)


def configure(redis_url: str) -> None:
    """Point this process's producer at ``redis_url`` (workers read ``REDIS_URL`` instead)."""
    app.conf.update(broker_url=redis_url, result_backend=redis_url)


@app.task(name="bench.raw.noop")  # type: ignore[untyped-decorator]
def noop(i: int) -> None:
    """Do nothing: what is measured is the machinery around the call."""
    return None
