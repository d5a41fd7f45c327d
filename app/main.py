"""The reference service: FastAPI endpoints that talk to background work only through TaskService.

Run it with ``uvicorn app.main:app``; ``TASK_BACKEND`` picks where its tasks run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api import images, notifications, projects
from app.api.auth import require_admin_token
from app.api.errors import request_validation_error
from app.db import get_database
from app.settings import get_settings
from taskservice import (
    BackendUnavailable,
    TaskServiceDep,
    TaskServiceMiddleware,
    create_tasks_router,
    task_service_lifespan,
)

log = logging.getLogger("app")


class Health(BaseModel):
    status: Literal["ok"]
    backend: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the data directory and the tables, then run the task service for the app's lifetime."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = get_database()
    await anyio.to_thread.run_sync(database.create_tables)
    if settings.admin_token is None:
        log.info("APP_ADMIN_TOKEN is not set: GET /tasks and DELETE /tasks/{id} answer 403")
    try:
        async with task_service_lifespan(app):
            yield
    finally:
        database.dispose()


async def _backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # An outage of Redis or the task store is not the client's fault: 503, and say what is wrong.
    log.error("task backend unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=503, content={"detail": f"the task backend is unavailable: {exc}"})


def create_app() -> FastAPI:
    app = FastAPI(
        title="taskservice reference app",
        version="1.0.0",
        description="Images to thumbnails, a CSV pipeline, notifications and a periodic integrity check, "
        "all run through one TaskService (TASK_BACKEND=fastapi or celery).",
        lifespan=lifespan,
    )
    app.add_middleware(TaskServiceMiddleware)
    app.add_exception_handler(BackendUnavailable, _backend_unavailable)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.include_router(images.router)
    app.include_router(projects.router)
    app.include_router(notifications.router)
    app.include_router(create_tasks_router(admin_dependencies=[Depends(require_admin_token)]))

    @app.get("/health", tags=["health"], summary="Liveness, and which backend runs the tasks")
    def health(service: TaskServiceDep) -> Health:
        return Health(status="ok", backend=service.backend_name)

    return app


app = create_app()
