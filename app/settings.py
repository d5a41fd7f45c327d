"""The reference app's settings: one pydantic-settings model, read from the environment.

The API process, Celery workers and beat all read the same variables, so they agree on
the database and the data directory. Invalid values fail at start-up, naming the variable.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskservice.startup import check_task_settings_or_exit, settings_or_exit


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class AppSettings(BaseSettings):
    """Every default lets ``make run`` work on a bare machine (SQLite under ``./data``)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True, frozen=True)

    database_url: str | None = Field(
        None,
        validation_alias=_env("DATABASE_URL"),
        description="DATABASE_URL: SQLAlchemy URL; default sqlite:///APP_DATA_DIR/app.sqlite3. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/dbname",
    )
    data_dir: Path = Field(
        Path("data"),
        validation_alias=_env("APP_DATA_DIR"),
        description="APP_DATA_DIR: uploaded files, thumbnails and reports; shared by the API and the workers",
    )
    admin_token: SecretStr | None = Field(
        None,
        validation_alias=_env("APP_ADMIN_TOKEN"),
        description="APP_ADMIN_TOKEN: bearer token for GET /tasks and DELETE /tasks/{id}; unset = closed (403)",
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        validation_alias=_env("APP_MAX_UPLOAD_BYTES"),
        description="APP_MAX_UPLOAD_BYTES: largest accepted upload (image or CSV), enforced while it streams in",
    )
    max_image_pixels: int = Field(
        25_000_000,
        gt=0,
        validation_alias=_env("APP_MAX_IMAGE_PIXELS"),
        description="APP_MAX_IMAGE_PIXELS: width x height above which an image is refused as a decompression bomb "
        "(25 MP: a 6000x4000 photo; a PNG decodes to about 4 bytes per pixel)",
    )
    heavy_task_concurrency: int = Field(
        2,
        gt=0,
        le=64,
        validation_alias=_env("APP_HEAVY_TASK_CONCURRENCY"),
        description="APP_HEAVY_TASK_CONCURRENCY: thumbnail and pipeline tasks running at once per process "
        "(each may need up to about 4 bytes per pixel of APP_MAX_IMAGE_PIXELS); the others wait their turn",
    )
    upkeep_interval_s: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("APP_UPKEEP_INTERVAL_S"),
        description="APP_UPKEEP_INTERVAL_S: how often the thumbnail integrity check runs",
    )
    notify_max_retries: int = Field(
        3,
        ge=0,
        le=20,
        validation_alias=_env("APP_NOTIFY_MAX_RETRIES"),
        description="APP_NOTIFY_MAX_RETRIES: delivery retries after the first attempt",
    )
    notify_retry_backoff_s: float = Field(
        2.0,
        ge=0,
        validation_alias=_env("APP_NOTIFY_RETRY_BACKOFF_S"),
        description="APP_NOTIFY_RETRY_BACKOFF_S: wait before the first retry; doubles each time, with jitter",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None or value.startswith(("sqlite://", "postgresql")):
            return value
        raise ValueError(f"DATABASE_URL must be a sqlite:// or postgresql+psycopg:// URL, got {value.split(':')[0]!r}")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'app.sqlite3').resolve()}"


@functools.cache
def get_settings() -> AppSettings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after changing the environment)."""
    return AppSettings()


def settings_at_start() -> AppSettings:
    """The settings a process starts with (API, worker, beat); an invalid one, the app's or
    taskservice's, stops it with one line naming the variable, its value and what is valid."""
    check_task_settings_or_exit()
    settings_or_exit(AppSettings)
    return get_settings()
