"""Who may do what: the admin token (``APP_ADMIN_TOKEN``) that guards listing, cancelling and the
dashboard, and the limit on how fast one client may open event streams.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.settings import get_settings

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <APP_ADMIN_TOKEN>")

# Event streams are the expensive read (each one is held open and followed): one client may open
# EVENT_STREAM_BURST of them at once, then EVENT_STREAMS_PER_S more each second.
EVENT_STREAM_BURST = 60
EVENT_STREAMS_PER_S = 2.0
_TRACKED_CLIENTS = 10_000


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


def dashboard_session_secret() -> str | None:
    """The key the dashboard signs its session cookies with: derived from the admin token, so every server
    process agrees on it and changing the token logs every browser out."""
    token = get_settings().admin_token
    return None if token is None else token.get_secret_value()


class _StreamBuckets:
    """A token bucket per client address (the oldest forgotten past ``_TRACKED_CLIENTS``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at monotonic s)

    def take(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(EVENT_STREAM_BURST), now))
            tokens = min(float(EVENT_STREAM_BURST), tokens + (now - at) * EVENT_STREAMS_PER_S)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > _TRACKED_CLIENTS:
                self._buckets.pop(next(iter(self._buckets)))
        return allowed


_stream_buckets = _StreamBuckets()


def limit_event_streams(request: Request) -> None:
    """The reference app's read dependency: 429 for a client opening event streams faster than the limit.

    Reading a task stays open (its id is the capability); this only bounds how many streams one
    address can hold open, on top of the router's own caps in total and per task.
    """
    if not request.url.path.endswith("/events"):
        return
    client = request.client.host if request.client is not None else "unknown"
    if not _stream_buckets.take(client):
        raise HTTPException(
            status_code=429,
            detail="too many event streams opened from this address: wait a few seconds",
            headers={"Retry-After": "5"},
        )
