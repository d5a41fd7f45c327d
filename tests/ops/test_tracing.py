"""One trace from the HTTP request that enqueued a task to the span of its attempt, in-process and on a
real Celery worker; log lines from the task carry its id and the trace id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskservice import TaskService, TaskServiceDep, TaskServiceMiddleware, set_task_service
from taskservice.log_context import TaskLogFilter
from taskservice.tracing import instrument_tracing, uninstrument_tracing
from tests.harnesses import inprocess
from tests.ops.browser import eventually
from tests.ops.traced_tasks import traced, traced_failure


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(TaskLogFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tracing() -> Iterator[tuple[InMemorySpanExporter, TracerProvider, Captured]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    captured = Captured()
    loggers = [logging.getLogger("tests.ops.traced"), logging.getLogger("taskservice")]
    for logger in loggers:
        logger.addHandler(captured)
    previous_level = loggers[0].level
    loggers[0].setLevel(logging.INFO)
    uninstrument_tracing()  # the reference app may have instrumented this process with the global provider
    instrument_tracing(tracer_provider=provider, log_handlers=[])
    yield exporter, provider, captured
    uninstrument_tracing()
    for logger in loggers:
        logger.removeHandler(captured)
    loggers[0].setLevel(previous_level)


def traced_app(service: TaskService, provider: TracerProvider) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TaskServiceMiddleware)

    @app.post("/jobs/{word}")
    def work(word: str, service: TaskServiceDep) -> dict[str, str]:
        task = traced_failure if word == "fail" else traced
        return {"task_id": service.enqueue(task, word)}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def server_span_of(spans: tuple[ReadableSpan, ...], trace_id: int) -> ReadableSpan:
    """The HTTP request's span (FastAPI's instrumentation) in trace ``trace_id``."""
    (span,) = [s for s in spans if s.kind is SpanKind.SERVER and s.get_span_context().trace_id == trace_id]
    return span


def hex_trace(span: ReadableSpan) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def test_one_trace_from_the_request_to_the_attempt_in_process(
    tracing: tuple[InMemorySpanExporter, TracerProvider, Captured], tmp_path: Path
) -> None:
    exporter, provider, captured = tracing
    with inprocess(tmp_path, "memory://") as run:
        service = run.service
        previous = set_task_service(service)
        try:
            with TestClient(traced_app(service, provider)) as client:
                task_id = client.post("/jobs/hello").json()["task_id"]
                failing_id = client.post("/jobs/fail").json()["task_id"]
            assert service.wait(task_id, timeout_s=10).status == "succeeded"
            assert service.wait(failing_id, timeout_s=10).status == "failed"
        finally:
            set_task_service(previous)

    spans = exporter.get_finished_spans()
    (attempt,) = [s for s in spans if s.name == "task ops.traced"]
    request = server_span_of(spans, attempt.get_span_context().trace_id)
    assert attempt.kind is SpanKind.CONSUMER and "/jobs" in request.name
    assert attempt.parent is not None and attempt.parent.span_id == request.get_span_context().span_id
    assert dict(attempt.attributes or {}) == {
        "taskservice.task_id": task_id,
        "taskservice.task_name": "ops.traced",
        "taskservice.attempt": 1,
    }
    (failure,) = [s for s in spans if s.name == "task ops.traced_failure"]
    assert server_span_of(spans, failure.get_span_context().trace_id) is not request, "each request its own trace"
    assert failure.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failure.events)

    (line,) = [r for r in captured.records if r.getMessage() == "working on hello"]
    assert (line.task_id, line.task_name, line.attempt) == (task_id, "ops.traced", 1)  # type: ignore[attr-defined]
    assert line.trace_id == hex_trace(attempt)  # type: ignore[attr-defined]
    (final,) = [r for r in captured.records if r.levelno == logging.ERROR and failing_id in r.getMessage()]
    assert final.trace_id == hex_trace(failure), "the attempt core's outcome line carries the trace too"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_one_trace_from_the_request_to_the_attempt_on_a_celery_worker(
    tracing: tuple[InMemorySpanExporter, TracerProvider, Captured], tmp_path: Path
) -> None:
    from backends.celery.service import CeleryTaskService
    from tests.celery_harness import celery_env, celery_settings
    from tests.processes import celery_worker, redis_server

    exporter, provider, _ = tracing
    trace_file, log_file = tmp_path / "worker-spans.jsonl", tmp_path / "worker-tasks.log"
    modules = "tests.ops.traced_tasks"
    with redis_server(tmp_path / "redis") as redis:
        env = celery_env(redis, modules, OPS_TRACE_FILE=str(trace_file), OPS_LOG_FILE=str(log_file))
        with celery_worker(env, tmp_path / "worker.log", concurrency=1):
            service = CeleryTaskService(celery_settings(redis, modules))
            previous = set_task_service(service)
            try:
                with TestClient(traced_app(service, provider)) as client:
                    task_id = client.post("/jobs/hello").json()["task_id"]
                assert service.wait(task_id, timeout_s=30).status == "succeeded"
            finally:
                set_task_service(previous)
                service.close()

            def worker_span() -> dict[str, Any] | None:
                lines = trace_file.read_text().splitlines() if trace_file.exists() else []
                spans = [json.loads(line) for line in lines]
                return next((s for s in spans if s["attributes"].get("taskservice.task_id") == task_id), None)

            attempt = eventually(worker_span, 15, "the worker's span in its export file")

    (request,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert attempt["name"] == "task ops.traced" and attempt["kind"] == "CONSUMER"
    assert attempt["trace_id"] == hex_trace(request), "the worker's span is in the request's trace"
    assert attempt["parent_span_id"] == f"{request.get_span_context().span_id:016x}"
    assert f"{task_id} {hex_trace(request)} working on hello" in log_file.read_text()
