"""The contract suite's tasks. Every process that runs tasks imports them: put
``taskservice.testing.contract.tasks`` in ``TASK_MODULES`` of your workers.

Tasks talk to the test through files (gates, counters, markers, the sink) because on a worker
they run in another process: nothing here may rely on sharing memory with the test.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from taskservice import current_task, get_task_service, set_progress, task
from taskservice.testing.contract import sink


@task(name="contract.add")
def add(a: int, b: int) -> int:
    return a + b


@task(name="contract.async_add")
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task(name="contract.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@task(name="contract.async_fail")
async def async_fail(message: str) -> None:
    raise KeyError(message)


@task(name="contract.flaky", max_retries=3, retry_backoff=0.2)
def flaky(state_dir: str, failures: int) -> int:
    """Fail the first ``failures`` runs, then succeed; return the run number."""
    counter = Path(state_dir) / "runs"
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    if runs <= failures:
        raise RuntimeError(f"run {runs} fails on purpose")
    return runs


@task(name="contract.sleep")
def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@task(name="contract.async_sleep")
async def async_sleep_for(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@task(name="contract.wait_for_gate")
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


@task(name="contract.async_wait_for_gate")
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


@task(name="contract.touch")
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@task(name="contract.mutate")
def mutate(data: dict[str, Any], items: list[int]) -> dict[str, Any]:
    data["changed"] = True
    items.append(99)
    return {"data": data, "items": items}


@task(name="contract.returns_pair")
def returns_pair() -> tuple[int, int]:
    return (1, 2)


@task(name="contract.returns_object")
def returns_object() -> object:
    return object()


@task(name="contract.enqueue_child")
def enqueue_child(a: int, b: int) -> str:
    return get_task_service().enqueue(add, a, b)


@task(name="contract.async_enqueue_child")
async def async_enqueue_child(a: int, b: int) -> str:
    return get_task_service().enqueue(async_add, a, b)


def not_a_task(x: int) -> int:
    return x


class BrokenMessage(Exception):
    """An exception whose ``str()`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@task(name="contract.fail_with")
def fail_with(kind: str) -> None:
    """Raise an exception whose text is awkward to record: empty, non-ASCII, broken, or not UTF-8."""
    if kind == "empty":
        raise ValueError()
    if kind == "non-ascii":
        raise ValueError("café ☕ 日本語")
    if kind == "broken-str":
        raise BrokenMessage("ignored")
    if kind == "surrogate":
        raise ValueError("file b'\\xff' decoded as " + b"\xff".decode("utf-8", "surrogateescape"))
    raise AssertionError(f"unknown kind {kind!r}")


@task(name="contract.record_runs")
def record_runs(state_dir: str, failures: int, hold_s: float = 0.0) -> int:
    """Append (start time, own status, attempt) per run; fail the first ``failures`` runs."""
    running = current_task()
    assert running is not None, "current_task() answers inside a task"
    seen = get_task_service().get_status(running.id)
    with open(Path(state_dir) / "runs.jsonl", "a") as runs:
        runs.write(json.dumps({"at": time.time(), "status": seen.status.value, "attempt": running.attempt}) + "\n")
    if hold_s:
        time.sleep(hold_s)
    if running.attempt <= failures:
        raise RuntimeError(f"run {running.attempt} fails on purpose")
    return running.attempt


@task(name="contract.append_line")
def append_line(path: str, text: str, delay_s: float = 0.0) -> str:
    """Wait ``delay_s``, then append ``text`` as one line: who finishes first writes first."""
    time.sleep(delay_s)
    with open(path, "a") as out:
        out.write(text + "\n")
    return text


@task(name="contract.async_append_line")
async def async_append_line(path: str, text: str, delay_s: float = 0.0) -> str:
    await asyncio.sleep(delay_s)
    with open(path, "a") as out:
        out.write(text + "\n")
    return text


@task(name="contract.echo")
def echo(value: int) -> int:
    return value


sink.install_from_environment()
