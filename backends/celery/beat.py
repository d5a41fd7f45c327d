"""Periodic tasks under Celery beat: the schedule from ``taskservice.periodic``, firings as normal tasks.

``celery -A backends.celery_app beat`` runs ``RecordingScheduler`` (Celery's persistent
scheduler): each firing is enqueued through ``CeleryTaskService``, so it has a task record
from the start and ``get_status``/``list_tasks`` see it like any other task.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery.beat import PersistentScheduler, SchedulingError
from celery.schedules import crontab

from backends.celery.service import CeleryTaskService
from taskservice.errors import TaskConflict
from taskservice.periodic import PeriodicTask

log = logging.getLogger("taskservice.celery")


def beat_schedule(periodic: Iterable[PeriodicTask]) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule``: ``every`` in seconds, ``cron`` as a ``crontab`` (UTC, like the app)."""
    entries: dict[str, dict[str, Any]] = {}
    for entry in periodic:
        if entry.cron is not None:
            schedule: Any = crontab(**entry.cron.celery_fields())
        else:
            assert entry.every_s is not None
            schedule = timedelta(seconds=entry.every_s)
        entries[entry.task_name] = {"task": entry.task_name, "schedule": schedule}
    return entries


class RecordingScheduler(PersistentScheduler):  # type: ignore[misc]  # celery ships no type hints
    """Celery beat's scheduler, enqueuing each firing through ``CeleryTaskService`` (record + message at once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._service: CeleryTaskService | None = None
        super().__init__(*args, **kwargs)

    @property
    def service(self) -> CeleryTaskService:
        if self._service is None:
            self._service = CeleryTaskService(getattr(self.app, "taskservice_settings", None))
        return self._service

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        entry = self.reserve(entry) if advance else entry
        try:
            task_id = self.service.enqueue(entry.task, *(entry.args or ()), **(entry.kwargs or {}))
            return self.app.AsyncResult(task_id)
        except TaskConflict as exc:  # the previous firing still runs under the same unique_key
            log.warning("taskservice: periodic task %s skipped: %s", entry.task, exc)
            return None
        except Exception as exc:
            raise SchedulingError(f"Couldn't apply scheduled task {entry.name}: {exc}").with_traceback(
                sys.exc_info()[2]
            ) from exc
        finally:
            self._tasks_since_sync += 1
            if self.should_sync():
                self._do_sync()

    def close(self) -> None:
        super().close()
        if self._service is not None:
            self._service.close()
