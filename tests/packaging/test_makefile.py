"""The Makefile as a newcomer meets it: ``make`` lists the targets, variables the user sets are
respected (a typo in TASK_BACKEND is refused, not silently replaced), ``make run`` keeps task
records in SQLite next to the app's data, and a SIGTERM sent to make reaches the server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from taskservice.testing import processes
from tests.processes import REPO_ROOT

pytestmark = pytest.mark.slow


def make_env(tmp_path: Path, **env: str) -> dict[str, str]:
    inherited = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    return {**inherited, "APP_DATA_DIR": str(tmp_path / "data"), **env}


def test_make_alone_lists_the_targets_and_so_does_make_help(tmp_path: Path) -> None:
    for args in ([], ["help"]):
        listed = subprocess.run(
            ["make", "-s", *args], cwd=REPO_ROOT, env=make_env(tmp_path), capture_output=True, text=True
        )
        assert listed.returncode == 0, listed.stderr
        names = {line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()}
        assert {"help", "install", "run", "test", "lint", "worker", "beat", "flower", "run-celery"} <= names


def test_make_run_respects_the_backend_the_user_set(tmp_path: Path) -> None:
    log = tmp_path / "make.log"
    env = make_env(tmp_path, TASK_BACKEND="celry", PORT=str(processes.free_port()))
    make = processes.spawn(["make", "-s", "run"], env, log, cwd=REPO_ROOT)  # its own group: nothing can leak
    try:
        make.wait(timeout=60)
    finally:
        processes.stop_process(make)
    assert make.returncode != 0
    assert "invalid setting TASK_BACKEND='celry'" in log.read_text()


def test_make_run_keeps_tasks_in_sqlite_and_sigterm_to_make_stops_the_server(tmp_path: Path) -> None:
    port = processes.free_port()
    log = tmp_path / "make.log"
    make = processes.spawn(["make", "-s", "run"], make_env(tmp_path, PORT=str(port)), log, cwd=REPO_ROOT)
    try:
        processes.wait_for_port(port, timeout_s=60, process=make)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.json() == {"status": "ok", "backend": "fastapi"}
        assert (tmp_path / "data" / "tasks.sqlite3").is_file(), "make run's task records are durable"

        os.kill(make.pid, signal.SIGTERM)  # to make only, as a supervisor or `kill <pid>` would
        make.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _listening(port):
            time.sleep(0.1)
        assert not _listening(port), f"the server outlived make:\n{log.read_text()}"
    finally:
        processes.stop_process(make)


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    except httpx.HTTPError:
        return False
    return True
