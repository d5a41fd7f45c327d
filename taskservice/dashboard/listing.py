"""The dashboard's filters (from a page's query string) and the tasks a bulk action would touch."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from taskservice.dashboard.views import CANCELLABLE, RETRYABLE
from taskservice.models import TaskResult, TaskStatus, in_order
from taskservice.router import CURSOR_PATTERN
from taskservice.service import TaskService

PAGE_SIZE = 50
BULK_MAX = 500  # one bulk action touches at most this many tasks
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclasses.dataclass(frozen=True)
class Filters:
    status: TaskStatus | None = None
    name: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    bad_time: bool = False  # a time field was given but could not be read

    def as_params(self) -> dict[str, str]:
        """The filters as the query string of a page (``datetime-local`` format, UTC)."""
        params: dict[str, str] = {}
        if self.status is not None:
            params["status"] = self.status.value
        if self.name:
            params["name"] = self.name
        if self.after is not None:
            params["after"] = _local(self.after)
        if self.before is not None:
            params["before"] = _local(self.before)
        return params


def _local(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _time(value: str | None) -> tuple[datetime | None, bool]:
    if not value:
        return None, False
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None, True
    return (moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)), False


def parse_filters(query: Mapping[str, str]) -> Filters:
    status_text = query.get("status") or ""
    status = TaskStatus(status_text) if status_text in TaskStatus.__members__.values() else None
    name = (query.get("name") or "").strip()[:200] or None
    after, bad_after = _time(query.get("after"))
    before, bad_before = _time(query.get("before"))
    return Filters(status, name, after, before, bad_after or bad_before)


def parse_cursor(value: str | None) -> str | None:
    return value if value and _CURSOR.match(value) else None


async def page(
    service: TaskService, filters: Filters, cursor: str | None, status: TaskStatus | None = None
) -> list[TaskResult]:
    return await service.alist_tasks(
        status=status or filters.status,
        limit=PAGE_SIZE,
        name=filters.name,
        enqueued_after=filters.after,
        enqueued_before=filters.before,
        cursor=cursor,
    )


def eligible_statuses(action: str, filters: Filters) -> list[TaskStatus]:
    """The statuses a bulk ``action`` ("retry" or "cancel") can act on within ``filters``."""
    allowed = RETRYABLE if action == "retry" else CANCELLABLE
    if filters.status is not None:
        return [filters.status] if filters.status in allowed else []
    return in_order(allowed)


async def bulk_matches(service: TaskService, action: str, filters: Filters) -> tuple[list[TaskResult], bool]:
    """The tasks ``action`` would touch, newest first, at most ``BULK_MAX``; True if there were more."""
    found: list[TaskResult] = []
    for status in eligible_statuses(action, filters):
        cursor: str | None = None
        while len(found) <= BULK_MAX:
            batch = await service.alist_tasks(
                status=status,
                limit=min(1000, BULK_MAX + 1),
                name=filters.name,
                enqueued_after=filters.after,
                enqueued_before=filters.before,
                cursor=cursor,
            )
            found += batch
            if len(batch) < min(1000, BULK_MAX + 1):
                break
            cursor = batch[-1].cursor
    found.sort(key=lambda result: (result.enqueued_at, result.id), reverse=True)
    return found[:BULK_MAX], len(found) > BULK_MAX
