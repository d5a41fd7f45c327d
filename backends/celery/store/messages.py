"""Celery messages and result meta, written by taskservice itself.

``enqueue`` publishes the broker message in the same Redis round trip that writes the task
record (``TaskRecords.insert``), instead of ``apply_async``: one round trip, no result-channel
subscription, and no second copy of the message that could disagree with the record. The
message is Celery's task protocol 2 in kombu's Redis envelope, exactly as ``apply_async``
writes it with the JSON serializer, so any Celery worker, Flower and ``celery inspect`` read it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

DEFAULT_QUEUE = "celery"
# Async tasks go here unless their options name a queue: a worker's async pool (an event loop in
# a process of its own) consumes it, so they run TASK_ASYNC_CONCURRENCY at a time, not one per core.
ASYNC_QUEUE = "celery-async"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_REPR_LIMIT = 200
_HOSTNAME = socket.gethostname()


def hard_limit_s(timeout_s: float) -> float:
    """The hard time limit behind a soft ``timeout``: time for the task to unwind, then the process is killed."""
    return timeout_s + min(max(timeout_s * 0.1, 1.0), 30.0)


def task_message(
    task_id: str,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    queue: str = DEFAULT_QUEUE,
    timeout_s: float | None = None,
    retries: int = 0,
) -> str:
    """The broker message (a JSON string) that runs ``name(*args, **kwargs)`` as task ``task_id``."""
    body = json.dumps([list(args), dict(kwargs), _EMBED], separators=(",", ":"))
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [hard_limit_s(timeout_s), timeout_s] if timeout_s is not None else [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": _short(repr(tuple(args))),
        "kwargsrepr": _short(repr(dict(kwargs))),
        "origin": f"gen{os.getpid()}@{_HOSTNAME}",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": None,
            "delivery_mode": 2,
            # the anonymous exchange: the routing key is the queue (and the Redis list) itself
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope, separators=(",", ":"))


def queue_for(is_async: bool, queue: str | None) -> str:
    """The queue a task's message goes to: its own, else the async or the default queue."""
    return queue or (ASYNC_QUEUE if is_async else DEFAULT_QUEUE)


# Celery's FAILURE meta for a task that did not run because its dependency (after=) did not succeed;
# the scripts fill in \3 (the error, JSON-encoded) and \4 (the task id, JSON-encoded)
DEPENDENCY_FAILURE_META = (
    '{"status": "FAILURE", "result": {"exc_type": "RuntimeError", "exc_message": [\3], "exc_module": "builtins"}, '
    '"traceback": null, "children": [], "date_done": null, "task_id": \4}'
)


def dependency_failure_meta() -> str:
    """``DEPENDENCY_FAILURE_META``."""
    return DEPENDENCY_FAILURE_META


def revoked_meta(task_id: str, reason: str = "cancelled") -> str:
    """Celery's result meta for a revoked task, as its JSON result backend stores it."""
    return json.dumps(
        {
            "status": "REVOKED",
            "result": {"exc_type": "TaskRevokedError", "exc_message": [reason], "exc_module": "celery.exceptions"},
            "traceback": None,
            "children": [],
            "date_done": datetime.now(UTC).isoformat(),
            "task_id": task_id,
        }
    )


def _short(text: str) -> str:
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
