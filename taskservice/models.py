"""Task status vocabulary and the TaskResult snapshot."""

from __future__ import annotations

import enum
from datetime import datetime
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


class TaskResult(BaseModel):
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
