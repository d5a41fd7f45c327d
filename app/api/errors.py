"""How refusals look: ``{"detail": "..."}``, declared in the OpenAPI document with an example."""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel

Responses = dict[int | str, dict[str, Any]]

_ID = re.compile(r"[0-9a-f]{32}")


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
            "cannot reach Redis at ...: is it running?",
        )
    }
)


def not_found(kind: str, item_id: str) -> HTTPException:
    shown = item_id if len(item_id) <= 64 else item_id[:64] + "..."
    return HTTPException(status_code=404, detail=f"no {kind} with id {shown!r}")


def is_app_id(value: str) -> bool:
    """Ids the app made (uuid4 hex); anything else is unknown without asking the database."""
    return _ID.fullmatch(value) is not None
