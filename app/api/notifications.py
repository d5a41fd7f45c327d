"""Notifications: ``POST /notifications`` (now, or at ``send_at``) and ``GET /notifications/{id}``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, cast

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, update

from app.api.errors import UNAVAILABLE, is_app_id, not_found, refusals
from app.db import get_database
from app.lost_tasks import lost_task
from app.models import Notification, new_id
from app.settings import get_settings
from app.tasks import deliver_notification
from taskservice import TaskService, TaskServiceDep

router = APIRouter(prefix="/notifications", tags=["notifications"])

MAX_SEND_AT_DISTANCE = timedelta(days=30)
NEVER_ENQUEUED_GRACE = timedelta(minutes=5)
NotificationStatus = Literal["queued", "scheduled", "sent", "failed", "cancelled"]
_ACTIVE = ("queued", "scheduled")
# Printable, no spaces, one @, a dot in the domain: enough to catch typos, not an RFC 5322 parser.
_ADDRESS = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
_EXAMPLE_ID = "0a1b2c3d4e5f40718293a4b5c6d7e8f9"


def example_send_at(now: datetime | None = None) -> str:
    """A send_at that is valid when shown: tomorrow 09:00 UTC (a fixed date would leave the 30-day window)."""
    tomorrow = (now or datetime.now(UTC)) + timedelta(days=1)
    return tomorrow.strftime("%Y-%m-%dT09:00:00Z")


_NOT_FOUND = ("No notification with this id", f"no notification with id '{_EXAMPLE_ID}'")


class NotificationIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"to": "ada@example.com", "subject": "Report ready", "body": "Your report is ready."},
                {"to": "ada@example.com", "subject": "Reminder", "body": "...", "send_at": example_send_at()},
            ]
        },
    )

    to: Annotated[str, Field(max_length=254, pattern=_ADDRESS)]
    subject: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
    body: Annotated[str, Field(max_length=100_000, pattern=r"^[^\x00]*$")]
    send_at: datetime | None = Field(
        None, description=f"when to send, with a time zone (e.g. {example_send_at()}); at most 30 days away"
    )


class NotificationAccepted(BaseModel):
    id: str
    task_id: str
    status: NotificationStatus


class NotificationOut(BaseModel):
    id: str
    to: str
    subject: str
    status: NotificationStatus
    send_at: datetime | None
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    task_id: str | None

    @classmethod
    def of(cls, row: Notification) -> NotificationOut:
        return cls(
            id=row.id,
            to=row.to,
            subject=row.subject,
            status=cast(NotificationStatus, row.status),
            send_at=row.send_at,
            sent_at=row.sent_at,
            attempts=row.attempts,
            last_error=row.last_error,
            task_id=row.task_id,
        )


@router.post(
    "",
    status_code=202,
    summary="Send a notification now, or schedule it (send_at)",
    responses=refusals(
        {400: ("send_at without a time zone, or more than 30 days away", "send_at must include a time zone ...")}
    )
    | UNAVAILABLE,
)
def create_notification(payload: NotificationIn, service: TaskServiceDep) -> NotificationAccepted:
    now = datetime.now(UTC)
    send_at = _checked_send_at(payload.send_at, now)
    scheduled = send_at is not None and send_at > now
    settings = get_settings()
    row = Notification(
        id=new_id(),
        to=payload.to,
        subject=payload.subject,
        body=payload.body,
        send_at=send_at,
        status="scheduled" if scheduled else "queued",
        max_attempts=settings.notify_max_retries + 1,
    )
    db = get_database()
    with db.session() as session:  # committed before the task exists, so the task always finds it
        session.add(row)
    deliver = deliver_notification.options(
        max_retries=settings.notify_max_retries, retry_backoff=settings.notify_retry_backoff_s
    )
    try:
        if scheduled:
            assert send_at is not None
            task_id = service.schedule(deliver, send_at, row.id)
        else:
            task_id = service.enqueue(deliver, row.id)
    except BaseException:  # no notification that nothing will ever send
        with db.session() as session:
            session.execute(delete(Notification).where(Notification.id == row.id))
        raise
    with db.session() as session:  # only the task id: the task may already have set the status
        session.execute(update(Notification).where(Notification.id == row.id).values(task_id=task_id))
    return NotificationAccepted(id=row.id, task_id=task_id, status=cast(NotificationStatus, row.status))


def _checked_send_at(send_at: datetime | None, now: datetime) -> datetime | None:
    """``send_at`` in UTC; 400 if naive or more than 30 days from now (either way). A past time means now."""
    if send_at is None:
        return None
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        raise HTTPException(
            status_code=400,
            detail=f"send_at must include a time zone, e.g. {example_send_at(now)} (Z, or an offset such as +01:00)",
        )
    # Compare before converting: far-off values (year 1, year 9999) overflow astimezone().
    if abs(send_at - now) > MAX_SEND_AT_DISTANCE:
        raise HTTPException(
            status_code=400,
            detail=f"send_at must be within {MAX_SEND_AT_DISTANCE.days} days of now (past times are sent at once)",
        )
    return send_at.astimezone(UTC)


@router.get(
    "/{notification_id}",
    summary="A notification's status: queued / scheduled, then sent or failed",
    responses=refusals({404: _NOT_FOUND}),
)
def read_notification(notification_id: str, service: TaskServiceDep) -> NotificationOut:
    row = _notification_or_404(notification_id)
    if row.status in _ACTIVE and _record_lost_delivery(service, row):
        row = _notification_or_404(notification_id)
    return NotificationOut.of(row)


def _record_lost_delivery(service: TaskService, row: Notification) -> bool:
    """A delivery task that ended without updating the row (failed, cancelled, interrupted, vanished)
    is recorded here; so is a row whose task was never enqueued (the API stopped in between)."""
    if row.task_id is None:
        if datetime.now(UTC) - row.created_at < NEVER_ENQUEUED_GRACE:
            return False  # the API is enqueueing it right now
        return _settle(row, "failed", "the delivery was never enqueued (the API stopped before it could)")
    lost = lost_task(service, row.task_id)
    if lost is None:
        return False
    if lost.ending == "cancelled":
        return _settle(row, "cancelled", row.last_error)
    reason = f"the delivery task is gone: {lost.reason}" if lost.ending == "vanished" else lost.reason
    return _settle(row, "failed", row.last_error or reason)


def _settle(row: Notification, status: str, last_error: str | None) -> bool:
    with get_database().session() as session:
        changed = session.execute(
            update(Notification)
            .where(Notification.id == row.id, Notification.status.in_(_ACTIVE))
            .values(status=status, last_error=last_error)
            .execution_options(synchronize_session=False)
        )
    return bool(getattr(changed, "rowcount", 0))


def _notification_or_404(notification_id: str) -> Notification:
    if is_app_id(notification_id):
        with get_database().session() as session:
            row = session.get(Notification, notification_id)
        if row is not None:
            return row
    raise not_found("notification", notification_id)
