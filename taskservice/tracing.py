"""OpenTelemetry tracing of tasks (needs the ``tracing`` extra): one trace from the request that enqueued
a task to a span around each of its attempts, wherever the attempt runs.

    from taskservice.tracing import instrument_tracing
    instrument_tracing()   # in a module the API AND the workers import (your tasks module)

At enqueue, the W3C ``traceparent`` (and ``tracestate``) of the current span travel in the task's
record or message (``TaskCall.headers``: the SQLite row, the Redis record); around each attempt,
where it runs, a ``task <name>`` span (kind CONSUMER) is opened as a child of that context, with
``taskservice.task_id``, ``taskservice.task_name`` and ``taskservice.attempt`` attributes; an
exception from the body is recorded on it and sets its status to ERROR. Spans go to the tracer
provider you configure (the OpenTelemetry SDK, an exporter); without one, nothing is recorded.
With ``TaskLogFilter`` on your handlers, log lines carry the trace id too.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from taskservice.hooks import TaskStarted, add_instrumentation, remove_instrumentation
from taskservice.log_context import TaskLogFilter, set_trace_source

__all__ = ["TaskTracing", "instrument_tracing", "uninstrument_tracing"]

_PROPAGATOR = TraceContextTextMapPropagator()
_CARRIED = ("traceparent", "tracestate")
_RECENT_ATTEMPTS = 4096  # task id -> its last attempt's (trace id, span id), for log lines after the span


class TaskTracing:
    """The ``taskservice.hooks.Instrumentation`` that carries trace context and opens a span per attempt."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer_provider = tracer_provider
        self._recent: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _tracer(self) -> trace.Tracer:
        # Looked up at each use: the app may set its provider after instrumenting.
        return trace.get_tracer("taskservice", tracer_provider=self._tracer_provider)

    def headers(self) -> Mapping[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return {key: value for key, value in carrier.items() if key in _CARRIED}

    @contextlib.contextmanager
    def attempt(self, started: TaskStarted, headers: Mapping[str, str]) -> Iterator[None]:
        parent = _PROPAGATOR.extract({key: value for key, value in headers.items() if key in _CARRIED})
        attributes: dict[str, Any] = {
            "taskservice.task_id": started.task_id,
            "taskservice.task_name": started.name,
            "taskservice.attempt": started.attempt,
        }
        with self._tracer().start_as_current_span(
            f"task {started.name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            ids = _ids(span.get_span_context())
            if ids is not None:
                with self._lock:
                    self._recent[started.task_id] = ids
                    self._recent.move_to_end(started.task_id)
                    while len(self._recent) > _RECENT_ATTEMPTS:
                        self._recent.popitem(last=False)
            yield

    def trace_ids(self, task_id: str | None) -> tuple[str, str] | None:
        """The current span's ids, else those of ``task_id``'s last attempt here."""
        current = _ids(trace.get_current_span().get_span_context())
        if current is not None or task_id is None:
            return current
        with self._lock:
            return self._recent.get(task_id)


def _ids(context: trace.SpanContext) -> tuple[str, str] | None:
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


_installed: TaskTracing | None = None


def instrument_tracing(
    tracer_provider: trace.TracerProvider | None = None, log_handlers: Sequence[logging.Handler] | None = None
) -> TaskTracing:
    """Trace every task enqueued or run in this process from now on; idempotent.

    ``log_handlers`` get a ``TaskLogFilter`` (default: the root logger's handlers at this moment).
    """
    global _installed
    if _installed is None:
        _installed = TaskTracing(tracer_provider)
        add_instrumentation(_installed)
        set_trace_source(_installed.trace_ids)
    handlers = logging.getLogger().handlers if log_handlers is None else log_handlers
    for handler in handlers:
        if not any(isinstance(existing, TaskLogFilter) for existing in handler.filters):
            handler.addFilter(TaskLogFilter())
    return _installed


def uninstrument_tracing() -> None:
    """Stop tracing tasks in this process (tests)."""
    global _installed
    if _installed is not None:
        remove_instrumentation(_installed)
        set_trace_source(None)
        _installed = None
