"""How the in-process backend runs a task: where, in which context, how many at once, and how it ends.

The cross-backend behaviour (results, retries, timeouts, cancel, unique keys) is proven by
``tests/contract``; these are the in-process specifics behind it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.inprocess.service import FastAPITaskService
from taskservice import TaskConflict, TaskSettings, TaskStatus, task
from taskservice.attempts import MAX_RETRY_DELAY_S, retry_delay_s
from taskservice.task_context import current_reporter

probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


class Gauge:
    """How many tasks of one test run at once, and the most there ever were."""

    gauges: dict[str, Gauge] = {}

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1


def where() -> dict[str, Any]:
    return {
        "probe": probe.get(),
        "reporter": current_reporter.get() is not None,
        "thread": threading.current_thread().name,
    }


@task(name="tests.inprocess.async_where")
async def async_where() -> dict[str, Any]:
    return {**where(), "loop": id(asyncio.get_running_loop())}


@task(name="tests.inprocess.sync_where")
def sync_where() -> dict[str, Any]:
    return where()


@task(name="tests.inprocess.async_busy")
async def async_busy(gauge: str, seconds: float) -> None:
    with Gauge.gauges[gauge]:
        await asyncio.sleep(seconds)


@task(name="tests.inprocess.sync_busy")
def sync_busy(gauge: str, seconds: float) -> None:
    with Gauge.gauges[gauge]:
        time.sleep(seconds)


@task(name="tests.inprocess.sleep_then_mark")
def sleep_then_mark(seconds: float, marker: str) -> str:
    time.sleep(seconds)
    Path(marker).write_text("finished")
    return "finished"


@task(name="tests.inprocess.async_sleep")
async def async_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@task(name="tests.inprocess.exits")
def exits(code: int) -> None:
    raise SystemExit(code)


@task(name="tests.inprocess.async_interrupts")
async def async_interrupts() -> None:
    raise KeyboardInterrupt("stop everything")


@task(name="tests.inprocess.silent_failure")
def silent_failure() -> None:
    raise ValueError()


@task(name="tests.inprocess.async_cancels_itself")
async def async_cancels_itself() -> None:
    raise asyncio.CancelledError("given up")


@pytest.fixture
def service() -> Iterator[FastAPITaskService]:
    started = FastAPITaskService(
        TaskSettings(store_url="memory://", modules="", async_concurrency=2, thread_concurrency=2, shutdown_grace_s=1)
    )
    yield started
    started.close()


def test_a_task_runs_in_a_fresh_context_with_its_own_progress_reporter(service: FastAPITaskService) -> None:
    token = probe.set("caller's value")
    try:
        results = [service.wait(service.enqueue(handle)).result for handle in (async_where, sync_where)]
    finally:
        probe.reset(token)
    for result in results:
        assert result["probe"] == "unset", "the caller's context variables do not leak into the task"
        assert result["reporter"] is True
    assert current_reporter.get() is None, "nor does the task's reporter leak out"


def test_sync_tasks_run_on_taskservice_threads_and_async_ones_on_its_loop(service: FastAPITaskService) -> None:
    sync_result = service.wait(service.enqueue(sync_where)).result
    async_result = service.wait(service.enqueue(async_where)).result
    assert sync_result["thread"].startswith("taskservice-sync")
    assert async_result["thread"] == "taskservice-loop", "no app loop was started: the service runs its own"


def test_after_start_async_tasks_run_on_the_app_loop() -> None:
    service = FastAPITaskService(TaskSettings(store_url="memory://", modules=""))

    async def app() -> tuple[int, dict[str, Any]]:
        await service.start()
        try:
            task_id = service.enqueue(async_where)
            return id(asyncio.get_running_loop()), (await asyncio.to_thread(service.wait, task_id)).result
        finally:
            await service.stop()

    app_loop, result = asyncio.run(app())
    assert result["loop"] == app_loop
    assert result["thread"] == threading.current_thread().name


def test_concurrency_is_bounded_per_kind(service: FastAPITaskService) -> None:
    Gauge.gauges.update(async_gauge=Gauge(), sync_gauge=Gauge())
    ids = [service.enqueue(async_busy, "async_gauge", 0.15) for _ in range(6)]
    ids += [service.enqueue(sync_busy, "sync_gauge", 0.15) for _ in range(6)]
    for task_id in ids:
        assert service.wait(task_id).status == TaskStatus.SUCCEEDED
    assert Gauge.gauges["async_gauge"].peak == 2, "async_concurrency=2: two at once, not more, not fewer"
    assert Gauge.gauges["sync_gauge"].peak == 2, "thread_concurrency=2"


def test_a_sync_task_past_its_timeout_is_failed_at_once_and_its_late_end_changes_nothing(
    service: FastAPITaskService, tmp_path: Path
) -> None:
    marker = tmp_path / "finished"
    started = time.monotonic()
    task_id = service.enqueue(sleep_then_mark.options(timeout=0.3), 1.2, str(marker))

    result = service.wait(task_id)
    assert time.monotonic() - started < 1.0, "failed at the deadline, not when the thread ended"
    assert (result.status, result.error) == (TaskStatus.FAILED, "TimeoutError: task timed out after 0.3 s")
    assert result.traceback is not None and "sleep_then_mark" in result.traceback and "time.sleep" in result.traceback

    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the thread was left to finish in the background"
    time.sleep(0.1)
    after = service.get_status(task_id)
    assert (after.status, after.result, after.error) == (result.status, None, result.error)


def test_a_stuck_timed_out_thread_does_not_hold_up_the_next_sync_task(tmp_path: Path) -> None:
    service = FastAPITaskService(TaskSettings(store_url="memory://", modules="", thread_concurrency=1))
    try:
        stuck = service.enqueue(sleep_then_mark.options(timeout=0.2), 3, str(tmp_path / "late"))
        assert service.wait(stuck).status == TaskStatus.FAILED
        started = time.monotonic()
        assert service.wait(service.enqueue(sync_where)).status == TaskStatus.SUCCEEDED
        assert time.monotonic() - started < 1.5, "the next task waited for the stuck thread"
    finally:
        service.close()


def test_a_timed_out_attempt_is_retried_while_retries_remain(service: FastAPITaskService) -> None:
    result = service.wait(service.enqueue(async_sleep.options(timeout=0.2, max_retries=1, retry_backoff=0.05), 5))
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 2)
    assert result.error == "TimeoutError: task timed out after 0.2 s"
    assert result.traceback is not None and "async_sleep" in result.traceback, "where the task was waiting"


@pytest.mark.parametrize(
    ("handle", "args", "error"),
    [
        (exits, (3,), "SystemExit: 3"),
        (async_interrupts, (), "KeyboardInterrupt: stop everything"),
        (silent_failure, (), "ValueError"),
        (async_cancels_itself, (), "CancelledError: given up"),
    ],
)
def test_every_exception_is_recorded_and_the_runner_goes_on(
    service: FastAPITaskService, handle: Any, args: tuple[Any, ...], error: str
) -> None:
    result = service.wait(service.enqueue(handle, *args))
    assert (result.status, result.error) == (TaskStatus.FAILED, error)
    assert result.traceback is not None
    assert service.wait(service.enqueue(sync_where)).status == TaskStatus.SUCCEEDED


def test_enqueue_from_many_threads_at_once(service: FastAPITaskService) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def producer() -> None:
        mine = [service.enqueue(async_where) for _ in range(50)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 200
    assert all(service.wait(task_id).status == TaskStatus.SUCCEEDED for task_id in ids)


def test_retry_delays_grow_with_bounded_jitter() -> None:
    for attempt, nominal in ((1, 2.0), (2, 4.0), (3, 8.0)):
        delays = [retry_delay_s(2.0, attempt) for _ in range(200)]
        assert nominal * 0.75 <= min(delays) and max(delays) <= nominal * 1.25
        assert max(delays) - min(delays) > nominal * 0.2, "jittered, so retries of many tasks spread out"
    assert retry_delay_s(2.0, 40) <= MAX_RETRY_DELAY_S * 1.25
    assert retry_delay_s(0.0, 3) == 0.0


@task(name="tests.inprocess.log_span")
def log_span(log: str, seconds: float) -> str:
    """Append when this body starts and ends, so overlapping bodies show in the file."""
    with open(log, "a") as out:
        out.write(f"start {time.monotonic()}\n")
    time.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {time.monotonic()}\n")
    return "done"


def spans(log: Path) -> list[tuple[float, float]]:
    lines = log.read_text().split("\n") if log.exists() else []
    starts = [float(line.split()[1]) for line in lines if line.startswith("start")]
    ends = [float(line.split()[1]) for line in lines if line.startswith("end")]
    return list(zip(starts, ends, strict=False))


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_sync_task_past_its_timeout_holds_its_key_until_its_thread_returns(tmp_path: Path, store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'tasks.db'}"
    service = FastAPITaskService(TaskSettings(store_url=url, modules="", shutdown_grace_s=1))
    log = tmp_path / "spans"
    try:
        first = service.enqueue(log_span.options(unique_key="the-key", timeout=0.3), str(log), 1.5)
        result = service.wait(first)
        assert (result.status, result.error) == (TaskStatus.FAILED, "TimeoutError: task timed out after 0.3 s")
        with pytest.raises(TaskConflict) as refused:
            service.enqueue(log_span.options(unique_key="the-key"), str(log), 0)
        assert refused.value.active_task_id == first, "the timed-out task holds it while its thread runs"
        deadline = time.monotonic() + 5
        while True:  # once the thread has returned, the key is free
            try:
                second = service.enqueue(log_span.options(unique_key="the-key"), str(log), 0)
                break
            except TaskConflict:
                assert time.monotonic() < deadline, "the key never freed"
                time.sleep(0.02)
        assert service.wait(second).status == TaskStatus.SUCCEEDED
    finally:
        service.close()
    (first_start, first_end), (second_start, _) = spans(log)
    assert second_start >= first_end, "two bodies with one key never overlap"
    assert first_end - first_start >= 1.4


def test_the_retry_of_a_timed_out_sync_attempt_starts_once_its_thread_returns(
    service: FastAPITaskService, tmp_path: Path
) -> None:
    log = tmp_path / "spans"
    options = log_span.options(timeout=0.3, max_retries=1, retry_backoff=0.05)
    result = service.wait(service.enqueue(options, str(log), 0.8), timeout_s=10)
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 2)
    deadline = time.monotonic() + 5
    while len(spans(log)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (_, first_end), (second_start, _) = spans(log)
    assert second_start >= first_end, "the next attempt waited for the previous body"
