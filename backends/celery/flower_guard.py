"""The Flower guard: ``celery -A backends.celery_app flower`` never starts open by accident.

Flower reads its own options (``FLOWER_BASIC_AUTH=user:password``, ``FLOWER_ADDRESS``...) from the
environment, then its configuration file (``--conf``, ``flowerconfig.py`` by default), then the
command line, each overriding the one before. This reads the authentication options from the same
places in the same order and refuses to let Flower start unless every one that is given has a usable
value (``user:password`` pairs with neither part empty; an ``auth`` e-mail pattern only with an
``auth_provider``) and at least one of them is given, unless ``FLOWER_AUTH_DISABLED=1`` says running
open is meant. It also makes Flower listen on 127.0.0.1 unless an address is given.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from backends.celery.settings import CelerySettings

# celery's global options that take a value: what follows them is not the sub-command
_VALUED_OPTIONS = frozenset({"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"})
DEFAULT_FLOWER_CONFIG = "flowerconfig.py"

FLOWER_REFUSAL = (
    "taskservice: Flower will not start without authentication. Set FLOWER_BASIC_AUTH=user:password "
    "(several: user1:pw1,user2:pw2), or FLOWER_AUTH_DISABLED=1 to run it open on purpose "
    "(e.g. behind a proxy that authenticates)."
)


def celery_subcommand(argv: Sequence[str]) -> str | None:
    """The sub-command of a ``celery ...`` command line (``worker``, ``beat``, ``flower``...), if any."""
    skip_next = False
    for arg in argv[1:]:
        if skip_next:
            skip_next = False
        elif arg in _VALUED_OPTIONS:
            skip_next = True
        elif not arg.startswith("-"):
            return arg
    return None


def _option_values(argv: Sequence[str], name: str) -> list[str]:
    """Values of ``--name=v`` / ``--name v`` (dashes or underscores) on the command line, in order."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    values: list[str] = []
    for index, arg in enumerate(argv):
        key, equals, value = arg.partition("=")
        if key in spellings:
            if equals:
                values.append(value)
            else:
                following = argv[index + 1] if index + 1 < len(argv) else ""
                values.append("" if following.startswith("-") else following)
    return values


def _config_file(argv: Sequence[str]) -> dict[str, Any]:
    """The names Flower's configuration file sets (Flower executes it too); empty if there is none."""
    given = _option_values(argv, "conf")
    path = given[-1] if given else DEFAULT_FLOWER_CONFIG
    if not os.path.isfile(path):
        return {}
    return {key: value for key, value in runpy.run_path(path).items() if not key.startswith("__")}


def auth_problem(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """Why Flower as configured would not authenticate every request, or None if it would."""
    sources: dict[str, list[tuple[str, object]]] = {"basic_auth": [], "auth": [], "auth_provider": []}
    config = _config_file(argv)
    for name, found in sources.items():  # Flower's order: environment, then the file, then the command line
        if f"FLOWER_{name.upper()}" in environ:
            found.append((f"FLOWER_{name.upper()}", environ[f"FLOWER_{name.upper()}"]))
        if name in config:
            found.append((f"{name} in the Flower configuration file", config[name]))
        found += [(f"--{name.replace('_', '-')}", value) for value in _option_values(argv, name)]
    for origin, value in sources["basic_auth"]:
        pairs = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else []
        credentials = [str(pair).split(":", 1) for pair in pairs]
        if not credentials or not all(len(pair) == 2 and pair[0] and pair[1] for pair in credentials):
            return f"{origin} must be user:password[,user:password...] with neither part empty"
    for origin, value in sources["auth"]:
        if not isinstance(value, str) or not value.strip():
            return f"{origin} is empty: it must be a pattern of the e-mail addresses allowed in"
        if not any(isinstance(provider, str) and provider for _, provider in sources["auth_provider"]):
            return f"{origin} needs an auth_provider (OAuth) to check e-mail addresses against"
    if not sources["basic_auth"] and not sources["auth"]:
        return "no authentication is configured"
    return None


def guard_flower(argv: Sequence[str], environ: MutableMapping[str, str], settings: CelerySettings) -> None:
    """Before ``celery ... flower`` starts: insist on usable credentials, default to loopback; ``SystemExit`` if not."""
    if celery_subcommand(argv) != "flower":
        return
    if "FLOWER_BASIC_AUTH" not in environ and settings.flower_basic_auth is not None:
        environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()  # from .env: Flower reads env
    if not _option_values(argv, "address") and not environ.get("FLOWER_ADDRESS"):
        environ["FLOWER_ADDRESS"] = "127.0.0.1"
    if environ.get("FLOWER_AUTH_DISABLED") == "1":
        print("taskservice: FLOWER_AUTH_DISABLED=1: Flower runs without authentication", file=sys.stderr)
        return
    problem = auth_problem(argv, environ)
    if problem is None:
        return
    if problem == "no authentication is configured":
        raise SystemExit(FLOWER_REFUSAL)
    raise SystemExit(f"taskservice: {problem}.\n{FLOWER_REFUSAL}")
