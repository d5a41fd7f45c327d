"""The ``/tasks`` router any app can mount: read, list, cancel and follow tasks.

Reading one task by its unguessable id is open unless the app passes ``read_dependencies``, but
what an open caller sees is trimmed: ``traceback``, ``args`` and ``kwargs`` (server paths, user
data) come only to callers that also pass the ``admin_dependencies``. Listing and cancelling
take the ``admin_dependencies`` and are closed (403) when none are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.responses import StreamingResponse

from taskservice.authorization import DependencyCheck
from taskservice.errors import TaskNotFound
from taskservice.events import StreamLimits, TaskStreams
from taskservice.integration import TaskServiceDep
from taskservice.models import TaskResult, TaskStatus
from taskservice.service import TaskService

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No task with this id (never enqueued, or its record expired)"}
}
_STREAM_REFUSED: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many open event streams follow this task; retry after Retry-After seconds"},
    503: {"description": "Too many open event streams on this server; retry after Retry-After seconds"},
}
# An opaque cursor from ``TaskResult.cursor``: microseconds since the epoch, "_", the task id.
CURSOR_PATTERN = r"^\d{1,17}_[0-9A-Za-z_-]{1,100}$"
ADMIN_ONLY_FIELDS = frozenset({"traceback", "args", "kwargs"})


def _refuse_unguarded() -> None:
    raise HTTPException(
        status_code=403,
        detail="listing and cancelling tasks is closed: mount the router with "
        "create_tasks_router(admin_dependencies=[...]) to authorize it",
    )


def redact(result: TaskResult) -> TaskResult:
    """``result`` without what only admins may see (traceback, arguments)."""
    if result.traceback is None and result.args is None and result.kwargs is None:
        return result
    return result.model_copy(update={"traceback": None, "args": None, "kwargs": None})


def as_utc(moment: datetime | None) -> datetime | None:
    """A query's time as aware UTC; a time without a zone is read as UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


def create_tasks_router(
    *,
    admin_dependencies: Sequence[Any] | None = None,
    read_dependencies: Sequence[Any] = (),
    prefix: str = "/tasks",
    events_poll_interval_s: float = 0.25,
    stream_limits: StreamLimits | None = None,
) -> APIRouter:
    """A router for ``prefix``: ``GET /{id}``, ``GET /{id}/events`` (guarded by ``read_dependencies``)
    and ``GET /``, ``DELETE /{id}`` (guarded by ``admin_dependencies``; closed with 403 when None).

    ``stream_limits`` bound the event streams (see ``StreamLimits``); ``events_poll_interval_s``
    is the first look after a change when no ``stream_limits`` are given.
    """
    admin = list(admin_dependencies) if admin_dependencies is not None else [Depends(_refuse_unguarded)]
    is_admin = DependencyCheck(admin_dependencies)
    limits = stream_limits or StreamLimits(
        poll_interval_s=events_poll_interval_s,
        max_poll_interval_s=max(events_poll_interval_s, StreamLimits.max_poll_interval_s),
    )
    streams = TaskStreams(limits)
    admin_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "Missing or wrong credentials"},
        403: {"description": "Not allowed"},
    }
    router = APIRouter(prefix=prefix, tags=["tasks"], dependencies=list(read_dependencies))

    @router.get(
        "/{task_id}",
        response_model=TaskResult,
        responses=_NOT_FOUND,
        summary="Status of one task (traceback and arguments for admins only)",
    )
    async def read_task(task_id: str, service: TaskServiceDep, request: Request) -> TaskResult:
        result = await _astatus_or_404(service, task_id)
        return result if await is_admin(request) else redact(result)

    @router.get(
        "",
        response_model=list[TaskResult],
        dependencies=admin,
        responses={
            **admin_responses,
            200: {
                "description": 'Tasks newest first. A full page carries `Link: <...>; rel="next"` and '
                "`X-Next-Cursor` for the next one.",
            },
        },
        summary="Recent tasks, newest first, filtered, a page at a time",
    )
    async def list_tasks(
        service: TaskServiceDep,
        request: Request,
        response: Response,
        status: Annotated[TaskStatus | None, Query(description="only tasks in this status")] = None,
        name: Annotated[str | None, Query(max_length=200, description="only tasks of this @task name")] = None,
        enqueued_after: Annotated[
            datetime | None, Query(description="only tasks enqueued at or after this time (UTC if no zone)")
        ] = None,
        enqueued_before: Annotated[
            datetime | None, Query(description="only tasks enqueued before this time (UTC if no zone)")
        ] = None,
        cursor: Annotated[
            str | None, Query(pattern=CURSOR_PATTERN, description="X-Next-Cursor of the previous page")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[TaskResult]:
        page = await service.alist_tasks(
            status=status,
            limit=limit,
            name=name,
            enqueued_after=as_utc(enqueued_after),
            enqueued_before=as_utc(enqueued_before),
            cursor=cursor,
        )
        if len(page) == limit:
            next_cursor = page[-1].cursor
            query = [(key, value) for key, value in request.query_params.multi_items() if key != "cursor"]
            next_url = request.url.replace(query=urlencode([*query, ("cursor", next_cursor)]))
            response.headers["X-Next-Cursor"] = next_cursor
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return page

    @router.delete(
        "/{task_id}",
        dependencies=admin,
        responses={**_NOT_FOUND, **admin_responses},
        summary="Cancel a task that has not started",
    )
    async def cancel_task(task_id: str, service: TaskServiceDep) -> dict[str, Any]:
        await _astatus_or_404(service, task_id)
        try:
            cancelled = await service.acancel(task_id)
            status = (await service.aget_status(task_id)).status
        except TaskNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return {"id": task_id, "cancelled": cancelled, "status": status}

    @router.get(
        "/{task_id}/events",
        response_class=StreamingResponse,
        responses={
            **_NOT_FOUND,
            **_STREAM_REFUSED,
            200: {
                "description": "text/event-stream of TaskResult JSON until the task ends",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        },
        summary="Server-sent events of status and progress until the task ends",
    )
    async def task_events(task_id: str, service: TaskServiceDep, request: Request) -> StreamingResponse:
        first = await _astatus_or_404(service, task_id)
        return streams.response(service, first, redact=None if await is_admin(request) else redact)

    return router


async def _astatus_or_404(service: TaskService, task_id: str) -> TaskResult:
    try:
        return await service.aget_status(task_id)
    except TaskNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
