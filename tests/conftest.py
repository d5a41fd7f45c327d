"""Fixtures shared by every test directory: the contract suite's ``task_service``, once per harness."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskservice import TaskService
from tests.harnesses import HARNESSES, HarnessRun

# Workers and servers started by tests import `tests.tasks` and `app` from the checkout.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", params=sorted(HARNESSES))
def harness_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessRun]:
    """A started service for each backend configuration (one per session: start-up is costly)."""
    _backend, harness = HARNESSES[request.param]
    with harness(tmp_path_factory.mktemp(request.param)) as run:
        yield run


@pytest.fixture(scope="session")
def task_service(harness_run: HarnessRun) -> TaskService:
    return harness_run.service


@pytest.fixture(scope="session")
def contract_sink(harness_run: HarnessRun) -> str:
    return harness_run.sink_path
