"""Helpers of the real-worker tests: waiting for a condition, telling which worker runs a task."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.celery.fault_tasks import journal_lines


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.05)


def pgid_of(pid: int) -> int | None:
    """The process group of ``pid`` (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[2])
    except (FileNotFoundError, ProcessLookupError):
        return None


def started_by(journal: Path) -> list[int]:
    """The PIDs that started the body, in order."""
    words = journal_lines(journal)
    return [int(words[i + 1]) for i, word in enumerate(words) if word == "start"]
