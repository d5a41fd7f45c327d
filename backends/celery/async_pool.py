"""The async pool: a worker of its own that runs async tasks TASK_ASYNC_CONCURRENCY at a time.

A prefork pool runs one task per process, which is right for sync tasks (every core) and wrong for
async ones (a process sits idle through each ``await``). So async tasks go to ``ASYNC_QUEUE`` and a
second worker consumes it with Celery's thread pool: ``TASK_ASYNC_CONCURRENCY`` pool threads, each
handing its task's coroutine to the one event loop of that process (``run_coroutine``). Claims,
leases, retries, timeouts, progress, recovery are the same code as for sync tasks.

``celery -A backends.celery_app worker`` starts that second worker itself, as a child process in
the same process group (``AsyncPool``), unless ``TASK_ASYNC_WORKER=0`` or the worker was told its
queues (``-Q``): then run it yourself where you want it::

    celery -A backends.celery_app worker -Q celery-async --pool=threads --concurrency=100
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from celery import bootsteps

from backends.celery.store.messages import ASYNC_QUEUE, DEFAULT_QUEUE

log = logging.getLogger("taskservice.celery")

APP = "backends.celery_app"
READY_FD_ENV = "TASK_ASYNC_READY_FD"  # the child writes one byte there once it consumes
START_TIMEOUT_S = 90.0
RESTART_DELAY_S = 2.0
# the next tasks wait in the pool's own queue, so a thread that finished one starts the next at once
# (not after an ack, a fetch and a hand-over); a message held there is recovered like any taken one
PREFETCH_MULTIPLIER = 4


def async_worker_args(concurrency: int, nodename: str, loglevel: str) -> list[str]:
    """The command line of the async pool's worker."""
    return [
        sys.executable, "-m", "celery", "-A", APP, "worker", "-Q", ASYNC_QUEUE, "--pool=threads",
        f"--concurrency={concurrency}", f"--prefetch-multiplier={PREFETCH_MULTIPLIER}",
        "-n", f"async.{nodename}", f"--loglevel={loglevel}",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def wants_async_pool(worker: Any) -> bool:
    """A prefork (or solo) worker on the default queue starts the async pool, unless told not to."""
    if not worker.app.taskservice_settings.async_worker:
        return False
    if READY_FD_ENV in os.environ:  # this is the async pool itself
        return False
    queues = {queue.name for queue in worker.app.amqp.queues.consume_from.values()} if worker.app.amqp.queues else set()
    return "threads" not in type(worker.pool).__module__ and (not queues or queues == {DEFAULT_QUEUE})


class AsyncPool(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no type hints
    """Starts the async pool's worker next to this one, restarts it if it dies, stops it with this one."""

    label = "taskservice async pool"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        if not wants_async_pool(worker):
            return
        settings = worker.app.taskservice_settings
        args = async_worker_args(settings.async_concurrency, worker.hostname, _loglevel(worker))
        self._stopping.clear()
        self._spawn(args, wait=True)
        self._watcher = threading.Thread(target=self._watch, args=(args,), name="taskservice-async-pool", daemon=True)
        self._watcher.start()

    def stop(self, worker: Any) -> None:
        self._stopping.set()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # a warm shutdown: running async tasks finish
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    shutdown = stop

    def _spawn(self, args: list[str], wait: bool) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, READY_FD_ENV: str(write_fd)}
        try:
            self._process = subprocess.Popen(args, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        try:
            if wait:  # this worker says "ready" only once async tasks can run too
                ready, _, _ = select.select([read_fd], [], [], START_TIMEOUT_S)
                if not ready or not os.read(read_fd, 1):
                    log.error("taskservice: the async pool did not start; async tasks wait until it does")
        finally:
            os.close(read_fd)

    def _watch(self, args: list[str]) -> None:
        while not self._stopping.wait(1.0):
            process = self._process
            if process is None or process.poll() is None:
                continue
            log.error("taskservice: the async pool exited with %s; starting it again", process.returncode)
            time.sleep(RESTART_DELAY_S)
            if not self._stopping.is_set():
                self._spawn(args, wait=False)


class ReadySignal(bootsteps.StartStopStep):  # type: ignore[misc]
    """In the async pool's worker: tell the worker that started it that this one consumes now."""

    label = "taskservice async pool ready"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Any) -> None:
        fd = os.environ.pop(READY_FD_ENV, None)
        if fd is None:
            return
        # "<node> ready." is what operators and scripts wait for: only the worker that started this one says it
        logging.getLogger("celery.apps.worker").addFilter(_NotReadyLine())
        with contextlib.suppress(OSError):
            os.write(int(fd), b"1")
            os.close(int(fd))


class _NotReadyLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "%s ready."


def _loglevel(worker: Any) -> str:
    level = getattr(worker, "loglevel", None)
    return logging.getLevelName(level) if isinstance(level, int) else str(level or "INFO")
