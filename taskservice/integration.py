"""FastAPI integration: the ``TaskServiceDep`` dependency and the lifespan hook."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends

from taskservice.factory import get_task_service
from taskservice.request_scope import in_request_scope
from taskservice.service import TaskService

log = logging.getLogger("taskservice")
_warned_no_middleware = False


async def task_service_dependency() -> TaskService:
    """The process-wide service; override it in tests with ``app.dependency_overrides``.

    ``async`` on purpose: it does no I/O, and a plain ``def`` would cost every request a
    round trip through the server's thread pool.
    """
    global _warned_no_middleware
    if not in_request_scope() and not _warned_no_middleware:
        _warned_no_middleware = True
        log.warning(
            "taskservice: TaskServiceMiddleware is not installed, so in-process tasks may start "
            "before the response is sent; add app.add_middleware(TaskServiceMiddleware)"
        )
    return get_task_service()


TaskServiceDep = Annotated[TaskService, Depends(task_service_dependency)]


@asynccontextmanager
async def task_service_lifespan(app: Any = None) -> AsyncIterator[None]:
    """Start the service's runner and scheduler with the app, stop them (with a grace period) after."""
    service = get_task_service()
    await service.start()
    try:
        yield
    finally:
        await service.stop()
