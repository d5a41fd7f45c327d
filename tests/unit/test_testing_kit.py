"""The testing kit: FakeTaskService records like a backend, refuses like a backend, runs only on demand."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from fastapi import FastAPI

from taskservice import (
    TaskConflict,
    TaskNotFound,
    TaskService,
    TaskStatus,
    get_task_service,
    set_progress,
    task,
)
from taskservice.integration import task_service_dependency
from taskservice.testing import (
    FakeTaskService,
    assert_enqueued,
    assert_not_enqueued,
    assert_scheduled,
    installed_task_service,
    override_task_service,
)

pytest_plugins = ["pytester"]

RUNS: collections.Counter[str] = collections.Counter()
SIDE_EFFECTS: list[Any] = []


@task
def add(a: int, b: int) -> int:
    SIDE_EFFECTS.append(("add", a, b))
    return a + b


@task(queue="images")
def resize(image_id: str, size: int = 300, *, sharpen: bool = False) -> dict[str, Any]:
    return {"image": image_id, "size": size, "sharpen": sharpen}


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task
def fail_without_a_message() -> None:
    raise RuntimeError


@task(max_retries=3, retry_backoff=100.0)
def flaky(key: str, failures: int) -> int:
    """Fail the first ``failures`` runs; a backoff of 100 s that the fake never waits for."""
    RUNS[key] += 1
    if RUNS[key] <= failures:
        raise RuntimeError(f"run {RUNS[key]} fails on purpose")
    return RUNS[key]


@task
def mutate(data: dict[str, Any], items: list[int]) -> dict[str, Any]:
    data["changed"] = True
    items.append(99)
    return {"data": data, "items": items}


@task
def returns_pair() -> tuple[int, int]:
    return (1, 2)


@task
def returns_object() -> object:
    return object()


@task
def report_progress(steps: int) -> str:
    for step in range(1, steps + 1):
        set_progress(100 * step / steps, f"step {step} of {steps}")
    return "done"


@task
async def async_report_progress() -> str:
    set_progress(10, "started")
    await asyncio.sleep(0)
    set_progress(90, "almost")
    return "done"


@task
def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@task
async def async_sleep_for(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@task
def raises_its_own_timeout() -> None:
    raise TimeoutError("the mail server did not answer")


@task
def fan_out(count: int) -> list[str]:
    """Enqueue ``count`` children through the process-wide service, as production code does."""
    return [get_task_service().enqueue(add, index, index) for index in range(count)]


@task
def forever(generation: int) -> None:
    get_task_service().enqueue(forever, generation + 1)


def not_a_task(x: int) -> int:
    return x


@pytest.fixture
def fake(fake_task_service: FakeTaskService) -> FakeTaskService:
    SIDE_EFFECTS.clear()
    return fake_task_service


def key() -> str:
    return f"test:{uuid.uuid4()}"


# --- recording, with the same validation as every backend ----------------------------------


def test_enqueue_records_without_running(fake: FakeTaskService) -> None:
    task_id = fake.enqueue(resize.options(unique_key="image:1"), "img-1", sharpen=True)

    [call] = fake.calls
    assert (call.id, call.name, call.args, call.kwargs) == (task_id, resize.name, ["img-1"], {"sharpen": True})
    assert (call.unique_key, call.queue, call.run_at, call.scheduled) == ("image:1", "images", None, False)
    assert call.task.func is resize.func
    assert fake.enqueued(resize) == fake.enqueued(resize.name) == fake.enqueued() == [call]
    assert fake.scheduled() == []

    status = fake.get_status(task_id)
    assert (status.status, status.attempts, status.started_at, status.result) == (TaskStatus.PENDING, 0, None, None)
    assert fake.backend_name == "fake" and isinstance(fake, TaskService)


def test_nothing_runs_until_asked(fake: FakeTaskService) -> None:
    fake.enqueue(add, 1, 2)
    assert SIDE_EFFECTS == []
    fake.run_all()
    assert SIDE_EFFECTS == [("add", 1, 2)]


def test_recorded_arguments_are_copies(fake: FakeTaskService) -> None:
    data, items = {"name": "original"}, [1, 2]
    task_id = fake.enqueue(mutate, data, items)
    data["name"] = "changed by the caller later"

    result = fake.run(task_id)

    assert result.result == {"data": {"name": "original", "changed": True}, "items": [1, 2, 99]}
    assert fake.calls[0].args == [{"name": "original"}, [1, 2]], "the task's mutations stay in the task"
    assert items == [1, 2]


def test_schedule_records_run_at(fake: FakeTaskService) -> None:
    at = datetime(2031, 5, 1, 9, 30, tzinfo=UTC)
    by_time = fake.schedule(add, at, 1, 2)
    by_delay = fake.schedule(add, timedelta(minutes=5), 3, 4)

    assert [call.run_at for call in fake.scheduled(add)] == [at, ANY]
    delay = fake.get_status(by_delay).run_at - fake.get_status(by_delay).enqueued_at  # type: ignore[operator]
    assert timedelta(minutes=4, seconds=59) < delay <= timedelta(minutes=5)
    snapshot = fake.get_status(by_time)
    assert (snapshot.status, snapshot.run_at) == (TaskStatus.SCHEDULED, at)
    assert fake.enqueued() == []


def test_schedule_refuses_a_naive_datetime_and_other_types(fake: FakeTaskService) -> None:
    with pytest.raises(ValueError, match="naive"):
        fake.schedule(add, datetime.now() + timedelta(hours=1), 1, 2)
    with pytest.raises(TypeError, match="aware datetime or a timedelta, got int"):
        fake.schedule(add, 60, 1, 2)
    assert fake.calls == []


def test_bad_calls_are_refused_as_in_production(fake: FakeTaskService) -> None:
    with pytest.raises(TypeError, match=r"argument 'b'.*set"):
        fake.enqueue(add, 1, {2})
    with pytest.raises(TypeError, match="cannot be called with these arguments"):
        fake.enqueue(add, 1)
    with pytest.raises(TypeError, match="decorate it with @task"):
        fake.enqueue(not_a_task, 1)
    with pytest.raises(TypeError, match="no task is registered"):
        fake.enqueue("nowhere.task")
    with pytest.raises(TypeError, match="pass an id, not the data"):
        fake.enqueue(resize, "x" * (fake.settings.max_payload_bytes + 1))
    assert fake.calls == [] and fake.list_tasks() == []


def test_unique_key_conflicts_among_active_tasks(fake: FakeTaskService) -> None:
    project = key()
    first = fake.enqueue(add.options(unique_key=project), 1, 1)

    with pytest.raises(TaskConflict) as caught:
        fake.enqueue(add.options(unique_key=project), 2, 2)
    assert (caught.value.unique_key, caught.value.active_task_id) == (project, first)
    with pytest.raises(TaskConflict):
        fake.schedule(add.options(unique_key=project), timedelta(hours=1), 2, 2)
    fake.enqueue(add.options(unique_key=key()), 3, 3)  # another key is free
    assert len(fake.calls) == 2

    fake.run_all()
    again = fake.enqueue(add.options(unique_key=project), 4, 4)  # freed by success
    assert fake.cancel(again)
    failing = fake.enqueue(fail.options(unique_key=project), "boom")  # freed by cancel
    fake.run_all()
    fake.enqueue(add.options(unique_key=project), 5, 5)  # freed by failure
    assert fake.get_status(failing).status == TaskStatus.FAILED


def test_unique_key_holds_across_threads(fake: FakeTaskService) -> None:
    project, accepted, refused = key(), [], []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        try:
            accepted.append(fake.enqueue(add.options(unique_key=project), 1, 1))
        except TaskConflict:
            refused.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(accepted), len(refused)) == (1, 15)


def test_status_cancel_and_list_follow_the_contract(fake: FakeTaskService) -> None:
    for unknown in ("00000000-0000-0000-0000-000000000000", ""):
        with pytest.raises(TaskNotFound):
            fake.get_status(unknown)
        with pytest.raises(TaskNotFound):
            fake.cancel(unknown)

    done = fake.enqueue(add, 1, 1)
    fake.run_all()
    later = fake.schedule(add, timedelta(days=3), 2, 2)
    waiting = fake.enqueue(add, 3, 3)

    assert fake.cancel(later) is True
    cancelled = fake.get_status(later)
    assert cancelled.status == TaskStatus.CANCELLED and cancelled.finished_at is not None
    assert fake.cancel(later) is False, "cancelling twice reports nothing new"
    assert fake.cancel(done) is False and fake.get_status(done).status == TaskStatus.SUCCEEDED

    assert [r.id for r in fake.list_tasks()] == [waiting, later, done]
    assert [r.id for r in fake.list_tasks(status=TaskStatus.CANCELLED)] == [later]
    assert [r.id for r in fake.list_tasks(limit=2)] == [waiting, later]

    fake.run_all(scheduled="all")
    assert SIDE_EFFECTS == [("add", 1, 1), ("add", 3, 3)], "a cancelled task never runs"


def test_snapshots_are_frozen(fake: FakeTaskService) -> None:
    task_id = fake.enqueue(add, 1, 1)
    before = fake.get_status(task_id)
    fake.run_all()
    assert before.status == TaskStatus.PENDING, "a snapshot handed out never changes"
    with pytest.raises(ValueError):
        before.status = TaskStatus.FAILED  # type: ignore[misc]


# --- running on demand ----------------------------------------------------------------


def test_run_all_runs_in_order_and_records_results(fake: FakeTaskService) -> None:
    started = datetime.now(UTC)
    ids = [fake.enqueue(add, 1, 2), fake.enqueue(async_add, 20, 22), fake.enqueue(returns_pair)]

    results = fake.run_all()

    assert [r.id for r in results] == ids
    assert [(r.status, r.result, r.attempts) for r in results] == [
        (TaskStatus.SUCCEEDED, 3, 1),
        (TaskStatus.SUCCEEDED, 42, 1),
        (TaskStatus.SUCCEEDED, [1, 2], 1),  # through JSON, as a worker stores it
    ]
    for result in results:
        assert result.error is None and result.traceback is None
        assert result.started_at is not None and result.finished_at is not None
        assert started <= result.enqueued_at <= result.started_at <= result.finished_at
        assert fake.get_status(result.id) == result
    assert fake.run_all() == [], "nothing left to run"


def test_run_next_runs_one(fake: FakeTaskService) -> None:
    first, second = fake.enqueue(add, 1, 1), fake.enqueue(add, 2, 2)
    assert fake.run_next().id == first  # type: ignore[union-attr]
    assert fake.get_status(second).status == TaskStatus.PENDING
    assert fake.run_next().id == second  # type: ignore[union-attr]
    assert fake.run_next() is None


def test_async_tasks_run_even_from_async_code(fake: FakeTaskService) -> None:
    async def caller() -> list[Any]:
        fake.enqueue(async_add, 1, 2)
        fake.enqueue(async_report_progress)
        return [result.result for result in fake.run_all()]

    assert asyncio.run(caller()) == [3, "done"]


def test_failures_are_recorded_with_type_message_and_traceback(fake: FakeTaskService) -> None:
    task_id = fake.enqueue(fail, "disk is full")
    [result] = fake.run_all()

    assert (result.id, result.status, result.attempts) == (task_id, TaskStatus.FAILED, 1)
    assert result.error == "ValueError: disk is full"
    assert result.traceback is not None
    assert "test_testing_kit.py" in result.traceback and result.traceback.rstrip().endswith("disk is full")
    assert result.finished_at is not None
    assert fake.run(fake.enqueue(fail_without_a_message)).error == "RuntimeError"


def test_a_result_json_cannot_carry_fails_the_task(fake: FakeTaskService) -> None:
    [result] = (fake.enqueue(returns_object), fake.run_all())[1]
    assert result.status == TaskStatus.FAILED
    assert result.error is not None and result.error.startswith("TypeError: result of task")


def test_raise_errors_re_raises_after_recording(fake: FakeTaskService) -> None:
    task_id = fake.enqueue(fail, "boom")
    with pytest.raises(ValueError, match="boom"):
        fake.run_all(raise_errors=True)
    assert fake.get_status(task_id).status == TaskStatus.FAILED

    strict = FakeTaskService(raise_errors=True)
    with pytest.raises(ValueError, match="again"):
        strict.run(strict.enqueue(fail, "again"))
    lenient = strict.run(strict.enqueue(fail, "quiet"), raise_errors=False)
    assert lenient.error == "ValueError: quiet"


def test_retries_without_waiting(fake: FakeTaskService) -> None:
    twice, always = key(), key()
    started = time.monotonic()

    recovered = fake.run(fake.enqueue(flaky, twice, 2))
    exhausted = fake.run(fake.enqueue(flaky.options(max_retries=2), always, 10))

    assert time.monotonic() - started < 1, "a backoff of 100 s is not waited for"
    assert (recovered.status, recovered.result, recovered.attempts, recovered.error) == (
        TaskStatus.SUCCEEDED,
        3,
        3,
        None,
    )
    assert (exhausted.status, exhausted.attempts) == (TaskStatus.FAILED, 3)
    assert exhausted.error == "RuntimeError: run 3 fails on purpose"
    assert RUNS[always] == 3


def test_progress_is_recorded(fake: FakeTaskService) -> None:
    sync_id = fake.enqueue(report_progress, 4)
    async_id = fake.enqueue(async_report_progress)
    fake.run_all()

    result = fake.get_status(sync_id)
    assert (result.progress, result.progress_message) == (100, "step 4 of 4")
    assert fake.progress_history(sync_id) == [
        (25, "step 1 of 4"),
        (50, "step 2 of 4"),
        (75, "step 3 of 4"),
        (100, "step 4 of 4"),
    ]
    assert fake.progress_history(async_id) == [(10, "started"), (90, "almost")]
    set_progress(50, "outside any task: nothing happens")
    with pytest.raises(ValueError, match="between 0 and 100"):
        set_progress(101)


def test_timeouts_fail_the_task(fake: FakeTaskService) -> None:
    async_late = fake.run(fake.enqueue(async_sleep_for.options(timeout=0.05), 30))
    sync_late = fake.run(fake.enqueue(sleep_for.options(timeout=0.05), 0.2))
    in_time = fake.run(fake.enqueue(sleep_for.options(timeout=5), 0))
    own_error = fake.run(fake.enqueue(raises_its_own_timeout))

    assert async_late.status == TaskStatus.FAILED and "timed out after 0.05 s" in (async_late.error or "")
    assert sync_late.status == TaskStatus.FAILED and "timed out after 0.05 s" in (sync_late.error or "")
    assert in_time.status == TaskStatus.SUCCEEDED
    assert own_error.error == "TimeoutError: the mail server did not answer", "a task's own TimeoutError is kept"


def test_tasks_enqueued_by_tasks_are_recorded_and_run(fake: FakeTaskService) -> None:
    parent = fake.enqueue(fan_out, 3)

    results = fake.run_all()

    children = fake.get_status(parent).result
    assert [r.id for r in results] == [parent, *children]
    assert [fake.get_status(child).result for child in children] == [0, 2, 4]
    assert_enqueued(fake, add, 2, 2)


def test_run_all_stops_a_task_that_enqueues_itself_forever(fake: FakeTaskService) -> None:
    fake.enqueue(forever, 0)
    with pytest.raises(RuntimeError, match="ran 25 tasks and more are waiting"):
        fake.run_all(max_runs=25)


def test_scheduled_tasks_run_when_due_or_when_asked(fake: FakeTaskService) -> None:
    future = fake.schedule(add, timedelta(hours=1), 1, 1)
    past = fake.schedule(add, datetime.now(UTC) - timedelta(minutes=1), 2, 2)
    now = fake.enqueue(add, 3, 3)

    assert [r.id for r in fake.run_all(scheduled="none")] == [now]
    assert [r.id for r in fake.run_all()] == [past], "due scheduled tasks run by default"
    assert fake.get_status(future).status == TaskStatus.SCHEDULED
    assert [r.id for r in fake.run_all(scheduled="all")] == [future]
    with pytest.raises(ValueError, match="scheduled must be"):
        fake.run_all(scheduled="later")  # type: ignore[arg-type]


def test_scheduled_all_runs_in_time_order(fake: FakeTaskService) -> None:
    third = fake.schedule(add, timedelta(hours=3), 3, 3)
    first = fake.enqueue(add, 1, 1)
    second = fake.schedule(add, timedelta(hours=1), 2, 2)
    assert [r.id for r in fake.run_all(scheduled="all")] == [first, second, third]


def test_run_one_task_whatever_its_time(fake: FakeTaskService) -> None:
    later = fake.schedule(add, timedelta(days=1), 5, 5)
    other = fake.enqueue(add, 1, 1)

    assert fake.run(later).result == 10
    assert fake.get_status(other).status == TaskStatus.PENDING
    with pytest.raises(ValueError, match="is succeeded: only pending or scheduled tasks can run"):
        fake.run(later)
    with pytest.raises(TaskNotFound):
        fake.run("unknown")


def test_wait_runs_the_task_on_demand(fake: FakeTaskService) -> None:
    task_id = fake.enqueue(add, 2, 2)
    assert fake.wait(task_id).result == 4
    assert fake.wait(task_id).result == 4, "waiting again returns the final snapshot"


def test_clear_forgets_everything(fake: FakeTaskService) -> None:
    task_id = fake.enqueue(add.options(unique_key="setup"), 1, 1)
    fake.clear()
    assert fake.calls == [] and fake.list_tasks() == []
    with pytest.raises(TaskNotFound):
        fake.get_status(task_id)
    fake.enqueue(add.options(unique_key="setup"), 1, 1)


# --- assertions ------------------------------------------------------------------------


def test_assert_enqueued_matches_the_call_as_the_task_sees_it(fake: FakeTaskService) -> None:
    fake.enqueue(resize.options(unique_key="image:7"), "img-7", sharpen=True)

    call = assert_enqueued(fake, resize, "img-7", sharpen=True)
    assert call.unique_key == "image:7"
    assert_enqueued(fake, resize, image_id="img-7", size=300, sharpen=True)  # keywords, defaults spelled out
    assert_enqueued(fake, resize.name, "img-7", 300, sharpen=True)  # by name
    assert_enqueued(fake, resize, ANY, sharpen=ANY)
    assert_enqueued(fake, resize)  # any arguments

    with pytest.raises(AssertionError) as caught:
        assert_enqueued(fake, resize, "img-8")
    message = str(caught.value)
    assert f"expected {resize.name}('img-8') to have been enqueued, but it was not." in message
    assert f"{resize.name}('img-7', sharpen=True) [unique_key='image:7']" in message


def test_assert_enqueued_explains_what_happened_instead(fake: FakeTaskService) -> None:
    with pytest.raises(AssertionError, match="Nothing was enqueued or scheduled at all"):
        assert_enqueued(fake, add)

    fake.schedule(add, datetime(2031, 1, 1, tzinfo=UTC), 1, 2)
    fake.enqueue(resize, "img-1")
    with pytest.raises(AssertionError) as caught:
        assert_enqueued(fake, add, 1, 2)
    message = str(caught.value)
    assert "Other recorded calls:" in message
    assert f"{add.name}(1, 2) at 2031-01-01T00:00:00+00:00" in message, "a scheduled call is shown as one"
    assert f"{resize.name}('img-1')" in message


def test_assert_enqueued_refuses_expectations_that_cannot_be_a_call(fake: FakeTaskService) -> None:
    fake.enqueue(add, 1, 2)
    with pytest.raises(TypeError, match=r"add\(1, 2, 3\) do not fit the signature of .*add\(a, b\)$"):
        assert_enqueued(fake, add, 1, 2, 3)
    with pytest.raises(TypeError, match="decorate it with @task"):
        assert_enqueued(fake, not_a_task, 1)


def test_assert_scheduled(fake: FakeTaskService) -> None:
    at = datetime(2031, 5, 1, 9, 30, tzinfo=UTC)
    fake.schedule(add, at, 1, 2)
    fake.schedule(add, timedelta(minutes=10), 3, 4)

    assert assert_scheduled(fake, add, at, 1, 2).run_at == at
    assert_scheduled(fake, add, at.astimezone(datetime.now().astimezone().tzinfo), 1, 2)  # same instant
    assert_scheduled(fake, add, timedelta(minutes=10), 3, 4)
    assert_scheduled(fake, add, ANY, 3, b=4)
    with pytest.raises(AssertionError, match=r"to have been scheduled at now \+ 0:20:00"):
        assert_scheduled(fake, add, timedelta(minutes=20), 3, 4)
    with pytest.raises(AssertionError, match="scheduled at 2031-05-01T09:31:00"):
        assert_scheduled(fake, add, at + timedelta(minutes=1), 1, 2)
    with pytest.raises(TypeError, match="naive"):
        assert_scheduled(fake, add, datetime(2031, 5, 1), 1, 2)
    with pytest.raises(AssertionError, match="to have been enqueued"):  # scheduled is not enqueued
        assert_enqueued(fake, add)


def test_assert_not_enqueued(fake: FakeTaskService) -> None:
    assert_not_enqueued(fake, add)
    fake.enqueue(add, 1, 2)
    fake.schedule(resize, timedelta(hours=1), "img-1")

    assert_not_enqueued(fake, add, 2, 2)
    with pytest.raises(AssertionError, match=r"not to have been enqueued or scheduled, but it was:\n  - .*add\(1, 2\)"):
        assert_not_enqueued(fake, add)
    with pytest.raises(AssertionError, match="resize"):
        assert_not_enqueued(fake, resize, "img-1")


# --- installing the fake ---------------------------------------------------------------


def test_fake_task_service_fixture_is_the_process_wide_service(fake_task_service: FakeTaskService) -> None:
    assert get_task_service() is fake_task_service


def test_installed_task_service_restores_the_previous_one(fake_task_service: FakeTaskService) -> None:
    other = FakeTaskService()
    with installed_task_service(other) as installed:
        assert installed is other and get_task_service() is other
    assert get_task_service() is fake_task_service


def test_override_task_service_serves_the_fake_to_the_app(fake_task_service: FakeTaskService) -> None:
    app = FastAPI()

    def earlier_override() -> TaskService:
        return fake_task_service

    app.dependency_overrides[task_service_dependency] = earlier_override
    with override_task_service(app) as fake:
        assert fake is not fake_task_service
        assert app.dependency_overrides[task_service_dependency]() is fake
        assert get_task_service() is fake
    assert app.dependency_overrides == {task_service_dependency: earlier_override}
    assert get_task_service() is fake_task_service

    with override_task_service(FastAPI(), fake_task_service) as same:
        assert same is fake_task_service
    with pytest.raises(TypeError, match="needs a FastAPI app, got object"), override_task_service(object()):
        pass


PLUGIN_TESTS = """
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskservice import TaskServiceDep, get_task_service, set_task_service, task
from taskservice.integration import task_service_dependency
from taskservice.testing import FakeTaskService, assert_enqueued

