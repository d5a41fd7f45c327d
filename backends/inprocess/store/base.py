"""The ``TaskStore`` protocol of the in-process backend's stores, and the words their records use.

A store owns every status transition, so each rule lives in one place:

- ``insert``: a new record, ``pending`` or ``scheduled``; ``TaskConflict`` while its unique_key is held
- ``claim``: ``pending``/``scheduled``/``retrying`` -> ``running`` (attempts + 1), atomically; a task
  that was cancelled or claimed by someone else is not returned, so it never runs
- ``record_outcomes``: ``running`` -> ``succeeded``/``failed``/``retrying``, only for the attempt that is
  still current (a timed-out thread that finishes late changes nothing)
- ``cancel``: ``pending``/``scheduled``/``retrying`` -> ``cancelled``
- ``end_run``: what a stop leaves behind; ``begin_run``/``heartbeat``: what a dead run left behind

The unique_key of a task is held while it is active and freed by the transition that ends it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from backends.inprocess.process_identity import RunOwner
from taskservice.attempts import Outcome
from taskservice.models import CLAIMABLE_STATUSES, TaskResult, TaskStatus
from taskservice.service import TaskCall, TaskQuery

PRUNE_CHUNK = 5000
CLAIMABLE = CLAIMABLE_STATUSES

INTERRUPTED_BY_CRASH = "TaskInterrupted: the process running this task stopped before it finished"
INTERRUPTED_BY_STOP = "TaskInterrupted: the service stopped before this task finished"
DROPPED_BY_STOP = "TaskInterrupted: the service stopped before this task ran (memory:// keeps no task across a stop)"


@dataclasses.dataclass(frozen=True, slots=True)
class Ended:
    """A task a store ended by itself (a stop, a dead run found): the service reports it as interrupted."""

    task_id: str
    name: str
    attempt: int
    error: str


class TaskStore(Protocol):
    """Task records of the in-process backend; every method is safe to call from any thread."""

    keeps_tasks_across_restarts: bool

    def begin_run(self, owner: RunOwner) -> list[TaskCall]:
        """Register a run; recover what dead runs left; return the calls this run must arm."""

    def heartbeat(self) -> list[TaskCall]:
        """Say this run is alive; recover runs that died since; return the calls adopted from them."""

    def end_run(self, now: datetime) -> list[Ended]:
        """This run stops: its running and retrying tasks end ``failed`` (interrupted); return those it ended."""

    def insert(self, call: TaskCall) -> None:
        """Record a new task; ``TaskConflict`` if its unique_key is held by an active task."""

    def get(self, task_id: str) -> TaskResult | None: ...

    def list_tasks(self, query: TaskQuery) -> list[TaskResult]:
        """Newest first (``enqueued_at``, then ``id``), as ``TaskQuery`` says."""

    def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        """The task's status and the call it was made from, or None if there is no such task."""

    def link_retry(self, original_id: str, retry_id: str) -> None:
        """Add ``retry_id`` to the original's ``retried_as``."""

    def take_ended(self) -> list[Ended]:
        """What the store ended by itself since the last call (recovery of dead runs), to be reported."""

    def claim(self, task_ids: Sequence[str], now: datetime) -> dict[str, int]:
        """Move claimable tasks to ``running``; return ``{id: attempt}`` of those this run may start."""

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None: ...

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
