"""A failed task is never silent; retries and timeouts behave alike on every backend."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from taskservice import TaskService, TaskStatus
from taskservice.testing.contract import tasks
from taskservice.testing.contract.helpers import wait_until


def test_failure_is_recorded_with_type_message_and_traceback(task_service: TaskService) -> None:
    result = task_service.wait(task_service.enqueue(tasks.fail, "disk is full"))

    assert result.status == TaskStatus.FAILED
    assert result.error == "ValueError: disk is full"
    assert result.traceback is not None and result.traceback.rstrip().endswith("ValueError: disk is full")
    assert "contract/tasks.py" in result.traceback
    assert result.attempts == 1
    assert result.finished_at is not None


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("empty", "ValueError"),
        ("non-ascii", "ValueError: café ☕ 日本語"),
        ("broken-str", "BrokenMessage: <exception str() failed: BrokenMessage>"),
        ("surrogate", "ValueError: file b'\\xff' decoded as \\udcff"),
    ],
)
def test_awkward_exceptions_are_recorded_in_exactly_the_same_words(
    task_service: TaskService, kind: str, error: str
) -> None:
    """The error text is the attempt core's on every backend: no backend adds, drops or chokes on a character."""
    result = task_service.wait(task_service.enqueue(tasks.fail_with, kind))

    assert (result.status, result.attempts) == (TaskStatus.FAILED, 1)
    assert result.error == error
    assert result.traceback is not None and "contract/tasks.py" in result.traceback
    result.traceback.encode("utf-8")  # always valid UTF-8, whatever the exception held


def test_async_failure_is_recorded(task_service: TaskService) -> None:
    result = task_service.wait(task_service.enqueue(tasks.async_fail, "missing"))
    assert result.status == TaskStatus.FAILED
    assert result.error == "KeyError: 'missing'"


def test_retries_until_success_count_attempts(task_service: TaskService, tmp_path: Path) -> None:
    result = task_service.wait(task_service.enqueue(tasks.flaky, str(tmp_path), 2))

    assert result.status == TaskStatus.SUCCEEDED
    assert result.result == 3
    assert result.attempts == 3
    assert result.error is None


@pytest.mark.usefixtures("in_background")
def test_status_is_retrying_between_attempts(task_service: TaskService, tmp_path: Path) -> None:
    slow_retry = tasks.flaky.options(max_retries=1, retry_backoff=1.5)
    task_id = task_service.enqueue(slow_retry, str(tmp_path), 1)

    retrying = wait_until(task_service, task_id, lambda r: r.status == TaskStatus.RETRYING, timeout_s=10)
    assert retrying.attempts == 1
    assert retrying.error == "RuntimeError: run 1 fails on purpose"

    final = task_service.wait(task_id)
    assert (final.status, final.attempts) == (TaskStatus.SUCCEEDED, 2)


def test_retries_run_out_and_the_task_fails(task_service: TaskService, tmp_path: Path) -> None:
    always_failing = tasks.flaky.options(max_retries=2, retry_backoff=0.05)
    result = task_service.wait(task_service.enqueue(always_failing, str(tmp_path), 10))

    assert result.status == TaskStatus.FAILED
    assert result.attempts == 3
    assert result.error == "RuntimeError: run 3 fails on purpose"


@pytest.mark.usefixtures("in_background")
def test_backoff_grows_between_retries(task_service: TaskService, tmp_path: Path) -> None:
    started = time.monotonic()
    result = task_service.wait(task_service.enqueue(tasks.flaky.options(retry_backoff=0.4), str(tmp_path), 2))
    elapsed = time.monotonic() - started
    assert result.attempts == 3
    # nominal 0.4 s + 0.8 s; jitter may shorten each delay, but never to nothing
    assert elapsed >= 0.6, f"two retries with backoff 0.4 s took only {elapsed:.2f} s"


def test_sync_task_past_its_timeout_fails_with_the_timeout_error(task_service: TaskService) -> None:
    started = time.monotonic()
    result = task_service.wait(task_service.enqueue(tasks.sleep_for.options(timeout=1), 30), timeout_s=20)

    assert (result.status, result.attempts) == (TaskStatus.FAILED, 1)
    assert result.error == "TimeoutError: task timed out after 1 s"
    assert result.traceback is not None and result.traceback.rstrip().endswith(result.error)
    assert time.monotonic() - started < 15


def test_async_task_past_its_timeout_fails_with_the_timeout_error(task_service: TaskService) -> None:
    result = task_service.wait(task_service.enqueue(tasks.async_sleep_for.options(timeout=1.5), 30), timeout_s=20)

    assert (result.status, result.attempts) == (TaskStatus.FAILED, 1)
    assert result.error == "TimeoutError: task timed out after 1.5 s"


def test_a_timed_out_attempt_is_retried_like_any_failure(task_service: TaskService) -> None:
    result = task_service.wait(
        task_service.enqueue(tasks.async_sleep_for.options(timeout=0.5, max_retries=1, retry_backoff=0.1), 30),
        timeout_s=20,
    )
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 2)
    assert result.error == "TimeoutError: task timed out after 0.5 s"


def test_task_within_its_timeout_succeeds(task_service: TaskService) -> None:
    result = task_service.wait(task_service.enqueue(tasks.sleep_for.options(timeout=5), 0.1))
    assert result.status == TaskStatus.SUCCEEDED
