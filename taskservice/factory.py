"""Choose the backend from ``TASK_BACKEND`` through a table of import strings, imported lazily."""

from __future__ import annotations

import importlib
import threading

from taskservice.service import TaskService
from taskservice.settings import TaskSettings

# Choosing "fastapi" never imports Celery: the celery module is imported only when chosen.
BACKENDS: dict[str, str] = {
    "fastapi": "backends.inprocess.service:FastAPITaskService",
    "celery": "backends.celery.service:CeleryTaskService",
}

_current: TaskService | None = None
_lock = threading.Lock()


def load_backend_class(name: str) -> type[TaskService]:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"TASK_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, TaskService)):
        raise TypeError(f"{target} is not a TaskService")
    return cls


def create_task_service(settings: TaskSettings | None = None) -> TaskService:
    """A new service for ``settings`` (read from the environment when omitted)."""
    settings = settings if settings is not None else TaskSettings()
    return load_backend_class(settings.backend)(settings)


def get_task_service() -> TaskService:
    """The process-wide service, created from the environment on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = create_task_service()
    return _current


def set_task_service(service: TaskService | None) -> TaskService | None:
    """Install ``service`` as the process-wide one (None forgets it); return the previous one."""
    global _current
    with _lock:
        previous, _current = _current, service
    return previous
