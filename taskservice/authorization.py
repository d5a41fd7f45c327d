"""Ask whether a request passes a set of FastAPI dependencies, without failing the request when it does not.

The router shows a task's traceback and arguments only to callers that pass the app's admin
dependencies, and the dashboard checks a login token with those same dependencies. Both need the
answer "would these dependencies let this request through?" while the request itself goes on.
``DependencyCheck`` answers it by running the dependencies exactly as FastAPI would for a route
of their own (sub-dependencies, ``app.dependency_overrides`` and exception handlers included), on
a copy of the request's scope, and reading the status code they produce.
"""

from __future__ import annotations

import contextvars
from collections.abc import MutableMapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

_current_app: contextvars.ContextVar[Any] = contextvars.ContextVar("taskservice_checked_app", default=None)


class _AppOverrides:
    """``dependency_overrides`` of the app whose request is being checked (tests override admin dependencies)."""

    @property
    def dependency_overrides(self) -> dict[Any, Any]:
        app = _current_app.get()
        overrides = getattr(app, "dependency_overrides", None)
        return overrides if isinstance(overrides, dict) else {}


def _allowed() -> None:
    """The probe's endpoint: reached only when every dependency let the request through."""


class DependencyCheck:
    """``await check(request)`` is True when ``dependencies`` let ``request`` through, False when they refuse it.

    ``None`` means closed: nothing passes. An empty sequence means open: everything passes.
    A dependency that raises something other than an ``HTTPException`` still fails the request,
    as it would on any route: a broken check is a bug to see, not a silent "no".
    """

    def __init__(self, dependencies: Sequence[Any] | None) -> None:
        self.closed = dependencies is None
        self.open = dependencies is not None and len(dependencies) == 0
        self._route: APIRoute | None = None
        if not self.closed and not self.open:
            self._route = APIRoute(
                "/",
                _allowed,
                dependencies=list(dependencies or ()),
                dependency_overrides_provider=_AppOverrides(),
                include_in_schema=False,
            )

    async def __call__(self, request: Request, headers: Sequence[tuple[bytes, bytes]] | None = None) -> bool:
        """Run the dependencies on ``request`` (with ``headers`` instead of its own, if given)."""
        return 200 <= await self.status(request, headers) < 300

    async def status(self, request: Request, headers: Sequence[tuple[bytes, bytes]] | None = None) -> int:
        """The status the dependencies answer ``request`` with: 200 when they let it through, else theirs."""
        if self.closed:
            return 403
        if self._route is None:
            return 200
        scope = dict(request.scope)
        scope["method"] = "GET"
        if headers is not None:
            scope["headers"] = list(headers)
        for key in ("fastapi_inner_astack", "fastapi_function_astack"):
            scope.pop(key, None)  # the probe opens its own; the request's stay the request's
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))

        token = _current_app.set(request.scope.get("app"))
        try:
            await self._route.handle(scope, receive, send)
        except StarletteHTTPException as exc:  # Starlette < 0.28 leaves the route's HTTPException to the app
            return exc.status_code
        finally:
            _current_app.reset(token)
        return status[0] if status else 500


def bearer_headers(request: Request, token: str) -> list[tuple[bytes, bytes]]:
    """``request``'s headers with its ``Authorization`` replaced by ``Bearer <token>`` (and no cookies)."""
    dropped = (b"authorization", b"cookie")
    kept = [(name, value) for name, value in request.scope.get("headers", []) if name not in dropped]
    return [*kept, (b"authorization", f"Bearer {token}".encode("latin-1", "replace"))]
