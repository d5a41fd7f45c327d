"""``InProcessRunner``: runs claimed tasks on the home event loop (async) and on its own threads (sync).

Everything here runs on the home loop's thread, except ``dispatch`` (any thread) and the body
of a sync task (a pool thread). Per task: claim it in the store (in batches), run one attempt
in a fresh ``contextvars.Context`` with decoded copies of its arguments, then record the
outcome (in batches, ``OutcomeRecorder``). Claims and outcomes go through the store's ``submit_*``
methods, so a store that can block (SQLite) never blocks the loop. How an attempt ended, and
whether and when it is retried, is the attempt core's decision (``taskservice.attempts``).

Timeouts: an async attempt past ``timeout`` is cancelled; a sync one cannot be, so its failure
is recorded at the deadline (with the thread's stack) and the thread finishes in the
background without touching the record. Until it returns, the task's unique_key stays held
and its next attempt (a timed-out attempt is retried while retries remain) does not start, so
two bodies of one task never overlap. Such threads stop counting against
``thread_concurrency`` (up to that many of them), so a few stuck tasks cannot stall the rest.
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
from datetime import datetime
from typing import Any

from backends.inprocess.outcomes import AttemptTimedOut, thread_stack, utcnow, within
from backends.inprocess.outstanding import Outstanding
from backends.inprocess.recorder import STORE_RETRY_DELAY_S, OutcomeRecorder, PendingOutcome
from backends.inprocess.settings import InProcessSettings
from backends.inprocess.store.base import INTERRUPTED_BY_STOP, Decided, Ended, TaskStore
from backends.inprocess.threads import TaskThreadPool
from taskservice import attempts
from taskservice.attempts import AttemptInfo, Outcome, attempt_scope
from taskservice.errors import BackendUnavailable, ServiceStopped
from taskservice.models import TaskStatus
from taskservice.service import TaskCall
from taskservice.task_context import current_reporter

log = logging.getLogger("taskservice")

# Under a stream of calls from other threads (a script, sync endpoints), calls are gathered
# this long before the loop takes them: one wake-up, one GIL hand-over and one claim per batch
# instead of per call. A lone call is taken at once.
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
    returned: bool = False  # the body has returned (on the loop: set by _thread_done)
    parked: TaskCall | None = None  # its next attempt, waiting for this thread to return
    timer: asyncio.TimerHandle | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class InProcessRunner:
    """Runs tasks for one service run, bounded by ``async_concurrency`` and ``thread_concurrency``."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, store: TaskStore, settings: InProcessSettings, outstanding: Outstanding
    ) -> None:
        self._loop = loop
        self._store = store
        self._outstanding = outstanding
        self._async_limit = settings.async_concurrency
        self._thread_limit = settings.thread_concurrency
        # Twice the limit: threads of timed-out tasks may still run, up to thread_concurrency of them.
        self._threads = TaskThreadPool(2 * settings.thread_concurrency)
        self._loop_thread_id: int | None = None
        self.accepting = True
        self._cutting_off = False
        self.start_later: Callable[[TaskCall], None] = self.dispatch_here  # at its run_at: the scheduler's arm
        # Calls from other threads wait in the inbox; one wake-up drains many of them.
        self._inbox: collections.deque[TaskCall] = collections.deque()
        self._inbox_signalled = False
        self._inbox_window_s = 0.0  # INBOX_BATCH_WINDOW_S while calls stream in
        self._ready_async: collections.deque[TaskCall] = collections.deque()
        self._ready_sync: collections.deque[TaskCall] = collections.deque()
        self._pump_scheduled = False
        self._claiming_async = 0  # claimed slots whose claim has not come back yet
        self._claiming_sync = 0
        self._async_attempts: dict[str, asyncio.Task[None]] = {}  # by task id: one attempt at a time
        self._thread_attempts: set[_ThreadAttempt] = set()
        self._lingering: dict[str, _ThreadAttempt] = {}  # timed out, thread still running, by task id
        self._threads_busy = 0  # including timed-out threads that have not returned yet
        self._threads_abandoned = 0  # timed out, still running: they do not count against the limit
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self._recorder = OutcomeRecorder(loop, store, self._written)

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
            self._abandon_all([call])
            return
        lingering = self._lingering.get(call.id)
        if lingering is not None:  # its previous attempt's thread still runs: start after it returns
            lingering.parked = call
            return
        (self._ready_async if call.task.is_async else self._ready_sync).append(call)
        self._schedule_pump()

    def start_ready(self, calls: list[TaskCall]) -> None:
        """Tasks released by their dependency (``after=``): now, or at their ``run_at``."""
        now = utcnow()
        for call in calls:
            self._outstanding.add(call.id, call.task.name, call.run_at)
            if call.run_at is not None and call.run_at > now:
                self.start_later(call)
            else:
                self.dispatch_here(call)

    def forget(self, task_id: str) -> None:
        """A cancelled task: drop its retry timer (its claim would fail anyway)."""
        handle = self._retry_timers.pop(task_id, None)
        if handle is not None:
            handle.cancel()

    def arm_retry(self, call: TaskCall, due_at: datetime) -> None:
        """Make the next attempt of a ``retrying`` task at ``due_at`` (adopted from a run that stopped)."""
        delay_s = max((due_at - utcnow()).total_seconds(), 0.0)
        self._retry_timers[call.id] = self._loop.call_later(delay_s, self._retry_due, call)

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
        async_slots = self._async_limit - len(self._async_attempts) - self._claiming_async
        counted = self._threads_busy - min(self._threads_abandoned, self._thread_limit)
        sync_slots = self._thread_limit - counted - self._claiming_sync
        batch = [self._ready_async.popleft() for _ in range(max(min(async_slots, len(self._ready_async)), 0))]
        async_count = len(batch)
        batch += [self._ready_sync.popleft() for _ in range(max(min(sync_slots, len(self._ready_sync)), 0))]
        if batch:
            self._claim(batch, async_count)

    def _claim(self, batch: list[TaskCall], async_count: int | None = None) -> None:
        if async_count is None:
            async_count = sum(1 for call in batch if call.task.is_async)
        self._claiming_async += async_count
        self._claiming_sync += len(batch) - async_count
        done = functools.partial(self._claimed, batch, async_count)
        try:
            self._store.submit_claim([call.id for call in batch], utcnow(), self._loop, done)
        except Exception as exc:  # ServiceStopped: the run ended meanwhile
            done(exc)

    def _claimed(self, batch: list[TaskCall], async_count: int, claimed: dict[str, int] | BaseException) -> None:
        self._claiming_async -= async_count
        self._claiming_sync -= len(batch) - async_count
        if isinstance(claimed, BaseException):
            self._claim_failed(batch, claimed)
            return
        gone = []
        for call in batch:
            attempt = claimed.get(call.id)
            if attempt is None:  # cancelled, finished, or another process claimed it: it must not run here
                gone.append(call.id)
            elif call.task.is_async:
                task = self._loop.create_task(self._run_async(call, attempt), context=contextvars.Context())
                self._async_attempts[call.id] = task
            else:
                self._start_thread(call, attempt)
        self._outstanding.discard(gone)
        self._schedule_pump()

    def _claim_failed(self, batch: list[TaskCall], error: BaseException) -> None:
        if isinstance(error, ServiceStopped):
            self._outstanding.discard([call.id for call in batch])
        elif len(batch) > 1:  # one record may spoil the claim of all: claim each on its own
            for call in batch:
                self._claim([call])
        elif isinstance(error, BackendUnavailable):
            log.error("taskservice: could not claim task %s; trying again: %s", batch[0].id, error)
            self._loop.call_later(STORE_RETRY_DELAY_S, self.dispatch_here, batch[0])
        else:  # the store refuses this record: it cannot run here (its record stays as it was)
            log.error("taskservice: the store refused to start task %s; it is not run", batch[0].id, exc_info=error)
            self._outstanding.discard([batch[0].id])

    # -- async attempts -------------------------------------------------------------------

    async def _run_async(self, call: TaskCall, attempt: int) -> None:
        current_reporter.set(functools.partial(self._store.report_progress, call.id, attempt))
        info = call.attempt_info(attempt)
        timeout = call.options.timeout
        try:
            try:
                with attempt_scope(info, call.headers):
                    args, kwargs = call.arguments.decoded_copy()
                    if timeout is None:
                        value = await call.task.func(*args, **kwargs)
                    else:
                        value = await within(call.task.func(*args, **kwargs), timeout)
                outcome = attempts.succeeded(info, value)
            except AttemptTimedOut as exc:
                outcome = attempts.timed_out(info, exception=exc)
            except asyncio.CancelledError as exc:
                if self._cutting_off:
                    outcome = attempts.interrupted(info, INTERRUPTED_BY_STOP)
                else:  # cancelled from inside the task: a failure like any other
                    outcome = attempts.failed(info, exc)
            except BaseException as exc:  # every exception of a task is recorded on it
                outcome = attempts.failed(info, exc)
        except BaseException:  # the attempt core itself raised: the last resort, so no slot leaks
            outcome = undecided(info)
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
                    try:
                        try:
                            if failure is None:
                                outcome = attempts.succeeded(info, value)
                            else:
                                outcome = attempts.failed(info, failure)
                        except BaseException as exc:  # the result could not be encoded, a hook raised
                            outcome = attempts.failed(info, exc)
                    except BaseException:
                        outcome = undecided(info)
        finally:  # whatever happened, the loop learns the thread is free again
            with contextlib.suppress(RuntimeError):  # a closed loop: the stop already recorded this task
                self._loop.call_soon_threadsafe(self._thread_done, job, outcome)

    def _thread_done(self, job: _ThreadAttempt, outcome: Outcome | None) -> None:
        self._threads_busy -= 1
        job.returned = True
        self._thread_attempts.discard(job)
        if job.timer is not None:
            job.timer.cancel()
        if job.timed_out:
            self._threads_abandoned -= 1
            self._lingering.pop(job.call.id, None)
            if job.call.options.unique_key is not None:  # its key was held for this thread: free it
                self._store.submit_release_keys([job.call.id], self._loop)
            if job.parked is not None:
                self.dispatch_here(job.parked)
        if outcome is None:  # timed out or cut off earlier: the record already says so
            self._schedule_pump()
            return
        self._settle(job.call, outcome)

    def _thread_timed_out(self, job: _ThreadAttempt) -> None:
        with job.lock:
            if job.settled:
                return
            job.settled = job.timed_out = True
            try:
                outcome = attempts.timed_out(job.info, stack=thread_stack(job.thread_id))
            except BaseException:
                outcome = undecided(job.info)
        self._threads_abandoned += 1
        self._lingering[job.call.id] = job
        self._settle(job.call, outcome, holds_key=lambda: not job.returned)

    # -- outcomes -------------------------------------------------------------------------

    def _settle(self, call: TaskCall, outcome: Outcome, holds_key: Callable[[], bool] | None = None) -> None:
        self._recorder.add(PendingOutcome(outcome, call, holds_key))
        self._schedule_pump()

    def _written(self, batch: list[PendingOutcome], decided_: Decided, stored: bool) -> None:
        """On the loop, once a batch of outcomes is stored: arm retries, start or end what waited on them."""
        finished = []
        for pending in batch:
            outcome = pending.outcome
            if stored and outcome.status is TaskStatus.RETRYING:
                if self.accepting:  # armed only once the record says retrying
                    delay_s = outcome.retry_delay_s or 0.0
                    self._retry_timers[outcome.task_id] = self._loop.call_later(delay_s, self._retry_due, pending.call)
            else:
                finished.append(outcome.task_id)
        self._outstanding.discard(finished)
        if decided_:
            self.report_ended(decided_.ended)
            self.start_ready(decided_.ready)

    def report_ended(self, ended: list[Ended]) -> None:
        """Tasks a store ended by itself (any thread): reported like any failure; ``drain`` forgets them."""
        if ended:
            report_ended(ended)
            self._outstanding.discard([task.task_id for task in ended])

    def _retry_due(self, call: TaskCall) -> None:
        self._retry_timers.pop(call.id, None)
        self.dispatch_here(call)

    # -- shutdown -------------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Take nothing new; give running attempts ``grace_s``; cut off the rest as interrupted."""
        self.accepting = False
        for handle in self._retry_timers.values():
            handle.cancel()
        self._retry_timers.clear()  # their records say retrying: the store's end_run decides
        self._abandon_all([*self._inbox, *self._ready_async, *self._ready_sync])
        self._inbox.clear()
        self._ready_async.clear()
        self._ready_sync.clear()
        deadline = self._loop.time() + grace_s
        while self._loop.time() < deadline and self._busy():
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
        self._recorder.flush()
        self._recorder.retry_now()
        deadline = self._loop.time() + 5.0  # what is recorded now is not marked interrupted by the stop
        while not self._recorder.idle and self._loop.time() < deadline:
            await asyncio.sleep(0.005)
            if self._recorder.in_flight == 0:
                self._recorder.flush()
                self._recorder.retry_now()
        self._recorder.abandon_retries()
        self._threads.shutdown()

    def _busy(self) -> bool:
        return bool(
            self._async_attempts
            or self._claiming_async
            or self._claiming_sync
            or any(not job.settled for job in self._thread_attempts)
            or self._recorder.in_flight
        )

    def _abandon_all(self, calls: list[TaskCall]) -> None:
        now = utcnow()
        for call in calls:
            try:
                self._store.abandon(call.id, now)
            except Exception:
                log.exception("taskservice: could not record that task %s was dropped", call.id)
        self._outstanding.discard([call.id for call in calls])
        self.report_ended(self._store.take_ended())


def report_ended(ended: list[Ended]) -> None:
    """Tasks a store ended by itself (a stop, a dead run, a failed dependency): one ERROR line each, and the hooks."""
    for task in ended:
        attempts.interrupted(AttemptInfo(task.task_id, task.name, task.attempt), task.error)


def undecided(info: AttemptInfo) -> Outcome:
    """The last resort when the attempt core itself raised: a final failure, so no slot or key leaks."""
    log.exception("taskservice: could not decide how attempt %d of task %s ended", info.attempt, info.task_id)
    return Outcome(info.task_id, info.attempt, TaskStatus.FAILED, utcnow(), error=UNDECIDED)
