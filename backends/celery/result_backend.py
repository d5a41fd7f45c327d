"""Celery's Redis result backend, storing the task record's change in the same Lua round trip.

Everything Celery stores for a task (success, failure, retry, revoke, progress) goes through
``store_result``; here it also updates the taskservice record and frees the unique_key when
the task ends, atomically (the running lease is left to expire: the final status already says
nobody runs it). Celery's own keys and format are untouched, so
``AsyncResult(id).get()`` and Flower keep working. Raw Celery spends two round trips per
result (a GET, then SET+PUBLISH); this spends one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import cached_property
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from backends.celery.config import lease_ms
from backends.celery.settings import CelerySettings
from backends.celery.states import PROGRESS, status_of_state
from backends.celery.store.records import TaskRecords
from taskservice import attempts
from taskservice.attempts import Outcome
from taskservice.models import FINAL_STATUSES, TaskStatus

RETRY_REQUEST_ATTRIBUTE = "taskservice_retry"  # (due in epoch seconds, message) the worker task leaves on the request
OUTCOME_REQUEST_ATTRIBUTE = "taskservice_outcome"  # the attempt core's Outcome, left on the request


@dataclasses.dataclass(frozen=True)
class RecordChange:
    mode: str  # "final", "retry", "progress" or "meta" (Celery's result only)
    fields: dict[str, str | None] = dataclasses.field(default_factory=dict)  # None: remove the field
    retry_due_s: float | None = None


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
        due, message = getattr(request, RETRY_REQUEST_ATTRIBUTE, None) or (None, None)
        fields = {"status": status.value, "error": error, "traceback": trace, "message": message}
        return RecordChange("retry", {name: value for name, value in fields.items() if value is not None}, due)
    fields = {"status": status.value, "finished_at": str(time.time_ns() // 1000), "message": None}
    if status == TaskStatus.SUCCEEDED:
        fields.update(result="null" if result is None else json.dumps(result, default=repr), error=None, traceback=None)
    elif status == TaskStatus.FAILED:
        fields.update(error=error, traceback=trace)
    return RecordChange("final", fields)


class RecordingRedisBackend(RedisBackend):  # type: ignore[misc]  # celery ships no type hints
    """``RedisBackend`` + task records; configured by ``TaskServiceCelery`` (``backend_cls``)."""

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, url=url or app.conf.result_backend, **kwargs)

    @cached_property
    def taskservice_settings(self) -> CelerySettings:
        return getattr(self.app, "taskservice_settings", None) or CelerySettings()

    @cached_property
    def records(self) -> TaskRecords:
        return TaskRecords(self.client, self.taskservice_settings.result_ttl_s)

    @cached_property
    def lease_ms(self) -> int:
        """How long a running task's lease lasts without a refresh (see ``celery_config.lease_ms``)."""
        return lease_ms(self.taskservice_settings)

    def store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None, **kwargs: Any
    ) -> Any:
        # The record change is worked out here, where the exception is still an exception.
        kwargs["record_change"] = record_change(result, state, traceback, request)
        return super().store_result(task_id, result, state, traceback, request, **kwargs)

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
        meta["task_id"] = _text(task_id)
        encoded = self.encode(meta)
        expires = self.failure_expires if state == states.FAILURE else self.expires
        change = record_change or RecordChange("meta")
        key = self.get_key_for_task(task_id)
        self.ensure(
            self.records.store,
            (_text(task_id), change.mode, encoded, expires, change.fields, change.retry_due_s, key),
        )
        return result


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
