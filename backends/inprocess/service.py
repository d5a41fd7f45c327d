"""``FastAPITaskService``: tasks run in the API process, on its event loop and on taskservice's own threads.

A run has one home event loop. ``await service.start()`` (the FastAPI lifespan) makes the
app's loop home; code that enqueues before any start, with or without a loop of its own (a
script, a sync test, a worker thread), gets a home loop on a daemon thread started on first
use. Async tasks run on the home loop (so they can share the app's async clients), sync
tasks on a bounded pool of taskservice's own threads, never the server's request threads.

Inside a request (``TaskServiceMiddleware``) a task starts once the response has been sent,
but the runner owns it: a client that disconnects, a middleware or another task's failure
cannot cancel it.

Stopping (``await stop()`` / ``close()``): new work is refused with ``ServiceStopped`` (a
later ``start()`` resumes), running tasks get ``shutdown_grace_s``, whatever is cut off ends
``failed`` (``TaskInterrupted``). With ``sqlite://`` pending and scheduled tasks stay and the
next run adopts them; with ``memory://`` nothing outlives the process, so they end ``failed``
(interrupted) instead of staying pending or scheduled forever.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import logging
import threading
import weakref
from typing import ClassVar

from backends.inprocess.outcomes import utcnow
from backends.inprocess.process_identity import RunOwner
from backends.inprocess.runner import InProcessRunner
from backends.inprocess.scheduler import InProcessScheduler, report_ended
from backends.inprocess.server_workers import several_workers
from backends.inprocess.settings import InProcessSettings
from backends.inprocess.store import open_task_store
from backends.inprocess.store.base import TaskStore
from taskservice.errors import ServiceStopped, UnsafeConfiguration
from taskservice.models import TaskResult, TaskStatus
from taskservice.request_scope import defer_until_response_sent
from taskservice.service import TaskCall, TaskQuery, TaskService
from taskservice.settings import TaskSettings

log = logging.getLogger("taskservice")


class _LoopThread:
    """A daemon thread running an event loop: the home loop when no app loop was given."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="taskservice-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            leftovers = asyncio.all_tasks(self.loop)  # e.g. a task that ignored its cancellation
            for leftover in leftovers:
                leftover.cancel()
            if leftovers:
                self.loop.run_until_complete(asyncio.wait(leftovers, timeout=1.0))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout_s)


class _Run:
    """One start of the service: its home loop, runner, scheduler and owner token in the store."""

    def __init__(
        self, service: FastAPITaskService, loop: asyncio.AbstractEventLoop, loop_thread: _LoopThread | None
    ) -> None:
        self.loop = loop
        self.loop_thread = loop_thread
        self.store = service.store
        self.owner = RunOwner.for_this_process()
        self.runner = InProcessRunner(loop, service.store, service.settings)
        self.scheduler = InProcessScheduler(
            loop, self.runner, service.store, service.settings, service.heartbeat_interval_s, service._prepare
        )
        self.accepting = True

    @property
    def usable(self) -> bool:
        return self.accepting and not self.loop.is_closed()

    def begin(self) -> None:
        """On the home loop's thread: recover what earlier runs left, then start the timers."""
        self.runner.bind()
        adopted = self.store.begin_run(self.owner)
        report_ended(self.store.take_ended())
        self.scheduler.start(adopted)

    async def begin_async(self) -> None:
        self.begin()

    def start_call(self, call: TaskCall) -> None:
        """Hand a recorded call to the runner (now) or the scheduler (at ``run_at``); any thread."""
        try:
            if call.run_at is None:
                self.runner.dispatch(call)
            else:
                self.scheduler.arm(call)
        except RuntimeError:  # the home loop closed meanwhile
            self.store.abandon(call.id, utcnow())

    async def shutdown(self, grace_s: float) -> None:
        self.accepting = False
        await self.scheduler.shutdown()
        await self.runner.shutdown(grace_s)
        self.end()

    def end(self) -> None:
        """Record what the stop cut off, and let the store's connection go (a later read reopens it)."""
        try:
            report_ended(self.store.end_run(utcnow()))
        finally:
            self.store.close()

    def close(self, grace_s: float) -> None:
        """``shutdown`` from synchronous code, whatever thread it runs on."""
        self.accepting = False
        loop_thread = self.loop_thread
        if self.loop.is_closed() or not self.loop.is_running():
            self.end()  # no loop left to wait on: record the cut-off tasks now
            if loop_thread is not None:
                loop_thread.stop()
            return
        if _on_loop_thread(self.loop):  # called synchronously on the home loop: it cannot wait for itself
            task = self.loop.create_task(self.shutdown(0.0))
            if loop_thread is not None:
                task.add_done_callback(lambda _task: loop_thread.stop())
            return
        try:
            asyncio.run_coroutine_threadsafe(self.shutdown(grace_s), self.loop).result(timeout=grace_s + 30)
        finally:
            if loop_thread is not None:
                loop_thread.stop()


