"""Faults across hosts, with real networking: an API host, a Redis host and two worker hosts in network
namespaces (``tests.hosts.netns``), real redis-server, real prefork workers, real TCP between them.

(a) a worker host's link is cut mid-task, (b) a worker host is frozen longer than the lease: its
tasks complete on the other host within 60 s, and when it comes back its late results neither
overwrite the records nor count twice; (c) Redis restarts with append-only persistence while
tasks are queued, running and scheduled: nothing is lost or duplicated, each schedule fires once;
(d) the API host loses its route to Redis: ``enqueue`` raises ``BackendUnavailable`` within 5 s
and works again, on the same service object, once the route is back. Body starts and completions
are counted in journals the tasks write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.celery.fault_tasks import journal_counts
from tests.celery.workers import pgid_of, started_by, wait_for
from tests.hosts.netns import REDIS_PORT, Host, Network, network
from tests.processes import REPO_ROOT, VENV_BIN, base_env, require_redis_server, wait_for_log

pytestmark = pytest.mark.slow

MODULES = "tests.tasks,tests.celery.fault_tasks"
RECOVERY_S = 60.0


class Api:
    """The driver process on the API host (``tests.hosts.driver``)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert json.loads(self._line()).get("ready"), "the driver did not start"

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the driver exited with {self.process.poll()}")
        return line

    def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        reply: dict[str, Any] = json.loads(self._line())
        return reply

    def ok(self, op: str, **arguments: Any) -> Any:
        reply = self.call(op, **arguments)
        assert "ok" in reply, reply
        return reply["ok"]


