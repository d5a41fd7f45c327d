"""Module-level tasks for the contract suite; workers import them through TASK_MODULES=tests.tasks.

Tasks talk to the test through files (gates, counters, markers) because under Celery they
run in another process: nothing here may rely on sharing memory with the test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from taskservice import get_task_service, set_progress, task


@task(name="tests.add")
def add(a: int, b: int) -> int:
    return a + b


@task(name="tests.async_add")
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task(name="tests.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@task(name="tests.async_fail")
async def async_fail(message: str) -> None:
    raise KeyError(message)


@task(name="tests.flaky", max_retries=3, retry_backoff=0.2)
def flaky(state_dir: str, failures: int) -> int:
    """Fail the first ``failures`` runs, then succeed; return the run number."""
    counter = Path(state_dir) / "runs"
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    if runs <= failures:
        raise RuntimeError(f"run {runs} fails on purpose")
    return runs


@task(name="tests.sleep")
def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@task(name="tests.async_sleep")
async def async_sleep_for(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@task(name="tests.wait_for_gate")
def wait_for_gate(gate_dir: str, percent: float | None = None, message: str | None = None) -> str:
    """Report progress, say it started, then hold until the test opens the gate (30 s at most)."""
    gate = Path(gate_dir)
    if percent is not None:
        set_progress(percent, message)
    (gate / "started").touch()
    deadline = time.monotonic() + 30
    while not (gate / "open").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.02)
    return "released"


@task(name="tests.async_wait_for_gate")
async def async_wait_for_gate(gate_dir: str, percent: float | None = None, message: str | None = None) -> str:
    gate = Path(gate_dir)
    if percent is not None:
        set_progress(percent, message)
    (gate / "started").touch()
    deadline = time.monotonic() + 30
    while not (gate / "open").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        await asyncio.sleep(0.02)
    return "released"


@task(name="tests.touch")
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@task(name="tests.mutate")
def mutate(data: dict[str, Any], items: list[int]) -> dict[str, Any]:
    data["changed"] = True
    items.append(99)
    return {"data": data, "items": items}


@task(name="tests.returns_pair")
def returns_pair() -> tuple[int, int]:
    return (1, 2)


@task(name="tests.returns_object")
def returns_object() -> object:
    return object()


@task(name="tests.enqueue_child")
def enqueue_child(a: int, b: int) -> str:
    return get_task_service().enqueue(add, a, b)


@task(name="tests.async_enqueue_child")
async def async_enqueue_child(a: int, b: int) -> str:
    return get_task_service().enqueue(async_add, a, b)


def not_a_task(x: int) -> int:
    return x