OUTSIDE = FakeTaskService()
set_task_service(OUTSIDE)


@task(name="plugin.double")
def double(x: int) -> int:
    return 2 * x


@pytest.fixture(scope="module")
def app():
    app = FastAPI()

    @app.post("/double/{x}")
    def start(x: int, service: TaskServiceDep) -> dict:
        return {"task_id": service.enqueue(double, x)}

    return app


def test_fixture_installs_a_fresh_fake(fake_task_service):
    assert get_task_service() is fake_task_service is not OUTSIDE
    assert fake_task_service.calls == []


def test_previous_service_is_restored():
    assert get_task_service() is OUTSIDE


def test_override_serves_the_app(app, task_service_override):
    with TestClient(app) as client:
        task_id = client.post("/double/21").json()["task_id"]
    assert_enqueued(task_service_override, double, 21)
    assert task_service_override.run(task_id).result == 42
    assert get_task_service() is task_service_override


def test_override_is_removed_after(app):
    assert task_service_dependency not in app.dependency_overrides
    assert get_task_service() is OUTSIDE
"""


def test_pytest_plugin_fixtures(pytester: pytest.Pytester, fake_task_service: FakeTaskService) -> None:
    """Run in this process: ``fake_task_service`` here undoes the inner module's ``set_task_service``."""
    pytester.makepyfile(test_plugin=PLUGIN_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_task_service_override_without_an_app_fixture_says_what_to_do(
    pytester: pytest.Pytester, fake_task_service: FakeTaskService
) -> None:
    pytester.makepyfile(
        test_no_app="""
        def test_needs_app(task_service_override):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*task_service_override needs a fixture named 'app'*"])
