"""``CeleryTaskService``: tasks run in Celery workers, with Redis as broker, result store and record store.

The API side never goes through ``apply_async``: ``enqueue`` writes the task record and pushes
Celery's own message in one Redis round trip (``TaskRecords.insert``, ``task_message``), and
``get_status`` reads the record, so an unknown id is ``TaskNotFound`` and a far-future
schedule never sits in the broker. Workers run the tasks through ``RecordedTask``; the
result backend (``RecordingRedisBackend``) keeps record and Celery result in step.

The async verbs do the same through an asyncio Redis client, one per event loop
(``PerLoop``), so they never block the loop; ``wait``/``await_result`` are woken by the task's
result channel (``ResultWaits``); readiness and the worker count come from ``Readiness``.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from backends.celery import record_scan
from backends.celery.async_clients import PerLoop
from backends.celery.async_records import AsyncTaskRecords
from backends.celery.connection import connect_async_redis, connect_redis, reaching_redis
from backends.celery.control import WorkerControl
from backends.celery.readiness import Readiness
from backends.celery.result_channel import AsyncResultWaits, ResultWaits
from backends.celery.settings import CelerySettings
from backends.celery.store.messages import DEFAULT_QUEUE, queue_for, revoked_meta, task_message
from backends.celery.store.records import TaskRecords
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.registry import Task, registered_tasks
from taskservice.service import TaskCall, TaskQuery, TaskService

log = logging.getLogger("taskservice.celery")


def queue_of(task: Task[..., object], options_queue: str | None) -> str:
    """The broker queue (a Redis list) a call of ``task`` goes to: its own, else the async or the default one."""
    return queue_for(task.is_async, options_queue)


@dataclasses.dataclass
class _LoopSide:
    """What one event loop uses: its own client, records over it, and its subscription connections."""

    records: AsyncTaskRecords
    waits: AsyncResultWaits

    async def aclose(self) -> None:
        await self.waits.aclose()
        await self.records.aclose()


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
        self._waits = ResultWaits(self._client, self.settings)
        self._loops: PerLoop[_LoopSide] = PerLoop(self._loop_side, _LoopSide.aclose)
        # Revokes and censuses on separate threads: a revoke that kombu retries while Redis refuses
        # writes must not hold up the census that says so.
        self._control = WorkerControl(self.settings)
        self._readiness = Readiness(self._client, self.settings, WorkerControl(self.settings), self._queues)

    # -- the sync verbs -----------------------------------------------------------------------

    def _submit(self, call: TaskCall) -> None:
        queue_name = queue_of(call.task, call.options.queue)
        with reaching_redis(self.settings):
            self.records.insert(call, _message(call, queue_name), queue_name)

    def _read(self, task_id: str) -> TaskResult | None:
        with reaching_redis(self.settings):
            return self.records.read(task_id)

    def _cancel(self, task_id: str) -> bool | None:
        """Mark it cancelled in Redis (workers check before running, across restarts), then revoke it too."""
        with reaching_redis(self.settings):
            cancelled = self.records.cancel(task_id, revoked_meta(task_id), int(self.settings.result_ttl_s))
        if cancelled:
            self._control.revoke_soon(task_id)
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

    def _outstanding(self, horizon: datetime) -> list[TaskResult]:
        with reaching_redis(self.settings):
            return record_scan.outstanding(self._client, self.records, horizon)

    def wait(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """Block until the task reaches a final status, woken by its result channel (``poll_interval_s``
        is not used); ``TimeoutError`` after ``timeout_s``, ``TaskNotFound`` for an unknown id."""
        return self._waits.wait(task_id, lambda: self.get_status(task_id), timeout_s)

    # -- the async verbs: the same, on this loop's client ---------------------------------------

    async def _asubmit(self, call: TaskCall) -> None:
        side = await self._loops.current()
        queue_name = queue_of(call.task, call.options.queue)
        with reaching_redis(self.settings):
            await side.records.insert(call, _message(call, queue_name), queue_name)

    async def _aread(self, task_id: str) -> TaskResult | None:
        side = await self._loops.current()
        with reaching_redis(self.settings):
            return await side.records.read(task_id)

    async def _acancel(self, task_id: str) -> bool | None:
        side = await self._loops.current()
        with reaching_redis(self.settings):
            cancelled = await side.records.cancel(task_id, revoked_meta(task_id), int(self.settings.result_ttl_s))
        if cancelled:
            self._control.revoke_soon(task_id)  # hands it to the control thread: no waiting here
        return cancelled

    async def _alist(self, query: TaskQuery) -> list[TaskResult]:
        side = await self._loops.current()
        with reaching_redis(self.settings):
            return await side.records.recent(query)

    async def _aretry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        side = await self._loops.current()
        with reaching_redis(self.settings):
            return await side.records.retry_source(task_id)

    async def _alink_retry(self, original_id: str, retry_id: str) -> None:
        side = await self._loops.current()
        with reaching_redis(self.settings):
            await side.records.link_retry(original_id, retry_id)

    async def astats(self) -> TaskStats:
        side = await self._loops.current()
        with reaching_redis(self.settings):
            return await side.records.stats()

    async def _aoutstanding(self, horizon: datetime) -> list[TaskResult]:
        side = await self._loops.current()
        with reaching_redis(self.settings):
            return await record_scan.aoutstanding(side.records.client, self.records, horizon)

    async def await_result(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """``wait`` for async code, on this loop's client: the event loop is never blocked."""
        side = await self._loops.current()
        return await side.waits.wait(task_id, lambda: self.aget_status(task_id), timeout_s)

    # -- operations ---------------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Why the backend cannot take work: Redis unreachable or refusing writes, or a queue of this
        service's tasks that no live worker consumes (Celery's remote control, within 1 s). Answered
        from a census at most 30 s old (one older than 5 s is refreshed in the background); only
        without one does this wait, at most ``TASK_REDIS_TIMEOUT_S`` + 2 s.
        """
        return list(self._readiness.census().reasons)

    async def areadiness(self) -> list[str]:
        return list((await self._readiness.acensus()).reasons)

    def workers_alive(self) -> int | None:
        """Celery workers that answered the last census (the same cache as ``readiness``); None if
        Redis or the workers could not be asked."""
        return self._readiness.census().workers_alive

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the first readiness census in the background, so the first probe finds one."""
        self._readiness.refresh()

    async def stop(self) -> None:
        """Close this loop's client (the app's lifespan ends); the service still works if used again."""
        await self._loops.close_current()

    def close(self) -> None:
        self._loops.close()
        self._control.close()
        self._readiness.control.close()
        self._waits.close()
        self._client.close()

    def _loop_side(self) -> _LoopSide:
        client = connect_async_redis(self.settings)
        return _LoopSide(AsyncTaskRecords(client, self.records), AsyncResultWaits(client, self.settings))

    def _queues(self) -> set[str]:
        """The queues this service's registered tasks go to (the default queue if none is registered)."""
        return {queue_of(task, task.default_options.queue) for task in registered_tasks().values()} or {DEFAULT_QUEUE}


def _message(call: TaskCall, queue_name: str) -> str:
    return task_message(
        call.id,
        call.task.name,
        call.arguments.args,
        call.arguments.kwargs,
        queue=queue_name,
        timeout_s=call.options.timeout,
    )
