"""Whether the Redis a worker uses keeps its data across a restart: that is the operator's to set.

Queued tasks, schedules, retries and task records live in Redis. With neither append-only
persistence (``appendonly yes``, what the compose file sets) nor snapshots (``save``), a restart of
Redis loses all of them. A worker says so once at start-up (``persistence_warning``); readiness
checks can ask the same question.
"""

from __future__ import annotations

from typing import Any


def persistence_warning(client: Any) -> str | None:
    """A one-line warning if Redis persists nothing (no AOF, no RDB snapshots); None if it does or cannot say.

    ``CONFIG GET`` may be refused (a managed Redis, a renamed command): then nothing is claimed.
    """
    try:
        appendonly = _config(client, "appendonly")
        save = _config(client, "save")
    except Exception:  # CONFIG refused, or Redis away: the broker connection reports an outage itself
        return None
    if appendonly == "yes" or save.strip():
        return None
    return (
        "Redis persists nothing (appendonly no, save ''): a restart of Redis loses queued tasks, schedules "
        "and task records; run it with --appendonly yes (see the README, 'Redis persistence')"
    )


def _config(client: Any, name: str) -> str:
    value = client.config_get(name).get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)
