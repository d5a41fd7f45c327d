"""Processes that share a hostname, a boot id and a SQLite store, but not a PID namespace.

Containers with host networking on one volume look like this: the same ``host_id`` before it
named the PID namespace, pids that mean other processes on each side. The child here runs in a
real separate PID namespace (``unshare --pid --fork --mount-proc``, which needs root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.inprocess.process_identity import host_id
from taskservice import TaskStatus
from tests.faults.test_inprocess_restart import HEARTBEAT_S, hold, record_run, service_on, wait_for_file
from tests.processes import base_env, spawn

pytestmark = pytest.mark.slow

CHILD = "from tests.faults.test_inprocess_pid_namespace import child; child()"
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


def child() -> None:
    """In the other PID namespace: one task running, one waiting behind it, then sleep until killed."""
    directory = Path(sys.argv[1])
    service = service_on(directory, thread_concurrency=1)
    ids = {
        "running": service.enqueue(hold, str(directory)),
        "waiting": service.enqueue(record_run, str(directory / "runs")),
        "pid": os.getpid(),
        "host": host_id(),
    }
    wait_for_file(directory / "started")
    (directory / "ids.tmp").write_text(json.dumps(ids))
    (directory / "ids.tmp").rename(directory / "ids.json")
    time.sleep(120)


def other_pid_namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*UNSHARE, "true"], capture_output=True, check=False).returncode == 0


def test_a_live_process_in_another_pid_namespace_is_not_taken_for_dead(tmp_path: Path) -> None:
    if not other_pid_namespace_available():
        if os.environ.get("CI") == "true":
            pytest.fail("a separate PID namespace cannot be made here (unshare --pid needs root)")
        pytest.skip("a separate PID namespace cannot be made here (unshare --pid needs root)")
    process = spawn([*UNSHARE, sys.executable, "-c", CHILD, str(tmp_path)], base_env(), tmp_path / "child.log")
    try:
        ids = json.loads(wait_for_file(tmp_path / "ids.json", process))
        assert ids["host"] != host_id(), "the identity names the PID namespace"
        assert ids["host"].split("/")[:2] == host_id().split("/")[:2], "same hostname, same boot"

        service = service_on(tmp_path)  # this namespace's run on the same file: it looks for dead runs
        try:
            assert service.get_status(ids["running"]).status == TaskStatus.RUNNING
            time.sleep(5 * HEARTBEAT_S)  # several heartbeats, each looking for dead runs
            running = service.get_status(ids["running"])
            assert (running.status, running.error) == (TaskStatus.RUNNING, None), "its live task is not failed"
            assert service.get_status(ids["waiting"]).status == TaskStatus.PENDING, "nor its queue taken over"
            assert not (tmp_path / "runs").exists()
        finally:
            service.close()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
