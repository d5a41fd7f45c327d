"""``OutcomeRecorder``: writes the runner's attempt outcomes to the store, many at a time, and never lets one
outcome the store refuses hold up the others.

Outcomes gathered during one loop iteration go to the store in one write. When that write fails,
each outcome is written on its own; one that still fails is:

- kept and tried again ``STORE_RETRY_DELAY_S`` later if the store itself is unusable
  (``BackendUnavailable``: locked, disk full, unreadable), so an outage loses nothing;
- otherwise (a record the store refuses: a constraint, a trigger, a value it cannot bind) replaced
  by a ``failed`` outcome with a clean error (``outcome_not_stored``), and if the store refuses
  even that, dropped with an ERROR line: its record stays as it was, and nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from backends.inprocess.store.base import Decided, TaskStore, outcome_not_stored
from taskservice.attempts import Outcome, describe_error
from taskservice.errors import BackendUnavailable, ServiceStopped
from taskservice.models import TaskStatus
from taskservice.service import TaskCall

log = logging.getLogger("taskservice")

STORE_RETRY_DELAY_S = 1.0  # after the store was unusable, try again this much later


@dataclasses.dataclass(slots=True, eq=False)
class PendingOutcome:
    """An outcome on its way to the store; ``holds_key()`` is asked when it is written."""

    outcome: Outcome
    call: TaskCall
    holds_key: Callable[[], bool] | None = None
    stand_in: bool = False  # a failure written in place of an outcome the store refused


Written = Callable[[list[PendingOutcome], Decided, bool], None]  # the batch, what it decided, whether it was stored


class OutcomeRecorder:
    """Batches outcomes per loop iteration; ``written`` runs on the loop for each batch once it is stored."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: TaskStore, written: Written) -> None:
        self._loop = loop
        self._store = store
        self._written = written
        self._queued: list[PendingOutcome] = []
        self._flush_scheduled = False
        self._retry_later: list[PendingOutcome] = []
        self._retry_timer: asyncio.TimerHandle | None = None
        self.in_flight = 0  # writes handed to the store and not answered yet

    @property
    def idle(self) -> bool:
        return not (self.in_flight or self._queued or self._retry_later)

    def add(self, pending: PendingOutcome) -> None:
        self._queued.append(pending)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand everything gathered so far to the store (on the loop)."""
        self._flush_scheduled = False
        batch, self._queued = self._queued, []
        if batch:
            self._write(batch)

    def retry_now(self) -> None:
        """At a stop: what waits for the store gets one more try at once."""
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        later, self._retry_later = self._retry_later, []
        if later:
            self._write(later)

    def abandon_retries(self) -> list[PendingOutcome]:
        """At the end of a stop: forget what the store could not take; return it."""
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        later, self._retry_later = self._retry_later, []
        return later

    def _write(self, batch: list[PendingOutcome]) -> None:
        holding = {p.outcome.task_id for p in batch if p.holds_key is not None and p.holds_key()}
        self.in_flight += 1
        try:
            self._store.submit_outcomes(
                [pending.outcome for pending in batch], holding, self._loop, lambda result: self._done(batch, result)
            )
        except Exception as exc:  # e.g. ServiceStopped: the run ended
            self._done(batch, exc)

    def _done(self, batch: list[PendingOutcome], result: Decided | BaseException) -> None:
        self.in_flight -= 1
        if not isinstance(result, BaseException):
            self._written(batch, result, True)
            return
        if len(batch) > 1:
            log.warning(
                "taskservice: could not record %d outcomes together (%s); recording them one by one",
                len(batch),
                describe_error(result),
            )
            for pending in batch:
                self._write([pending])
            return
        (pending,) = batch
        if isinstance(result, ServiceStopped):  # the run has ended: its stop decided what the record says
            self._dropped(pending, result)
        elif isinstance(result, BackendUnavailable):
            log.error(
                "taskservice: could not record the outcome of task %s; trying again: %s",
                pending.outcome.task_id,
                describe_error(result),
            )
            self._retry_later.append(pending)
            if self._retry_timer is None:
                self._retry_timer = self._loop.call_later(STORE_RETRY_DELAY_S, self.retry_now)
        elif not pending.stand_in:
            refusal = describe_error(result)
            log.error(
                "taskservice: the store refused the %s outcome of task %s (%s); recording it as failed",
                pending.outcome.status.value,
                pending.outcome.task_id,
                refusal,
                exc_info=result,
            )
            outcome = pending.outcome
            stand_in = Outcome(
                outcome.task_id, outcome.attempt, TaskStatus.FAILED, outcome.at, error=outcome_not_stored(refusal)
            )
            self._write([PendingOutcome(stand_in, pending.call, pending.holds_key, stand_in=True)])
        else:
            self._dropped(pending, result)

    def _dropped(self, pending: PendingOutcome, reason: BaseException) -> None:
        if not isinstance(reason, ServiceStopped):
            log.error(
                "taskservice: the store refused any outcome of task %s (%s); its record is left as it was",
                pending.outcome.task_id,
                describe_error(reason),
            )
        self._written([pending], Decided(), False)
