"""taskservice: one interface for background work in FastAPI services, in-process or on Celery."""

from taskservice.errors import BackendUnavailable, TaskConflict, TaskNotFound, TaskServiceError
from taskservice.factory import create_task_service, get_task_service, set_task_service
from taskservice.integration import TaskServiceDep, task_service_lifespan
from taskservice.models import TaskResult, TaskStatus
from taskservice.periodic import periodic
from taskservice.progress import set_progress
from taskservice.registry import Task, task
from taskservice.request_scope import TaskServiceMiddleware
from taskservice.router import create_tasks_router
from taskservice.service import TaskService
from taskservice.settings import TaskSettings

__all__ = [
    "BackendUnavailable",
    "Task",
    "TaskConflict",
    "TaskNotFound",
    "TaskResult",
    "TaskService",
    "TaskServiceDep",
    "TaskServiceError",
    "TaskServiceMiddleware",
    "TaskSettings",
    "TaskStatus",
    "create_task_service",
    "create_tasks_router",
    "get_task_service",
    "periodic",
    "set_progress",
    "set_task_service",
    "task",
    "task_service_lifespan",
]
