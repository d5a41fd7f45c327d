"""Settings, read from environment variables (and a ``.env`` file) and validated at start-up.

``TaskSettings`` holds what every backend shares. Each backend reads its own settings from the
same environment with a subclass (its ``settings_class``: ``InProcessSettings``, ``CelerySettings``),
so a backend outside this tree adds settings without editing this module. Keyword arguments meant
for the backend can still be given here (``TaskSettings(backend="celery", redis_url=...)``): the
backend's settings take the ones they know.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DOTTED_BACKEND = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
S = TypeVar("S", bound="TaskSettings")


class TaskSettings(BaseSettings):
    """Every setting has a default that runs the in-process backend on a bare machine."""

    model_config = SettingsConfigDict(
        env_prefix="TASK_", env_file=".env", extra="ignore", populate_by_name=True, frozen=True
    )

    backend: str = Field(
        "fastapi",
        description="TASK_BACKEND: fastapi (in-process), celery, or a backend of your own as package.module:Class",
    )
    modules: str = Field("", description="TASK_MODULES: comma-separated modules that define tasks")
    max_payload_bytes: int = Field(256 * 1024, gt=0, description="TASK_MAX_PAYLOAD_BYTES: cap on encoded arguments")
    result_ttl_s: float = Field(7 * 24 * 3600, gt=0, description="TASK_RESULT_TTL_S: how long finished records stay")
    async_concurrency: int = Field(
        100, gt=0, description="TASK_ASYNC_CONCURRENCY: async tasks running at once (per process)"
    )

    # Keyword arguments none of this class's fields take: kept for the backend's own settings class.
    _backend_overrides: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        fields = type(self).model_fields
        known = set(fields) | {field.alias for field in fields.values() if field.alias}
        for field in fields.values():
            choices = getattr(field.validation_alias, "choices", None) or []
            known.update(choice for choice in choices if isinstance(choice, str))
        overrides = {k: v for k, v in values.items() if k not in known and not k.startswith("_")}
        super().__init__(**values)
        self._backend_overrides = overrides

    @field_validator("backend", mode="before")
    @classmethod
    def _known_backend(cls, value: object) -> object:
        from taskservice.factory import BUILTIN_BACKENDS  # the one table of built-in names

        if value in BUILTIN_BACKENDS or (isinstance(value, str) and DOTTED_BACKEND.match(value)):
            return value
        raise ValueError(
            f"TASK_BACKEND must be one of {', '.join(BUILTIN_BACKENDS)}, or package.module:Class; got {value!r}"
        )

    @property
    def module_names(self) -> list[str]:
        return [name.strip() for name in self.modules.split(",") if name.strip()]

    def for_backend(self, settings_class: type[S]) -> S:
        """These settings as ``settings_class`` (a subclass) reads them: the environment, plus what was given here."""
        if isinstance(self, settings_class):
            return self
        given = {**self.model_dump(), **self._backend_overrides}
        return settings_class(**{key: value for key, value in given.items()})
