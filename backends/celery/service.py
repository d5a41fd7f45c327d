"""``CeleryTaskService``: tasks run in Celery workers, with Redis as broker, result store and record store.

The API side never goes through ``apply_async``: ``enqueue`` writes the task record and pushes
Celery's own message in one Redis round trip (``TaskRecords.insert``, ``task_message``), and
``get_status`` reads the record, so an unknown id is ``TaskNotFound`` and a far-future
schedule never sits in the broker. Workers run the tasks through ``RecordedTask``; the
result backend (``RecordingRedisBackend``) keeps record and Celery result in step.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from backends.celery.connection import connect_redis, reaching_redis
from backends.celery.settings import CelerySettings
from backends.celery.store.messages import queue_for, revoked_meta, task_message
from backends.celery.store.records import TaskRecords
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.service import TaskCall, TaskQuery, TaskService

log = logging.getLogger("taskservice.celery")


class CeleryTaskService(TaskService):
    """Tasks run in Celery workers (``celery -A backends.celery_app worker``); Redis keeps everything."""

    backend_name = "celery"
    settings_class = CelerySettings
    settings: CelerySettings
    cancels_running_tasks = False  # a running task is never killed mid-way; cancel() says False

    def __init__(self, settings: CelerySettings | None = None) -> None:
        super().__init__(settings)
        self._client = connect_redis(self.settings)
        self.records = TaskRecords(self._client, self.settings.result_ttl_s)
        self._revocations: queue.SimpleQueue[str | None] | None = None
        self._revoke_lock = threading.Lock()

    def _submit(self, call: TaskCall) -> None:
        queue_name = queue_for(call.task.is_async, call.options.queue)
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

    def _read(self, task_id: str) -> TaskResult | None:
        with reaching_redis(self.settings):
            return self.records.read(task_id)

    def _cancel(self, task_id: str) -> bool | None:
        """Mark it cancelled in Redis (workers check before running, across restarts), then revoke it too."""
        with reaching_redis(self.settings):
            cancelled = self.records.cancel(task_id, revoked_meta(task_id), int(self.settings.result_ttl_s))
        if cancelled:
            self._revoke_soon(task_id)
        return cancelled

    def _list(self, query: TaskQuery) -> list[TaskResult]:
        with reaching_redis(self.settings):
            return self.records.recent(query)

    def stats(self) -> TaskStats:
        """Counts per status from the counters the record scripts keep: one round trip."""
        with reaching_redis(self.settings):
            return self.records.stats()

    def _retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        with reaching_redis(self.settings):
            return self.records.retry_source(task_id)

    def _link_retry(self, original_id: str, retry_id: str) -> None:
        with reaching_redis(self.settings):
            self.records.link_retry(original_id, retry_id)

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


def _revoke_loop(settings: CelerySettings, pending: queue.SimpleQueue[str | None]) -> None:
    from backends.celery.config import create_celery_app

    app: Any = create_celery_app(settings)
    try:
        while (task_id := pending.get()) is not None:
            try:
                app.control.revoke(task_id)
            except Exception:  # best effort: the durable mark in Redis is what keeps it from running
                log.warning("taskservice: could not broadcast the revoke of task %s", task_id, exc_info=True)
    finally:
        app.close()
