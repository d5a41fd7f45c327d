"""Image upload -> thumbnails: ``POST /images``, ``GET /images/{id}``, ``GET /images/{id}/thumbnail``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Response, UploadFile
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, update

from app.api.errors import UNAVAILABLE, Responses, is_app_id, not_found, refusals
from app.db import get_database
from app.imaging import ACCEPTED_FORMATS, DEFAULT_THUMBNAIL_SIZE, THUMBNAIL_SIZES, ImageRejected, inspect_image
from app.models import Image, new_id
from app.settings import get_settings
from app.storage import data_dir, remove_tree, save_stream
from app.tasks import make_image_thumbnails
from app.uploads import UploadRoute, checked_size, clean_filename, media_type
from taskservice import TaskConflict, TaskService, TaskServiceDep

router = APIRouter(prefix="/images", tags=["images"], route_class=UploadRoute)

_EXAMPLE_ID = "3f2b8c1e9a4d4e6f8b7a6c5d4e3f2a1b"


class ImageAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": _EXAMPLE_ID, "filename": "cat.jpg", "thumbnail_ready": False, "task_id": "c0ffee..."}]
        }
    )

    id: str
    filename: str
    thumbnail_ready: bool
    task_id: str | None


class ImageOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "filename": "cat.jpg",
                    "thumbnail_ready": True,
                    "thumbnail_url": f"/images/{_EXAMPLE_ID}/thumbnail",
                }
            ]
        }
    )

    id: str
    filename: str
    thumbnail_ready: bool
    thumbnail_url: str | None

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        url = f"/images/{image.id}/thumbnail" if image.thumbnail_ready else None
        return cls(id=image.id, filename=image.filename, thumbnail_ready=image.thumbnail_ready, thumbnail_url=url)


_JPEG: Responses = {200: {"content": {"image/jpeg": {}}, "description": "The JPEG thumbnail"}}
_NOT_FOUND = (
    "No image with this id",
    "no image with id '3f2b8c1e9a4d4e6f8b7a6c5d4e3f2a1b'",
)


@router.post(
    "",
    status_code=202,
    form_limits={"max_files": 1, "max_fields": 8},
    summary="Upload an image; its thumbnails are made in the background",
    responses=refusals(
        {
            400: ("Not an image, a damaged one, or a decompression bomb", "the file is not an image (Pillow ...)"),
            413: ("Larger than APP_MAX_UPLOAD_BYTES", "the upload is larger than the 10485760-byte limit ..."),
            415: ("Not multipart/form-data, or the file is declared as a non-image type", "the file is 'text/csv'..."),
        }
    )
    | UNAVAILABLE,
)
def upload_image(
    file: Annotated[UploadFile, File(description="the image: JPEG, PNG, GIF, WebP, BMP or TIFF")],
    service: TaskServiceDep,
) -> ImageAccepted:
    declared = media_type(file.content_type)
    if not (declared.startswith("image/") or declared in ("", "application/octet-stream")):
        raise HTTPException(
            status_code=415,
            detail=f"the file is declared as {declared!r}, not an image; send {', '.join(ACCEPTED_FORMATS)}",
        )
    if checked_size(file) == 0:
        raise HTTPException(status_code=400, detail="the file is empty")
    try:
        info = inspect_image(file.file, get_settings().max_image_pixels)
    except ImageRejected as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None

    image_id, files, db = new_id(), data_dir(), get_database()
    filename = clean_filename(file.filename, f"image.{info.format.lower()}")
    try:
        size = save_stream(file.file, files.original(image_id))
        with db.session() as session:
            session.add(
                Image(
                    id=image_id,
                    filename=filename,
                    content_type=f"image/{info.format.lower()}",
                    size_bytes=size,
                    width=info.width,
                    height=info.height,
                )
            )
        task_id = _enqueue_thumbnails(service, image_id)
    except BaseException:  # nothing half-stored: no row, no file (a backend outage answers 503)
        _forget(image_id)
        raise
    return ImageAccepted(id=image_id, filename=filename, thumbnail_ready=False, task_id=task_id)


def _enqueue_thumbnails(service: TaskService, image_id: str) -> str | None:
    try:
        task_id: str | None = service.enqueue(
            make_image_thumbnails.options(unique_key=f"thumbnails:{image_id}"), image_id
        )
    except TaskConflict as exc:  # the periodic check saw the row first and queued the same work
        task_id = exc.active_task_id
    with get_database().session() as session:
        session.execute(update(Image).where(Image.id == image_id).values(task_id=task_id))
    return task_id


@router.get("/{image_id}", responses=refusals({404: _NOT_FOUND}), summary="An image and whether its thumbnails exist")
def read_image(image_id: str) -> ImageOut:
    return ImageOut.of(_image_or_404(image_id))


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    responses=_JPEG
    | refusals(
        {
            400: ("A size that is not offered", "size must be one of 150, 300, 600 (max side in px), got 64"),
            404: ("No such image, or its thumbnails are not ready yet", "the thumbnails of this image are not ready"),
        }
    ),
    summary="A JPEG thumbnail (max side 300 px, or 150 / 600 with ?size=)",
)
def read_thumbnail(
    image_id: str,
    size: Annotated[int, Query(description="max side in px: 150, 300 or 600")] = DEFAULT_THUMBNAIL_SIZE,
) -> Response:
    if size not in THUMBNAIL_SIZES:
        offered = ", ".join(map(str, THUMBNAIL_SIZES))
        raise HTTPException(status_code=400, detail=f"size must be one of {offered} (max side in px), got {size}")
    image = _image_or_404(image_id)
    not_ready = HTTPException(status_code=404, detail="the thumbnails of this image are not ready yet; try again soon")
    if not image.thumbnail_ready:
        raise not_ready
    try:
        content = data_dir().thumbnail(image_id, size).read_bytes()  # at most a few hundred kB
    except FileNotFoundError:  # lost on disk; the periodic integrity check will make it again
        raise not_ready from None
    return Response(content=content, media_type="image/jpeg")


def _forget(image_id: str) -> None:
    try:
        with get_database().session() as session:
            session.execute(delete(Image).where(Image.id == image_id))
    finally:
        remove_tree(data_dir().image_dir(image_id))


def _image_or_404(image_id: str) -> Image:
    if is_app_id(image_id):
        with get_database().session() as session:
            image = session.get(Image, image_id)
        if image is not None:
            return image
    raise not_found("image", image_id)
