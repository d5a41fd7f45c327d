"""The project pipeline: ``POST /projects``, ``POST /projects/{id}/process``, ``GET /projects/{id}``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

import anyio
from fastapi import APIRouter, File, HTTPException, UploadFile
from pydantic import BaseModel, ConfigDict

from app import pipeline
from app.api.errors import UNAVAILABLE, is_app_id, not_found, refusals
from app.db import get_database
from app.lost_tasks import lost_task
from app.models import Project, new_id
from app.project_runs import ProjectRun, new_run_token, record_requested
from app.storage import data_dir, remove_tree, save_stream
from app.tasks import process_project
from app.uploads import UploadRoute, checked_size, clean_filename, media_type
from taskservice import TaskConflict, TaskService, TaskServiceDep

router = APIRouter(prefix="/projects", tags=["projects"], route_class=UploadRoute)

ProjectStatus = Literal["idle", "processing", "completed", "error"]
# What browsers and curl declare for a .csv file (curl and some browsers say octet-stream).
CSV_MEDIA_TYPES = ("text/csv", "application/csv", "text/plain", "application/vnd.ms-excel", "application/octet-stream")
_EXAMPLE_ID = "8d7c6b5a4f3e4d2c9b1a0f9e8d7c6b5a"
_NOT_FOUND = ("No project with this id", f"no project with id '{_EXAMPLE_ID}'")


class ProjectCreated(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": _EXAMPLE_ID, "status": "idle"}]})

    id: str
    status: ProjectStatus


class ProcessAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"project_id": _EXAMPLE_ID, "task_id": "5e1f..."}]})

    project_id: str
    task_id: str


class ProjectOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "status": "error",
                    "progress": 60.0,
                    "error_message": "line 7, column 4 (units): 'abc' is not a whole number from 0 to 1000000000",
                    "result": None,
                    "task_id": "5e1f...",
                }
            ]
        }
    )

    id: str
    status: ProjectStatus
    progress: float
    error_message: str | None
    result: dict[str, Any] | None
    task_id: str | None


@router.post(
    "",
    status_code=201,
    form_limits={"max_files": 1, "max_fields": 8},
    summary="Upload a CSV as a new project (status idle)",
    responses=refusals(
        {
            400: ("Empty, binary, or without the required header", "line 1: the header lacks column(s) units; ..."),
            413: ("Larger than APP_MAX_UPLOAD_BYTES", "the upload is larger than the 10485760-byte limit ..."),
            415: ("Not multipart/form-data, or the file is declared as a non-CSV type", "the file is 'image/png'..."),
        }
    ),
)
def create_project(
    file: Annotated[UploadFile, File(description="a CSV with columns date,region,product,units,unit_price")],
) -> ProjectCreated:
    declared = media_type(file.content_type)
    if declared and declared not in CSV_MEDIA_TYPES:
        raise HTTPException(status_code=415, detail=f"the file is declared as {declared!r}; send a CSV (text/csv)")
    size = checked_size(file)
    try:
        pipeline.check_upload(file.file)
    except pipeline.PipelineError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    project_id, files = new_id(), data_dir()
    try:
        save_stream(file.file, files.project_input(project_id))
        with get_database().session() as session:
            session.add(Project(id=project_id, filename=clean_filename(file.filename, "data.csv"), size_bytes=size))
    except BaseException:  # no row without its file, no file without its row
        remove_tree(files.project_dir(project_id))
        raise
    return ProjectCreated(id=project_id, status="idle")


@router.post(
    "/{project_id}/process",
    status_code=202,
    summary="Start the pipeline (parse, validate, aggregate, report) in the background",
    responses=refusals(
        {
            404: _NOT_FOUND,
            409: ("This project is already processing", "project ... is already processing (task ...); wait for it"),
        }
    )
    | UNAVAILABLE,
)
async def start_processing(project_id: str, service: TaskServiceDep) -> ProcessAccepted:
    # async, with the database off the loop and the enqueue through aenqueue: on Celery a slow Redis
    # then holds up this request only, never the other requests of the process
    await anyio.to_thread.run_sync(_project_or_404, project_id)
    token = new_run_token()
    try:
        unique = process_project.options(unique_key=f"project:{project_id}")
        task_id = await service.aenqueue(unique, project_id, token)
    except TaskConflict as exc:
        running = f" (task {exc.active_task_id})" if exc.active_task_id else ""
        raise HTTPException(
            status_code=409,
            detail=f"project {project_id} is already processing{running}; wait for it to finish",
        ) from None
    await anyio.to_thread.run_sync(record_requested, get_database(), project_id, token, task_id)
    return ProcessAccepted(project_id=project_id, task_id=task_id)


@router.get(
    "/{project_id}",
    summary="A project's status, progress, result or error",
    responses=refusals({404: _NOT_FOUND}),
)
def read_project(project_id: str, service: TaskServiceDep) -> ProjectOut:
    project = _project_or_404(project_id)
    lost = project.status == "processing" and project.task_id and project.run_token is not None
    if lost and _record_lost_run(service, project):
        project = _project_or_404(project_id)
    return ProjectOut(
        id=project.id,
        status=cast(ProjectStatus, project.status),
        progress=project.progress,
        error_message=project.error_message,
        result=project.result,
        task_id=project.task_id,
    )


def _record_lost_run(service: TaskService, project: Project) -> bool:
    """A run whose task ended without reporting (failed, cancelled, interrupted, vanished) becomes ``error``."""
    assert project.task_id is not None and project.run_token is not None
    lost = lost_task(service, project.task_id)
    if lost is None:
        return False
    if lost.ending == "vanished":
        message = f"the pipeline task is gone: {lost.reason}; process the project again"
    else:
        message = f"the pipeline task ended {lost.ending}: {lost.reason} (details: GET /tasks/{project.task_id})"
    return ProjectRun(get_database(), project.id, project.run_token).fail(message)


def _project_or_404(project_id: str) -> Project:
    if is_app_id(project_id):
        with get_database().session() as session:
            project = session.get(Project, project_id)
        if project is not None:
            return project
    raise not_found("project", project_id)
