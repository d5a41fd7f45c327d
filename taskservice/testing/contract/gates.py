"""A file gate: a test holds a task mid-run and lets it go, across processes."""

from __future__ import annotations

import time
from pathlib import Path


class Gate:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    @property
    def path(self) -> str:
        return str(self.directory)

    def wait_started(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.directory / "started").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the task behind {self.directory.name} did not start within {timeout_s} s")
            time.sleep(0.02)

    @property
    def started(self) -> bool:
        return (self.directory / "started").exists()

    def open(self) -> None:
        (self.directory / "open").touch()
