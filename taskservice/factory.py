"""Choose the backend from ``TASK_BACKEND``: a built-in name from one table of import strings, or a
``package.module:Class`` of your own. Imported lazily, so choosing ``fastapi`` never imports Celery."""

from __future__ import annotations

import importlib
import threading

from taskservice.service import TaskService
from taskservice.settings import TaskSettings

# The one table of built-in names. Choosing "fastapi" never imports Celery: a module is imported only when chosen.
BUILTIN_BACKENDS: dict[str, str] = {
    "fastapi": "backends.inprocess.service:FastAPITaskService",
    "celery": "backends.celery.service:CeleryTaskService",
}

_current: TaskService | None = None
_lock = threading.Lock()


def load_backend_class(name: str) -> type[TaskService]:
    """The class ``TASK_BACKEND`` names: a built-in name, or ``package.module:Class``."""
    target = BUILTIN_BACKENDS.get(name, name)
    module_name, colon, class_name = target.partition(":")
    if not colon or not module_name or not class_name:
        raise ValueError(
            f"TASK_BACKEND must be one of {', '.join(BUILTIN_BACKENDS)}, or package.module:Class; got {name!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise ValueError(f"TASK_BACKEND={name}: no module {module_name!r} can be imported") from exc
        raise
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, TaskService)):
        raise TypeError(f"TASK_BACKEND={name}: {target} is not a TaskService subclass")
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
