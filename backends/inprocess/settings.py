"""The in-process backend's own settings, from the same environment as ``TaskSettings``."""

from __future__ import annotations

from pydantic import Field, field_validator

from taskservice.settings import TaskSettings

STORE_URL_SCHEMES = ("memory://", "sqlite:///")
# Relative to the working directory the service starts in; the directory is created on first use.
DEFAULT_STORE_URL = "sqlite:///.taskservice/tasks.sqlite3"


class InProcessSettings(TaskSettings):
    """``TaskSettings`` plus where records are kept and how tasks run in the API process."""

    store_url: str = Field(
        DEFAULT_STORE_URL,
        description="TASK_STORE_URL: sqlite:///PATH (default .taskservice/tasks.sqlite3, durable, shared by the "
        "server workers of one machine) or memory:// (opt-in, e.g. for tests: one process, nothing survives a stop)",
    )
    memory_max_records: int = Field(
        10_000, gt=0, description="TASK_MEMORY_MAX_RECORDS: finished records memory:// keeps (oldest go first)"
    )
    memory_max_active_tasks: int = Field(
        100_000,
        gt=0,
        description="TASK_MEMORY_MAX_ACTIVE_TASKS: pending, scheduled, running and retrying tasks memory:// holds; "
        "past it, enqueue raises TooManyActiveTasks (a BackendUnavailable: HTTP 503)",
    )
    thread_concurrency: int = Field(8, gt=0, description="TASK_THREAD_CONCURRENCY: sync tasks running at once")
    shutdown_grace_s: float = Field(10.0, ge=0, description="TASK_SHUTDOWN_GRACE_S: wait for running tasks at stop")

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value == "memory://" or (value.startswith("sqlite:///") and len(value) > len("sqlite:///")):
            return value
        raise ValueError(f"TASK_STORE_URL must be 'memory://' or 'sqlite:///PATH', got {value!r}")

    @property
    def sqlite_path(self) -> str | None:
        """The file of a ``sqlite:///PATH`` store, or None for ``memory://``."""
        return self.store_url.removeprefix("sqlite:///") if self.store_url.startswith("sqlite:///") else None
