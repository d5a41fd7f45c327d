"""Every snippet of the README runs as printed.

- Each ``python`` block starts with ``# name.py``: all are written to a fresh project directory
  (with the ``toml`` block as its ``pyproject.toml``), every module is imported and exercised, and
  the ``test_*.py`` files run with pytest there, as a reader would run them.
- The ``sh`` blocks of "Try it" run in order in one bash session against the real server, started
  (and restarted) with ``make run`` as the README says, from a directory that holds the samples;
  the outputs the README shows (``# {...}`` lines, ``# "key":value`` notes, ``# 404`` codes) must appear.
- Every other ``sh`` block is listed in ``ELSEWHERE`` with the test that covers it, so a new block
  cannot go unchecked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from taskservice.testing import processes
from tests.processes import REPO_ROOT

pytestmark = pytest.mark.slow
README = REPO_ROOT / "README.md"
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
SERVER_BLOCK = re.compile(r"^((?:[A-Z_]+=\S+ )*)make run$")

# sh blocks not run here, by their first line, and where they are checked instead.
ELSEWHERE = {
    "make         # lists the targets (so does `make help`)": "tests/packaging/test_makefile.py; CI runs make test",
    "make worker        # celery -A backends.celery_app worker   (add more on other machines)": "tests/test_compose.py",
    "make worker       # celery -A backends.celery_app worker": "tests/app/live.py (a real worker and beat)",
    "createdb -h 127.0.0.1 -U postgres taskservice_app": "tests/app/test_postgres.py",
    ".venv/bin/pytest tests/app": "CI runs it",
}

EXERCISE = """
import asyncio

from fastapi.testclient import TestClient

from taskservice import get_task_service
from taskservice.testing import finish_request_tasks

import dashboard, hooks, lifespan, metrics, order, ported, router, shared_db, task_logs, tracing  # noqa: F401

service = get_task_service()
assert service.wait(ported.on_signup(__import__("uuid").uuid4()), timeout_s=10).result == "mail: signup"
order.place(1)
service.drain(10)
failed = service.wait(service.enqueue(hooks.charge, 7), timeout_s=10)
assert failed.error == "PaymentDeclined: card of order 7 declined" and hooks.REPORTED == [(failed.id, failed.error)]

with finish_request_tasks(), TestClient(shared_db.app) as client:
    assert client.get("/pages/home").json() == {"visits": 0}
    assert client.get("/pages/home").json() == {"visits": 1}, "the task ran before the request returned"

with TestClient(lifespan.app):
    assert lifespan.RESOURCES == {"db": "connected"}
assert lifespan.RESOURCES == {}

with TestClient(router.app) as client:
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers={"Authorization": "Bearer change-me"}).status_code == 200

with TestClient(dashboard.app) as client:
    page = client.get("/dashboard", follow_redirects=True)
    assert page.status_code == 200 and "/dashboard/login" in str(page.url)
    assert client.get("/tasks").status_code == 401

with TestClient(metrics.app) as client:
    assert "taskservice_tasks_enqueued_total" in client.get("/metrics").text

