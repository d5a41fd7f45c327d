"""``InProcessScheduler``: the timers of one service run, all on the home event loop.

- scheduled tasks: a timer at ``run_at`` dispatches the call; the runner's claim decides
  whether it still runs (a cancel, or another process, may have taken it)
- periodic tasks (``@periodic``): a timer per task at its next slot; each firing is recorded
  as a normal task, once per slot even when several processes share a store, because the
  store claims the (name, slot) pair. ``every=`` slots are aligned to the epoch so every
  process computes the same ones; missed slots (the service was down) are skipped.
- upkeep: a heartbeat that keeps this run alive in the store and recovers runs that died
  (adopting their pending, scheduled and retrying tasks), and pruning of finished records.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from backends.inprocess.outcomes import utcnow
from backends.inprocess.outstanding import Outstanding
from backends.inprocess.runner import InProcessRunner
from backends.inprocess.settings import InProcessSettings
from backends.inprocess.store.base import Adopted, TaskStore
from taskservice.periodic import PeriodicTask, periodic_tasks
from taskservice.service import TaskCall

log = logging.getLogger("taskservice")

# ``TaskService._prepare``: (task or name, run_at, args, kwargs) -> a validated call
Prepare = Callable[[Any, datetime | None, tuple[Any, ...], dict[str, Any]], TaskCall]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def next_slot(periodic: PeriodicTask, after: datetime) -> datetime:
    """The first firing of ``periodic`` strictly after ``after``: the same in every process."""
    if periodic.every_s is None:
        return periodic.next_run(after)
    every_us = max(round(periodic.every_s * 1e6), 1)
    after_us = (after - _EPOCH) // _MICROSECOND
    return _EPOCH + timedelta(microseconds=(after_us // every_us + 1) * every_us)


def prune_interval_s(result_ttl_s: float) -> float:
    """Prune often enough that records live at most about 25 % past their TTL."""
    return min(60.0, max(0.5, result_ttl_s / 4))


class InProcessScheduler:
    """Scheduled and periodic tasks and the store's upkeep, for one service run."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        runner: InProcessRunner,
        store: TaskStore,
        settings: InProcessSettings,
        heartbeat_interval_s: float,
        prepare: Prepare,
        outstanding: Outstanding,
    ) -> None:
        self._loop = loop
        self._runner = runner
        self._outstanding = outstanding
        self._store = store
        self._settings = settings
        self._heartbeat_interval_s = heartbeat_interval_s
        self._prepare = prepare
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._periodic_timers: dict[str, asyncio.TimerHandle] = {}
        self._upkeep: asyncio.Task[None] | None = None
        self._loop_thread_id: int | None = None
        self._active = True

    def start(self, adopted: list[Adopted]) -> None:
        """On the home loop: arm what earlier runs left, the periodic tasks and the upkeep."""
        self._loop_thread_id = threading.get_ident()
        self._take_over(adopted)
        now = utcnow()
        for periodic in periodic_tasks():
            self._arm_periodic(periodic, now)
        self._upkeep = self._loop.create_task(self._keep_up())

    def arm(self, call: TaskCall, due_at: datetime | None = None) -> None:
        """Run ``call`` at ``due_at`` (default: its ``run_at``); callable from any thread."""
        if threading.get_ident() != self._loop_thread_id:
            self._loop.call_soon_threadsafe(self.arm, call, due_at)
            return
        if not self._active:
            self._runner.dispatch_here(call)  # the runner is stopping too: it records the drop
            return
        due_at = due_at if due_at is not None else call.run_at
        assert due_at is not None
        delay_s = max((due_at - utcnow()).total_seconds(), 0.0)
        self._timers[call.id] = self._loop.call_later(delay_s, self._due, call)

    def disarm(self, task_id: str) -> None:
        """A cancelled task: drop its timer (its claim would fail anyway); callable from any thread."""
        if threading.get_ident() != self._loop_thread_id:
            self._loop.call_soon_threadsafe(self.disarm, task_id)
            return
        handle = self._timers.pop(task_id, None)
        if handle is not None:
            handle.cancel()
        self._runner.forget(task_id)

    async def shutdown(self) -> None:
        """Stop every timer; scheduled records stay as they are (the store's ``end_run`` decides)."""
        self._active = False
        for handle in (*self._timers.values(), *self._periodic_timers.values()):
            handle.cancel()
        self._timers.clear()
        self._periodic_timers.clear()
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)

    def _due(self, call: TaskCall) -> None:
        self._timers.pop(call.id, None)
        self._runner.dispatch_here(call)

    def _take_over(self, adopted: list[Adopted]) -> None:
        """Tasks a run adopts: each tracked for ``drain``, and started when due (or left to wait on ``after=``)."""
        for task in adopted:
            call = task.call
            self._outstanding.add(call.id, call.task.name, None if task.waits else task.due_at)
            if task.waits:
                continue  # the transition that ends its dependency releases it
            if task.due_at is None:
                self._runner.dispatch_here(call)
            else:
                self.arm(call, task.due_at)

    # -- periodic tasks -------------------------------------------------------------------

    def _arm_periodic(self, periodic: PeriodicTask, after: datetime) -> None:
        try:
            slot = next_slot(periodic, after)
        except ValueError:
            log.exception("taskservice: periodic task %s never fires", periodic.task_name)
            return
        delay_s = max((slot - utcnow()).total_seconds(), 0.0)
        self._periodic_timers[periodic.task_name] = self._loop.call_later(delay_s, self._fire, periodic, slot)

    def _fire(self, periodic: PeriodicTask, slot: datetime) -> None:
        if not self._active:
            return
        self._arm_periodic(periodic, max(slot, utcnow()))  # first, so one bad firing cannot end the schedule
        try:
            call = self._prepare(periodic.task_name, None, (), {})  # the same checks as any enqueue
            if self._store.claim_periodic_slot(call, slot):
                self._outstanding.add(call.id, call.task.name)
                self._runner.dispatch_here(call)
        except Exception:
            log.exception("taskservice: periodic task %s could not fire for %s", periodic.task_name, slot)

    # -- upkeep ---------------------------------------------------------------------------

    async def _keep_up(self) -> None:
        prune_every_s = prune_interval_s(self._settings.result_ttl_s)
        beat_every_s = self._heartbeat_interval_s if self._store.keeps_tasks_across_restarts else math.inf
        next_prune = self._loop.time() + prune_every_s
        next_beat = self._loop.time() + beat_every_s  # the run's start has just recovered what was left
        while True:
            await asyncio.sleep(max(min(next_prune, next_beat) - self._loop.time(), 0.0))
            now = self._loop.time()
            if now >= next_beat:
                next_beat = now + beat_every_s
                try:
                    adopted = self._store.heartbeat()
                    self._runner.report_ended(self._store.take_ended())
                    self._take_over(adopted)
                except Exception:
                    log.exception("taskservice: heartbeat of the task store failed")
            if now >= next_prune:
                next_prune = now + prune_every_s
                try:
                    # On a worker thread: millions of expired records take a while; the store
                    # deletes them in chunks, so enqueues interleave.
                    cutoff = utcnow() - timedelta(seconds=self._settings.result_ttl_s)
                    await asyncio.to_thread(self._store.prune, cutoff)
                except Exception:
                    log.exception("taskservice: pruning finished tasks failed")
