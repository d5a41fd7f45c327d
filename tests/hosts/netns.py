"""Hosts for the multi-host fault tests: Linux network namespaces joined by veth pairs, made and removed here.

The layout: a Redis host, and an API host and two worker hosts, each on a link of its own to the
Redis host (``10.77.N.0/30``: the Redis side is ``.1``, the other side ``.2``). No namespace has a
link to the machine's own network; each has its loopback. Everything is removed on ``close``,
whatever state a test left it in. Needs root and ``ip`` (iproute2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from taskservice.testing.processes import stop_process

REDIS_PORT = 6379


def require_namespaces() -> None:
    """Skip without root or ``ip`` (fail instead under ``CI=true``: these tests are never skipped there)."""
    problem = None
    if os.geteuid() != 0:
        problem = "the multi-host tests make network namespaces: run them as root"
    elif shutil.which("ip") is None:
        problem = "the multi-host tests need iproute2's ip command (apt-get install iproute2)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem + ": these tests must not be skipped in CI")
        pytest.skip(problem)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    """One namespace and its link to the Redis host."""

    name: str  # the namespace
    index: int  # its link is 10.77.<index>.0/30
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"10.77.{self.index}.2"

    @property
    def redis_address(self) -> str:
        """Where this host reaches Redis: the Redis host's end of this host's link."""
        return f"10.77.{self.index}.1"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_address}:{REDIS_PORT}/0"

    @property
    def device(self) -> str:
        return f"{self.name}-l"

    def spawn(self, args: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        """Run ``args`` on this host, in a process group of its own (``ip netns exec`` execs the command)."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *args],
                env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def pipe(self, args: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> subprocess.Popen[str]:
        """``spawn`` with stdin and stdout as pipes (text), stderr to ``log``: a process the test talks to."""
        with open(log, "ab") as errors:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *args],
                env=dict(env), cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
                start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)  # type: ignore[arg-type]  # stopped the same way
        return process

    def cut(self) -> None:
        """Take this host's link down: its packets to Redis go nowhere (no reset, no error: a partition)."""
        ip("-n", self.name, "link", "set", self.device, "down")

    def mend(self) -> None:
        ip("-n", self.name, "link", "set", self.device, "up")

    def drop_route(self) -> None:
        """Remove this host's route to the Redis host: connecting fails at once, sends go nowhere."""
        ip("-n", self.name, "route", "del", f"10.77.{self.index}.0/30")

    def restore_route(self) -> None:
        ip("-n", self.name, "route", "add", f"10.77.{self.index}.0/30", "dev", self.device, "src", self.address)


@dataclass
class Network:
    redis: Host
    api: Host
    workers: list[Host]

    @property
    def hosts(self) -> list[Host]:
        return [self.redis, self.api, *self.workers]


@contextlib.contextmanager
def network(tag: str) -> Iterator[Network]:
    """The four hosts, joined as the module docstring says; all removed afterwards."""
    require_namespaces()
    redis = Host(f"ts{tag}r", 0)
    others = [Host(f"ts{tag}a", 1), Host(f"ts{tag}w1", 2), Host(f"ts{tag}w2", 3)]
    made: list[str] = []
    try:
        for host in [redis, *others]:
            ip("netns", "add", host.name)
            made.append(host.name)
            ip("-n", host.name, "link", "set", "lo", "up")
        for host in others:
            redis_end = f"{host.name}-r"
            ip("link", "add", host.device, "netns", host.name, "type", "veth", "peer", "name", redis_end,
               "netns", redis.name)  # fmt: skip
            ip("-n", redis.name, "addr", "add", f"{host.redis_address}/30", "dev", redis_end)
            ip("-n", redis.name, "link", "set", redis_end, "up")
            ip("-n", host.name, "addr", "add", f"{host.address}/30", "dev", host.device)
            ip("-n", host.name, "link", "set", host.device, "up")
        yield Network(redis, others[0], others[1:])
    finally:
        for host in [*others, redis]:
            for process in host.processes:
                stop_process(process, timeout_s=10)
        for name in made:  # deleting a namespace deletes its veth ends (and their peers) with it
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
