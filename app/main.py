"""The reference service: FastAPI endpoints that talk to background work only through TaskService."""

from __future__ import annotations

from fastapi import FastAPI

from taskservice import TaskServiceMiddleware, create_tasks_router, get_task_service, task_service_lifespan

app = FastAPI(title="taskservice reference app", lifespan=task_service_lifespan)
app.add_middleware(TaskServiceMiddleware)
app.include_router(create_tasks_router())


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "backend": get_task_service().backend_name}
