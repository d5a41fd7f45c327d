"""What a row says when its task ended without telling it: failed, cancelled, interrupted or vanished.

A task normally records its own outcome on its row (a project's ``completed``/``error``, a
notification's ``sent``/``failed``). When it cannot (a worker killed mid-task, a stop that
outlasted the grace period, a ``memory://`` store lost in a restart, a record past its
retention), the row would say ``processing`` or ``queued`` forever. Reading such a row asks the
task service, and these rules turn the answer into the row's final state.
"""

from __future__ import annotations

import dataclasses

from taskservice import TaskNotFound, TaskService, TaskServiceError, TaskStatus


@dataclasses.dataclass(frozen=True)
class LostTask:
    """How a task ended without reporting: ``failed`` (interrupted included), ``cancelled`` or ``vanished``."""

    ending: str
    reason: str


def lost_task(service: TaskService, task_id: str) -> LostTask | None:
    """The task's ending if it can no longer report on its row; None while it may still (or is unknowable now)."""
    try:
        task = service.get_status(task_id)
    except TaskNotFound:
        return LostTask(
            "vanished",
            f"the task service has no record of task {task_id}: it was lost (a restart of a memory:// store, "
            "or Redis without persistence) or its record expired",
        )
    except TaskServiceError:  # the backend is down: nothing is known, the row stays as it is for now
        return None
    if task.status is TaskStatus.FAILED:
        return LostTask("failed", task.error or "no error was recorded")
    if task.status is TaskStatus.CANCELLED:
        return LostTask("cancelled", "the task was cancelled before it ran")
    return None
