"""``InProcessRunner``: runs claimed tasks on the home event loop (async) and on its own threads (sync).

Everything here runs on the home loop's thread, except ``dispatch`` (any thread) and the body
of a sync task (a pool thread). Per task: claim it in the store (in batches), run one attempt
in a fresh ``contextvars.Context`` with decoded copies of its arguments, then record the
outcome (in batches, once per loop iteration). How an attempt ended, and whether and when it is
retried, is the attempt core's decision (``taskservice.attempts``), as on every backend.

Timeouts: an async attempt past ``timeout`` is cancelled; a sync one cannot be, so its failure
is recorded at the deadline (with the thread's stack) and the thread finishes in the
background without touching the record. Such threads stop counting against
``thread_concurrency`` (up to that many of them), so a few stuck tasks cannot stall the rest.
A timed-out attempt is a failed attempt: it is retried while retries remain, like any other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from backends.inprocess.outcomes import AttemptTimedOut, thread_stack, utcnow, within
from backends.inprocess.settings import InProcessSettings
from backends.inprocess.store.base import INTERRUPTED_BY_STOP, TaskStore
from backends.inprocess.threads import TaskThreadPool
from taskservice import attempts
from taskservice.attempts import AttemptInfo, Outcome, attempt_scope
from taskservice.models import TaskStatus
from taskservice.service import TaskCall
from taskservice.task_context import current_reporter

log = logging.getLogger("taskservice")

STORE_RETRY_DELAY_S = 1.0  # after the store failed to claim or record, try again this much later
# Under a stream of calls from other threads (a script, sync endpoints), calls are gathered
# this long before the loop takes them: one wake-up, one GIL hand-over and one claim per batch
# instead of per call (a claim in SQLite is a commit). A lone call is taken at once.
INBOX_BATCH_WINDOW_S = 0.005
INBOX_STREAM_SIZE = 8  # a drain that found this many calls means a stream is coming
# The last resort when the attempt core itself raised while deciding how an attempt ended.
UNDECIDED = "TaskError: how this attempt ended could not be determined (see the log)"


@dataclasses.dataclass(eq=False, slots=True)
class _ThreadAttempt:
    call: TaskCall
    attempt: int
    info: AttemptInfo
    thread_id: int | None = None
    settled: bool = False  # its outcome is decided (finished, timed out or cut off); guarded by lock
    timed_out: bool = False
    timer: asyncio.TimerHandle | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class InProcessRunner:
    """Runs tasks for one service run, bounded by ``async_concurrency`` and ``thread_concurrency``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: TaskStore, settings: InProcessSettings) -> None:
        self._loop = loop
        self._store = store
        self._async_limit = settings.async_concurrency
        self._thread_limit = settings.thread_concurrency
        # Twice the limit: threads of timed-out tasks may still run, up to thread_concurrency of them.
        self._threads = TaskThreadPool(2 * settings.thread_concurrency)
        self._loop_thread_id: int | None = None
        self.accepting = True
        self._cutting_off = False
        # Calls from other threads wait in the inbox; one wake-up drains many of them.
        self._inbox: collections.deque[TaskCall] = collections.deque()
        self._inbox_signalled = False
        self._inbox_window_s = 0.0  # INBOX_BATCH_WINDOW_S while calls stream in
        self._ready_async: collections.deque[TaskCall] = collections.deque()
        self._ready_sync: collections.deque[TaskCall] = collections.deque()
        self._pump_scheduled = False
        self._async_attempts: dict[str, asyncio.Task[None]] = {}  # by task id: one attempt at a time
        self._thread_attempts: set[_ThreadAttempt] = set()
        self._threads_busy = 0  # including timed-out threads that have not returned yet
        self._threads_abandoned = 0  # timed out, still running: they do not count against the limit
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self._outcomes: list[tuple[Outcome, TaskCall | None]] = []  # call: retry it once recorded
        self._flush_scheduled = False

    def bind(self) -> None:
        """Called on the home loop's thread once, before any dispatch."""
        self._loop_thread_id = threading.get_ident()

    # -- intake (any thread) --------------------------------------------------------------

    def dispatch(self, call: TaskCall) -> None:
        """Run ``call`` as soon as a slot is free; callable from any thread."""
        if threading.get_ident() == self._loop_thread_id:
            self.dispatch_here(call)
            return
        self._inbox.append(call)
        if not self._inbox_signalled:
            self._inbox_signalled = True
            try:
                if self._inbox_window_s:
                    self._loop.call_soon_threadsafe(self._loop.call_later, self._inbox_window_s, self._drain_inbox)
                else:
                    self._loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:  # the loop is closed: the stop decided what becomes of it
                self._abandon_all(list(self._inbox))
                self._inbox.clear()

    def dispatch_here(self, call: TaskCall) -> None:
        """``dispatch`` on the home loop's thread."""
        if not self.accepting:
            self._store.abandon(call.id, utcnow())
            return
        (self._ready_async if call.task.is_async else self._ready_sync).append(call)
        self._schedule_pump()

    def forget(self, task_id: str) -> None:
        """A cancelled task: drop its retry timer (its claim would fail anyway)."""
        handle = self._retry_timers.pop(task_id, None)
        if handle is not None:
            handle.cancel()

    def _drain_inbox(self) -> None:
        self._inbox_signalled = False  # before draining: a call appended from now on signals again
        inbox = self._inbox
        drained = 0
        while inbox:
            self.dispatch_here(inbox.popleft())
            drained += 1
        self._inbox_window_s = INBOX_BATCH_WINDOW_S if drained >= INBOX_STREAM_SIZE else 0.0

    # -- claiming and starting ------------------------------------------------------------

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self.accepting:
            return
        async_slots = min(len(self._ready_async), self._async_limit - len(self._async_attempts))
        counted = self._threads_busy - min(self._threads_abandoned, self._thread_limit)
        sync_slots = min(len(self._ready_sync), self._thread_limit - counted)
        batch = [self._ready_async.popleft() for _ in range(max(async_slots, 0))]
        batch += [self._ready_sync.popleft() for _ in range(max(sync_slots, 0))]
        if not batch:
            return
        try:
            claimed = self._store.claim([call.id for call in batch], utcnow())
        except Exception:
            log.exception("taskservice: could not claim %d task(s); trying again", len(batch))
            for call in reversed(batch):
                (self._ready_async if call.task.is_async else self._ready_sync).appendleft(call)
            self._loop.call_later(STORE_RETRY_DELAY_S, self._schedule_pump)
            return
        for call in batch:
            attempt = claimed.get(call.id)
            if attempt is None:
                continue  # cancelled, or another process claimed it: it must not run here
            if call.task.is_async:
                task = self._loop.create_task(self._run_async(call, attempt), context=contextvars.Context())
                self._async_attempts[call.id] = task
            else:
                self._start_thread(call, attempt)
        if len(claimed) < len(batch):
            self._schedule_pump()  # unclaimed calls left slots free

    # -- async attempts -------------------------------------------------------------------

    async def _run_async(self, call: TaskCall, attempt: int) -> None:
        current_reporter.set(functools.partial(self._store.report_progress, call.id, attempt))
        info = call.attempt_info(attempt)
        timeout = call.options.timeout
        try:
            with attempt_scope(info, call.headers):
                args, kwargs = call.arguments.decoded_copy()
                if timeout is None:
                    value = await call.task.func(*args, **kwargs)
                else:
                    value = await within(call.task.func(*args, **kwargs), timeout)
            outcome = decided(info, lambda: attempts.succeeded(info, value))
        except AttemptTimedOut as exc:
            outcome = decided(info, lambda: attempts.timed_out(info, exception=exc))
        except asyncio.CancelledError as exc:
            if self._cutting_off:
                outcome = decided(info, lambda: attempts.interrupted(info, INTERRUPTED_BY_STOP))
            else:  # cancelled from inside the task: a failure like any other
                outcome = decided(info, lambda: attempts.failed(info, exc))
        except BaseException as exc:  # every exception of a task is recorded on it
            outcome = decided(info, lambda: attempts.failed(info, exc))
        finally:
            del self._async_attempts[call.id]
        self._settle(call, outcome)

    # -- sync attempts --------------------------------------------------------------------

    def _start_thread(self, call: TaskCall, attempt: int) -> None:
        job = _ThreadAttempt(call, attempt, call.attempt_info(attempt))
        self._threads_busy += 1
        self._thread_attempts.add(job)
        context = contextvars.Context()
        try:
            self._threads.submit(functools.partial(context.run, self._run_in_thread, job))
        except RuntimeError as exc:  # the pool is shut down
            self._threads_busy -= 1
            self._thread_attempts.discard(job)
            job.settled = True
            self._settle(call, attempts.failed(job.info, exc, retryable=False))
            return
        if call.options.timeout is not None:
            job.timer = self._loop.call_later(call.options.timeout, self._thread_timed_out, job)

    def _run_in_thread(self, job: _ThreadAttempt) -> None:
        """On a pool thread, in the attempt's own context."""
        job.thread_id = threading.get_ident()
        call = job.call
        info = job.info
        outcome: Outcome | None = None
        try:
            current_reporter.set(functools.partial(self._store.report_progress, call.id, job.attempt))
            failure: BaseException | None = None
            value: Any = None
            try:
                with attempt_scope(info, call.headers):
                    args, kwargs = call.arguments.decoded_copy()
                    value = call.task.func(*args, **kwargs)
            except BaseException as exc:  # every exception of a task is recorded on it
                failure = exc
            with job.lock:  # the timeout, on the loop, may have decided this attempt already
                if not job.settled:
                    job.settled = True
                    if failure is None:
                        outcome = decided(info, lambda: attempts.succeeded(info, value))
                    else:
                        outcome = decided(info, lambda: attempts.failed(info, failure))
        finally:  # whatever happened, the loop learns the thread is free again
            with contextlib.suppress(RuntimeError):  # a closed loop: the stop already recorded this task
                self._loop.call_soon_threadsafe(self._thread_done, job, outcome)

    def _thread_done(self, job: _ThreadAttempt, outcome: Outcome | None) -> None:
        self._threads_busy -= 1
        if job.timed_out:
            self._threads_abandoned -= 1
        self._thread_attempts.discard(job)
        if job.timer is not None:
            job.timer.cancel()
        if outcome is None:  # timed out or cut off earlier: the record already says so
            self._schedule_pump()
            return
        self._settle(job.call, outcome)

    def _thread_timed_out(self, job: _ThreadAttempt) -> None:
        with job.lock:
            if job.settled:
                return
            job.settled = job.timed_out = True
            outcome = attempts.timed_out(job.info, stack=thread_stack(job.thread_id))
        self._threads_abandoned += 1
        self._settle(job.call, outcome)

    # -- outcomes -------------------------------------------------------------------------

    def _settle(self, call: TaskCall, outcome: Outcome) -> None:
        retry = call if outcome.status is TaskStatus.RETRYING else None
        self._outcomes.append((outcome, retry))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        self._schedule_pump()

    def _flush(self) -> None:
        """Record the outcomes gathered this loop iteration in one go, then arm their retries."""
        self._flush_scheduled = False
        pending, self._outcomes = self._outcomes, []
        if not pending:
            return
        try:
            self._store.record_outcomes([outcome for outcome, _ in pending])
        except Exception:
            log.exception("taskservice: could not record %d task outcome(s); trying again", len(pending))
            self._outcomes[:0] = pending
            self._loop.call_later(STORE_RETRY_DELAY_S, self._flush)
            return
        for outcome, retry in pending:
            if retry is not None and self.accepting:  # armed only once the record says retrying
                delay_s = outcome.retry_delay_s or 0.0
                self._retry_timers[retry.id] = self._loop.call_later(delay_s, self._retry_due, retry)

    def _retry_due(self, call: TaskCall) -> None:
        self._retry_timers.pop(call.id, None)
        self.dispatch_here(call)

    # -- shutdown -------------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Take nothing new; give running attempts ``grace_s``; cut off the rest as interrupted."""
        self.accepting = False
        for handle in self._retry_timers.values():
            handle.cancel()
        self._retry_timers.clear()  # their records say retrying: ending the run fails them
        self._abandon_all([*self._inbox, *self._ready_async, *self._ready_sync])
        self._inbox.clear()
        self._ready_async.clear()
        self._ready_sync.clear()
        deadline = self._loop.time() + grace_s
        while self._loop.time() < deadline and (
            self._async_attempts or any(not job.settled for job in self._thread_attempts)
        ):
            await asyncio.sleep(min(0.02, max(deadline - self._loop.time(), 0)))
        self._cutting_off = True
        running = list(self._async_attempts.values())
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=1.0)
        for job in self._thread_attempts:
            with job.lock:
                if job.settled:
                    continue
                job.settled = True
            self._settle(job.call, attempts.interrupted(job.info, INTERRUPTED_BY_STOP))
        self._flush()
        self._threads.shutdown()

    def _abandon_all(self, calls: list[TaskCall]) -> None:
        now = utcnow()
        for call in calls:
            try:
                self._store.abandon(call.id, now)
            except Exception:
                log.exception("taskservice: could not record that task %s was dropped", call.id)


def decided(info: AttemptInfo, decide: Callable[[], Outcome]) -> Outcome:
    """``decide()``, the attempt core's verdict; if even that raises, a final failure, so no slot or key leaks."""
    try:
        return decide()
    except BaseException:
        log.exception("taskservice: could not decide how attempt %d of task %s ended", info.attempt, info.task_id)
        return Outcome(info.task_id, info.attempt, TaskStatus.FAILED, utcnow(), error=UNDECIDED)
