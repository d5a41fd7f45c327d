"""Settings, read from environment variables (and a ``.env`` file) and validated at start-up."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BackendName = Literal["fastapi", "celery"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)  # a test checks these match factory.BACKENDS
STORE_URL_SCHEMES = ("memory://", "sqlite:///")


class TaskSettings(BaseSettings):
    """Every setting has a default that runs the in-process backend on a bare machine."""

    model_config = SettingsConfigDict(
        env_prefix="TASK_", env_file=".env", extra="ignore", populate_by_name=True, frozen=True
    )

    backend: BackendName = Field("fastapi", description="TASK_BACKEND: fastapi (in-process) or celery")
    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="REDIS_URL: broker and result store of the celery backend",
    )
    store_url: str = Field("memory://", description="TASK_STORE_URL: memory:// or sqlite:///PATH")
    modules: str = Field("app.tasks", description="TASK_MODULES: comma-separated modules that define tasks")

    max_payload_bytes: int = Field(256 * 1024, gt=0, description="TASK_MAX_PAYLOAD_BYTES: cap on encoded arguments")
    result_ttl_s: float = Field(7 * 24 * 3600, gt=0, description="TASK_RESULT_TTL_S: how long finished records stay")
    memory_max_records: int = Field(
        10_000, gt=0, description="TASK_MEMORY_MAX_RECORDS: finished records memory:// keeps (oldest go first)"
    )
    async_concurrency: int = Field(100, gt=0, description="TASK_ASYNC_CONCURRENCY: async tasks running at once")
    thread_concurrency: int = Field(8, gt=0, description="TASK_THREAD_CONCURRENCY: sync tasks running at once")
    shutdown_grace_s: float = Field(10.0, ge=0, description="TASK_SHUTDOWN_GRACE_S: wait for running tasks at stop")

    # celery backend
    redis_timeout_s: float = Field(3.0, gt=0, description="TASK_REDIS_TIMEOUT_S: connect/read timeout to Redis")
    visibility_timeout_s: float = Field(
        300.0, gt=0, description="TASK_VISIBILITY_TIMEOUT_S: Redis redelivers an unacked message after this"
    )
    worker_prefetch: int = Field(1, gt=0, description="TASK_WORKER_PREFETCH: messages a worker process reserves")
    flower_basic_auth: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("FLOWER_BASIC_AUTH", "flower_basic_auth"),
        description="FLOWER_BASIC_AUTH: user:password for Flower (required unless FLOWER_AUTH_DISABLED=1)",
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _known_backend(cls, value: object) -> object:
        if value not in BACKEND_NAMES:
            raise ValueError(f"TASK_BACKEND must be one of {', '.join(BACKEND_NAMES)}; got {value!r}")
        return value

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value == "memory://" or (value.startswith("sqlite:///") and len(value) > len("sqlite:///")):
            return value
        raise ValueError(f"TASK_STORE_URL must be 'memory://' or 'sqlite:///PATH', got {value!r}")

    @property
    def module_names(self) -> list[str]:
        return [name.strip() for name in self.modules.split(",") if name.strip()]

    @property
    def sqlite_path(self) -> str | None:
        """The file of a ``sqlite:///PATH`` store, or None for ``memory://``."""
        return self.store_url.removeprefix("sqlite:///") if self.store_url.startswith("sqlite:///") else None
