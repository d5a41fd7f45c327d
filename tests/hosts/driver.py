"""The API host of the multi-host tests: a ``CeleryTaskService`` that takes commands as JSON lines.

Run inside the API host's namespace (``python -m tests.hosts.driver REDIS_URL``); each line on
stdin is ``{"op": ..., ...}`` and gets one JSON line back: ``{"ok": ...}`` or ``{"error": type,
"message": ..., "elapsed_s": ...}``. One service object lives for the whole session, as in an API
process, so the test sees whether the same object recovers.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from typing import Any

from backends.celery.service import CeleryTaskService
from backends.celery.settings import CelerySettings
from taskservice import TaskResult
from tests import tasks
from tests.celery import fault_tasks


def _result(result: TaskResult) -> dict[str, Any]:
    return {"id": result.id, "status": result.status.value, "attempts": result.attempts, "result": result.result}


def handle(service: CeleryTaskService, command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "journal":
        task = fault_tasks.journal_sleep
        if command.get("in_s") is not None:
            delay = timedelta(seconds=command["in_s"])
            return service.schedule(task, delay, command["journal"], command["seconds"])
        return service.enqueue(task, command["journal"], command["seconds"])
    if op == "add":
        return service.enqueue(tasks.add, 1, 2)
    if op == "wait":
        return _result(service.wait(command["id"], timeout_s=command["timeout_s"]))
    if op == "status":
        return _result(service.get_status(command["id"]))
    if op == "stats":
        return {status.value: count for status, count in service.stats().counts.items()}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    settings = CelerySettings(backend="celery", redis_url=sys.argv[1], modules="tests.tasks,tests.celery.fault_tasks")
    service = CeleryTaskService(settings)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        started = time.monotonic()
        try:
            reply: dict[str, Any] = {"ok": handle(service, command)}
        except Exception as exc:  # the test asserts on the type and the time it took
            reply = {"error": type(exc).__name__, "message": str(exc)}
        reply["elapsed_s"] = time.monotonic() - started
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