print("exercised")
"""


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int
    heading: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text.strip() else ""


def readme_blocks() -> list[Block]:
    text = README.read_text()
    headings = [(match.start(), match.group(0)) for match in re.finditer(r"^#{2,4} .*$", text, re.MULTILINE)]
    found = []
    for match in FENCE.finditer(text):
        body = textwrap.dedent(match.group(3))
        heading = next((title for start, title in reversed(headings) if start < match.start()), "")
        found.append(Block(match.group(2), body, text.count("\n", 0, match.start()) + 1, heading))
    return found


def tour_blocks() -> list[Block]:
    blocks = readme_blocks()
    start = next(index for index, block in enumerate(blocks) if block.heading == "### Try it")
    end = next(index for index, block in enumerate(blocks) if block.heading == "### The same app on Celery")
    return [block for block in blocks[start:end] if block.language == "sh"]


def test_every_python_snippet_runs_and_its_tests_pass(tmp_path: Path) -> None:
    for block in readme_blocks():
        if block.language == "python" or block.language == "toml":
            name = block.first_line.removeprefix("# ").strip()
            assert re.fullmatch(r"[\w.]+\.(py|toml)", name), f"README line {block.line}: start with '# file.py'"
            (tmp_path / name).write_text(block.text)
    env = processes.base_env(TASK_STORE_URL="memory://", PYTHONPATH=str(tmp_path))
    env.pop("TASK_BACKEND", None)
    exercised = subprocess.run(
        [sys.executable, "-c", EXERCISE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert exercised.stdout.strip().endswith("exercised"), exercised.stderr[-3000:]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout[-4000:]
    passed = re.search(r"\b(\d+) passed\b", tests.stdout)
    # the README's three tests, and the contract suite its test_contract.py runs against a dotted-path backend
    assert passed is not None and int(passed.group(1)) > 50, tests.stdout[-2000:]


def test_every_other_shell_snippet_is_checked_elsewhere() -> None:
    tour = {block.line for block in tour_blocks()}
    others = {block.first_line for block in readme_blocks() if block.language == "sh" and block.line not in tour}
    assert others == set(ELSEWHERE), f"sh blocks outside the tour without a test: {others - set(ELSEWHERE)}"


class Shell:
    """One bash session: the tour's variables (``$IMAGE``...) live from block to block, as in a terminal."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def run(self, script: str, timeout_s: float = 120.0) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        marker = f"@@end-of-block-{time.monotonic_ns()}"
        self.process.stdin.write(f"{script}\necho; echo {marker} $?\n")
        self.process.stdin.flush()
        lines: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith(marker):
                assert line.split()[-1] == "0", f"the block failed:\n{script}\n---\n{''.join(lines)}"
                return "".join(lines)
            lines.append(line)
        raise TimeoutError(f"block did not finish in {timeout_s} s:\n{script}")

    def close(self) -> None:
        processes.stop_process(self.process)  # type: ignore[arg-type]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """What "from the repository root" needs: the samples; the server's data lands in ./data here."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "samples").symlink_to(REPO_ROOT / "app" / "samples")
    return tmp_path


@pytest.fixture
def server(workdir: Path) -> Iterator[Server]:
    running = Server(workdir)
    yield running
    running.stop()


class Server:
    """``make run`` from the checkout, on port 8000 as the README's commands expect, data in the workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, assignments: str) -> None:
        self.stop()
        env = {key: value for key, value in os.environ.items() if not key.startswith(("TASK_", "APP_"))}
        env.update(dict(pair.split("=", 1) for pair in assignments.split()))
        env["APP_DATA_DIR"] = str(self.workdir / "data")
        log = self.workdir / "server.log"
        self.process = processes.spawn(["make", "-s", "run"], env, log, cwd=REPO_ROOT)
        processes.wait_for_port(8000, timeout_s=60, process=self.process)
        assert httpx.get("http://127.0.0.1:8000/health", timeout=10).status_code == 200

    def stop(self) -> None:
        if self.process is not None:
            processes.stop_process(self.process, timeout_s=20)
            self.process = None


def expected_outputs(block: Block) -> list[re.Pattern[str]]:
    """What the README says the block prints: its ``# {...}`` and ``# line ...`` lines, its notes."""
    patterns = []
    for line in block.text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# "):
            shown = stripped.removeprefix("# ")
            patterns.append(re.compile(".*".join(re.escape(part) for part in shown.split("..."))))
        elif "  # " in line:
            command, note = line.split("  # ", 1)
            note = note.strip()
            if "%{http_code}" in command and re.match(r"\d{3}\b", note):
                patterns.append(re.compile(rf"^{note[:3]}$", re.MULTILINE))
            for pair in re.findall(r'"\w+":(?:"[^".]*"|\d+|true|false)', note):
                patterns.append(re.compile(re.escape(pair)))
    return patterns


def test_the_tour_runs_as_printed_against_the_real_server(workdir: Path, server: Server) -> None:
    if httpx_reachable():
        pytest.skip("something already listens on 127.0.0.1:8000, the port the tour's commands use")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TASK_", "APP_"))}
    env["TMPDIR"] = str(workdir)
    shell = Shell(workdir, env)
    try:
        for block in tour_blocks():
            started = SERVER_BLOCK.match(block.text.strip())
            if started:
                server.start(started.group(1))
                continue
            output = shell.run(block.text)
            for pattern in expected_outputs(block):
                assert pattern.search(output), f"README line {block.line}: {pattern.pattern!r} not in:\n{output}"
    finally:
        shell.close()


def httpx_reachable() -> bool:
    try:
        httpx.get("http://127.0.0.1:8000/", timeout=0.5)
    except httpx.HTTPError:
        return False
    return True
