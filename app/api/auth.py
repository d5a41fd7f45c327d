"""The admin token that guards listing and cancelling tasks (``APP_ADMIN_TOKEN``)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.settings import get_settings

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <APP_ADMIN_TOKEN>")


def require_admin_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """403 while ``APP_ADMIN_TOKEN`` is unset (closed); 401 unless the request carries that token."""
    token = get_settings().admin_token
    if token is None:
        raise HTTPException(status_code=403, detail="admin endpoints are closed: set APP_ADMIN_TOKEN to open them")
    given = credentials.credentials if credentials is not None else ""
    if not given or not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            status_code=401,
            detail="send the admin token: Authorization: Bearer <APP_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