@dataclass
class Cluster:
    net: Network
    directory: Path
    api: Api
    redis: subprocess.Popen[bytes]

    def worker(self, host: Host, label: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        env = base_env(TASK_BACKEND="celery", REDIS_URL=host.redis_url, TASK_MODULES=MODULES)
        log = self.directory / f"{label}.log"
        args = [str(VENV_BIN / "celery"), "-A", "backends.celery_app", "worker", "--loglevel=INFO", "--pool=prefork"]
        args += [f"--concurrency={concurrency}", "-n", f"{label}@%h", "--without-gossip", "--without-mingle"]
        return host.spawn(args, env, log, REPO_ROOT)

    def log(self, label: str) -> str:
        return (self.directory / f"{label}.log").read_text(errors="replace")


def _redis(net: Network, directory: Path) -> subprocess.Popen[bytes]:
    binary = require_redis_server()
    args = [binary, "--port", str(REDIS_PORT), "--bind", "0.0.0.0", "--protected-mode", "no"]
    args += ["--appendonly", "yes", "--dir", str(directory), "--daemonize", "no"]  # the compose file's persistence
    return net.redis.spawn(args, os.environ, directory / "redis.log", directory)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("hosts")
    with network(str(os.getpid() % 100_000)) as net:
        redis = _redis(net, directory)
        time.sleep(0.3)
        wait_for(lambda: "Ready to accept connections" in (directory / "redis.log").read_text(), 20, "no Redis")
        env = base_env(TASK_BACKEND="celery")
        driver = [sys.executable, "-m", "tests.hosts.driver", net.api.redis_url]
        api = Api(net.api.pipe(driver, env, directory / "driver.log", REPO_ROOT))
        yield Cluster(net, directory, api, redis)


def _start_workers(cluster: Cluster, tag: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    first, second = (cluster.worker(host, f"{tag}{n}") for n, host in enumerate(cluster.net.workers, 1))
    for label, process in ((f"{tag}1", first), (f"{tag}2", second)):
        wait_for_log(cluster.directory / f"{label}.log", "ready.", process, timeout_s=90)
    return first, second


def _stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _lose_a_worker_host(cluster: Cluster, tmp_path: Path, tag: str, how: str) -> None:
    api = cluster.api
    first, second = _start_workers(cluster, tag)
    victim_host = cluster.net.workers[0]
    journals = [tmp_path / f"journal-{n}" for n in range(4)]
    try:
        ids = [api.ok("journal", journal=str(journal), seconds=6.0) for journal in journals]
        wait_for(lambda: all(journal_counts(j)[0] for j in journals), 30, "not every task started")
        on_victim = [j for j in journals if pgid_of(started_by(j)[0]) == first.pid]
        if not on_victim:
            pytest.fail("the first worker host took none of the tasks")
        if how == "cut":
            victim_host.cut()
        else:
            os.killpg(first.pid, signal.SIGSTOP)
        lost_at = time.monotonic()
        try:
            results = [api.ok("wait", id=task_id, timeout_s=RECOVERY_S) for task_id in ids]
            recovered_s = time.monotonic() - lost_at
        finally:
            if how == "cut":
                victim_host.mend()
            else:
                os.killpg(first.pid, signal.SIGCONT)
        # the victim's bodies finish; their late results reach Redis once it is back, and are refused
        wait_for(lambda: all(journal_counts(j)[1] == 2 for j in on_victim), 60, "the victim's bodies did not end")
        victim = f"{tag}1"
        wait_for(lambda: cluster.log(victim).count("this result was dropped") >= len(on_victim), 90, "no late result")
        final = [api.ok("status", id=task_id) for task_id in ids]
        stats = api.ok("stats")
    finally:
        _stop(first, second)
    assert all(result["status"] == "succeeded" for result in results)
    assert recovered_s < RECOVERY_S
    for journal, result in zip(journals, final, strict=True):
        if journal in on_victim:
            assert journal_counts(journal) == (2, 2), journal.name
            assert result["attempts"] == 2 and result["result"] == started_by(journal)[1], "a late result overwrote it"
        else:
            assert journal_counts(journal) == (1, 1), journal.name
    assert stats["succeeded"] >= len(ids) and stats["running"] == 0
    print(f"{how}: {len(on_victim)} task(s) of the lost host completed {recovered_s:.1f} s later")


def test_a_worker_host_cut_off_mid_task(cluster: Cluster, tmp_path: Path) -> None:
    before = cluster.api.ok("stats")["succeeded"]
    _lose_a_worker_host(cluster, tmp_path, "cut", "cut")
    assert cluster.api.ok("stats")["succeeded"] == before + 4, "each task counted once"


def test_a_worker_host_frozen_longer_than_the_lease(cluster: Cluster, tmp_path: Path) -> None:
    before = cluster.api.ok("stats")["succeeded"]
    _lose_a_worker_host(cluster, tmp_path, "frozen", "freeze")
    assert cluster.api.ok("stats")["succeeded"] == before + 4, "each task counted once"


def test_redis_restarts_with_queued_running_and_scheduled_tasks(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.api
    first, second = _start_workers(cluster, "restart")
    running = [tmp_path / f"running-{n}" for n in range(4)]
    queued = [tmp_path / f"queued-{n}" for n in range(2)]
    scheduled = [tmp_path / f"scheduled-{n}" for n in range(2)]
    try:
        ids = [api.ok("journal", journal=str(j), seconds=4.0) for j in running + queued]
        ids += [api.ok("journal", journal=str(j), seconds=0.2, in_s=6.0) for j in scheduled]
        wait_for(lambda: sum(journal_counts(j)[0] for j in running + queued) >= 4, 30, "tasks did not start")
        redis_log = cluster.directory / "redis.log"
        starts = redis_log.read_text().count("Ready to accept connections")
        cluster.redis.send_signal(signal.SIGTERM)  # a restart: the AOF is written out, the data comes back
        cluster.redis.wait(timeout=20)
        cluster.redis = _redis(cluster.net, cluster.directory)
        wait_for(lambda: redis_log.read_text().count("Ready to accept connections") > starts, 20, "no Redis again")
        results = [api.ok("wait", id=task_id, timeout_s=60) for task_id in ids]
        time.sleep(2)  # a duplicate delivered around the restart would have started by now
    finally:
        _stop(first, second)
    assert [result["status"] for result in results] == ["succeeded"] * len(ids), "nothing was lost"
    for journal in running + queued + scheduled:
        assert journal_counts(journal) == (1, 1), f"{journal.name} ran {journal_counts(journal)}"


def test_the_api_host_loses_its_route_to_redis(cluster: Cluster) -> None:
    api = cluster.api
    assert api.call("add")["ok"]
    cluster.net.api.drop_route()
    try:
        for _ in range(2):
            reply = api.call("add")
            assert reply.get("error") == "BackendUnavailable", reply
            assert reply["elapsed_s"] < 5, reply
    finally:
        cluster.net.api.restore_route()
    reply = api.call("add")
    assert "ok" in reply and reply["elapsed_s"] < 5, reply
