"""The attempt core decides on every backend: the delay between attempts, the statuses a retried task
goes through, and how ``attempts`` counts."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taskservice import TaskService, TaskStatus
from taskservice.attempts import MAX_RETRY_DELAY_S, retry_delay_bounds_s
from taskservice.testing.contract import tasks
from taskservice.testing.contract.helpers import require

# How much later than its due time an attempt may start: the backend's own hand-over (a timer, a
# dispatcher that polls the schedule a few times a second, a worker taking the message).
START_SLACK_S = 0.6
EARLY_S = 0.005  # clocks and rounding: an attempt never starts earlier than its bound minus this


def _runs(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_delay_rule_itself() -> None:
    """``retry_backoff * 2**(attempt-1)``, capped at ``MAX_RETRY_DELAY_S``, then +/-25 %."""
    assert retry_delay_bounds_s(1.0, 1) == (0.75, 1.25)
    assert retry_delay_bounds_s(1.0, 12) == (0.75 * 600, 1.25 * 600)  # 2048 s nominal, capped
    assert retry_delay_bounds_s(2.0, 3) == (6.0, 10.0)
    assert retry_delay_bounds_s(1.0, 1_000_000) == (0.75 * MAX_RETRY_DELAY_S, 1.25 * MAX_RETRY_DELAY_S)
    assert retry_delay_bounds_s(0.0, 5) == (0.0, 0.0)


def test_delays_between_attempts_one_to_twelve_stay_within_the_rule(task_service: TaskService, tmp_path: Path) -> None:
    require(task_service, "runs_in_background")
    require(task_service, "waits_between_retries")
    backoff_s = 0.001  # attempt 12 waits 2.048 s nominal: twelve delays take about 4 s in all
    task_id = task_service.enqueue(
        tasks.record_runs.options(max_retries=12, retry_backoff=backoff_s), str(tmp_path), 12
    )

    result = task_service.wait(task_id, timeout_s=60)

    assert (result.status, result.attempts) == (TaskStatus.SUCCEEDED, 13)
    starts = [run["at"] for run in _runs(tmp_path)]
    assert len(starts) == 13
    for attempt in range(1, 13):
        gap_s = starts[attempt] - starts[attempt - 1]
        low_s, high_s = retry_delay_bounds_s(backoff_s, attempt)
        assert low_s - EARLY_S <= gap_s, f"attempt {attempt + 1} came {gap_s:.4f} s after {attempt}, before {low_s}"
        assert gap_s <= high_s + START_SLACK_S, f"attempt {attempt + 1} came {gap_s:.4f} s after, past {high_s}"


def test_a_retried_task_goes_through_running_and_retrying_to_its_end(task_service: TaskService, tmp_path: Path) -> None:
    require(task_service, "runs_in_background")
    require(task_service, "waits_between_retries")
    task_id = task_service.schedule(
        tasks.record_runs.options(max_retries=2, retry_backoff=0.4), timedelta(seconds=0.3), str(tmp_path), 2, 0.2
    )
    seen = [task_service.get_status(task_id).status]
    attempts_while_retrying: list[int] = []
    deadline = time.monotonic() + 30
    while not seen[-1].is_final and time.monotonic() < deadline:
        snapshot = task_service.get_status(task_id)
        if snapshot.status != seen[-1]:
            seen.append(snapshot.status)
            if snapshot.status is TaskStatus.RETRYING:
                attempts_while_retrying.append(snapshot.attempts)
        time.sleep(0.01)

    running, retrying = TaskStatus.RUNNING, TaskStatus.RETRYING
    assert seen == [TaskStatus.SCHEDULED, running, retrying, running, retrying, running, TaskStatus.SUCCEEDED]
    assert attempts_while_retrying == [1, 2]
    # what the task saw of itself while it ran: running, and its own attempt number
    assert [(run["status"], run["attempt"]) for run in _runs(tmp_path)] == [
        ("running", 1),
        ("running", 2),
        ("running", 3),
    ]
    assert task_service.get_status(task_id).attempts == 3


@pytest.mark.parametrize(
    ("failures", "max_retries", "status", "attempts"),
    [(0, 0, "succeeded", 1), (2, 3, "succeeded", 3), (5, 1, "failed", 2)],
)
def test_attempts_counts_runs(
    task_service: TaskService, tmp_path: Path, failures: int, max_retries: int, status: str, attempts: int
) -> None:
    task = tasks.record_runs.options(max_retries=max_retries, retry_backoff=0.01)
    result = task_service.wait(task_service.enqueue(task, str(tmp_path), failures), timeout_s=30)
    assert (result.status.value, result.attempts) == (status, attempts)
    assert len(_runs(tmp_path)) == attempts
