"""Fixtures shared by every test directory."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskservice import TaskService
from tests.harnesses import HARNESSES

# Workers and servers started by tests import `tests.tasks` and `app` from the checkout.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", params=sorted(HARNESSES))
def task_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskService]:
    """A started service for each backend configuration (one per session: start-up is costly)."""
    _backend, harness = HARNESSES[request.param]
    with harness(tmp_path_factory.mktemp(request.param)) as service:
        yield service
