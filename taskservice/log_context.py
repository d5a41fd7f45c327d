"""``TaskLogFilter``: every log record says which task (and which trace) it came from.

Add it to your handlers; it sets, where the record does not already have them:

- ``task_id``, ``task_name``, ``attempt``: the task running here (``current_task()``), else None;
- ``trace_id``, ``span_id``: the current OpenTelemetry span (32 and 16 hex digits), else None.
  A line logged about an attempt after its span ended (the outcome line of the attempt core)
  gets the trace of that task's last attempt in this process.

    handler.addFilter(TaskLogFilter())
    logging.basicConfig(format="%(levelname)s %(task_id)s %(trace_id)s %(message)s")

It needs nothing beyond the standard library; with the ``tracing`` extra installed and
``taskservice.tracing.instrument_tracing()`` called, the trace fields are filled in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from taskservice.task_context import current_task

TraceIds = Callable[[str | None], tuple[str, str] | None]  # task id -> (trace id, span id)
_trace_ids: list[TraceIds] = []  # set by taskservice.tracing


def set_trace_source(source: TraceIds | None) -> None:
    _trace_ids[:] = [source] if source is not None else []


class TaskLogFilter(logging.Filter):
    """Adds ``task_id``, ``task_name``, ``attempt``, ``trace_id``, ``span_id`` to every record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current_task()
        fields = record.__dict__
        if running is not None:
            fields.setdefault("task_id", running.id)
            fields.setdefault("task_name", running.name)
            fields.setdefault("attempt", running.attempt)
        else:
            for name in ("task_id", "task_name", "attempt"):
                fields.setdefault(name, None)
        if "trace_id" not in fields:
            ids = _trace_ids[0](fields.get("task_id")) if _trace_ids else None
            fields["trace_id"], fields["span_id"] = ids if ids is not None else (None, None)
        return True
