"""The Celery app of taskservice, configured from ``TaskSettings``: safe by default, one place.

Redis visibility timeout: the Redis transport has no real acknowledgements. A message a worker
took stays in an "unacked" set and is put back on the queue once it is older than
``visibility_timeout``, whatever happened to the worker. That is how a task of a worker killed
mid-way (``task_acks_late`` + ``task_reject_on_worker_lost``) is not lost, and it is a trade-off:

- short timeout: a killed worker's tasks come back fast, but every task that runs longer than
  the timeout, and every message that waits longer (an ETA/countdown held by a worker), is
  delivered a second time while the first copy is still running or waiting;
- long timeout (kombu's default is an hour): no such duplicates, but an hour before recovery.

taskservice keeps the timeout long (``TASK_VISIBILITY_TIMEOUT_S``, 300 s) and recovers a dead
worker's tasks through leases instead, within about a lease (20 s) plus a few seconds:

1. a running task holds a *lease* in Redis that its worker process refreshes (``LEASES``); when
   the lease expires because the holder is gone (killed, cut off, frozen), every worker's
   dispatcher re-publishes the task (``RECOVER``); the claim lets that copy take over, and the
   original message, when the broker brings it back, is parked while a lease is live and dropped
   once the task is final; a stale holder cannot store over the new one (token-checked stores);
2. far-future work never waits in the broker: ``schedule()``, retry back-offs and parked
   duplicates wait in a Redis sorted set, and a dispatcher in every worker pushes each message
   onto its queue when due (``ScheduleDispatcher``). Celery's ETA/countdown is not used.

Tasks must still be idempotent: a worker killed mid-task means its body runs again from the
start (at-least-once delivery); what cannot happen is two copies running at once while the
first one's holder is alive and reaching Redis.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from celery import Celery

from backends.celery.settings import CelerySettings
from backends.celery.store.messages import DEFAULT_QUEUE
from backends.celery.transport import TRANSPORT


class TaskServiceCelery(Celery):  # type: ignore[misc]  # celery ships no type hints
    """Celery with taskservice's result backend: Celery's redis backend that keeps task records in step."""

    backend_cls = "backends.celery.result_backend:RecordingRedisBackend"


def lease_ms(settings: CelerySettings) -> int:
    """How long a running task's lease lasts without a refresh (a quarter of the visibility timeout, 1-20 s).

    What recovery of a dead worker's tasks waits for (plus the dispatcher's few seconds); refreshed
    three times per lease by the running worker, so a pause shorter than two thirds of it is harmless
    and a longer one is taken back if nobody took the task over meanwhile.
    """
    return int(min(20.0, max(1.0, settings.visibility_timeout_s / 4)) * 1000)


def celery_config(settings: CelerySettings) -> dict[str, Any]:
    """Celery settings derived from ``TaskSettings``."""
    timeout_s = settings.redis_timeout_s
    visibility_s = settings.visibility_timeout_s
    return {
        "broker_url": settings.redis_url,
        "broker_transport": TRANSPORT,
        "result_backend": settings.redis_url,
        # JSON only: a pickle message is refused by the worker, never unpickled.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # A worker killed mid-task loses nothing: the message is acknowledged only after the task ended.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.worker_prefetch,
        "task_track_started": False,  # the worker's claim records "running" itself, in the same round trip
        "result_expires": int(settings.result_ttl_s),
        "timezone": "UTC",
        "enable_utc": True,
        "task_default_queue": DEFAULT_QUEUE,
        "worker_enable_remote_control": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": timeout_s,
        "broker_transport_options": {
            "visibility_timeout": visibility_s,
            # sweep for abandoned messages often enough that the visibility timeout is what counts
            "unacked_restore_interval": max(1.0, min(10.0, visibility_s / 4)),
            "unacked_restore_throttle": 1,
            "socket_timeout": max(timeout_s, 5.0),  # above BRPOP's own 1 s wait
            "socket_connect_timeout": timeout_s,
        },
        "redis_socket_connect_timeout": timeout_s,
        "redis_socket_timeout": max(timeout_s, 5.0),
        "redis_retry_on_timeout": True,  # in workers a result must get stored; the backend retries, then fails
        "beat_scheduler": "backends.celery.beat:RecordingScheduler",
    }


def create_celery_app(settings: CelerySettings, *, set_as_current: bool = False) -> Any:
    """A configured Celery app (no tasks registered yet); the worker step that dispatches schedules included."""
    from backends.celery.async_pool import AsyncPool, ReadySignal
    from backends.celery.dispatcher import ScheduleDispatcher

    app = TaskServiceCelery("taskservice", set_as_current=set_as_current)
    app.conf.update(celery_config(settings))
    app.taskservice_settings = settings
    app.steps["worker"].add(ScheduleDispatcher)
    app.steps["worker"].add(AsyncPool)
    app.steps["consumer"].add(ReadySignal)
    return app


def import_task_modules(module_names: Sequence[str]) -> None:
    """Import ``TASK_MODULES``; a module that is not there is named, with the setting to fix."""
    for name in module_names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                raise ImportError(
                    f"TASK_MODULES names {name!r}, which cannot be imported ({exc}); "
                    "fix TASK_MODULES or the PYTHONPATH of this process"
                ) from exc
            raise
