"""Task records as ``TaskResult`` snapshots: the fields read, the time units, the parsing.

Times in a record are microseconds since the epoch (exact, so snapshots keep their order);
scores in the sorted sets are seconds as floats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from taskservice.models import TaskResult, TaskStats, TaskStatus

if TYPE_CHECKING:
    from taskservice.service import TaskQuery

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

READ_FIELDS = (
    "name",
    "status",
    "enqueued_at",
    "run_at",
    "started_at",
    "finished_at",
    "attempts",
    "error",
    "traceback",
    "progress",
    "progress_message",
    "result",
    "args",
    "retry_of",
    "retried_as",
)
CALL_FIELDS = ("status", "name", "args", "queue", "max_retries", "retry_backoff", "timeout", "unique_key", "headers")


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding: snapshots keep their order)."""
    return (moment - EPOCH) // _ONE_US


def from_us(value: str | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=int(value))


def to_seconds(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds()


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def snapshot(task_id: str, row: Sequence[Any]) -> TaskResult | None:
    """The ``TaskResult`` of a record read as ``READ_FIELDS``, or None if there is no record."""
    values = dict(zip(READ_FIELDS, (None if item is None else text(item) for item in row), strict=True))
    if values["status"] is None:
        return None
    enqueued_at = from_us(values["enqueued_at"])
    progress = values["progress"]
    arguments = json.loads(values["args"]) if values["args"] else None
    return TaskResult(
        id=task_id,
        name=values["name"] or "",
        status=TaskStatus(values["status"]),
        result=json.loads(values["result"]) if values["result"] is not None else None,
        error=values["error"],
        traceback=values["traceback"],
        progress=float(progress) if progress is not None and math.isfinite(float(progress)) else None,
        progress_message=values["progress_message"],
        attempts=int(values["attempts"] or 0),
        enqueued_at=enqueued_at if enqueued_at is not None else EPOCH,
        started_at=from_us(values["started_at"]),
        finished_at=from_us(values["finished_at"]),
        run_at=from_us(values["run_at"]),
        args=arguments.get("args") if arguments is not None else None,
        kwargs=arguments.get("kwargs") if arguments is not None else None,
        retry_of=values["retry_of"],
        retried_as=json.loads(values["retried_as"]) if values["retried_as"] else [],
    )


def score_bounds(query: TaskQuery) -> tuple[str, str]:
    """The (high, low) index scores a listing reads between; equal scores are sorted out by ``listing_page``."""
    high = "+inf" if query.enqueued_before is None else repr(to_seconds(query.enqueued_before))
    if query.cursor is not None:  # inclusive here: (enqueued_at, id) decides below
        high = repr(min(float(high), to_seconds(query.cursor[0])))
    low = "-inf" if query.enqueued_after is None else repr(to_seconds(query.enqueued_after) - 1e-3)
    return high, low


def listing_page(
    query: TaskQuery, ids: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[TaskResult], list[str]]:
    """One page of the index read as ``READ_FIELDS``: the matching snapshots newest first, and the ids whose
    record is gone (to drop from the index)."""
    gone = []
    page: list[TaskResult] = []
    for task_id, row in zip(ids, rows, strict=True):
        found = snapshot(task_id, row)
        if found is None:
            gone.append(task_id)
        elif query.matches(found):
            page.append(found)
    # Scores are seconds as floats: order exactly by (enqueued_at, id) within what was read.
    page.sort(key=lambda r: (r.enqueued_at, r.id), reverse=True)
    return page, gone


def stats_of(transitions: Mapping[str, int], pending: int, oldest_pending_s: float | None) -> TaskStats:
    """Counts per status from the scripts' transition counters (``'pending>cancelled'`` -> n).

    Every transition a script makes is counted once, except pending -> running: a claim only takes
    the task out of the pending set, so that one is what entered pending minus what is still there
    minus what left pending otherwise.
    """
    entered = dict.fromkeys(TaskStatus, 0)
    left = dict.fromkeys(TaskStatus, 0)
    known = {status.value: status for status in TaskStatus}
    for field, calls in transitions.items():
        source, _, target = field.partition(">")
        if source in known:
            left[known[source]] += calls
        if target in known:
            entered[known[target]] += calls
    claimed_from_pending = entered[TaskStatus.PENDING] - left[TaskStatus.PENDING] - pending
    left[TaskStatus.PENDING] += claimed_from_pending
    entered[TaskStatus.RUNNING] += claimed_from_pending
    counts = {status: max(entered[status] - left[status], 0) for status in TaskStatus}
    oldest = EPOCH + timedelta(seconds=oldest_pending_s) if oldest_pending_s is not None else None
    return TaskStats(counts=counts, oldest_pending_enqueued_at=oldest)
