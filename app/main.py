"""The reference service: FastAPI endpoints that talk to background work only through TaskService.

Run it with ``uvicorn app.main:app``; ``TASK_BACKEND`` picks where its tasks run. Besides the
use cases it serves: ``/`` (links), ``/health`` and ``/health/ready``, ``/tasks`` (the task
router), ``/dashboard`` (the built-in dashboard), ``/metrics`` (Prometheus text, when the
``metrics`` extra is installed) and ``/docs`` from locally installed Swagger UI files.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from app import telemetry
from app.api import health, images, notifications, projects
from app.api.auth import dashboard_session_secret, limit_event_streams, require_admin_token
from app.api.errors import request_validation_error
from app.db import get_database
from app.settings import get_settings
from taskservice import (
    BackendUnavailable,
    TaskServiceMiddleware,
    create_dashboard,
    create_tasks_router,
    task_service_lifespan,
)

log = logging.getLogger("app")
DOCS_ASSETS = "/docs-assets"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the data directory and the tables, then run the task service for the app's lifetime."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = get_database()
    await anyio.to_thread.run_sync(database.create_tables)
    if settings.admin_token is None:
        log.info("APP_ADMIN_TOKEN is not set: GET /tasks, DELETE /tasks/{id} and /dashboard answer 403")
    try:
        async with task_service_lifespan(app):
            yield
    finally:
        database.dispose()


async def _backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # An outage of Redis or the task store is not the client's fault: 503, and say what is wrong.
    log.error("task backend unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=503, content={"detail": f"the task backend is unavailable: {exc}"})


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` from the Swagger UI and ReDoc files of an installed package, not a CDN."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _add_metrics(app: FastAPI) -> None:
    """``/metrics`` when prometheus_client is installed (the ``metrics`` extra)."""
    telemetry.install()
    if importlib.util.find_spec("prometheus_client") is None:
        log.info("prometheus_client is not installed: no /metrics (pip install 'taskservice[metrics]')")
        return
    from taskservice.metrics import create_metrics_router

    app.include_router(create_metrics_router())


def create_app() -> FastAPI:
    app = FastAPI(
        title="taskservice reference app",
        version="1.0.0",
        description="Images to thumbnails, a CSV pipeline, notifications and a periodic integrity check, "
        "all run through one TaskService (TASK_BACKEND=fastapi or celery).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    admin = [Depends(require_admin_token)]
    app.add_middleware(TaskServiceMiddleware)
    app.add_exception_handler(BackendUnavailable, _backend_unavailable)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.include_router(health.router)
    app.include_router(images.router)
    app.include_router(projects.router)
    app.include_router(notifications.router)
    app.include_router(create_tasks_router(admin_dependencies=admin, read_dependencies=[Depends(limit_event_streams)]))
    app.include_router(create_dashboard(admin_dependencies=admin, session_secret=dashboard_session_secret))
    _add_metrics(app)
    _add_offline_docs(app)
    return app


app = create_app()
