"""The dashboard's own assets (CSS, JavaScript, icon), served from the package: nothing comes from a CDN."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from taskservice.dashboard.access import SECURITY_HEADERS

ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@functools.cache
def asset(name: str) -> tuple[bytes, str]:
    """The file's bytes and its ETag."""
    data = resources.files("taskservice.dashboard").joinpath("static", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def add_static_route(router: APIRouter) -> None:
    @router.get("/static/{name}")
    async def static_asset(name: str, request: Request) -> Response:
        if name not in ASSETS:
            return Response("no such asset", status_code=404, media_type="text/plain")
        data, etag = asset(name)
        headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "public, max-age=3600"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=ASSETS[name], headers=headers)
