"""Periodic tasks declared in code: run in-process under ``fastapi``, through Celery beat under ``celery``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from taskservice.cron import CronSchedule
from taskservice.registry import Task

T = TypeVar("T", bound=Task[..., Any])


@dataclasses.dataclass(frozen=True)
class PeriodicTask:
    task_name: str
    every_s: float | None
    cron: CronSchedule | None

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after ``after`` (aware, UTC)."""
        if self.cron is not None:
            return self.cron.next_after(after)
        assert self.every_s is not None
        return after + timedelta(seconds=self.every_s)


_periodic: dict[str, PeriodicTask] = {}


def periodic(*, every: float | timedelta | None = None, cron: str | None = None) -> Callable[[T], T]:
    """Run a ``@task`` on a schedule: ``every`` seconds (or a timedelta), or a 5-field ``cron`` in UTC.

    The task takes no arguments. Stack it above ``@task``::

        @periodic(cron="*/15 * * * *")
        @task(name="upkeep.integrity_check")
        def integrity_check() -> dict: ...
    """
    if (every is None) == (cron is None):
        raise TypeError("periodic() takes exactly one of every= or cron=")
    every_s = every.total_seconds() if isinstance(every, timedelta) else every
    if every_s is not None and every_s <= 0:
        raise ValueError("every must be a positive interval")
    schedule = CronSchedule.parse(cron) if cron is not None else None

    def register(handle: T) -> T:
        if not isinstance(handle, Task):
            raise TypeError("@periodic goes above @task: decorate the function with @task first")
        _periodic[handle.name] = PeriodicTask(handle.name, every_s, schedule)
        return handle

    return register


def periodic_tasks() -> list[PeriodicTask]:
    return list(_periodic.values())
