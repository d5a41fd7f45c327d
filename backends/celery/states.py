"""The one place Celery's state names meet taskservice's ``TaskStatus`` vocabulary."""

from __future__ import annotations

from celery import states

from taskservice.models import TaskStatus

PROGRESS = "PROGRESS"  # the custom state a running task's set_progress() stores, as Celery users do

# The one place Celery's state names meet taskservice's vocabulary.
STATUS_OF_STATE: dict[str, TaskStatus] = {
    states.PENDING: TaskStatus.PENDING,
    states.RECEIVED: TaskStatus.PENDING,
    states.STARTED: TaskStatus.RUNNING,
    PROGRESS: TaskStatus.RUNNING,
    states.RETRY: TaskStatus.RETRYING,
    states.SUCCESS: TaskStatus.SUCCEEDED,
    states.FAILURE: TaskStatus.FAILED,
    states.REVOKED: TaskStatus.CANCELLED,
}


def status_of_state(state: str) -> TaskStatus | None:
    """The ``TaskStatus`` of a Celery state, or None for a state taskservice does not track."""
    return STATUS_OF_STATE.get(state)
