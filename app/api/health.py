"""Liveness (``GET /health``), readiness (``GET /health/ready``) and the links at ``GET /``."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from taskservice import BackendUnavailable, TaskService, TaskServiceDep

READINESS_TIMEOUT_S = 5.0

router = APIRouter()


class Health(BaseModel):
    status: Literal["ok"]
    backend: str


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    backend: str
    reasons: list[str]


class Links(BaseModel):
    name: str
    backend: str
    links: dict[str, str]


@router.get("/", tags=["health"], summary="Where to go from here")
def root(service: TaskServiceDep) -> Links:
    return Links(
        name="taskservice reference app",
        backend=service.backend_name,
        links={
            "docs": "/docs",
            "openapi": "/openapi.json",
            "dashboard": "/dashboard",
            "tasks": "/tasks",
            "task": "/tasks/{task_id}",
            "task_events": "/tasks/{task_id}/events",
            "health": "/health",
            "ready": "/health/ready",
            "metrics": "/metrics",
            "images": "/images",
            "projects": "/projects",
            "notifications": "/notifications",
        },
    )


@router.get("/health", tags=["health"], summary="Liveness, and which backend runs the tasks")
def health(service: TaskServiceDep) -> Health:
    return Health(status="ok", backend=service.backend_name)


@router.get(
    "/health/ready",
    tags=["health"],
    summary="Readiness: can the backend take and run tasks now?",
    responses={503: {"model": Readiness, "description": "Not ready, with the reasons"}},
)
async def ready(service: TaskServiceDep) -> JSONResponse:
    reasons = await readiness_problems(service)
    body = Readiness(status="not ready" if reasons else "ready", backend=service.backend_name, reasons=reasons)
    return JSONResponse(status_code=503 if reasons else 200, content=body.model_dump())


async def readiness_problems(service: TaskService) -> list[str]:
    """What keeps the backend from running tasks: the service's own ``readiness()`` (Celery: Redis reachable,
    a worker consuming), else whether its records can be read at all; each within ``READINESS_TIMEOUT_S``."""
    check = getattr(service, "readiness", None)
    try:
        if callable(check):
            problems = await asyncio.wait_for(asyncio.to_thread(check), READINESS_TIMEOUT_S)
            return [str(problem) for problem in problems]
        await asyncio.wait_for(service.alist_tasks(limit=1), READINESS_TIMEOUT_S)
    except TimeoutError:
        return [f"the task backend did not answer within {READINESS_TIMEOUT_S:g} s"]
    except BackendUnavailable as exc:
        return [f"the task backend is unavailable: {exc}"]
    return []
