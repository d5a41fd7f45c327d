"""The Lua scripts behind the Celery backend's task records: each state change is one atomic round trip.

The scripts live next to this module (``lua/*.lua``). Each is loaded with a generated prelude that
spells the status words and sets from ``TaskStatus`` (``PENDING``, ``RUNNING``, ...; ``CLAIMABLE``,
``FINAL`` as tables), so no script writes a status by hand; those that need them also get
``lua/common.lua`` (``active``, ``release_unique``, ``count``, ``settle_dependents``...).

Keys (``P`` is the key prefix, ``taskservice:`` by default):

``P task:ID``       hash: the record (name, status, timestamps in microseconds, attempts, error,
                    ``holder``: the token of the attempt that runs or ran it, ...)
``P lease:ID``      string: that token while its worker process refreshes it (expires otherwise)
``P unique:KEY``    string: the id of the task holding ``unique_key`` KEY
``P index``         sorted set: ids by enqueue time (``list_tasks``)
``P schedule``      sorted set: ids by due time; their broker message waits in the record's ``message``
``P pending``       sorted set: ids of pending tasks by enqueue time (``stats``: the oldest pending)
``P finished``      sorted set: ids of final tasks by finish time (retention: ``TRIM``)
``P counts``        hash: transition counters (``'running>succeeded'`` -> n) for ``stats``
``P waiting:ID``    set: ids of tasks waiting for ID (``after=``); ID's record has ``dependents``
``P recovering:ID`` string: ID was re-published by ``RECOVER`` within the last lease period

A task is *active* (holds its unique_key) from enqueue until it reaches a final status. A running
task whose worker died keeps it: once its lease expired, ``RECOVER`` (run by every worker's
dispatcher) re-publishes its message, and the claim lets the copy take over.

The scripts a worker runs for every task (``CLAIM``, ``STORE``) derive their keys from the prefix
and the id instead of taking them as ``KEYS``: every argument costs on both sides of a call that is
on every task's path. That, like the keys the other scripts derive, ties the layout to one Redis
server (not Redis Cluster), which is what Celery's Redis transport supports anyway.
"""

from __future__ import annotations

from pathlib import Path

from taskservice.models import CLAIMABLE_STATUSES, FINAL_STATUSES, TaskStatus, in_order

_HERE = Path(__file__).with_name("lua")


def _prelude() -> str:
    """Status words and sets as Lua locals, generated from ``TaskStatus``."""
    words = [f"local {status.name} = '{status.value}'" for status in TaskStatus]
    sets = [
        f"local {name} = {{{', '.join(f'{status.value} = true' for status in in_order(statuses))}}}"
        for name, statuses in (("CLAIMABLE", CLAIMABLE_STATUSES), ("FINAL", FINAL_STATUSES))
    ]
    return "-- generated from taskservice.models.TaskStatus\n" + "\n".join(words + sets) + "\n"


PRELUDE = _prelude()
COMMON = (_HERE / "common.lua").read_text()


def _script(name: str, *, common: bool) -> str:
    return PRELUDE + (COMMON if common else "") + (_HERE / f"{name}.lua").read_text()


INSERT = _script("insert", common=True)
CLAIM = _script("claim", common=True)
ADOPT = _script("adopt", common=False)
STORE = _script("store", common=True)
CANCEL = _script("cancel", common=True)
DISPATCH = _script("dispatch", common=False)
DEFER = _script("defer", common=False)
REFRESH = _script("refresh", common=False)
RECOVER = _script("recover", common=False)
TRIM = _script("trim", common=False)
LINK_RETRY = _script("link_retry", common=False)
