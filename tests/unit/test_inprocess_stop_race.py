"""Enqueues that race a stop: each one is either accepted or refused with ``ServiceStopped``, never anything else."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.inprocess.process_identity import RunOwner
from backends.inprocess.service import FastAPITaskService
from backends.inprocess.store.base import TaskStore
from backends.inprocess.store.memory import MemoryTaskStore
from backends.inprocess.store.sqlite import SQLiteTaskStore
from taskservice import TaskSettings
from taskservice.errors import ServiceStopped
from tests.unit.test_inprocess_runner import sync_where
from tests.unit.test_task_stores import make_call


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads change hands every 10 µs, so an enqueue is often caught between its steps by the stop."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_store_whose_run_ended_refuses_new_records_with_service_stopped(tmp_path: Path, store: str) -> None:
    opened: TaskStore = MemoryTaskStore() if store == "memory" else SQLiteTaskStore(str(tmp_path / "t.db"))
    opened.begin_run(RunOwner.for_this_process())
    opened.end_run(datetime.now(UTC))
    with pytest.raises(ServiceStopped):
        opened.insert(make_call())
    opened.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_enqueues_racing_the_lifespan_shutdown_are_accepted_or_get_service_stopped(
    tmp_path: Path, store: str, fast_switching: None
) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'tasks.db'}"
    unexpected: list[BaseException] = []
    accepted: list[str] = []

    def produce(service: FastAPITaskService, started: threading.Event) -> None:
        started.set()
        while True:
            try:
                accepted.append(service.enqueue(sync_where))
            except ServiceStopped:
                return
            except BaseException as exc:
                unexpected.append(exc)
                return

    async def lifespan(service: FastAPITaskService) -> None:
        await service.start()
        started = [threading.Event() for _ in range(3)]
        producers = [threading.Thread(target=produce, args=(service, event)) for event in started]
        for producer in producers:
            producer.start()
        for event in started:
            event.wait()
        await service.stop()
        for producer in producers:
            producer.join(10)

    for _ in range(20):
        service = FastAPITaskService(TaskSettings(store_url=url, modules="", shutdown_grace_s=0))
        asyncio.run(lifespan(service))
        assert not unexpected, f"{type(unexpected[0]).__name__}: {unexpected[0]}"
        for task_id in accepted:  # an accepted task is never left pending without a run to start it
            status = service.get_status(task_id).status
            assert status.is_final or store == "sqlite", status
        accepted.clear()
        service.close()
