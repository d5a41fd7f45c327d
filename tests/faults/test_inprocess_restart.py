"""The in-process backend with a SQLite store, across real processes: SIGKILL, restart, siblings.

Each child is a real Python process running ``child()`` below on a shared SQLite file; this
test process plays the restarted (or sibling) process. Tasks write the pid of the process
that ran them, so "ran once, and where" is read from a file, not assumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from backends.inprocess.service import FastAPITaskService
from backends.inprocess.store.base import INTERRUPTED_BY_CRASH
from taskservice import TaskSettings, TaskStatus, task
from taskservice.attempts import dependency_error
from tests.processes import base_env, spawn, stop_process
from tests.unit.test_inprocess_lifecycle import fails_first_time

pytestmark = pytest.mark.slow

CHILD = "from tests.faults.test_inprocess_restart import child; child()"
HEARTBEAT_S = 0.3


@task(name="tests.faults.inprocess.hold")
def hold(gate_dir: str) -> str:
    (Path(gate_dir) / "started").touch()
    time.sleep(120)
    return "held"


@task(name="tests.faults.inprocess.record_run")
def record_run(runs_file: str) -> int:
    with open(runs_file, "a") as runs:
        runs.write(f"{os.getpid()}\n")
    return os.getpid()


def service_on(directory: Path, **overrides: object) -> FastAPITaskService:
    settings = TaskSettings(store_url=f"sqlite:///{directory / 'tasks.db'}", modules="", **overrides)  # type: ignore[arg-type]
    return FastAPITaskService(settings, heartbeat_interval_s=HEARTBEAT_S)


def wait_for_file(path: Path, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process is not None and process.poll() is not None:
            log = path.parent / "child.log"
            raise AssertionError(f"the child exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout_s} s"
        time.sleep(0.02)
    return path.read_text()


def write_atomically(path: Path, text: str) -> None:
    path.with_suffix(".tmp").write_text(text)
    path.with_suffix(".tmp").rename(path)


def runs(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def child() -> None:
    """A child process: ``python -c CHILD SCENARIO DIRECTORY``."""
    scenario, directory = sys.argv[1], Path(sys.argv[2])
    service = service_on(directory, thread_concurrency=1)
    if scenario == "crash":  # busy when it is killed: one task running, one waiting, one scheduled
        ids = {
            "running": service.enqueue(hold.options(unique_key="the-held-one"), str(directory)),
            "waiting": service.enqueue(record_run, str(directory / "waiting-runs")),
            "scheduled": service.schedule(record_run, timedelta(seconds=2), str(directory / "runs")),
        }
        write_atomically(directory / "ids.json", json.dumps(ids))
        time.sleep(120)
    elif scenario == "sibling":  # lives next to the test process, then stops cleanly
        scheduled = service.schedule(record_run, timedelta(seconds=1.5), str(directory / "runs"))
        write_atomically(directory / "ids.json", json.dumps({"scheduled": scheduled}))
        theirs = wait_for_file(directory / "parent-task")
        write_atomically(directory / "seen-by-child", service.wait(theirs, timeout_s=20).status.value)
        wait_for_file(directory / "stop")
        service.close()
    elif scenario == "waiting":  # killed while B waits for A, which runs
        a = service.enqueue(hold, str(directory))
        b = service.enqueue(record_run.options(after=a), str(directory / "runs"))
        wait_for_file(directory / "started")
        write_atomically(directory / "ids.json", json.dumps({"a": a, "b": b}))
        time.sleep(120)
    elif scenario == "retrying":  # killed while a task waits for its retry
        task_id = service.enqueue(fails_first_time.options(max_retries=2, retry_backoff=1.5), str(directory / "n"))
        while service.get_status(task_id).status != TaskStatus.RETRYING:
            time.sleep(0.01)
        write_atomically(directory / "ids.json", json.dumps({"retrying": task_id}))
        time.sleep(120)
    elif scenario == "doomed":  # schedules work, then is killed before it is due
        scheduled = service.schedule(record_run, timedelta(seconds=2), str(directory / "runs"))
        write_atomically(directory / "ids.json", json.dumps({"scheduled": scheduled}))
        time.sleep(120)


def start_child(scenario: str, directory: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    process = spawn([sys.executable, "-c", CHILD, scenario, str(directory)], base_env(), directory / "child.log")
    ids: dict[str, str] = json.loads(wait_for_file(directory / "ids.json", process))
    return process, ids


def kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)  # reaped, as the server's master (or the shell) would


def test_after_a_sigkill_the_next_process_settles_and_resumes_the_work(tmp_path: Path) -> None:
    process, ids = start_child("crash", tmp_path)
    try:
        wait_for_file(tmp_path / "started", process)
    finally:
        kill(process)

    service = service_on(tmp_path)  # the restarted process, on the same file
    try:
        interrupted = service.get_status(ids["running"])  # its first use recovers the file
        assert (interrupted.status, interrupted.error) == (TaskStatus.FAILED, INTERRUPTED_BY_CRASH)
        assert interrupted.finished_at is not None

        assert service.wait(ids["waiting"]).status == TaskStatus.SUCCEEDED, "a task that never started is not lost"
        scheduled = service.wait(ids["scheduled"])
        assert scheduled.status == TaskStatus.SUCCEEDED
        assert scheduled.run_at is not None and scheduled.started_at is not None
        assert scheduled.started_at >= scheduled.run_at, "still at its time, not early"
        assert runs(tmp_path / "runs") == [os.getpid()], "run once, by the process that took over"

        again = service.enqueue(record_run.options(unique_key="the-held-one"), str(tmp_path / "again"))
        assert service.wait(again).status == TaskStatus.SUCCEEDED, "the killed task's unique_key is free"
        assert all(result.status.is_final for result in service.list_tasks()), "nothing left pending or running"
    finally:
        service.close()


def test_sibling_processes_share_records_and_a_scheduled_task_runs_once(tmp_path: Path) -> None:
    service = service_on(tmp_path)
    mine = service.enqueue(record_run, str(tmp_path / "mine"))  # this process is running before the sibling starts
    process, ids = start_child("sibling", tmp_path)
    try:
        theirs = service.get_status(ids["scheduled"])
        assert theirs.status == TaskStatus.SCHEDULED, "the sibling's record is visible here"
        write_atomically(tmp_path / "parent-task", mine)
        assert wait_for_file(tmp_path / "seen-by-child", process) == "succeeded", "and this one's there"

        result = service.wait(ids["scheduled"])
        assert result.status == TaskStatus.SUCCEEDED
        time.sleep(4 * HEARTBEAT_S)  # heartbeats came and went: a live sibling's task is not taken over
        assert runs(tmp_path / "runs") == [process.pid], "run once, by the sibling that scheduled it"
        (tmp_path / "stop").touch()
        assert process.wait(timeout=20) == 0
    finally:
        stop_process(process)
        service.close()


def test_a_surviving_sibling_takes_over_the_work_of_one_that_died(tmp_path: Path) -> None:
    service = service_on(tmp_path)
    service.wait(service.enqueue(record_run, str(tmp_path / "warm-up")))  # running, with its heartbeat
    process, ids = start_child("doomed", tmp_path)
    kill(process)
    try:
        result = service.wait(ids["scheduled"], timeout_s=20)
        assert result.status == TaskStatus.SUCCEEDED
        assert result.started_at is not None and result.run_at is not None and result.started_at >= result.run_at
        assert runs(tmp_path / "runs") == [os.getpid()], "the survivor ran it, once"
    finally:
        service.close()


def test_a_retry_wait_survives_a_sigkill_and_the_next_process_makes_the_attempt(tmp_path: Path) -> None:
    process, ids = start_child("retrying", tmp_path)
    kill(process)
    service = service_on(tmp_path)
    try:
        result = service.wait(ids["retrying"], timeout_s=20)
    finally:
        service.close()
    assert (result.status, result.attempts, result.result) == (TaskStatus.SUCCEEDED, 2, 2)


def test_after_a_sigkill_a_task_waiting_on_the_interrupted_one_is_decided_with_it(tmp_path: Path) -> None:
    process, ids = start_child("waiting", tmp_path)
    kill(process)
    service = service_on(tmp_path)
    try:
        a = service.get_status(ids["a"])  # the first use recovers the file, in one transaction
        b = service.get_status(ids["b"])
    finally:
        service.close()
    assert (a.status, a.error) == (TaskStatus.FAILED, INTERRUPTED_BY_CRASH)
    assert (b.status, b.error, b.attempts) == (TaskStatus.FAILED, dependency_error(ids["a"], "failed"), 0)
    assert runs(tmp_path / "runs") == [], "B never ran"
