"""The outbox: where notifications are delivered. A table stands in for an SMTP relay.

A relay sometimes answers "try again later". To exercise retries without a real relay,
the outbox treats the reserved top-level domain ``.invalid`` (RFC 2606: no real address
can ever use it) as a relay that refuses, so nothing a real user types can trigger it:

    someone@fail-N.invalid     refused on the first N attempts, then delivered (N = 1..9)
    someone@<other>.invalid    refused on every attempt (ends ``failed`` after the retries)
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Notification, OutboxMessage

_FLAKY = re.compile(r"@fail-([1-9])\.invalid$", re.IGNORECASE)


class DeliveryRefused(Exception):
    """The relay refused the message this time; the task retries it."""


def deliver(session: Session, notification: Notification, attempt: int) -> OutboxMessage:
    """Put ``notification`` in the outbox (once, however often this runs); ``DeliveryRefused`` if refused."""
    _refuse_simulated(notification.to, attempt)
    existing = session.scalar(select(OutboxMessage).where(OutboxMessage.notification_id == notification.id))
    if existing is not None:  # an earlier run delivered it; a task body may run twice (at-least-once)
        return existing
    message = OutboxMessage(
        notification_id=notification.id, to=notification.to, subject=notification.subject, body=notification.body
    )
    session.add(message)
    return message


def _refuse_simulated(address: str, attempt: int) -> None:
    if not address.lower().endswith(".invalid"):
        return
    flaky = _FLAKY.search(address)
    if flaky is None:
        raise DeliveryRefused(f"relay refused {address}: the .invalid domain never accepts mail")
    failures = int(flaky.group(1))
    if attempt <= failures:
        raise DeliveryRefused(f"relay refused {address} (attempt {attempt} of the first {failures}): try again later")
