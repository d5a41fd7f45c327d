"""The ``/tasks`` router any app can mount: read, list, cancel and follow tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from taskservice.errors import TaskNotFound
from taskservice.integration import TaskServiceDep
from taskservice.models import TaskResult, TaskStatus
from taskservice.service import TaskService

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No task with this id (never enqueued, or its record expired)"}
}


def _refuse_unguarded() -> None:
    raise HTTPException(
        status_code=403,
        detail="listing and cancelling tasks is closed: mount the router with "
        "create_tasks_router(admin_dependencies=[...]) to authorize it",
    )


def create_tasks_router(
    *,
    admin_dependencies: Sequence[Any] | None = None,
    read_dependencies: Sequence[Any] = (),
    prefix: str = "/tasks",
    events_poll_interval_s: float = 0.25,
) -> APIRouter:
    """A router for ``prefix``: ``GET /{id}``, ``GET /{id}/events`` (guarded by ``read_dependencies``)
    and ``GET /``, ``DELETE /{id}`` (guarded by ``admin_dependencies``; closed with 403 when None).
    """
    admin = list(admin_dependencies) if admin_dependencies is not None else [Depends(_refuse_unguarded)]
    admin_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "Missing or wrong credentials"},
        403: {"description": "Not allowed"},
    }
    router = APIRouter(prefix=prefix, tags=["tasks"], dependencies=list(read_dependencies))

    @router.get("/{task_id}", response_model=TaskResult, responses=_NOT_FOUND, summary="Status of one task")
    def read_task(task_id: str, service: TaskServiceDep) -> TaskResult:
        return _status_or_404(service, task_id)

    @router.get(
        "",
        response_model=list[TaskResult],
        dependencies=admin,
        responses=admin_responses,
        summary="Recent tasks, newest first",
    )
    def list_tasks(
        service: TaskServiceDep,
        status: Annotated[TaskStatus | None, Query(description="only tasks in this status")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[TaskResult]:
        return service.list_tasks(status=status, limit=limit)

    @router.delete(
        "/{task_id}",
        dependencies=admin,
        responses={**_NOT_FOUND, **admin_responses},
        summary="Cancel a task that has not started",
    )
    def cancel_task(task_id: str, service: TaskServiceDep) -> dict[str, Any]:
        _status_or_404(service, task_id)
        cancelled = service.cancel(task_id)
        return {"id": task_id, "cancelled": cancelled, "status": service.get_status(task_id).status}

    # FastAPI streams a generator endpoint declared with EventSourceResponse (keep-alive pings
    # included); the 404 comes from the dependency, before the stream and its 200 start.
    @router.get(
        "/{task_id}/events",
        response_class=EventSourceResponse,
        responses={**_NOT_FOUND, 200: {"description": "text/event-stream of TaskResult JSON until the task ends"}},
        summary="Server-sent events of status and progress until the task ends",
    )
    async def task_events(
        first: Annotated[TaskResult, Depends(_existing_task)], service: TaskServiceDep
    ) -> AsyncIterator[ServerSentEvent]:
        async for event in _follow(service, first, events_poll_interval_s):
            yield event

    return router


def _existing_task(task_id: str, service: TaskServiceDep) -> TaskResult:
    """The task's snapshot, or 404 before any streaming starts (a sync dependency: run in a thread)."""
    return _status_or_404(service, task_id)


def _status_or_404(service: TaskService, task_id: str) -> TaskResult:
    try:
        return service.get_status(task_id)
    except TaskNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


async def _follow(service: TaskService, first: TaskResult, poll_interval_s: float) -> AsyncIterator[ServerSentEvent]:
    """One ``status`` event per change of status or progress; the stream ends with the final status."""
    current: TaskResult | None = first
    last_key: tuple[Any, ...] | None = None
    while current is not None:
        key = (current.status, current.progress, current.progress_message, current.attempts)
        if key != last_key:
            last_key = key
            event_id = f"{current.status.value}-{current.attempts}-{current.progress}"
            yield ServerSentEvent(event="status", id=event_id, data=current)
        if current.status.is_final:
            return
        await anyio.sleep(poll_interval_s)
        try:
            current = await anyio.to_thread.run_sync(service.get_status, current.id)
        except TaskNotFound:
            current = None
