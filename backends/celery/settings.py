"""The Celery backend's own settings, from the same environment as ``TaskSettings``."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from taskservice.settings import TaskSettings


class CelerySettings(TaskSettings):
    """``TaskSettings`` plus Redis, the broker's redelivery, and Flower."""

    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="REDIS_URL: broker and result store of the celery backend",
    )
    redis_timeout_s: float = Field(3.0, gt=0, description="TASK_REDIS_TIMEOUT_S: connect/read timeout to Redis")
    visibility_timeout_s: float = Field(
        300.0, gt=0, description="TASK_VISIBILITY_TIMEOUT_S: Redis redelivers an unacked message after this"
    )
    worker_prefetch: int = Field(1, gt=0, description="TASK_WORKER_PREFETCH: messages a worker process reserves")
    async_worker: bool = Field(
        True, description="TASK_ASYNC_WORKER: a worker starts its async pool next to its prefork pool (0: it does not)"
    )
    flower_basic_auth: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("FLOWER_BASIC_AUTH", "flower_basic_auth"),
        description="FLOWER_BASIC_AUTH: user:password for Flower (required unless FLOWER_AUTH_DISABLED=1)",
    )
