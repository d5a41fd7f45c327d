"""Start-up checks: an invalid setting stops the process with one line (variable, value, valid choices).

A pydantic ``ValidationError`` prints as a traceback of fifty lines with the message at the
bottom. ``settings_or_exit`` builds a settings class and, when the environment is wrong, exits
with status 1 and one line per invalid variable instead, e.g.::

    invalid setting TASK_BACKEND='celry': must be one of fastapi, celery, or package.module:Class

It raises ``SystemExit``, so it belongs at import time of the code a process starts with (uvicorn
and Celery let it through as a plain message; a lifespan would turn it into a traceback).
Values of secret settings (``SecretStr`` fields) are never printed.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

M = TypeVar("M", bound=BaseModel)
_URL_PASSWORD = re.compile(r"(//[^/:@]*:)[^/@]*@")
_ECHOED_VALUE = re.compile(r"[;,] got .*$")


def settings_or_exit(settings_class: type[M], **values: Any) -> M:
    """``settings_class(**values)``; on invalid settings, ``SystemExit`` with one line per variable."""
    try:
        return settings_class(**values)
    except ValidationError as exc:
        raise SystemExit(describe_invalid(exc, settings_class)) from None


def check_task_settings_or_exit() -> None:
    """Validate ``TASK_BACKEND`` and the chosen backend's own settings (``TASK_STORE_URL``, ``REDIS_URL``...)."""
    from taskservice.factory import load_backend_class
    from taskservice.settings import TaskSettings

    settings = settings_or_exit(TaskSettings)
    settings_or_exit(load_backend_class(settings.backend).settings_class)


def describe_invalid(error: ValidationError, settings_class: type[BaseModel]) -> str:
    """One line per invalid variable: its name, its value (hidden if secret) and what is valid."""
    lines: list[str] = []
    for problem in error.errors():
        field_name = str(problem["loc"][0]) if problem["loc"] else ""
        field = settings_class.model_fields.get(field_name)
        variable = _variable(settings_class, field_name, field)
        message = str(problem["msg"]).removeprefix("Value error, ")
        message = message.removeprefix(f"{variable} ").removeprefix("must be ").strip()
        shown = "(hidden)" if field is not None and _is_secret(field) else _shown(problem.get("input"))
        lines.append(f"invalid setting {variable}={shown}: {_must(message)}")
    return "\n".join(dict.fromkeys(lines))


def _shown(value: Any) -> str:
    """The value as given, with a password inside a URL (redis://:secret@host) masked."""
    return repr(_URL_PASSWORD.sub(r"\1***@", value) if isinstance(value, str) else value)


def _must(message: str) -> str:
    """'must be one of a, b; got x' reads better without the repeated value."""
    text = _ECHOED_VALUE.sub("", message)
    return text if text.startswith(("Input", "Field", "Value")) else f"must be {text}"


def _variable(settings_class: type[BaseModel], field_name: str, field: FieldInfo | None) -> str:
    alias = field.validation_alias if field is not None else None
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0])
    if isinstance(alias, str):
        return alias
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return f"{prefix}{field_name}".upper()


def _is_secret(field: FieldInfo) -> bool:
    return "SecretStr" in repr(field.annotation) or field.annotation is SecretStr
