"""``CeleryTaskService``: tasks run in Celery workers, with Redis as broker, result store and record store.

The API side never goes through ``apply_async``: ``enqueue`` writes the task record and pushes
Celery's own message in one Redis round trip (``celery_records``, ``celery_messages``), and
``get_status`` reads the record, so an unknown id is ``TaskNotFound`` and a far-future
schedule never sits in the broker. Workers run the tasks through ``celery_runner``; the
result backend (``celery_result_backend``) keeps record and Celery result in step.

This module holds the one mapping from Celery state names to ``TaskStatus``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

import redis
from celery import states
from redis.backoff import NoBackoff
from redis.retry import Retry

from backends.celery_messages import DEFAULT_QUEUE, revoked_meta, task_message
from backends.celery_records import TaskRecords
from taskservice.errors import BackendUnavailable, TaskNotFound
from taskservice.models import TaskResult, TaskStatus
from taskservice.service import TaskCall, TaskService
from taskservice.settings import TaskSettings

log = logging.getLogger("taskservice.celery")

PROGRESS = "PROGRESS"  # the custom state a running task's set_progress() stores, as Celery users do

# The one place Celery's state names meet taskservice's vocabulary.
STATUS_OF_STATE: dict[str, TaskStatus] = {
    states.PENDING: TaskStatus.PENDING,
    states.RECEIVED: TaskStatus.PENDING,
    states.STARTED: TaskStatus.RUNNING,
    PROGRESS: TaskStatus.RUNNING,
    states.RETRY: TaskStatus.RETRYING,
    states.SUCCESS: TaskStatus.SUCCEEDED,
    states.FAILURE: TaskStatus.FAILED,
    states.REVOKED: TaskStatus.CANCELLED,
}

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def status_of_state(state: str) -> TaskStatus | None:
    """The ``TaskStatus`` of a Celery state, or None for a state taskservice does not track."""
    return STATUS_OF_STATE.get(state)


def connect_redis(settings: TaskSettings) -> redis.Redis:
    """A client that gives up within ``TASK_REDIS_TIMEOUT_S``: one quick retry for a dropped connection only."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        # A connection Redis closed (a restart) is retried once at once; a timeout is not
        # retried, so the caller hears within the timeout, never after several of them.
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        health_check_interval=0,
    )


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


@contextlib.contextmanager
def reaching_redis(settings: TaskSettings) -> Iterator[None]:
    """Turn a Redis connection failure into ``BackendUnavailable`` saying what to check."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(
            f"cannot reach Redis at {safe_url(settings.redis_url)} ({type(exc).__name__}: {exc}): "
            f"check REDIS_URL and that Redis is running and reachable "
            f"(TASK_REDIS_TIMEOUT_S={settings.redis_timeout_s:g})"
        ) from exc


class CeleryTaskService(TaskService):
    """Tasks run in Celery workers (``celery -A backends.celery_app worker``); Redis keeps everything."""

    backend_name = "celery"
    cancels_running_tasks = False  # a running task is never killed mid-way; cancel() says False

    def __init__(self, settings: TaskSettings | None = None) -> None:
        super().__init__(settings)
        self._client = connect_redis(self.settings)
        self.records = TaskRecords(self._client, self.settings.result_ttl_s)
        self._revocations: queue.SimpleQueue[str | None] | None = None
        self._revoke_lock = threading.Lock()

    def _submit(self, call: TaskCall) -> None:
        queue_name = call.options.queue or DEFAULT_QUEUE
        message = task_message(
            call.id,
            call.task.name,
            call.arguments.args,
            call.arguments.kwargs,
            queue=queue_name,
            timeout_s=call.options.timeout,
        )
        with reaching_redis(self.settings):
            self.records.insert(call, message, queue_name)

    def get_status(self, task_id: str) -> TaskResult:
        with reaching_redis(self.settings):
            snapshot = self.records.read(task_id)
        if snapshot is None:
            raise TaskNotFound(task_id)
        return snapshot

    def cancel(self, task_id: str) -> bool:
        """Mark it cancelled in Redis (workers check before running, across restarts), then revoke it too."""
        with reaching_redis(self.settings):
            cancelled = self.records.cancel(task_id, revoked_meta(task_id), int(self.settings.result_ttl_s))
        if cancelled is None:
            raise TaskNotFound(task_id)
        if cancelled:
            self._revoke_soon(task_id)
        return cancelled

    def list_tasks(self, status: TaskStatus | None = None, limit: int = 100) -> list[TaskResult]:
        with reaching_redis(self.settings):
            return self.records.recent(status, limit)

    def close(self) -> None:
        with self._revoke_lock:
            if self._revocations is not None:
                self._revocations.put(None)
                self._revocations = None
        self._client.close()

    def _revoke_soon(self, task_id: str) -> None:
        """Celery's revoke, off the caller's thread: the Redis mark already guarantees the task never runs,
        the broadcast only lets workers drop a message they hold and Flower show it revoked."""
        with self._revoke_lock:
            if self._revocations is None:
                self._revocations = queue.SimpleQueue()
                threading.Thread(
                    target=_revoke_loop, args=(self.settings, self._revocations), name="taskservice-revoke", daemon=True
                ).start()
            self._revocations.put(task_id)


def _revoke_loop(settings: TaskSettings, pending: queue.SimpleQueue[str | None]) -> None:
    from backends.celery_config import create_celery_app

    app: Any = create_celery_app(settings)
    try:
        while (task_id := pending.get()) is not None:
            try:
                app.control.revoke(task_id)
            except Exception:  # best effort: the durable mark in Redis is what keeps it from running
                log.warning("taskservice: could not broadcast the revoke of task %s", task_id, exc_info=True)
    finally:
        app.close()
