"""The ``TaskService`` interface. Validation lives here, once; a backend fills in the rest."""

from __future__ import annotations

import abc
import dataclasses
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from taskservice.codec import Arguments, encode_arguments
from taskservice.errors import TaskNotFound
from taskservice.models import TaskResult, TaskStatus
from taskservice.registry import Task, TaskOptions, resolve_task
from taskservice.settings import TaskSettings


@dataclasses.dataclass(frozen=True)
class TaskCall:
    """One validated request to run a task, as a backend receives it."""

    id: str
    task: Task[..., Any]
    arguments: Arguments
    options: TaskOptions
    enqueued_at: datetime
    run_at: datetime | None  # None: as soon as possible

    @property
    def initial_status(self) -> TaskStatus:
        return TaskStatus.SCHEDULED if self.run_at is not None else TaskStatus.PENDING


def new_task_id() -> str:
    """A random (version 4) UUID string: 122 unguessable bits, the shape Celery ids have."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskService(abc.ABC):
    """Run ``@task`` functions in the background; see each method for what it raises."""

    backend_name: ClassVar[str]
    # Capabilities the contract suite reads; a missing one is a visible skip, never a silent one.
    cancels_running_tasks: ClassVar[bool] = False

    def __init__(self, settings: TaskSettings | None = None) -> None:
        self.settings = settings if settings is not None else TaskSettings()

    def enqueue(self, func: Any, /, *args: Any, **kwargs: Any) -> str:
        """Run ``func`` (a ``@task``) soon; return its id. ``TypeError`` for bad arguments, ``TaskConflict``."""
        call = self._prepare(func, None, args, kwargs)
        self._submit(call)
        return call.id

    def schedule(self, func: Any, run_at: datetime | timedelta, /, *args: Any, **kwargs: Any) -> str:
        """Run ``func`` at ``run_at`` (an aware datetime, or a delay from now); return its id."""
        if isinstance(run_at, timedelta):
            when = utcnow() + run_at
        elif isinstance(run_at, datetime):
            if run_at.tzinfo is None or run_at.utcoffset() is None:
                raise ValueError(
                    "run_at is a naive datetime: pass an aware one (e.g. datetime.now(timezone.utc) + ...) "
                    "or a timedelta"
                )
            when = run_at.astimezone(UTC)
        else:
            raise TypeError(f"run_at must be an aware datetime or a timedelta, got {type(run_at).__name__}")
        call = self._prepare(func, when, args, kwargs)
        self._submit(call)
        return call.id

    def _prepare(self, func: Any, run_at: datetime | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskCall:
        handle = resolve_task(func)
        arguments = encode_arguments(handle.name, handle.func, args, kwargs, self.settings.max_payload_bytes)
        return TaskCall(
            id=new_task_id(),
            task=handle,
            arguments=arguments,
            options=handle.default_options,
            enqueued_at=utcnow(),
            run_at=run_at,
        )

    @abc.abstractmethod
    def _submit(self, call: TaskCall) -> None:
        """Record and dispatch a validated call; raise ``TaskConflict`` or ``BackendUnavailable``."""

    @abc.abstractmethod
    def get_status(self, task_id: str) -> TaskResult:
        """A snapshot of the task; ``TaskNotFound`` if no such id was ever enqueued."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> bool:
        """Stop a task that has not started: True if it will never run, False if it already ran or is running."""

    @abc.abstractmethod
    def list_tasks(self, status: TaskStatus | None = None, limit: int = 100) -> list[TaskResult]:
        """The most recently enqueued tasks, newest first, optionally only those in ``status``."""

    async def start(self) -> None:
        """Start runners and schedulers (the FastAPI lifespan calls this); idempotent."""

    async def stop(self) -> None:
        """Stop runners; running tasks get the grace period, the rest end ``failed`` (interrupted)."""

    def close(self) -> None:
        """``stop`` for code without an event loop (scripts, tests)."""

    def wait(self, task_id: str, timeout_s: float = 30.0, poll_interval_s: float = 0.02) -> TaskResult:
        """Block until the task reaches a final status; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause_s = min(0.001, poll_interval_s)  # short tasks end within a few ms: look early, then back off
        while True:
            result = self.get_status(task_id)
            if result.status.is_final:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {result.status.value} after {timeout_s} s")
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, poll_interval_s)

    def exists(self, task_id: str) -> bool:
        try:
            self.get_status(task_id)
        except TaskNotFound:
            return False
        return True
