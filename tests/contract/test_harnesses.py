"""Every backend in the factory table is covered by the contract suite."""

from __future__ import annotations

from taskservice.factory import BUILTIN_BACKENDS as BACKENDS
from tests.harnesses import HARNESSES


def test_every_backend_has_a_harness() -> None:
    covered = {backend for backend, _harness in HARNESSES.values()}
    assert covered == set(BACKENDS), f"backends without a contract harness: {set(BACKENDS) - covered}"
