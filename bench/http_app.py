"""The HTTP benchmark's apps, served by a real uvicorn process.

``ts_app`` enqueues a no-op through taskservice (the backend and store come from the environment;
``/ts/aenqueue-*`` await ``aenqueue``);
``raw_app`` does the same with the raw tools and has no taskservice middleware or lifespan
at all, so each side pays only for what it uses. Every endpoint answers the same small JSON.
"""

from __future__ import annotations

from fastapi import BackgroundTasks, FastAPI

from bench import raw_celery
from bench.tasks import async_noop, noop
from taskservice import TaskServiceDep, TaskServiceMiddleware, task_service_lifespan
from taskservice.models import ACTIVE_STATUSES

ts_app = FastAPI(lifespan=task_service_lifespan)
ts_app.add_middleware(TaskServiceMiddleware)


@ts_app.post("/ts/sync")
async def ts_sync(service: TaskServiceDep) -> dict[str, str | None]:
    return {"task_id": service.enqueue(noop, 1)}


@ts_app.post("/ts/async")
async def ts_async(service: TaskServiceDep) -> dict[str, str | None]:
    return {"task_id": service.enqueue(async_noop, 1)}


@ts_app.post("/ts/aenqueue-sync")
async def ts_aenqueue_sync(service: TaskServiceDep) -> dict[str, str | None]:
    """``aenqueue``: with the SQLite store, concurrent requests share a commit and the loop never waits on it."""
    return {"task_id": await service.aenqueue(noop, 1)}


@ts_app.post("/ts/aenqueue-async")
async def ts_aenqueue_async(service: TaskServiceDep) -> dict[str, str | None]:
    return {"task_id": await service.aenqueue(async_noop, 1)}


@ts_app.get("/ts/active")
async def ts_active(service: TaskServiceDep) -> dict[str, bool]:
    """Whether any task is unfinished: after a load, the in-process runner's backlog (cheap to ask often)."""
    counts = (await service.astats()).counts
    return {"active": any(counts[status] for status in ACTIVE_STATUSES)}


raw_app = FastAPI()


def sync_noop(i: int) -> None:
    return None


async def raw_async_noop(i: int) -> None:
    return None


@raw_app.post("/raw/bg-sync")
async def raw_background_sync(background_tasks: BackgroundTasks) -> dict[str, str | None]:
    background_tasks.add_task(sync_noop, 1)
    return {"task_id": None}


@raw_app.post("/raw/bg-async")
async def raw_background_async(background_tasks: BackgroundTasks) -> dict[str, str | None]:
    background_tasks.add_task(raw_async_noop, 1)
    return {"task_id": None}


@raw_app.post("/raw/celery")
async def raw_apply_async() -> dict[str, str | None]:
    return {"task_id": raw_celery.noop.apply_async((1,)).id}
