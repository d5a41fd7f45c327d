"""Every backend in the factory table is covered by the contract suite, and so is a backend from outside it."""

from __future__ import annotations

from taskservice.factory import BUILTIN_BACKENDS
from tests.harnesses import HARNESSES


def test_every_backend_has_a_harness() -> None:
    covered = {backend for backend, _harness in HARNESSES.values()}
    assert covered >= set(BUILTIN_BACKENDS), f"backends without a contract harness: {set(BUILTIN_BACKENDS) - covered}"


def test_a_backend_chosen_by_a_dotted_path_runs_the_contract_too() -> None:
    assert any(":" in backend for backend, _harness in HARNESSES.values())
