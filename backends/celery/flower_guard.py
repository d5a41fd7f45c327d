"""The Flower guard: ``celery -A backends.celery_app flower`` never starts open by accident.

Flower reads its own options (``FLOWER_BASIC_AUTH=user:password``, ``FLOWER_ADDRESS``...);
this only refuses to let it start without credentials, unless ``FLOWER_AUTH_DISABLED=1`` says
that is meant, and makes it listen on 127.0.0.1 unless an address is given.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping, Sequence

from backends.celery.settings import CelerySettings

# celery's global options that take a value: what follows them is not the sub-command
_VALUED_OPTIONS = frozenset({"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"})

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


def _has_option(argv: Sequence[str], *names: str) -> bool:
    return any(arg in names or arg.split("=", 1)[0] in names for arg in argv)


def guard_flower(argv: Sequence[str], environ: MutableMapping[str, str], settings: CelerySettings) -> None:
    """Before ``celery ... flower`` starts: insist on credentials, default to loopback; ``SystemExit`` if refused."""
    if celery_subcommand(argv) != "flower":
        return
    if not environ.get("FLOWER_BASIC_AUTH") and settings.flower_basic_auth is not None:
        environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()  # from .env: Flower reads env
    if not _has_option(argv, "--address") and not environ.get("FLOWER_ADDRESS"):
        environ["FLOWER_ADDRESS"] = "127.0.0.1"
    if environ.get("FLOWER_AUTH_DISABLED") == "1":
        print("taskservice: FLOWER_AUTH_DISABLED=1: Flower runs without authentication", file=sys.stderr)
        return
    basic_auth = environ.get("FLOWER_BASIC_AUTH", "")
    if basic_auth:
        pairs = [pair.split(":", 1) for pair in basic_auth.split(",")]
        if all(len(pair) == 2 and pair[0] and pair[1] for pair in pairs):
            return
        raise SystemExit(f"taskservice: FLOWER_BASIC_AUTH must be user:password[,user:password...]\n{FLOWER_REFUSAL}")
    if _has_option(argv, "--basic-auth", "--basic_auth", "--auth") or environ.get("FLOWER_AUTH"):
        return
    raise SystemExit(FLOWER_REFUSAL)