class FastAPITaskService(TaskService):
    """Runs tasks in this process; records go to the ``TASK_STORE_URL`` store (``memory://`` or ``sqlite://``)."""

    backend_name: ClassVar[str] = "fastapi"
    settings_class: ClassVar[type[TaskSettings]] = InProcessSettings
    settings: InProcessSettings
    cancels_running_tasks: ClassVar[bool] = False  # a running thread cannot be stopped safely

    def __init__(self, settings: TaskSettings | None = None, *, heartbeat_interval_s: float = 5.0) -> None:
        super().__init__(settings)
        self.heartbeat_interval_s = heartbeat_interval_s  # how often a run says it lives and looks for dead ones
        self.store: TaskStore = open_task_store(self.settings)
        self._lifecycle = threading.RLock()
        self._run: _Run | None = None
        self._stopped = False
        self._modules_imported = False
        self._close_at_exit_registered = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the running loop home (lifespan start-up); ``UnsafeConfiguration`` for memory:// in several workers."""
        loop = asyncio.get_running_loop()
        with self._lifecycle:
            if self._run is not None and self._run.usable:
                return  # already running (on this loop, or on the thread a script started)
            self._forget_dead_run()
            self._prepare_run()
            run = _Run(self, loop, None)
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

    def _active_run(self) -> _Run:
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
            loop_thread = _LoopThread()
            run = _Run(self, loop_thread.loop, loop_thread)
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
                    "each would see only its own tasks. Use TASK_STORE_URL=sqlite:///PATH (shared by the "
                    "workers of one machine), TASK_BACKEND=celery, or a single worker."
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

    # -- TaskService -----------------------------------------------------------------------

    def _submit(self, call: TaskCall) -> None:
        run = self._active_run()
        self.store.insert(call)  # ServiceStopped if a stop ended the run meanwhile
        if not defer_until_response_sent(lambda: self._hand_over(run, call)):
            self._hand_over(run, call)

    def _hand_over(self, run: _Run, call: TaskCall) -> None:
        """Start a recorded call on ``run``, or on the run that replaced it (a stop and a start came between)."""
        if not run.accepting:
            current = self._run
            if current is not None and current.usable:
                run = current
        run.start_call(call)  # a run that stopped records what becomes of the call

    def _read(self, task_id: str) -> TaskResult | None:
        self._recover_on_first_use()
        return self.store.get(task_id)

    def _cancel(self, task_id: str) -> bool | None:
        self._recover_on_first_use()
        cancelled = self.store.cancel(task_id, utcnow())
        run = self._run
        if cancelled and run is not None and run.usable:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile; the timer is gone with it
                run.scheduler.disarm(task_id)
        return cancelled

    def _list(self, query: TaskQuery) -> list[TaskResult]:
        self._recover_on_first_use()
        return self.store.list_tasks(query)

    def _retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        self._recover_on_first_use()
        return self.store.retry_source(task_id)

    def _link_retry(self, original_id: str, retry_id: str) -> None:
        self.store.link_retry(original_id, retry_id)

    def _recover_on_first_use(self) -> None:
        """A shared store is recovered when a process first uses it, reads included."""
        if self._run is None and not self._stopped and self.store.keeps_tasks_across_restarts:
            self._active_run()


def _import_task_module(name: str) -> None:
    """Import a TASK_MODULES entry so its tasks (and periodic tasks) are registered."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(f"{exc.name}.")):
            raise  # the module exists but something it imports does not: a real error
        log.warning("taskservice: TASK_MODULES names %r, which cannot be imported; its tasks are not registered", name)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _close_at_exit(ref: weakref.ref[FastAPITaskService]) -> None:
    service = ref()
    if service is not None:
        service.close()
