"""Where the in-process backend keeps task records.

``base``: the ``TaskStore`` protocol every store follows, ``Outcome`` and the interruption texts;
``memory``: ``MemoryTaskStore`` (``memory://``); ``sqlite``: ``SQLiteTaskStore`` (``sqlite:///PATH``).
"""

from __future__ import annotations

from backends.inprocess.settings import InProcessSettings
from backends.inprocess.store.base import TaskStore


def open_task_store(settings: InProcessSettings) -> TaskStore:
    """The store ``TASK_STORE_URL`` names."""
    path = settings.sqlite_path
    if path is None:
        from backends.inprocess.store.memory import MemoryTaskStore

        return MemoryTaskStore(
            max_finished_records=settings.memory_max_records, max_active_tasks=settings.memory_max_active_tasks
        )
    from backends.inprocess.store.sqlite import SQLiteTaskStore

    return SQLiteTaskStore(path)
