"""Task records of the Celery backend, in Redis: what raw Celery lacks, each change one atomic round trip.

A record is written at enqueue (so an unknown id is ``TaskNotFound``, never "PENDING forever"),
claimed by the worker before the body runs (so a cancelled, finished or still-running task is
not run again by a redelivered message), and finished by the result backend in the same round
trip as Celery's own result. The Lua scripts and the key layout are in ``celery_scripts``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from backends.celery.store import scripts as celery_scripts
from taskservice.codec import Arguments
from taskservice.errors import TaskConflict
from taskservice.models import TaskResult, TaskStatus
from taskservice.registry import Task, TaskOptions, registered_tasks
from taskservice.service import TaskCall, TaskQuery

KEY_PREFIX = "taskservice:"
CELERY_META_PREFIX = "celery-task-meta-"  # Celery's redis result backend key for a task's result

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


@dataclasses.dataclass(frozen=True)
class Claim:
    """What the worker may do with a delivered message: ``run`` it, or not, and why."""

    verdict: str  # "run", "busy" (running elsewhere), "conflict", or the final status it already has
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


class TaskRecords:
    """Reads and atomic writes of task records; raises redis errors as they come (callers translate)."""

    def __init__(self, client: redis.Redis, result_ttl_s: float, prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self.result_ttl_ms = max(1, int(result_ttl_s * 1000))
        self.index_key = prefix + "index"
        self.schedule_key = prefix + "schedule"
        self._insert = client.register_script(celery_scripts.INSERT)
        self._claim = _HotScript(client, celery_scripts.CLAIM)
        self._adopt = client.register_script(celery_scripts.ADOPT)
        self._store = _HotScript(client, celery_scripts.STORE)
        self._cancel = client.register_script(celery_scripts.CANCEL)
        self._dispatch = client.register_script(celery_scripts.DISPATCH)
        self._link_retry = client.register_script(celery_scripts.LINK_RETRY)

    def record_key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def lease_key(self, task_id: str) -> str:
        return f"{self.prefix}lease:{task_id}"

    def unique_key(self, key: str) -> str:
        return f"{self.prefix}unique:{key}"

    @staticmethod
    def meta_key(task_id: str) -> str:
        return CELERY_META_PREFIX + task_id

    # --- the API side ---------------------------------------------------------------------------

    def insert(self, call: TaskCall, message: str, queue: str) -> None:
        """Write the record and publish (or park, if scheduled) the message; ``TaskConflict`` if its key is held."""
        now = datetime.now(UTC)
        delay_s = max(0.0, to_seconds(call.run_at) - to_seconds(now)) if call.run_at is not None else 0.0
        ttl_ms = self.result_ttl_ms + int(delay_s * 1000)  # a far-future task keeps its record until it ran
        options = call.options
        fields: list[str | int | float] = [
            "name", call.task.name,
            "status", call.initial_status.value,
            "enqueued_at", to_us(call.enqueued_at),
            "queue", queue,
            "max_retries", options.max_retries,
            "retry_backoff", options.retry_backoff,
            "args", call.arguments.encoded,
        ]  # fmt: skip
        if options.timeout is not None:
            fields += ["timeout", options.timeout]
        if options.unique_key is not None:
            fields += ["unique_key", options.unique_key]
        if call.run_at is not None:
            fields += ["run_at", to_us(call.run_at)]
        if call.headers:
            fields += ["headers", json.dumps(dict(call.headers))]
        if call.retry_of is not None:
            fields += ["retry_of", call.retry_of]
        unique = self.unique_key(options.unique_key) if options.unique_key is not None else self.record_key(call.id)
        target = self.schedule_key if call.run_at is not None else queue
        due = repr(to_seconds(call.run_at)) if call.run_at is not None else ""
        cutoff = to_seconds(now) - self.result_ttl_ms / 1000
        holder = self._insert(
            keys=[self.record_key(call.id), self.index_key, unique, target],
            args=[self.prefix, call.id, ttl_ms, to_seconds(call.enqueued_at), cutoff, message, due,
                  "1" if options.unique_key is not None else "0", *fields],
        )  # fmt: skip
        if holder is not None:
            assert options.unique_key is not None
            raise TaskConflict(options.unique_key, _text(holder))

    def read(self, task_id: str) -> TaskResult | None:
        """The record as a snapshot, or None if there is none."""
        return _snapshot(task_id, self.client.hmget(self.record_key(task_id), READ_FIELDS))

    def recent(self, query: TaskQuery, page_size: int = 500) -> list[TaskResult]:
        """Newest first, as ``query`` says; records that expired are dropped from the index on the way."""
        found: list[TaskResult] = []
        high = "+inf" if query.enqueued_before is None else repr(to_seconds(query.enqueued_before))
        if query.cursor is not None:  # inclusive: equal scores are sorted out below by (enqueued_at, id)
            high = repr(min(float(high), to_seconds(query.cursor[0])))
        low = "-inf" if query.enqueued_after is None else repr(to_seconds(query.enqueued_after) - 1e-3)
        start = 0
        while len(found) < query.limit:
            raw = self.client.zrevrangebyscore(self.index_key, high, low, start=start, num=page_size)
            ids = [_text(item) for item in raw]
            if not ids:
                break
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hmget(self.record_key(task_id), READ_FIELDS)
                rows = pipe.execute()
            gone = []
            page: list[TaskResult] = []
            for task_id, row in zip(ids, rows, strict=True):
                snapshot = _snapshot(task_id, row)
                if snapshot is None:
                    gone.append(task_id)
                elif query.matches(snapshot):
                    page.append(snapshot)
            # Scores are seconds as floats: order exactly by (enqueued_at, id) within what was read.
            found += sorted(page, key=lambda r: (r.enqueued_at, r.id), reverse=True)
            if gone:
                self.client.zrem(self.index_key, *gone)
            start += len(ids) - len(gone)
            if len(ids) < page_size:
                break
        return found[: query.limit]

    def retry_source(self, task_id: str) -> tuple[TaskStatus, TaskCall] | None:
        """The record's status and the call it was made from, or None if there is no record."""
        values = dict(zip(CALL_FIELDS, self.client.hmget(self.record_key(task_id), CALL_FIELDS), strict=True))
        text = {name: None if value is None else _text(value) for name, value in values.items()}
        if text["status"] is None or text["name"] is None:
            return None
        payload = text["args"] or '{"args": [], "kwargs": {}}'
        decoded = json.loads(payload)
        timeout = text["timeout"]
        options = TaskOptions(
            max_retries=int(text["max_retries"] or 0),
            retry_backoff=float(text["retry_backoff"] or 1.0),
            timeout=float(timeout) if timeout else None,
            queue=text["queue"],
            unique_key=text["unique_key"],
        )
        handle = registered_tasks().get(text["name"]) or Task(_unregistered, text["name"], options)
        call = TaskCall(
            id=task_id,
            task=handle,
            arguments=Arguments(decoded["args"], decoded["kwargs"], payload),
            options=options,
            enqueued_at=datetime.now(UTC),
            run_at=None,
            headers=json.loads(text["headers"]) if text["headers"] else {},
        )
        return TaskStatus(text["status"]), call

    def link_retry(self, original_id: str, retry_id: str) -> None:
        self._link_retry(keys=[self.record_key(original_id)], args=[retry_id])

    def cancel(self, task_id: str, revoked_meta: str, meta_expires_s: int | None) -> bool | None:
        """True: it will never run; False: it already ran or is running; None: no such task."""
        outcome = self._cancel(
            keys=[self.record_key(task_id), self.schedule_key, self.meta_key(task_id)],
            args=[self.prefix, task_id, to_us(datetime.now(UTC)), self.result_ttl_ms, revoked_meta,
                  _expiry(meta_expires_s)],
        )  # fmt: skip
        return None if int(outcome) < 0 else bool(int(outcome))

    # --- the worker side ------------------------------------------------------------------------

    def claim(
        self, task_id: str, token: str, lease_ms: int, defaults: Callable[[], ClaimDefaults] | ClaimDefaults
    ) -> Claim:
        """Mark the task running under a lease if it may run now; otherwise say why not.

        ``defaults`` (or a function that makes them) fill in a record for a message that was sent
        without taskservice; they are not needed otherwise.
        """
        args = (self.prefix, task_id, time.time_ns() // 1000, token, lease_ms)
        reply = self._claim(*args)
        verdict = _text(reply[0])
        if verdict == "missing":  # sent without taskservice: give it a record, then claim it as usual
            known = defaults() if callable(defaults) else defaults
            now = datetime.now(UTC)
            self._adopt(
                keys=[self.record_key(task_id), self.index_key],
                args=[task_id, to_us(now), to_seconds(now), self.result_ttl_ms, known.name, known.queue,
                      known.max_retries, known.retry_backoff_s, "" if known.timeout_s is None else known.timeout_s],
            )  # fmt: skip
            reply = self._claim(*args)
            verdict = _text(reply[0])
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
            return Claim("conflict", unique_key=_text(reply[1]), holder=_text(reply[2]))
        return Claim(verdict)

    def store(
        self,
        task_id: str,
        mode: str,
        meta: str,
        meta_expires_s: int | None,
        fields: Mapping[str, str | None] | None = None,
        retry_due_s: float | None = None,
        meta_key: str | bytes | None = None,
    ) -> None:
        """Write Celery's result ``meta`` and the record change of ``mode`` (final/retry/progress/meta) at once.

        ``fields`` are the record's changed fields; None removes one.
        """
        self._store(
            self.prefix,
            task_id,
            meta_key or self.meta_key(task_id),
            mode,
            meta,
            _expiry(meta_expires_s),
            self.result_ttl_ms,
            "" if retry_due_s is None else repr(retry_due_s),
            json.dumps(fields) if fields else "{}",
        )

    def defer(self, task_id: str, due_s: float, message: str) -> None:
        """Park a message to be delivered again at ``due_s`` (a duplicate whose task runs elsewhere)."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.record_key(task_id), "message", message)
            pipe.zadd(self.schedule_key, {task_id: due_s})
            pipe.execute()

    def dispatch_due(self, now_s: float, limit: int = 200) -> tuple[int, float | None]:
        """Push due scheduled messages onto their queues; return how many, and when the next is due."""
        moved, following = self._dispatch(keys=[self.schedule_key], args=[self.prefix, repr(now_s), limit])
        return int(moved), float(following) if following else None

    def refresh_leases(self, task_ids: Sequence[str], lease_ms: int) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.pexpire(self.lease_key(task_id), lease_ms)
            pipe.execute()


class _HotScript:
    """A script on every task's path: ``EVALSHA`` with no keys and no wrapper, loaded again if Redis forgot it."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, *args: str | bytes | int | float) -> Any:
        try:
            return self.client.evalsha(self.sha, 0, *args)
        except redis.exceptions.NoScriptError:  # a restarted Redis has an empty script cache
            self.client.script_load(self.source)
            return self.client.evalsha(self.sha, 0, *args)


def _expiry(seconds: int | None) -> str:
    return "" if not seconds else str(int(seconds))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _snapshot(task_id: str, row: Sequence[Any]) -> TaskResult | None:
    values = dict(zip(READ_FIELDS, (None if item is None else _text(item) for item in row), strict=True))
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


def _unregistered(*args: Any, **kwargs: Any) -> None:
    """Stands for a task this process does not import: only its name travels, a worker runs the real one."""
    raise LookupError("this task is not registered in this process: is its module in TASK_MODULES?")
