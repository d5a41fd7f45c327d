"""Who runs a task: one ``RunOwner`` per service run, and how to tell a live owner from a dead one.

Several processes can share one SQLite store (uvicorn workers, a restart). Each record names
the run that owns it; a run that is gone (its process died, or it stopped) leaves its tasks to
be recovered by the next run that looks. In the same PID namespace of one machine a dead process is recognised at
once (its pid is gone, or now belongs to a younger process); anywhere else (another machine,
another container), by a heartbeat that stopped moving.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import uuid
from pathlib import Path


@functools.cache
def host_id() -> str:
    """This machine, boot and PID namespace: pids are only comparable between runs with the same host id.

    The namespace matters for containers that share a hostname (host networking) and a volume:
    a pid registered in one container names another process, or none, in the next one.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "no-boot-id"
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        namespace = "no-pid-namespace"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux); None when unknown, gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X"):  # a killed process its parent has not reaped yet
        return None
    return fields[19]


def pid_is_running(pid: int, started: str | None) -> bool:
    """True while ``pid`` is the same process that registered (a reused pid has another start time)."""
    if pid <= 0:
        return False
    now_started = process_start(pid)
    if now_started is not None:
        return started is None or now_started == started
    if Path("/proc/self/stat").exists():  # /proc works here, so the pid is gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclasses.dataclass(frozen=True)
class RunOwner:
    """One start of one service in one process; a new ``start()`` gets a new token."""

    token: str
    pid: int
    host: str
    process_start: str | None

    @classmethod
    def for_this_process(cls) -> RunOwner:
        pid = os.getpid()
        return cls(token=uuid.uuid4().hex, pid=pid, host=host_id(), process_start=process_start(pid))


def owner_is_alive(*, pid: int, host: str, started: str | None, heartbeat_age_s: float, stale_after_s: float) -> bool:
    """Whether a registered run is alive: its heartbeat moves and, on this machine, its process exists.

    A run whose process exists but whose heartbeat stopped (its event loop closed without a
    stop, or is blocked for ``stale_after_s``) counts as dead too, so its tasks do not hang.
    """
    if heartbeat_age_s >= stale_after_s:
        return False
    return host != host_id() or pid_is_running(pid, started)
