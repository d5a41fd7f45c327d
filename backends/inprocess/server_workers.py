"""Is this process one of several server worker processes? Then a ``memory://`` store cannot work.

Each worker would keep its own records: a task enqueued by one worker is unknown to the
others, so ``GET /tasks/{id}`` answers 404 at random. Detected where it can be, from the
parent process (the server's master):

- its command line runs uvicorn, gunicorn, hypercorn or the fastapi CLI with ``--workers N``
  (``-w N``), or, without the flag, the ``WEB_CONCURRENCY`` / ``UVICORN_WORKERS`` /
  ``GUNICORN_CMD_ARGS`` environment that server reads, or
- it has other children that are copies of this process (gunicorn workers from a config file).

One worker, and uvicorn's or the fastapi CLI's reloader (``--reload``, ``fastapi dev``), are fine.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

SERVERS = ("uvicorn", "gunicorn", "hypercorn", "fastapi")
_RELOAD_IGNORES_WORKERS = ("uvicorn", "fastapi")  # their reloader always runs one worker
_WORKER_ENV = {
    "uvicorn": ("UVICORN_WORKERS", "WEB_CONCURRENCY"),
    "fastapi": ("WEB_CONCURRENCY",),
    "gunicorn": ("WEB_CONCURRENCY",),
    "hypercorn": (),
}


@dataclasses.dataclass(frozen=True)
class ProcessView:
    """What the detection looks at; ``ProcessView.current()`` reads it from /proc."""

    parent_argv: Sequence[str]
    environ: Mapping[str, str]
    own_argv: Sequence[str] = ()
    sibling_argvs: Sequence[Sequence[str]] = ()  # the other children of the parent

    @classmethod
    def current(cls) -> ProcessView:
        parent = os.getppid()
        own = os.getpid()
        siblings = [
            argv for pid, ppid in _processes() if ppid == parent and pid != own for argv in [_argv(pid)] if argv
        ]
        return cls(_argv(parent), dict(os.environ), _argv(own), siblings)


def several_workers(view: ProcessView | None = None) -> str | None:
    """How several workers were detected (e.g. ``"uvicorn --workers 4"``), or None."""
    view = view if view is not None else ProcessView.current()
    server = _server_of(view.parent_argv)
    if server is None:
        return None
    args = list(view.parent_argv)
    if server in _RELOAD_IGNORES_WORKERS and ("--reload" in args or (server == "fastapi" and "dev" in args)):
        return None
    workers = _workers_flag(server, args)
    if workers is None:
        workers, source = _workers_from_environment(server, view.environ)
    else:
        source = f"{server} --workers {workers}"
    if workers is not None and workers > 1:
        return source
    if view.own_argv and any(list(sibling) == list(view.own_argv) for sibling in view.sibling_argvs):
        return f"{server} runs several copies of this process"
    return None


def _server_of(argv: Sequence[str]) -> str | None:
    candidates = [Path(arg).name.removesuffix(".py") for arg in argv[:2]]
    if "-m" in argv[:-1]:
        candidates.append(argv[list(argv).index("-m") + 1].split(".")[0])
    for name in candidates:
        if name in SERVERS:
            return name
    return None


def _workers_flag(server: str, args: Sequence[str]) -> int | None:
    short = server in ("gunicorn", "hypercorn")
    for index, arg in enumerate(args):
        value: str | None = None
        if arg == "--workers" or (short and arg == "-w"):
            value = args[index + 1] if index + 1 < len(args) else None
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        elif short and arg.startswith("-w") and arg[2:].isdigit():
            value = arg[2:]
        if value is not None:
            return _int(value)
    return None


def _workers_from_environment(server: str, environ: Mapping[str, str]) -> tuple[int | None, str]:
    if server == "gunicorn" and environ.get("GUNICORN_CMD_ARGS"):
        workers = _workers_flag("gunicorn", shlex.split(environ["GUNICORN_CMD_ARGS"]))
        if workers is not None:
            return workers, f"GUNICORN_CMD_ARGS={environ['GUNICORN_CMD_ARGS']}"
    for name in _WORKER_ENV[server]:
        workers = _int(environ.get(name))
        if workers is not None:
            return workers, f"{name}={workers}"
    return None, ""


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _processes() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process /proc shows; empty where there is no /proc."""
    found: list[tuple[int, int]] = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit():
            found.append((int(entry.name), int(fields[1])))
    return found
