"""The ``TaskStore`` protocol of the in-process backend's stores, and the words their records use.

A store owns every status transition, so each rule lives in one place:

- ``insert``: a new record, ``pending`` or ``scheduled``; ``TaskConflict`` while its unique_key is held;
  with ``after=``, ``TaskNotFound`` for an unknown dependency, and a task that waits while it is active
- ``claim``: ``pending``/``scheduled``/``retrying`` -> ``running`` (attempts + 1), atomically; a task
  that was cancelled, claimed by someone else or waits on its dependency is not returned, so it never runs
- ``record_outcomes``: ``running`` -> ``succeeded``/``failed``/``retrying``, only for the attempt that is
  still current (a timed-out thread that finishes late changes nothing); a ``retrying`` record keeps
  when its next attempt is due, so a restart (SQLite) still makes it
- ``cancel``: ``pending``/``scheduled``/``retrying`` -> ``cancelled``
- ``end_run``: what a stop leaves behind; ``begin_run``/``heartbeat``: what a dead run left behind

The unique_key of a task is held while it is active and freed by the transition that ends it, except
that a sync attempt past its timeout (its thread cannot be stopped) keeps holding it until
``release_keys`` says the thread has returned. Every transition that ends a task also decides, in the
same step, the tasks that wait on it (``after=``): they may run if it succeeded, else they end
``failed`` without running (``dependency_error``).

The ``submit_*`` methods are what the runner calls on its event loop: they never block it. The memory
store runs them at once; the SQLite store hands them to its writer thread, which commits many in
one transaction, and calls ``done`` on the loop once that transaction has committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from backends.inprocess.process_identity import RunOwner
from taskservice.attempts import Outcome
from taskservice.models import CLAIMABLE_STATUSES, TaskResult, TaskStats, TaskStatus
from taskservice.service import TaskCall, TaskQuery

PRUNE_CHUNK = 5000
CLAIMABLE = CLAIMABLE_STATUSES

INTERRUPTED_BY_CRASH = "TaskInterrupted: the process running this task stopped before it finished"
INTERRUPTED_BY_STOP = "TaskInterrupted: the service stopped before this task finished"
DROPPED_BY_STOP = "TaskInterrupted: the service stopped before this task ran (memory:// keeps no task across a stop)"
NOT_STORED = "TaskOutcomeNotStored: the task store refused to record how this attempt ended"

T = TypeVar("T")
Done = Callable[[T | BaseException], None]  # gets the result, or the exception that stopped the operation


def outcome_not_stored(refusal: str) -> str:
    """The error of a record whose real outcome the store refused (``refusal`` is ``describe_error`` of why)."""
    return f"{NOT_STORED} ({refusal})"


class Admission(enum.Enum):
    """How a newly inserted task starts."""

    READY = "ready"  # dispatch it (now, or at its run_at)
    WAITING = "waiting"  # it waits for its dependency (``after=``) to end


@dataclasses.dataclass(frozen=True, slots=True)
class Ended:
    """A task a store ended by itself (a stop, a dead run, a dependency that failed): reported as interrupted."""

    task_id: str
    name: str
    attempt: int
    error: str


@dataclasses.dataclass(frozen=True, slots=True)
class Decided:
    """What tasks that ended decided for the tasks waiting on them (``after=``)."""

    ready: list[TaskCall] = dataclasses.field(default_factory=list)  # may run now (or at their run_at)
    ended: list[Ended] = dataclasses.field(default_factory=list)  # ended failed: their dependency did not succeed

    def __bool__(self) -> bool:
        return bool(self.ready or self.ended)


NOTHING_DECIDED = Decided()


@dataclasses.dataclass(frozen=True, slots=True)
class Adopted:
    """A task a run takes over: run it at ``due_at`` (None: now), unless it ``waits`` on its dependency."""

    call: TaskCall
    due_at: datetime | None
    waits: bool = False


class TaskStore(Protocol):
    """Task records of the in-process backend; every method is safe to call from any thread."""

    keeps_tasks_across_restarts: bool

    def begin_run(self, owner: RunOwner) -> list[Adopted]:
        """Register a run; recover what dead runs left; return the tasks this run must arm."""

    def heartbeat(self) -> list[Adopted]:
        """Say this run is alive; recover runs that died since; return the tasks adopted from them."""

    def end_run(self, now: datetime) -> list[Ended]:
        """This run stops: its running tasks end ``failed`` (interrupted); return those it ended."""

    def insert(self, call: TaskCall) -> Admission | Ended:
        """Record a new task; ``TaskConflict``, ``TaskNotFound`` (unknown ``after``), ``ServiceStopped``.

        Returns ``Ended`` when its dependency had already failed: it was recorded failed at once.
        """

    def get(self, task_id: str) -> TaskResult | None: ...

    def list_tasks(self, query: TaskQuery) -> list[TaskResult]:
        """Newest first (``enqueued_at``, then ``id``), as ``TaskQuery`` says."""

    def stats(self) -> TaskStats: ...

    def unfinished(self, task_ids: Collection[str]) -> set[str]:
        """Which of ``task_ids`` are still active and owned by this run (what ``drain`` waits for)."""

    def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        """The task's status and the call it was made from, or None if there is no such task."""

    def link_retry(self, original_id: str, retry_id: str) -> None:
        """Add ``retry_id`` to the original's ``retried_as``."""

    def take_ended(self) -> list[Ended]:
        """What the store ended by itself since the last call (dead runs, dependencies), to be reported."""

    def claim(self, task_ids: Sequence[str], now: datetime) -> dict[str, int]:
        """Move claimable tasks to ``running``; return ``{id: attempt}`` of those this run may start."""

    def record_outcomes(self, outcomes: Sequence[Outcome], holding_keys: Collection[str] = ()) -> Decided:
        """Record attempts' outcomes; a final one of a task in ``holding_keys`` keeps its unique_key held."""

    def release_keys(self, task_ids: Collection[str]) -> None:
        """The threads of these timed-out tasks have returned: their unique_keys are free."""

    def report_progress(self, task_id: str, attempt: int, percent: float, message: str | None) -> None: ...

    def cancel(self, task_id: str, now: datetime) -> bool | None:
        """True if the task will never run, False if it runs or ran, None if there is no such task."""

    def abandon(self, task_id: str, now: datetime) -> None:
        """This run accepted the task but will not start it (it is stopping)."""

    def claim_periodic_slot(self, call: TaskCall, slot: datetime) -> bool:
        """Record ``call`` as the firing of its periodic task at ``slot``, unless another run did."""

    def prune(self, finished_before: datetime) -> int:
        """Forget finished records older than ``finished_before``; return how many."""

    def close(self) -> None: ...

    # -- for the runner, on its event loop --------------------------------------------------

    def submit_insert(self, call: TaskCall, loop: asyncio.AbstractEventLoop, done: Done[Admission | Ended]) -> None:
        """``insert`` without blocking ``loop``; ``done`` runs on ``loop`` once the record is durable."""

    def submit_claim(
        self, task_ids: Sequence[str], now: datetime, loop: asyncio.AbstractEventLoop, done: Done[dict[str, int]]
    ) -> None:
        """``claim`` without blocking ``loop``."""

    def submit_outcomes(
        self,
        outcomes: Sequence[Outcome],
        holding_keys: Collection[str],
        loop: asyncio.AbstractEventLoop,
        done: Done[Decided],
    ) -> None:
        """``record_outcomes`` without blocking ``loop``."""

    def submit_release_keys(self, task_ids: Collection[str], loop: asyncio.AbstractEventLoop) -> None:
        """``release_keys`` without blocking ``loop``; a failure is logged (the run's end frees them anyway)."""
