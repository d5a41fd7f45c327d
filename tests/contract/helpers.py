"""Small helpers for contract tests: polling a service without sleeping blindly."""

from __future__ import annotations

import time
from collections.abc import Callable

from taskservice import TaskResult, TaskService, TaskStatus


def wait_until(
    service: TaskService, task_id: str, predicate: Callable[[TaskResult], bool], timeout_s: float = 20.0
) -> TaskResult:
    """Poll until ``predicate`` holds for the task's snapshot; fail with the last snapshot otherwise."""
    deadline = time.monotonic() + timeout_s
    result = service.get_status(task_id)
    while not predicate(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout_s} s; last snapshot: {result!r}")
        time.sleep(0.01)
        result = service.get_status(task_id)
    return result


def wait_for_status(service: TaskService, task_id: str, status: TaskStatus, timeout_s: float = 20.0) -> TaskResult:
    return wait_until(service, task_id, lambda result: result.status == status, timeout_s)
