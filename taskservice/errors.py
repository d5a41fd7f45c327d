"""Errors raised by taskservice.

TaskServiceError             catch this to catch them all
├── TaskNotFound             no task with this id was ever enqueued (or its record expired)
├── TaskConflict             a task with this unique_key is already active
├── TaskStillActive          retry() of a task that has not finished
├── BackendUnavailable       the broker / store cannot be reached; says what to check
│   ├── ServiceStopped       the service was stopped (lifespan ended, close() called); start it again
│   └── TooManyActiveTasks   the store holds as many active tasks as it may; try again later
└── UnsafeConfiguration      settings that cannot work in this deployment (e.g. memory:// under several workers)

Bad arguments to ``enqueue``/``schedule`` (an undecorated function, a value JSON cannot
carry, a payload over the size cap, a naive datetime) raise the built-in ``TypeError`` /
``ValueError``: they are bugs in the caller, not failures of the backend.
"""

from __future__ import annotations


class TaskServiceError(Exception):
    """Base class of every error the task backend itself raises."""


class TaskNotFound(TaskServiceError, LookupError):
    """No task with this id was ever enqueued, or its record has expired."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r} (never enqueued, or its record expired)")
        self.task_id = task_id


class TaskConflict(TaskServiceError):
    """A task with the same unique_key is pending, scheduled, running or retrying."""

    def __init__(self, unique_key: str, active_task_id: str | None = None) -> None:
        detail = f" (task {active_task_id})" if active_task_id else ""
        super().__init__(f"a task with unique_key {unique_key!r} is already active{detail}")
        self.unique_key = unique_key
        self.active_task_id = active_task_id


class TaskStillActive(TaskServiceError):
    """``retry()`` was asked for a task that is still pending, scheduled, running or retrying."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"task {task_id} is still {status}: only a finished task can be retried")
        self.task_id = task_id
        self.status = status


class BackendUnavailable(TaskServiceError):
    """The broker or the task store cannot be reached; the message says what to check."""


class ServiceStopped(BackendUnavailable):
    """The service was stopped (its lifespan ended or ``close()`` was called) and takes no new work."""


class TooManyActiveTasks(BackendUnavailable):
    """The store holds as many active tasks as it may (``TASK_MEMORY_MAX_ACTIVE_TASKS``): try again later."""


class UnsafeConfiguration(TaskServiceError):
    """Settings that cannot work in this deployment; the message says which setting to change."""
