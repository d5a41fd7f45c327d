"""taskservice: one interface for background work in FastAPI services, in-process or on Celery."""

from taskservice.dashboard import create_dashboard
from taskservice.errors import (
    BackendUnavailable,
    ServiceStopped,
    TaskConflict,
    TaskNotFound,
    TaskServiceError,
    TaskStillActive,
    TooManyActiveTasks,
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
from taskservice.router import create_tasks_router
from taskservice.service import TaskService
from taskservice.settings import TaskSettings
from taskservice.task_context import RunningTask, current_task, set_progress

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
    "TooManyActiveTasks",
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
