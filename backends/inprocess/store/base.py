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
from typing import Any, Protocol

from backends.inprocess.process_identity import RunOwner
from taskservice.models import TaskResult, TaskStatus
from taskservice.service import TaskCall

PRUNE_CHUNK = 5000
CLAIMABLE = frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING})

INTERRUPTED_BY_CRASH = "TaskInterrupted: the process running this task stopped before it finished"
INTERRUPTED_BY_STOP = "TaskInterrupted: the service stopped before this task finished"
DROPPED_BY_STOP = "TaskInterrupted: the service stopped before this task ran (memory:// keeps no task across a stop)"


@dataclasses.dataclass(slots=True)
class Outcome:
    """How one attempt ended: ``succeeded``, ``failed``, or ``retrying`` (another attempt follows)."""

    task_id: str
    attempt: int
    status: TaskStatus
    at: datetime
    result: Any = None
    error: str | None = None
    traceback: str | None = None


class TaskStore(Protocol):
    """Task records of the in-process backend; every method is safe to call from any thread."""

    keeps_tasks_across_restarts: bool

    def begin_run(self, owner: RunOwner) -> list[TaskCall]:
        """Register a run; recover what dead runs left; return the calls this run must arm."""

    def heartbeat(self) -> list[TaskCall]:
        """Say this run is alive; recover runs that died since; return the calls adopted from them."""

    def end_run(self, now: datetime) -> None:
        """This run stops: its running and retrying tasks end ``failed`` (interrupted)."""

    def insert(self, call: TaskCall) -> None:
        """Record a new task; ``TaskConflict`` if its unique_key is held by an active task."""

    def get(self, task_id: str) -> TaskResult | None: ...

    def list(self, status: TaskStatus | None, limit: int) -> list[TaskResult]:
        """Newest first."""

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
