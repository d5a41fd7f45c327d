"""One start of the in-process service (``ServiceRun``) and the home loop thread a script gets (``LoopThread``).

A run has one home event loop, its runner and scheduler, an owner token in the store, and the
``Outstanding`` set that ``drain()`` waits on. Stopping it: new work is refused, running tasks get
the grace period, whatever is cut off ends ``failed`` (interrupted), and the store records the end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from backends.inprocess.outcomes import utcnow
from backends.inprocess.outstanding import Outstanding
from backends.inprocess.process_identity import RunOwner
from backends.inprocess.runner import InProcessRunner
from backends.inprocess.scheduler import InProcessScheduler
from backends.inprocess.settings import InProcessSettings
from backends.inprocess.store.base import TaskStore
from taskservice.service import TaskCall

Prepare = Callable[[Any, datetime | None, tuple[Any, ...], dict[str, Any]], TaskCall]


class LoopThread:
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


class ServiceRun:
    """One start of the service: its home loop, runner, scheduler, outstanding work and owner token."""

    def __init__(
        self,
        store: TaskStore,
        settings: InProcessSettings,
        heartbeat_interval_s: float,
        prepare: Prepare,
        loop: asyncio.AbstractEventLoop,
        loop_thread: LoopThread | None,
    ) -> None:
        self.loop = loop
        self.loop_thread = loop_thread
        self.store = store
        self.owner = RunOwner.for_this_process()
        self.outstanding = Outstanding()
        self.runner = InProcessRunner(loop, store, settings, self.outstanding)
        self.scheduler = InProcessScheduler(
            loop, self.runner, store, settings, heartbeat_interval_s, prepare, self.outstanding
        )
        self.runner.start_later = self.scheduler.arm
        self.accepting = True

    @property
    def usable(self) -> bool:
        return self.accepting and not self.loop.is_closed()

    @property
    def on_home_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def begin(self) -> None:
        """On the home loop's thread: recover what earlier runs left, then start the timers."""
        self.runner.bind()
        adopted = self.store.begin_run(self.owner)
        self.runner.report_ended(self.store.take_ended())
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
            self.outstanding.discard([call.id])

    async def shutdown(self, grace_s: float) -> None:
        self.accepting = False
        await self.scheduler.shutdown()
        await self.runner.shutdown(grace_s)
        self.end()

    def end(self) -> None:
        """Record what the stop cut off, and let the store's connection go (a later read reopens it)."""
        try:
            self.runner.report_ended(self.store.end_run(utcnow()))
        finally:
            self.store.close()
            self.outstanding.discard(list(self.outstanding.ids()))  # nothing of this run is outstanding now

    def close(self, grace_s: float) -> None:
        """``shutdown`` from synchronous code, whatever thread it runs on."""
        self.accepting = False
        loop_thread = self.loop_thread
        if self.loop.is_closed() or not self.loop.is_running():
            self.end()  # no loop left to wait on: record the cut-off tasks now
            if loop_thread is not None:
                loop_thread.stop()
            return
        if self.on_home_thread:  # called synchronously on the home loop: it cannot wait for itself
            task = self.loop.create_task(self.shutdown(0.0))
            if loop_thread is not None:
                task.add_done_callback(lambda _task: loop_thread.stop())
            return
        try:
            asyncio.run_coroutine_threadsafe(self.shutdown(grace_s), self.loop).result(timeout=grace_s + 30)
        finally:
            if loop_thread is not None:
                loop_thread.stop()
