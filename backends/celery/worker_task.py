"""How a Celery worker runs a taskservice task: claim, run (sync or async), report progress, retry.

Each ``@task`` becomes one Celery task under the same name. Before the body runs, the worker
claims the task in Redis (one round trip) under a lease token of its own: a cancelled or finished
task is not run again, and a message redelivered while the task still runs elsewhere (its lease
is live) is parked until that lease would have expired, then looked at again, so two copies never
run at once and a killed worker's task is never dropped (``LEASES``, ``RECOVER``). How an attempt
ended, and whether and when it is retried, is the attempt core's decision (``taskservice.attempts``),
as on every backend; a retry waits in the schedule set, never in a Celery countdown the broker
would redeliver. Async tasks run on an event loop (``run_coroutine``): concurrently in the async
pool, one at a time in a prefork child.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from celery import Task as CeleryTask
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from backends.celery.async_runner import run_coroutine
from backends.celery.leases import LEASES, Attempt
from backends.celery.outage import persist
from backends.celery.result_backend import (
    ANONYMOUS,
    OUTCOME_REQUEST_ATTRIBUTE,
    RETRY_REQUEST_ATTRIBUTE,
    TOKEN_REQUEST_ATTRIBUTE,
)
from backends.celery.store.messages import queue_for, task_message
from backends.celery.store.worker_records import Claim, ClaimDefaults, WorkerRecords
from taskservice import attempts
from taskservice.attempts import AttemptInfo, Outcome, attempt_scope
from taskservice.errors import TaskConflict
from taskservice.models import TaskStatus
from taskservice.registry import Task
from taskservice.task_context import current_reporter

log = logging.getLogger("taskservice.celery")

REDELIVERY_MARGIN_S = 0.5  # look again this long after a busy task's lease would have expired
_HOSTNAME = socket.gethostname()


class AttemptTimedOut(Exception):
    """An async attempt ran past its ``timeout`` (raised where the coroutine was cancelled)."""


class RecordedTask(CeleryTask):  # type: ignore[misc]  # celery ships no type hints
    """The Celery task of one ``@task``: claims its record, runs the function, retries, reports progress."""

    handle: ClassVar[Task[..., Any]]
    typing = False  # arguments were checked against the signature at enqueue
    Request = "backends.celery.worker_request:CheckedRequest"

    def run(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly:  # ``celery_task(...)`` in plain code: just the function, no record
            if self.handle.is_async:
                return run_coroutine(self.handle.func(*args, **kwargs), lambda _cancel: None)
            return self.handle(*args, **kwargs)
        backend = self.backend
        records: WorkerRecords = backend.records
        lease = backend.lease_ms
        queue = (request.delivery_info or {}).get("routing_key") or queue_for(
            self.handle.is_async, self.handle.default_options.queue
        )
        attempt = LEASES.attempt(request.hostname or _HOSTNAME, request.id)
        try:
            claim = persist(
                records.claim,
                (request.id, attempt.token, lease, lambda: self.claim_defaults(queue)),
                f"claim task {request.id}",
            )
            if claim.verdict != "run":
                setattr(request, TOKEN_REQUEST_ATTRIBUTE, ANONYMOUS)
                self._not_run(claim, records, args, kwargs, queue)
            LEASES.hold(attempt, records, lease)
            setattr(request, TOKEN_REQUEST_ATTRIBUTE, attempt.token)
            info = AttemptInfo(
                request.id, self.name, claim.attempts, claim.max_retries, claim.retry_backoff_s, claim.timeout_s
            )
            outcome, failure = self._attempt(info, claim, attempt, args, kwargs)
        finally:
            LEASES.release(attempt)
        # The result backend stores the core's words for the record (error, traceback), not its own.
        setattr(request, OUTCOME_REQUEST_ATTRIBUTE, outcome)
        if outcome.status is TaskStatus.SUCCEEDED:
            return outcome.result
        if failure is None:  # the body returned a value that cannot be stored: fail with the core's error
            failure = TypeError(outcome.error or "the result cannot be stored")
        if outcome.status is TaskStatus.RETRYING:
            delay_s = outcome.retry_delay_s or 0.0
            message = self._message(args, kwargs, queue, claim.attempts)
            setattr(request, RETRY_REQUEST_ATTRIBUTE, (delay_s, message))
            raise Retry(exc=failure, when=round(delay_s, 3)) from failure
        raise failure

    def _not_run(self, claim: Claim, records: WorkerRecords, args: Any, kwargs: Any, queue: str) -> None:
        """Why a delivered message is not run: parked (running elsewhere), a conflict, or nothing to do."""
        task_id = self.request.id
        if claim.verdict == "busy":
            wait_s = claim.busy_for_s + REDELIVERY_MARGIN_S
            message = self._message(args, kwargs, queue, self.request.retries or 0)
            persist(records.defer, (task_id, wait_s, message), f"park the duplicate of task {task_id}")
            log.info("taskservice: task %s is running elsewhere; its duplicate waits %.1f s", task_id, wait_s)
            raise Ignore()
        if claim.verdict == "conflict":
            assert claim.unique_key is not None
            raise TaskConflict(claim.unique_key, claim.holder)
        log.info("taskservice: task %s is already %s; not run again", task_id, claim.verdict)
        raise Ignore()

    def _attempt(
        self, info: AttemptInfo, claim: Claim, attempt: Attempt, args: Any, kwargs: Any
    ) -> tuple[Outcome, BaseException | None]:
        """Run the body once, in the attempt core's scope; its outcome and the exception it raised, if any."""
        reporter = self._reporter(info.task_id, attempt.token)
        try:
            if self.handle.is_async:
                value = run_coroutine(
                    self._coroutine(info, claim, reporter, args, kwargs),
                    lambda cancel: setattr(attempt, "on_lost", cancel),
                )
            else:
                reporter_token = current_reporter.set(reporter)
                try:
                    with attempt_scope(info, claim.headers):
                        value = self.handle.func(*args, **kwargs)
                finally:
                    current_reporter.reset(reporter_token)
            return attempts.succeeded(info, value), None
        except (SoftTimeLimitExceeded, AttemptTimedOut) as exc:
            return attempts.timed_out(info, exception=exc), exc
        except (Exception, asyncio.CancelledError) as exc:  # every exception of a task is recorded on it
            return attempts.failed(info, exc), exc

    async def _coroutine(
        self, info: AttemptInfo, claim: Claim, reporter: Callable[[float, str | None], None], args: Any, kwargs: Any
    ) -> Any:
        # context variables are set here, in the task the loop runs, not in the thread that submitted it
        reporter_token = current_reporter.set(reporter)
        try:
            with attempt_scope(info, claim.headers):
                if info.timeout is None:
                    return await self.handle.func(*args, **kwargs)
                try:
                    async with asyncio.timeout(info.timeout) as deadline:
                        return await self.handle.func(*args, **kwargs)
                except TimeoutError as exc:
                    if deadline.expired():
                        raise AttemptTimedOut(attempts.timeout_error(info.timeout)) from exc
                    raise
        finally:
            current_reporter.reset(reporter_token)

    def claim_defaults(self, queue: str) -> ClaimDefaults:
        """The record options of a message sent without taskservice: this task's defaults."""
        options = self.handle.default_options
        return ClaimDefaults(self.name, queue, options.max_retries, options.retry_backoff, options.timeout)

    def _message(self, args: tuple[Any, ...], kwargs: dict[str, Any], queue: str, retries: int) -> str:
        """This task's message again, with the time limit it was sent with (a retry, a parked duplicate)."""
        _hard, soft = self.request.timelimit or (None, None)
        return task_message(self.request.id, self.name, args, kwargs, queue=queue, timeout_s=soft, retries=retries)

    def _reporter(self, task_id: str, token: str) -> Callable[[float, str | None], None]:
        backend = self.backend

        def report(percent: float, message: str | None) -> None:
            backend.store_progress(task_id, token, percent, message)

        return report


def register_tasks(app: Any, handles: Iterable[Task[..., Any]]) -> None:
    """Register each ``@task`` on ``app`` under its own name (what ``celery inspect registered`` shows)."""
    for handle in handles:
        if handle.name in app.tasks:
            continue
        namespace = {
            "name": handle.name,
            "handle": handle,
            "queue": queue_for(handle.is_async, handle.default_options.queue),
            "__module__": handle.func.__module__,
            "__doc__": handle.func.__doc__,
        }
        app.register_task(type(f"RecordedTask[{handle.name}]", (RecordedTask,), namespace))
