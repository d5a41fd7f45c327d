"""How refusals look: ``{"detail": "..."}``, declared in the OpenAPI document with an example."""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

Responses = dict[int | str, dict[str, Any]]

_ID = re.compile(r"[0-9a-f]{32}")
ECHOED_INPUT_CHARS = 200


class ErrorOut(BaseModel):
    detail: str


def refusals(table: dict[int, tuple[str, str]]) -> Responses:
    """OpenAPI ``responses=`` for ``{status: (description, example detail)}``."""
    return {
        status: {
            "model": ErrorOut,
            "description": description,
            "content": {"application/json": {"example": {"detail": example}}},
        }
        for status, (description, example) in table.items()
    }


UNAVAILABLE = refusals(
    {
        503: (
            "The task backend cannot be reached (an outage, not bad input)",
            "the task backend is unavailable: cannot reach Redis at redis://...: is it running?",
        )
    }
)


def not_found(kind: str, item_id: str) -> HTTPException:
    shown = item_id if len(item_id) <= 64 else item_id[:64] + "..."
    return HTTPException(status_code=404, detail=f"no {kind} with id {shown!r}")


def is_app_id(value: str) -> bool:
    """Ids the app made (uuid4 hex); anything else is unknown without asking the database."""
    return _ID.fullmatch(value) is not None


async def request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, made safe to render: its default handler echoes the input back, and crashes
    (a 500) when that input is bytes that are not UTF-8 or text with lone surrogates."""
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda raw: raw.decode("utf-8", "replace")})
    return JSONResponse(status_code=422, content={"detail": _printable(errors)})


def _printable(value: Any) -> Any:
    """``value`` with every string encodable as UTF-8 and echoed input cut short."""
    if isinstance(value, str):
        text = value.encode("utf-8", "replace").decode("utf-8")
        return text if len(text) <= ECHOED_INPUT_CHARS else text[:ECHOED_INPUT_CHARS] + "..."
    if isinstance(value, list):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    return value
