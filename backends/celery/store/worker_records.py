"""The worker's side of the task records: claim, store, park, dispatch, leases, recovery, retention.

Each is one Lua script (one round trip). Time that decides anything (a due schedule, a retry's
due time, a lease, the retention) is Redis's clock, read inside the script, so a worker whose
clock runs ahead or behind changes nothing but the timestamps it shows.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import redis

from backends.celery.store import scripts as celery_scripts
from backends.celery.store.messages import dependency_failure_meta
from backends.celery.store.records import (
    DEPENDENCY_ERROR_TEMPLATE,
    HotScript,
    TaskRecords,
    dependents_failed,
    expiry,
)
from backends.celery.store.snapshots import text, to_seconds, to_us

STALE = "stale"  # what ``store`` returns when the attempt lost its task to another holder
FINAL = "final"  # what ``store`` returns when the task had already ended


@dataclasses.dataclass(frozen=True)
class Claim:
    """What the worker may do with a delivered message: ``run`` it, or not, and why."""

    verdict: str  # "run", "busy" (running elsewhere), "conflict", "waiting", or the final status it already has
    attempts: int = 0
    max_retries: int = 0
    retry_backoff_s: float = 1.0
    timeout_s: float | None = None
    busy_for_s: float = 0.0
    unique_key: str | None = None
    holder: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # carried from enqueue (tracing)


@dataclasses.dataclass(frozen=True)
class ClaimDefaults:
    """Options for a record the worker must create itself (a message not sent through taskservice)."""

    name: str
    queue: str
    max_retries: int
    retry_backoff_s: float
    timeout_s: float | None


class WorkerRecords(TaskRecords):
    """``TaskRecords`` plus what only workers do; raises redis errors as they come."""

    def __init__(self, client: redis.Redis, result_ttl_s: float, prefix: str = "taskservice:") -> None:
        super().__init__(client, result_ttl_s, prefix)
        self._claim = HotScript(client, celery_scripts.CLAIM)
        self._store = HotScript(client, celery_scripts.STORE)
        self._adopt = client.register_script(celery_scripts.ADOPT)
        self._dispatch = client.register_script(celery_scripts.DISPATCH)
        self._defer = HotScript(client, celery_scripts.DEFER)
        self._refresh = HotScript(client, celery_scripts.REFRESH)
        self._recover = HotScript(client, celery_scripts.RECOVER)
        self._trim = HotScript(client, celery_scripts.TRIM)

    def claim(
        self, task_id: str, token: str, lease_ms: int, defaults: Callable[[], ClaimDefaults] | ClaimDefaults
    ) -> Claim:
        """Mark the task running under a lease held by ``token`` if it may run now; otherwise say why not.

        ``defaults`` (or a function that makes them) fill in a record for a message that was sent
        without taskservice; they are not needed otherwise.
        """
        args = (self.prefix, task_id, time.time_ns() // 1000, token, lease_ms)
        reply = self._claim(*args)
        verdict = text(reply[0])
        if verdict == "missing":  # sent without taskservice: give it a record, then claim it as usual
            self.adopt(task_id, defaults() if callable(defaults) else defaults)
            reply = self._claim(*args)
            verdict = text(reply[0])
        if verdict == "run":
            timeout, headers = reply[4], reply[5]
            return Claim(
                "run",
                int(reply[1]),
                int(reply[2]),
                float(reply[3]),
                float(timeout) if timeout else None,
                headers=json.loads(headers) if headers else {},
            )
        if verdict == "busy":
            return Claim("busy", busy_for_s=int(reply[1]) / 1000)
        if verdict == "conflict":
            return Claim("conflict", unique_key=text(reply[1]), holder=text(reply[2]))
        return Claim(verdict)

    def adopt(self, task_id: str, known: ClaimDefaults) -> None:
        """Give a message sent without taskservice a pending record (nothing if it has one)."""
        now = datetime.now(UTC)
        self._adopt(
            keys=[self.record_key(task_id), self.index_key],
            args=[task_id, to_us(now), to_seconds(now), "", known.name, known.queue, known.max_retries,
                  known.retry_backoff_s, "" if known.timeout_s is None else known.timeout_s, self.prefix],
        )  # fmt: skip

    def store(
        self,
        task_id: str,
        mode: str,
        meta: str,
        meta_expires_s: int | None,
        fields: Mapping[str, str | None] | None = None,
        retry_delay_s: float | None = None,
        meta_key: str | bytes | None = None,
        token: str = "",
    ) -> str:
        """Write Celery's result ``meta`` and the record change of ``mode`` (final/retry/progress/meta) at once.

        ``fields`` are the record's changed fields (None removes one); ``token`` is the holder of the
        attempt (``'node|'``: that node's main process, for its pool child). Returns ``"stored"``,
        ``"final"`` (the record was already final: nothing written) or ``STALE`` (another attempt
        holds the task now: nothing written). Tasks that failed with it (after=) are logged.
        """
        reply = self._store(
            self.prefix,
            task_id,
            meta_key or self.meta_key(task_id),
            mode,
            meta,
            expiry(meta_expires_s),
            token,
            "" if retry_delay_s is None else repr(max(retry_delay_s, 0.0)),
            json.dumps(fields) if fields else "{}",
            DEPENDENCY_ERROR_TEMPLATE,
            dependency_failure_meta(),
        )
        if isinstance(reply, list):
            dependents_failed(reply[1])
            return "stored"
        return {1: "stored", 0: "final", -1: STALE}[int(reply)]

    def defer(self, task_id: str, delay_s: float, message: str) -> bool:
        """Park a message to be delivered again in ``delay_s`` (a duplicate whose task runs elsewhere)."""
        return bool(self._defer(self.prefix, task_id, repr(max(delay_s, 0.0)), message))

    def dispatch_due(self, limit: int = 200) -> tuple[int, float | None, float]:
        """Push due scheduled messages onto their queues: how many, when the next is due, and Redis's time now."""
        moved, following, now = self._dispatch(keys=[self.schedule_key], args=[self.prefix, limit])
        return int(moved), float(following) if following else None, float(now)

    def refresh_leases(self, held: Mapping[str, str], lease_ms: int) -> list[str]:
        """Refresh the leases of ``held`` (task id -> token), taking back lapsed ones; return the ids lost."""
        if not held:
            return []
        pairs = [item for task_id, token in held.items() for item in (task_id, token)]
        return [text(task_id) for task_id in self._refresh(self.prefix, lease_ms, *pairs)]

    def recover(self, lease_ms: int, unacked_index_key: str, unacked_key: str, limit: int = 500) -> list[str]:
        """Re-publish tasks whose worker is gone: running without a lease for half a lease more (the
        holder's refreshes come every third of one), or taken and never claimed for a lease."""
        min_age_s, grace_s = lease_ms / 1000, lease_ms / 2000
        reply = self._recover(
            self.prefix, unacked_index_key, unacked_key, repr(min_age_s), limit, lease_ms, repr(grace_s)
        )
        return [text(task_id) for task_id in reply]

    def trim(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` records that finished more than ``TASK_RESULT_TTL_S`` ago; how many went."""
        return int(self._trim(self.prefix, self.result_ttl_s, limit))
