"""How a Celery worker runs a taskservice task: claim, run (sync or async), report progress, retry.

Each ``@task`` becomes one Celery task under the same name. Before the body runs, the worker
claims the task in Redis (one round trip): a cancelled or finished task is not run again, and
a message redelivered while the task still runs elsewhere (its lease is live) is parked until
that lease would have expired, then looked at again, so two copies never run at once and a
killed worker's task is never dropped. While the body runs, the worker process refreshes the
lease. How an attempt ended, and whether and when it is retried, is the attempt core's decision
(``taskservice.attempts``), as on every backend; a retry waits in the schedule set, never in a
Celery countdown the broker would redeliver (see ``lease_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Iterable
from typing import Any, ClassVar

from celery import Task as CeleryTask
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from backends.celery.result_backend import OUTCOME_REQUEST_ATTRIBUTE, RETRY_REQUEST_ATTRIBUTE
from backends.celery.states import PROGRESS
from backends.celery.store.messages import DEFAULT_QUEUE, task_message
from backends.celery.store.records import ClaimDefaults, TaskRecords
from taskservice import attempts
from taskservice.attempts import AttemptInfo, attempt_scope
from taskservice.errors import TaskConflict
from taskservice.models import TaskStatus
from taskservice.registry import Task
from taskservice.task_context import current_reporter

log = logging.getLogger("taskservice.celery")

REDELIVERY_MARGIN_S = 0.5  # look again this long after a busy task's lease would have expired


class LeaseKeeper:
    """Refreshes the leases of the tasks running in this process from a daemon thread (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, TaskRecords] = {}
        self._lease_ms = 30_000
        self._wake = threading.Event()
        self._pid: int | None = None
        self._token = ""

    def token(self) -> str:
        """Who holds a lease: this host and process (a prefork child gets its own on first use)."""
        with self._lock:
            self._adopt_process()
            return self._token

    def hold(self, records: TaskRecords, task_id: str, lease_ms: int) -> None:
        with self._lock:
            self._adopt_process()
            self._held[task_id] = records
            if lease_ms != self._lease_ms:  # the first task of this process: refresh at its pace from now on
                self._lease_ms = lease_ms
                self._wake.set()

    def release(self, task_id: str) -> None:
        with self._lock:
            self._held.pop(task_id, None)

    def _adopt_process(self) -> None:
        if self._pid != os.getpid():  # threads do not survive a fork: each process starts its own
            self._pid = os.getpid()
            self._held = {}
            self._wake = threading.Event()
            self._token = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
            threading.Thread(target=self._refresh_forever, name="taskservice-lease", daemon=True).start()

    def _refresh_forever(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            with self._lock:
                interval_s = self._lease_ms / 3000
            self._wake.wait(interval_s)
            self._wake.clear()
            with self._lock:
                held, lease = dict(self._held), self._lease_ms
            if not held:
                continue
            try:
                next(iter(held.values())).refresh_leases(list(held), lease)
            except Exception:  # Redis away for a moment: the next refresh may still come in time
                log.warning("taskservice: could not refresh the lease of %s", ", ".join(held), exc_info=True)


LEASES = LeaseKeeper()


class _ProcessLoop:
    """One event loop per worker process for async tasks; a task cut off mid-way is cancelled, not left behind."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if self._loop is None or self._loop.is_closed() or self._pid != os.getpid():
            self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
        loop = self._loop
        future = loop.create_task(coroutine)
        try:
            return loop.run_until_complete(future)
        except BaseException:  # the soft time limit arrives as an exception raised inside the loop
            if not future.done():
                future.cancel()
                with contextlib.suppress(BaseException):  # cancelled on purpose; the first error is what counts
                    loop.run_until_complete(future)
            raise


_LOOP = _ProcessLoop()


class RecordedTask(CeleryTask):  # type: ignore[misc]  # celery ships no type hints
    """The Celery task of one ``@task``: claims its record, runs the function, retries, reports progress."""

    handle: ClassVar[Task[..., Any]]
    typing = False  # arguments were checked against the signature at enqueue

    def run(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly:  # ``celery_task(...)`` in plain code: just the function, no record
            return (
                _LOOP.run(self.handle.func(*args, **kwargs)) if self.handle.is_async else self.handle(*args, **kwargs)
            )
        backend = self.backend
        records: TaskRecords = backend.records
        lease = backend.lease_ms
        queue = (request.delivery_info or {}).get("routing_key") or self.handle.default_options.queue or DEFAULT_QUEUE
        claim_args = (request.id, LEASES.token(), lease, lambda: self._claim_defaults(queue))
        try:
            claim = records.claim(*claim_args)
        except backend.connection_errors:  # Redis blinked: retry under Celery's backend policy, as a result would
            claim = backend.ensure(records.claim, claim_args)
        if claim.verdict == "busy":
            wait_s = claim.busy_for_s + REDELIVERY_MARGIN_S
            records.defer(request.id, time.time() + wait_s, self._message(args, kwargs, queue, request.retries or 0))
            log.info("taskservice: task %s is running elsewhere; its duplicate waits %.1f s", request.id, wait_s)
            raise Ignore()
        if claim.verdict == "conflict":
            assert claim.unique_key is not None
            raise TaskConflict(claim.unique_key, claim.holder)
        if claim.verdict != "run":
            log.info("taskservice: task %s is already %s; not run again", request.id, claim.verdict)
            raise Ignore()

        info = AttemptInfo(
            request.id, self.name, claim.attempts, claim.max_retries, claim.retry_backoff_s, claim.timeout_s
        )
        LEASES.hold(records, request.id, lease)
        reporter_token = current_reporter.set(self._reporter(request.id))
        failure: BaseException | None = None
        try:
            with attempt_scope(info, claim.headers):
                value = (
                    _LOOP.run(self.handle.func(*args, **kwargs))
                    if self.handle.is_async
                    else self.handle.func(*args, **kwargs)
                )
            outcome = attempts.succeeded(info, value)
        except SoftTimeLimitExceeded as exc:
            outcome, failure = attempts.timed_out(info, exception=exc), exc
        except (Exception, asyncio.CancelledError) as exc:  # every exception of a task is recorded on it
            outcome, failure = attempts.failed(info, exc), exc
        finally:
            current_reporter.reset(reporter_token)
            LEASES.release(request.id)
        # The result backend stores the core's words for the record (error, traceback), not its own.
        setattr(request, OUTCOME_REQUEST_ATTRIBUTE, outcome)
        if outcome.status is TaskStatus.SUCCEEDED:
            return outcome.result
        if failure is None:  # the body returned a value that cannot be stored: fail with the core's error
            failure = TypeError(outcome.error or "the result cannot be stored")
        if outcome.status is TaskStatus.RETRYING:
            delay_s = outcome.retry_delay_s or 0.0
            message = self._message(args, kwargs, queue, claim.attempts)
            setattr(request, RETRY_REQUEST_ATTRIBUTE, (time.time() + delay_s, message))
            raise Retry(exc=failure, when=round(delay_s, 3)) from failure
        raise failure

    def _claim_defaults(self, queue: str) -> ClaimDefaults:
        options = self.handle.default_options
        return ClaimDefaults(self.name, queue, options.max_retries, options.retry_backoff, options.timeout)

    def _message(self, args: tuple[Any, ...], kwargs: dict[str, Any], queue: str, retries: int) -> str:
        """This task's message again, with the time limit it was sent with (a retry, a parked duplicate)."""
        _hard, soft = self.request.timelimit or (None, None)
        return task_message(self.request.id, self.name, args, kwargs, queue=queue, timeout_s=soft, retries=retries)

    def _reporter(self, task_id: str) -> Any:
        def report(percent: float, message: str | None) -> None:
            self.update_state(task_id=task_id, state=PROGRESS, meta={"progress": percent, "message": message})

        return report


def register_tasks(app: Any, handles: Iterable[Task[..., Any]]) -> None:
    """Register each ``@task`` on ``app`` under its own name (what ``celery inspect registered`` shows)."""
    for handle in handles:
        if handle.name in app.tasks:
            continue
        namespace = {
            "name": handle.name,
            "handle": handle,
            "queue": handle.default_options.queue,
            "__module__": handle.func.__module__,
            "__doc__": handle.func.__doc__,
        }
        app.register_task(type(f"RecordedTask[{handle.name}]", (RecordedTask,), namespace))
