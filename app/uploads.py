"""Routes that take a file: refuse the wrong content type (415) and a body that is too large (413).

The size cap is enforced on the bytes as they arrive, before the multipart parser has seen
them all, so a client cannot make the server read (or spool to disk) more than the cap.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO

from fastapi import HTTPException, Request, Response, UploadFile, params
from fastapi.routing import APIRoute
from starlette.types import Message

from app.settings import get_settings

# A multipart body is the file plus a boundary and a few part headers; this leaves room for them.
MULTIPART_OVERHEAD_BYTES = 16 * 1024

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=413,
        detail=f"the upload is larger than the {limit}-byte limit (APP_MAX_UPLOAD_BYTES); send a smaller file",
    )


class UploadRoute(APIRoute):
    """An ``APIRoute`` that, for endpoints taking form data, checks the content type and caps the body."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None or not isinstance(self.body_field.field_info, params.Form):
            return handler

        async def capped(request: Request) -> Response:
            _require_multipart(request.headers.get("content-type"))
            limit = get_settings().max_upload_bytes
            cap = limit + MULTIPART_OVERHEAD_BYTES
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise too_large(limit)
            upstream = request.receive
            received = 0

            async def receive() -> Message:
                nonlocal received
                message = await upstream()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > cap:
                        raise too_large(limit)
                return message

            return await handler(Request(request.scope, receive))

        return capped


def media_type(content_type: str | None) -> str:
    """``type/subtype`` of a Content-Type value, lower-case, without parameters ('' when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _require_multipart(content_type: str | None) -> None:
    if media_type(content_type) != "multipart/form-data":
        raise HTTPException(
            status_code=415,
            detail=f"send the file as multipart/form-data in a field named 'file', not {content_type or 'no type'!r} "
            "(curl -F file=@path)",
        )


def checked_size(file: UploadFile) -> int:
    """The exact size of the uploaded file; 413 over ``APP_MAX_UPLOAD_BYTES`` (the stream cap allows overhead)."""
    size = file.size if file.size is not None else _measure(file.file)
    limit = get_settings().max_upload_bytes
    if size > limit:
        raise too_large(limit)
    return size


def _measure(stream: BinaryIO) -> int:
    size = stream.seek(0, 2)
    stream.seek(0)
    return size


def clean_filename(name: str | None, fallback: str) -> str:
    """The client's file name as a label only (never a path): last component, printable, at most 255 chars."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if ch.isprintable()).strip()
    return printable[:255] or fallback
