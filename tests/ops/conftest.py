"""Fixtures of the operations tests: the reference app on a real uvicorn per backend, and a real browser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.app.live import LiveApp, live_app
from tests.ops.browser import chromium


@pytest.fixture(scope="session", params=["fastapi", "celery"])
def ops_live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """The reference app in a real uvicorn process (Celery: private Redis, a real worker and beat)."""
    backend = str(request.param)
    with live_app(backend, tmp_path_factory.mktemp(f"ops-{backend}")) as served:
        yield served


@pytest.fixture
def browser() -> Iterator[object]:
    with chromium() as driver:
        yield driver
