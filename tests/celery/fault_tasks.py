"""Tasks for the Celery fault tests: each run leaves a line in a journal file the test reads."""

from __future__ import annotations

import os
import time
from pathlib import Path

from taskservice import task


@task(name="faults.journal_sleep")
def journal_sleep(journal: str, seconds: float) -> str:
    """Write ``start PID``, sleep, write ``done``: a body killed mid-way leaves a start without a done."""
    path = Path(journal)
    with path.open("a") as out:
        out.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with path.open("a") as out:
        out.write("done\n")
    return "done"


def journal_lines(journal: Path) -> list[str]:
    return journal.read_text().split() if journal.exists() else []
