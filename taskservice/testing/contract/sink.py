"""Where the contract suite sees what happened inside the process that ran a task: its log records
through the ``taskservice`` logger and its hook calls, one JSON object per line in a file.

The process that runs tasks installs the sink: from the ``TASKSERVICE_CONTRACT_SINK`` environment
variable when it imports ``taskservice.testing.contract.tasks`` (a worker), or by calling
``install(path)`` (the test process itself, for an in-process backend). ``read(path)`` gives the
lines back. Without a sink the tests that need one are skipped, saying so.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from taskservice.hooks import TaskFinished, TaskStarted, on_task_finished, on_task_started

ENVIRONMENT_VARIABLE = "TASKSERVICE_CONTRACT_SINK"
_FIELDS = ("task_id", "task_name", "attempt", "task_status", "error", "retry_delay_s")
_lock = threading.Lock()
_installed: dict[str, _SinkHandler] = {}


class _SinkHandler(logging.Handler):
    def __init__(self, path: str) -> None:
        super().__init__(logging.DEBUG)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        entry: dict[str, Any] = {"kind": "log", "level": record.levelname, "message": record.getMessage()}
        entry.update({name: getattr(record, name) for name in _FIELDS if hasattr(record, name)})
        entry["has_traceback"] = record.exc_info is not None or "Traceback" in entry["message"]
        write(self.path, entry)


def write(path: str, entry: dict[str, Any]) -> None:
    line = json.dumps(entry, default=str, ensure_ascii=True) + "\n"
    with _lock, open(path, "a") as out:
        out.write(line)


def install(path: str) -> None:
    """Send this process's ``taskservice`` log records and hook calls to ``path``; once per path."""
    with _lock:
        if path in _installed:
            return
        handler = _SinkHandler(path)
        _installed[path] = handler
    logger = logging.getLogger("taskservice")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)

    @on_task_started
    def started(event: TaskStarted) -> None:
        write(path, {"kind": "started", "task_id": event.task_id, "name": event.name, "attempt": event.attempt,
                     "pid": os.getpid()})  # fmt: skip

    @on_task_finished
    def finished(event: TaskFinished) -> None:
        write(path, {"kind": "finished", "task_id": event.task_id, "name": event.name, "attempt": event.attempt,
                     "status": event.status.value, "error": event.error, "pid": os.getpid(),
                     "has_exception": event.exception is not None})  # fmt: skip


def install_from_environment() -> None:
    path = os.environ.get(ENVIRONMENT_VARIABLE)
    if path:
        install(path)


def configured() -> str | None:
    """The sink's path for this test run, or None."""
    return os.environ.get(ENVIRONMENT_VARIABLE)


def read(path: str, task_id: str | None = None) -> list[dict[str, Any]]:
    """The sink's entries (of one task, given its id), oldest first."""
    if not Path(path).exists():
        return []
    with _lock:
        lines = Path(path).read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [entry for entry in entries if task_id is None or entry.get("task_id") == task_id]
