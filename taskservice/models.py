"""The status vocabulary, the ``TaskResult`` snapshot, and what listing and counting tasks return.

The status sets (``ACTIVE_STATUSES``, ``FINAL_STATUSES``, ``CLAIMABLE_STATUSES``) are the only
spelling of which status means what: the stores generate their SQL and Lua from them.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self not in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE_STATUSES = frozenset(set(TaskStatus) - FINAL_STATUSES)
# Waiting for an attempt: a worker may claim it (and cancel() still stops it for good).
CLAIMABLE_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING})


def in_order(statuses: frozenset[TaskStatus]) -> list[TaskStatus]:
    """``statuses`` in the enum's order: generated SQL and Lua come out the same every time."""
    return [status for status in TaskStatus if status in statuses]


class TaskResult(BaseModel):  # type: ignore[no-redef]  # the pydantic plugin trips on a field named kwargs
    """A snapshot of one task; ask the service again to see it move."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    status: TaskStatus
    result: Any = None
    error: str | None = Field(default=None, description='"ExceptionType: message" of the last failure')
    traceback: str | None = None
    progress: float | None = Field(default=None, ge=0, le=100)
    progress_message: str | None = None
    attempts: int = Field(default=0, ge=0, description="how many times the task body started")
    enqueued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    args: list[Any] | None = Field(default=None, description="positional arguments, as the task received them")
    kwargs: dict[str, Any] | None = Field(default=None, description="keyword arguments, as the task received them")
    retry_of: str | None = Field(default=None, description="the task this one retries (service.retry)")
    retried_as: list[str] = Field(default_factory=list, description="tasks made by retrying this one, oldest first")

    @property
    def cursor(self) -> str:
        """Pass as ``list_tasks(cursor=...)`` to get the tasks enqueued before this one."""
        return encode_cursor(self.enqueued_at, self.id)


class TaskStats(BaseModel):
    """How many tasks are in each status now, and how long the oldest pending one has waited."""

    model_config = ConfigDict(frozen=True)

    counts: dict[TaskStatus, int]
    oldest_pending_enqueued_at: datetime | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(enqueued_at: datetime, task_id: str) -> str:
    """An opaque position in the newest-first listing: ``(enqueued_at, id)``."""
    return f"{(enqueued_at - _EPOCH) // timedelta(microseconds=1)}_{task_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(enqueued_at, id)`` of a cursor; ``ValueError`` if it is not one."""
    micros, sep, task_id = cursor.partition("_")
    if not sep or not micros.lstrip("-").isdigit() or not task_id or len(cursor) > 200:
        raise ValueError(f"not a task list cursor: {cursor[:60]!r}")
    return _EPOCH + timedelta(microseconds=int(micros)), task_id
