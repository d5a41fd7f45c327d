"""Tasks of the tracing tests. A process started with ``OPS_TRACE_FILE`` (a Celery worker) exports its spans
there as JSON lines, and with ``OPS_LOG_FILE`` writes its task log lines there with the task and trace ids."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from taskservice import task
from taskservice.tracing import instrument_tracing

log = logging.getLogger("tests.ops.traced")


class JsonLinesExporter(SpanExporter):
    """Appends one JSON object per finished span to a file (a worker's spans, for the test to read)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                context = span.get_span_context()
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": f"{context.trace_id:032x}",
                            "span_id": f"{context.span_id:016x}",
                            "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
                            "kind": span.kind.name,
                            "status": span.status.status_code.name,
                            "attributes": dict(span.attributes or {}),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


if os.environ.get("OPS_TRACE_FILE"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(Path(os.environ["OPS_TRACE_FILE"]))))
    handler = logging.FileHandler(os.environ["OPS_LOG_FILE"])
    handler.setFormatter(logging.Formatter("%(task_id)s %(trace_id)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    instrument_tracing(tracer_provider=provider, log_handlers=[handler])


@task(name="ops.traced")
def traced(word: str) -> str:
    log.info("working on %s", word)
    return word.upper()


@task(name="ops.traced_failure")
def traced_failure(word: str) -> None:
    raise ValueError(f"no {word}")
