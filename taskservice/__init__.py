"""taskservice: one interface for background work in FastAPI services, in-process or on Celery."""

from taskservice.dashboard import create_dashboard
from taskservice.errors import (
    BackendUnavailable,
    ServiceStopped,
    TaskConflict,
    TaskNotFound,
    TaskServiceError,
    TaskStillActive,
    UnsafeConfiguration,
)
from taskservice.factory import create_task_service, get_task_service, set_task_service
from taskservice.hooks import (
    TaskEnqueued,
    TaskFinished,
    TaskStarted,
    on_task_enqueued,
    on_task_finished,
    on_task_started,
    remove_hook,
)
from taskservice.integration import TaskServiceDep, task_service_lifespan
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.periodic import periodic
from taskservice.registry import Task, task
from taskservice.request_scope import TaskServiceMiddleware
from taskservice.service import TaskService
from taskservice.settings import TaskSettings
from taskservice.task_context import RunningTask, current_task, set_progress

try:
    from taskservice.router import create_tasks_router
except ModuleNotFoundError as _missing:  # FastAPI < 0.135 has no fastapi.sse: only the router needs it
    if _missing.name != "fastapi.sse":
        raise
    _router_error = str(_missing)

    def create_tasks_router(*args: object, **kwargs: object) -> object:  # type: ignore[misc]
        """Unavailable with this FastAPI; the rest of taskservice works with FastAPI >= 0.100."""
        raise ImportError(f"create_tasks_router needs a newer FastAPI ({_router_error}): pip install 'fastapi>=0.135'")


__all__ = [
    "BackendUnavailable",
    "RunningTask",
    "ServiceStopped",
    "Task",
    "TaskConflict",
    "TaskEnqueued",
    "TaskFinished",
    "TaskNotFound",
    "TaskResult",
    "TaskService",
    "TaskServiceDep",
    "TaskServiceError",
    "TaskServiceMiddleware",
    "TaskSettings",
    "TaskStarted",
    "TaskStats",
    "TaskStatus",
    "TaskStillActive",
    "UnsafeConfiguration",
    "create_dashboard",
    "create_task_service",
    "create_tasks_router",
    "current_task",
    "get_task_service",
    "on_task_enqueued",
    "on_task_finished",
    "on_task_started",
    "periodic",
    "remove_hook",
    "set_progress",
    "set_task_service",
    "task",
    "task_service_lifespan",
]
