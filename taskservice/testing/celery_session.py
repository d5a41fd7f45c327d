"""``--task-backend=celery``: a throwaway redis-server and a real Celery worker (and beat) for one pytest session.

Redis starts before the test modules are imported, and the session's environment gets
``TASK_BACKEND=celery`` and its ``REDIS_URL``, so every service the tests create reaches it. The
worker starts before the first test, once collection has imported the task modules: it imports
``TASK_MODULES`` if set (or the ``taskservice_task_modules`` ini option), otherwise every module
that registered a ``@task``. Its environment is the session's at that moment (what conftest files
set included) plus the ``task_worker_env`` fixture, its working directory the one pytest runs in,
and ``sys.path`` is passed on, so it imports what the tests import. Beat runs too when periodic
tasks exist. Everything lives in a temporary directory that is removed at the end: no Redis data,
schedule file or log outlives the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from taskservice.periodic import periodic_tasks
from taskservice.registry import registered_tasks
from taskservice.testing import processes

WORKER_CONCURRENCY = 2
START_TIMEOUT_S = 60.0


class CelerySession:
    """The processes of one session's Celery backend; ``close()`` stops them and forgets everything."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="taskservice-pytest-"))
        self._stack = contextlib.ExitStack()
        self._saved_env = {name: os.environ.get(name) for name in ("TASK_BACKEND", "REDIS_URL")}
        self.redis_url = ""
        self.worker: subprocess.Popen[bytes] | None = None
        self.modules: list[str] = []

    def start_redis(self) -> None:
        """A private redis-server; point this process's environment at it."""
        if processes.redis_binary() is None:
            raise RuntimeError("--task-backend=celery needs redis-server on PATH (apt-get install redis-server)")
        redis = self._stack.enter_context(processes.redis_server(self.directory / "redis"))
        self.redis_url = redis.url
        os.environ["TASK_BACKEND"] = "celery"
        os.environ["REDIS_URL"] = redis.url

    def start_worker(self, modules: Sequence[str], extra_env: Mapping[str, str]) -> None:
        """The worker (and beat, with periodic tasks) importing ``modules``; returns once it takes tasks."""
        if self.worker is not None:
            return
        self.modules = list(modules)
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        env.update(extra_env)
        env.update(
            TASK_BACKEND="celery",
            REDIS_URL=self.redis_url,
            TASK_MODULES=",".join(self.modules),
            PYTHONPATH=os.pathsep.join(_import_path()),
            PYTHONUNBUFFERED="1",
        )
        celery = [sys.executable, "-m", "celery", "-A", "backends.celery_app"]
        worker_args = [*celery, "worker", "--pool=prefork", f"--concurrency={WORKER_CONCURRENCY}"]
        worker_args += ["--without-gossip", "--without-mingle", "--loglevel=INFO", "-n", f"pytest-{os.getpid()}@%h"]
        self.worker = self._process(worker_args, env, "worker.log", "ready.")
        if periodic_tasks():
            schedule = self.directory / "beat-schedule"
            self._process([*celery, "beat", "--loglevel=INFO", f"--schedule={schedule}"], env, "beat.log", "Starting")

    def _process(self, args: list[str], env: Mapping[str, str], log_name: str, ready: str) -> subprocess.Popen[bytes]:
        log_path = self.directory / log_name
        process = processes.spawn(args, env, log_path, cwd=Path.cwd())
        self._stack.callback(processes.stop_process, process, 15.0)
        try:
            processes.wait_for_log(log_path, ready, process, timeout_s=START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as exc:
            what = log_name.removesuffix(".log")
            raise RuntimeError(f"--task-backend=celery: the {what} did not start: {exc}") from None
        return process

    def log_tail(self, chars: int = 4000) -> str:
        path = self.directory / "worker.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            for name, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(self.directory, ignore_errors=True)


def session_task_modules(configured: str) -> list[str]:
    """``TASK_MODULES``, the ini option, or else the module of every registered task (after collection)."""
    named = os.environ.get("TASK_MODULES") or configured
    if named.strip():
        return [name.strip() for name in named.split(",") if name.strip()]
    found = {handle.func.__module__ for handle in registered_tasks().values()}
    return sorted(name for name in found if name != "__main__" and not name.startswith("taskservice."))


def _import_path() -> list[str]:
    """The test process's import path, so the worker finds the same modules (rootdir, conftest dirs)."""
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    current = [entry or os.getcwd() for entry in sys.path if not entry or Path(entry).is_dir()]
    return list(dict.fromkeys([*current, *inherited]))
