"""``FastAPITaskService``: tasks run in the API process, on its event loop and on taskservice's own threads.

A run (``ServiceRun``) has one home event loop. ``await service.start()`` (the FastAPI lifespan)
makes the app's loop home; code that enqueues before any start, with or without a loop of its
own (a script, a sync test, a worker thread), gets a home loop on a daemon thread started on
first use. Async tasks run on the home loop (so they can share the app's async clients), sync
tasks on a bounded pool of taskservice's own threads, never the server's request threads.

Inside a request (``TaskServiceMiddleware``) a task starts once the response has been sent,
but the runner owns it: a client that disconnects, a middleware or another task's failure
cannot cancel it.

Async verbs never block the loop: with ``memory://`` they work in place; with ``sqlite://``,
``aenqueue`` hands its insert to the store's writer thread, which commits concurrent calls
together (each caller resumes after the commit that holds its row), and reads go to a thread.
``drain()`` waits on what this process has accepted and not seen end, without polling the store.

Stopping (``await stop()`` / ``close()``): new work is refused with ``ServiceStopped`` (a
later ``start()`` resumes), running tasks get ``shutdown_grace_s``, whatever is cut off ends
``failed`` (``TaskInterrupted``). With ``sqlite://`` pending, scheduled and retrying tasks stay and
the next run adopts them; with ``memory://`` nothing outlives the process, so they end ``failed``
(interrupted) instead of staying pending or scheduled forever.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import importlib
import logging
import threading
import weakref
from typing import ClassVar

from backends.inprocess.outcomes import utcnow
from backends.inprocess.run import LoopThread, ServiceRun
from backends.inprocess.runner import report_ended
from backends.inprocess.server_workers import several_workers
from backends.inprocess.settings import InProcessSettings
from backends.inprocess.store import open_task_store
from backends.inprocess.store.base import Admission, Ended, TaskStore
from taskservice.errors import ServiceStopped, UnsafeConfiguration
from taskservice.models import TaskResult, TaskStats, TaskStatus
from taskservice.request_scope import defer_until_response_sent
from taskservice.service import TaskCall, TaskQuery, TaskService
from taskservice.settings import TaskSettings

log = logging.getLogger("taskservice")


class FastAPITaskService(TaskService):
    """Runs tasks in this process; records go to the ``TASK_STORE_URL`` store (``sqlite://`` or ``memory://``)."""

    backend_name: ClassVar[str] = "fastapi"
    settings_class: ClassVar[type[TaskSettings]] = InProcessSettings
    settings: InProcessSettings
    cancels_running_tasks: ClassVar[bool] = False  # a running thread cannot be stopped safely
    runs_tasks_in_this_process: ClassVar[bool] = True

    def __init__(self, settings: TaskSettings | None = None, *, heartbeat_interval_s: float = 5.0) -> None:
        super().__init__(settings)
        self.heartbeat_interval_s = heartbeat_interval_s  # how often a run says it lives and looks for dead ones
        self.store: TaskStore = open_task_store(self.settings)
        self._store_blocks = self.store.keeps_tasks_across_restarts  # SQLite: I/O and other processes' locks
        self._lifecycle = threading.RLock()
        self._run: ServiceRun | None = None
        self._stopped = False
        self._modules_imported = False
        self._close_at_exit_registered = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self._stopped and self._run is None

    async def start(self) -> None:
        """Make the running loop home (lifespan start-up); ``UnsafeConfiguration`` for memory:// in several workers."""
        loop = asyncio.get_running_loop()
        with self._lifecycle:
            if self._run is not None and self._run.usable:
                return  # already running (on this loop, or on the thread a script started)
            self._forget_dead_run()
            self._prepare_run()
            run = self._new_run(loop, None)
            run.begin()
            self._run, self._stopped = run, False

    async def stop(self) -> None:
        """Stop taking work, give running tasks ``shutdown_grace_s``, record what is cut off (lifespan shutdown)."""
        with self._lifecycle:
            run, self._run, self._stopped = self._run, None, True
        if run is None:
            return
        grace_s = self.settings.shutdown_grace_s
        if run.loop is asyncio.get_running_loop():
            run.accepting = False
            await run.shutdown(grace_s)
        else:
            await asyncio.to_thread(run.close, grace_s)

    def close(self) -> None:
        """``stop`` for synchronous code (scripts, tests)."""
        with self._lifecycle:
            run, self._run, self._stopped = self._run, None, True
        if run is not None:
            run.close(self.settings.shutdown_grace_s)

    def _new_run(self, loop: asyncio.AbstractEventLoop, loop_thread: LoopThread | None) -> ServiceRun:
        return ServiceRun(self.store, self.settings, self.heartbeat_interval_s, self._prepare, loop, loop_thread)

    def _active_run(self) -> ServiceRun:
        run = self._run
        if run is not None and run.usable:
            return run
        with self._lifecycle:
            if self._run is not None and self._run.usable:
                return self._run
            self._forget_dead_run()
            if self._stopped:
                raise ServiceStopped(
                    "the task service is stopped (its lifespan ended or close() was called): "
                    "start it again with `await service.start()` or create a new one"
                )
            self._prepare_run()
            loop_thread = LoopThread()
            run = self._new_run(loop_thread.loop, loop_thread)
            try:
                asyncio.run_coroutine_threadsafe(run.begin_async(), loop_thread.loop).result(timeout=60)
            except BaseException:
                loop_thread.stop()
                raise
            self._run = run
            if not self._close_at_exit_registered:
                self._close_at_exit_registered = True
                atexit.register(_close_at_exit, weakref.ref(self))
            return run

    def _prepare_run(self) -> None:
        """Checks and imports before a run starts (caller holds the lifecycle lock)."""
        if not self.store.keeps_tasks_across_restarts:
            workers = several_workers()
            if workers is not None:
                raise UnsafeConfiguration(
                    f"TASK_STORE_URL=memory:// cannot work with several server worker processes ({workers}): "
                    "each would see only its own tasks. Use TASK_STORE_URL=sqlite:///PATH (the default, shared "
                    "by the workers of one machine), TASK_BACKEND=celery, or a single worker."
                )
        if not self._modules_imported:
            self._modules_imported = True
            for name in self.settings.module_names:
                _import_task_module(name)

    def _forget_dead_run(self) -> None:
        """A run whose home loop closed without a stop: record its cut-off tasks (caller holds the lock)."""
        run = self._run
        if run is not None and not run.usable:
            self._run = None
            run.close(0.0)

    # -- submitting ------------------------------------------------------------------------

    def _submit(self, call: TaskCall) -> None:
        run = self._active_run()
        admitted = self.store.insert(call)  # ServiceStopped if a stop ended the run meanwhile
        self._admit(run, call, admitted)

    async def _asubmit(self, call: TaskCall) -> None:
        if not self._store_blocks:  # memory://: nothing here waits for I/O
            self._submit(call)
            return
        run = self._active_run()
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        context = contextvars.copy_context()  # the caller's request scope: start after its response

        def done(result: Admission | Ended | BaseException) -> None:
            if isinstance(result, BaseException):
                if not committed.done():
                    committed.set_exception(result)
                return
            context.run(self._admit, run, call, result)  # even if the caller stopped waiting
            if not committed.done():
                committed.set_result(None)

        self.store.submit_insert(call, loop, done)
        await committed

    def _admit(self, run: ServiceRun, call: TaskCall, admitted: Admission | Ended) -> None:
        """A recorded call: tracked for ``drain``, then started (after the response, inside a request)."""
        if admitted is not Admission.READY:
            if isinstance(admitted, Ended):  # its dependency had already failed: it ended at once
                report_ended([admitted])
            else:  # it waits: the transition that ends its dependency starts it, or fails it
                run.outstanding.add(call.id, call.task.name)
            return
        run.outstanding.add(call.id, call.task.name, call.run_at)
        if not defer_until_response_sent(lambda: self._hand_over(run, call)):
            self._hand_over(run, call)

    def _hand_over(self, run: ServiceRun, call: TaskCall) -> None:
        """Start a recorded call on ``run``, or on the run that replaced it (a stop and a start came between)."""
        if not run.accepting:
            current = self._run
            if current is not None and current.usable:
                run = current
        run.start_call(call)  # a run that stopped records what becomes of the call

    # -- reading and changing --------------------------------------------------------------

    def _read(self, task_id: str) -> TaskResult | None:
        self._recover_on_first_use()
        return self.store.get(task_id)

    async def _aread(self, task_id: str) -> TaskResult | None:
        if self._store_blocks:
            return await asyncio.to_thread(self._read, task_id)
        return self._read(task_id)

    def _cancel(self, task_id: str) -> bool | None:
        self._recover_on_first_use()
        cancelled = self.store.cancel(task_id, utcnow())
        run = self._run
        ended = self.store.take_ended()  # the tasks that waited on it, and anything a recovery ended
        if run is None:
            report_ended(ended)
            return cancelled
        run.runner.report_ended(ended)
        if cancelled:
            run.outstanding.discard([task_id])
            if run.usable:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile; the timer is gone with it
                    run.scheduler.disarm(task_id)
        return cancelled

    async def _acancel(self, task_id: str) -> bool | None:
        if self._store_blocks:
            return await asyncio.to_thread(self._cancel, task_id)
        return self._cancel(task_id)

    def _list(self, query: TaskQuery) -> list[TaskResult]:
        self._recover_on_first_use()
        return self.store.list_tasks(query)

    async def _alist(self, query: TaskQuery) -> list[TaskResult]:
        if self._store_blocks:
            return await asyncio.to_thread(self._list, query)
        return self._list(query)

    def stats(self) -> TaskStats:
        """Counts by status from the store itself (a GROUP BY; counters for memory://)."""
        self._recover_on_first_use()
        return self.store.stats()

    async def astats(self) -> TaskStats:
        if self._store_blocks:
            return await asyncio.to_thread(self.stats)
        return self.stats()

    def _retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        self._recover_on_first_use()
        return self.store.retry_source(task_id)

    def _link_retry(self, original_id: str, retry_id: str) -> None:
        self.store.link_retry(original_id, retry_id)

    def _recover_on_first_use(self) -> None:
        """A shared store is recovered when a process first uses it, reads included."""
        if self._run is None and not self._stopped and self.store.keeps_tasks_across_restarts:
            self._active_run()

    # -- draining --------------------------------------------------------------------------

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing this process accepted is outstanding (tasks enqueued by tasks included).

        Pending, running, retrying and ``after=``-waiting tasks count, and scheduled ones due within
        ``timeout_s``; ``TimeoutError`` naming what is left. From the home loop's own thread use
        ``await adrain()``: blocking that loop would stop the very tasks it waits for.
        """
        self._recover_on_first_use()  # a fresh process on a shared file: what it adopts counts too
        run = self._run
        if run is None:
            return
        if run.on_home_thread:
            raise RuntimeError("drain() on the service's own event loop would block it: use `await service.adrain()`")
        run.outstanding.wait(timeout_s, self.store.unfinished)

    async def adrain(self, timeout_s: float = 30.0) -> None:
        """``drain`` for async code: the loop keeps running the tasks it waits for."""
        if self._run is None and not self._stopped and self._store_blocks:
            await asyncio.to_thread(self._recover_on_first_use)
        run = self._run
        if run is not None:
            await run.outstanding.await_idle(timeout_s, self.store.unfinished)


def _import_task_module(name: str) -> None:
    """Import a TASK_MODULES entry so its tasks (and periodic tasks) are registered."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(f"{exc.name}.")):
            raise  # the module exists but something it imports does not: a real error
        log.warning("taskservice: TASK_MODULES names %r, which cannot be imported; its tasks are not registered", name)


def _close_at_exit(ref: weakref.ref[FastAPITaskService]) -> None:
    service = ref()
    if service is not None:
        service.close()
