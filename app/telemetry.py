"""Metrics and traces of the reference app's tasks, installed wherever its tasks are enqueued or run.

``app.main`` (the API) and ``app.tasks`` (what Celery workers and beat import) both call
``install()``, so counts and spans come from the process where things happen. Each part is
optional: without prometheus_client (the ``metrics`` extra) there are no metrics, without
OpenTelemetry (the ``tracing`` extra) no trace context. Spans are recorded only once a tracer
provider is configured (the OpenTelemetry SDK, e.g. ``opentelemetry-instrument uvicorn ...``).
"""

from __future__ import annotations

import importlib.util


def install() -> None:
    """Install task metrics and tracing where their packages are installed; calling it again does nothing."""
    if importlib.util.find_spec("prometheus_client") is not None:
        from taskservice.metrics import install_task_metrics

        install_task_metrics()
    if importlib.util.find_spec("opentelemetry") is not None:
        from taskservice.tracing import instrument_tracing

        instrument_tracing(log_handlers=())
