"""Celery's Redis result backend, storing the task record's change in the same Lua round trip.

Everything Celery stores for a task (success, failure, retry, revoke, progress) goes through
``store_result``; here it also updates the taskservice record and frees the unique_key when
the task ends, atomically (the running lease is left to expire: the final status already says
nobody runs it). A store is refused, Celery's meta included, when the record is already final
or when another attempt holds the task now (``STORE`` checks the holder's token), so a stale
worker's late result never overwrites the record nor counts twice. Celery's own keys and format
are untouched, so ``AsyncResult(id).get()`` and Flower keep working. Raw Celery spends two round
trips per result (a GET, then SET+PUBLISH); this spends one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from functools import cached_property
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from backends.celery.config import lease_ms
from backends.celery.outage import persist
from backends.celery.settings import CelerySettings
from backends.celery.states import PROGRESS, status_of_state
from backends.celery.store.worker_records import FINAL, STALE, WorkerRecords
from taskservice import attempts
from taskservice.attempts import Outcome
from taskservice.models import FINAL_STATUSES, TaskStatus

log = logging.getLogger("taskservice.celery")

RETRY_REQUEST_ATTRIBUTE = "taskservice_retry"  # (delay s, message) the worker task leaves on the request
OUTCOME_REQUEST_ATTRIBUTE = "taskservice_outcome"  # the attempt core's Outcome, left on the request
TOKEN_REQUEST_ATTRIBUTE = "taskservice_token"  # the lease token of the attempt, left on the request
ANONYMOUS = "*"  # the token of a store by no attempt (the task never ran): allowed only while nobody runs it


@dataclasses.dataclass(frozen=True)
class RecordChange:
    mode: str  # "final", "retry", "progress" or "meta" (Celery's result only)
    fields: dict[str, str | None] = dataclasses.field(default_factory=dict)  # None: remove the field
    retry_delay_s: float | None = None


def describe_error(exc: Any) -> str:
    """The core's ``"ExceptionType: message"`` for an exception Celery stores without the worker task's outcome
    (a hard time limit, a lost worker); a time limit says it timed out."""
    if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
        limit = exc.args[0] if exc.args and isinstance(exc.args[0], int | float) else None
        return attempts.timeout_error(limit) if limit is not None else "TimeoutError: task timed out"
    if isinstance(exc, BaseException):
        return attempts.describe_error(exc)
    return attempts.clean_text(str(exc), attempts.MAX_ERROR_CHARS)


def record_change(result: Any, state: str, traceback: str | None, request: Any) -> RecordChange:
    """What a Celery state change means for the task record (every value a string: Lua keeps it exact)."""
    status = status_of_state(state)
    if state == PROGRESS and isinstance(result, dict):
        message = result.get("message")
        progress = {"progress": repr(float(result.get("progress", 0.0)))}
        return RecordChange("progress", {**progress, "progress_message": None if message is None else str(message)})
    if status is None or status not in FINAL_STATUSES | {TaskStatus.RETRYING}:
        return RecordChange("meta")
    outcome: Outcome | None = getattr(request, OUTCOME_REQUEST_ATTRIBUTE, None)
    if outcome is not None:
        error, trace = outcome.error, outcome.traceback
    else:
        error = describe_error(result)
        trace = attempts.clean_text(traceback, attempts.MAX_TRACEBACK_CHARS) if traceback else None
    if status == TaskStatus.RETRYING:
        delay, message = getattr(request, RETRY_REQUEST_ATTRIBUTE, None) or (None, None)
        fields = {"status": status.value, "error": error, "traceback": trace, "message": message}
        return RecordChange("retry", {name: value for name, value in fields.items() if value is not None}, delay)
    fields = {"status": status.value, "finished_at": str(time.time_ns() // 1000), "message": None}
    if status == TaskStatus.SUCCEEDED:
        fields.update(result="null" if result is None else json.dumps(result, default=repr), error=None, traceback=None)
    elif status == TaskStatus.FAILED:
        fields.update(error=error, traceback=trace)
    return RecordChange("final", fields)


def holder_token(request: Any) -> str:
    """Who stores: the attempt's own token, or (the worker's main process, for its pool child) ``'node|'``."""
    token = getattr(request, TOKEN_REQUEST_ATTRIBUTE, None)
    if token:
        return "" if token == ANONYMOUS else str(token)
    node = getattr(request, "hostname", None)
    return f"{node}|" if node else ""


class RecordingRedisBackend(RedisBackend):  # type: ignore[misc]  # celery ships no type hints
    """``RedisBackend`` + task records; configured by ``TaskServiceCelery`` (``backend_cls``)."""

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, url=url or app.conf.result_backend, **kwargs)

    @cached_property
    def taskservice_settings(self) -> CelerySettings:
        return getattr(self.app, "taskservice_settings", None) or CelerySettings()

    @cached_property
    def records(self) -> WorkerRecords:
        return WorkerRecords(self.client, self.taskservice_settings.result_ttl_s)

    @cached_property
    def lease_ms(self) -> int:
        """How long a running task's lease lasts without a refresh (see ``lease_ms``)."""
        return lease_ms(self.taskservice_settings)

    def store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None, **kwargs: Any
    ) -> Any:
        # The record change is worked out here, where the exception is still an exception.
        kwargs["record_change"] = record_change(result, state, traceback, request)
        return super().store_result(task_id, result, state, traceback, request, **kwargs)

    def store_progress(self, task_id: str, token: str, percent: float, message: str | None) -> None:
        """``set_progress`` of a running attempt: Celery's PROGRESS meta and the record, if it still holds the task."""
        meta: dict[str, Any] = {"status": PROGRESS, "result": {"progress": percent, "message": message}}
        meta.update(traceback=None, children=[], date_done=None, task_id=task_id)
        change = record_change({"progress": percent, "message": message}, PROGRESS, None, None)
        self.records.store(task_id, change.mode, self.encode(meta), self.expires, change.fields, None, None, token)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        record_change: RecordChange | None = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        task_id = _text(task_id)
        meta["task_id"] = task_id
        encoded = self.encode(meta)
        expires = self.failure_expires if state == states.FAILURE else self.expires
        change = record_change or RecordChange("meta")
        key = self.get_key_for_task(task_id)
        args = (task_id, change.mode, encoded, expires, change.fields, change.retry_delay_s, key, holder_token(request))
        stored = persist(self.records.store, args, f"store the result of task {task_id}")
        if stored == STALE:
            log.warning("taskservice: task %s is held by another attempt now: this result was dropped", task_id)
        elif stored == FINAL and change.mode != "meta":
            log.info("taskservice: task %s had already ended: this result was dropped", task_id)
        return result


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
