"""Tasks for the Celery fault tests: each run leaves a line in a journal file the test reads."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from taskservice import task


@task(name="faults.journal_sleep")
def journal_sleep(journal: str, seconds: float) -> int:
    """Write ``start PID``, sleep, write ``done PID``; return the PID: a body killed mid-way leaves a start only."""
    path = Path(journal)
    with path.open("a") as out:
        out.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with path.open("a") as out:
        out.write(f"done {os.getpid()}\n")
    return os.getpid()


@task(name="faults.async_journal_sleep")
async def async_journal_sleep(journal: str, seconds: float) -> int:
    """``journal_sleep`` awaiting instead of blocking (runs in the async pool)."""
    path = Path(journal)
    with path.open("a") as out:
        out.write(f"start {os.getpid()}\n")
    await asyncio.sleep(seconds)
    with path.open("a") as out:
        out.write(f"done {os.getpid()}\n")
    return os.getpid()


@task(name="faults.surrogate_error", max_retries=2, retry_backoff=0.1)
def surrogate_error(name: str) -> None:
    """Fail with a message holding a lone surrogate (a non-UTF-8 file name in an f-string)."""
    raise FileNotFoundError(f"cannot open {name}\udcff.csv")


@task(name="faults.always_fails", max_retries=1000, retry_backoff=0.0)
def always_fails() -> None:
    raise RuntimeError("fails every time")


def journal_lines(journal: Path) -> list[str]:
    return journal.read_text().split() if journal.exists() else []


def journal_counts(journal: Path) -> tuple[int, int]:
    """(body starts, body completions) recorded in ``journal``."""
    lines = journal.read_text().splitlines() if journal.exists() else []
    return sum(line.startswith("start") for line in lines), sum(line.startswith("done") for line in lines)
