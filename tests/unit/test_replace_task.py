"""replace_task: a stand-in runs instead of a task's body with the fake and the in-process backend,
after the same argument checks; a mock handed to enqueue is refused with the fix; Celery refuses.
Under finish_request_tasks a function or mock patched in by the task's name stands in for it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from unittest import mock

import pytest

from taskservice import TaskService, TaskSettings, TaskStatus, create_task_service, task
from taskservice.testing import (
    FakeTaskService,
    InProcessOnly,
    TaskReplacement,
    assert_enqueued,
    finish_request_tasks,
    installed_task_service,
    replace_task,
)

SENT: list[str] = []


@task(name="replace.send_mail", max_retries=1)
def send_mail(to: str, subject: str = "hello") -> str:
    SENT.append(to)
    return f"sent to {to}"


@task(name="replace.fetch")
async def fetch(url: str) -> int:
    raise AssertionError("the real body must not run in these tests")


@pytest.fixture
def inprocess() -> Iterator[TaskService]:
    service = create_task_service(TaskSettings(backend="fastapi", store_url="memory://"))
    with installed_task_service(service):
        yield service
    service.close()


def test_a_mock_stands_in_with_the_fake(fake_task_service: FakeTaskService) -> None:
    with replace_task(send_mail) as stand_in:
        task_id = fake_task_service.enqueue(send_mail, "ada@example.com", subject="hi")
        [result] = fake_task_service.run_all()
    stand_in.assert_called_once_with("ada@example.com", subject="hi")
    assert (result.id, result.status, result.result) == (task_id, TaskStatus.SUCCEEDED, None)
    assert SENT == [], "the real body did not run"


def test_a_function_stands_in_on_the_in_process_backend_and_its_result_is_stored(inprocess: TaskService) -> None:
    seen: list[tuple[str, str]] = []

    def quietly(to: str, subject: str = "hello") -> str:
        seen.append((to, subject))
        return "not sent"

    with replace_task(send_mail.options(unique_key="mail:ada"), quietly):
        result = inprocess.wait(inprocess.enqueue(send_mail, "ada@example.com"), timeout_s=10)
    assert (result.status, result.result, seen) == (TaskStatus.SUCCEEDED, "not sent", [("ada@example.com", "hello")])
    assert SENT == []


def test_an_async_task_takes_a_plain_mock_and_the_arguments_are_still_checked(inprocess: TaskService) -> None:
    with replace_task(fetch, mock.MagicMock(return_value=7)) as stand_in:
        result = inprocess.wait(inprocess.enqueue(fetch, "https://example.com"), timeout_s=10)
        with pytest.raises(TypeError, match="cannot be called with these arguments"):
            inprocess.enqueue(fetch, "https://example.com", 2)  # the real signature, not the mock's
        with pytest.raises(TypeError, match="cannot be sent as JSON"):
            inprocess.enqueue(fetch, object())
    assert (result.status, result.result) == (TaskStatus.SUCCEEDED, 7)
    stand_in.assert_called_once_with("https://example.com")


def test_a_failing_stand_in_fails_the_task_and_is_retried_like_the_real_one(
    fake_task_service: FakeTaskService,
) -> None:
    with replace_task(send_mail, mock.MagicMock(side_effect=ConnectionError("relay down"))) as stand_in:
        fake_task_service.enqueue(send_mail, "ada@example.com")
        [result] = fake_task_service.run_all()
    assert (result.status, result.error, result.attempts) == (TaskStatus.FAILED, "ConnectionError: relay down", 2)
    assert stand_in.call_count == 2


def test_restore_puts_the_real_body_back(fake_task_service: FakeTaskService) -> None:
    replacement = replace_task("replace.send_mail")
    assert isinstance(replacement, TaskReplacement)
    replacement.restore()
    replacement.restore()  # idempotent
    fake_task_service.enqueue(send_mail, "bo@example.com")
    assert fake_task_service.run_all()[0].result == "sent to bo@example.com"
    SENT.clear()


def test_a_mock_handed_to_enqueue_is_refused_naming_the_fix(fake_task_service: FakeTaskService) -> None:
    for stand_in in (mock.MagicMock(), mock.AsyncMock(), mock.create_autospec(send_mail.func)):
        with pytest.raises(TypeError, match=r"unittest\.mock object .*testing\.replace_task\(your_task\)"):
            fake_task_service.enqueue(stand_in, "ada@example.com")
    assert fake_task_service.calls == []


def test_on_celery_replace_task_says_the_worker_can_never_see_it() -> None:
    celery = create_task_service(TaskSettings(backend="celery", redis_url="redis://127.0.0.1:9/0"))
    with installed_task_service(celery), pytest.raises(InProcessOnly, match="--task-backend=fastapi"):
        replace_task(send_mail)
    assert send_mail.func.__name__ == "send_mail"


def test_a_backend_plugged_in_by_path_that_runs_tasks_here_takes_stand_ins() -> None:
    """The capability, not the backend's name, decides: an outside backend that runs tasks in this process works."""
    tiny = create_task_service(TaskSettings(backend="tests.tiny_backend:ThreadTaskService"))
    try:
        with installed_task_service(tiny), replace_task(send_mail, lambda to, subject="hello": f"stand-in {to}"):
            task_id = tiny.enqueue(send_mail, "di@example.com")
            assert tiny.wait(task_id, timeout_s=10).result == "stand-in di@example.com"
    finally:
        tiny.close()


def test_a_sync_task_takes_an_async_stand_in(fake_task_service: FakeTaskService) -> None:
    async def stand_in(to: str, subject: str = "hello") -> str:
        await asyncio.sleep(0)
        return f"async {to}"

    with replace_task(send_mail, stand_in):
        fake_task_service.enqueue(send_mail, "cy@example.com")
        assert fake_task_service.run_all()[0].result == "async cy@example.com"


# --- under finish_request_tasks: a function patched by name in place of a task stands in for it ----------


@task(name="replace.summarize")
async def summarize_article(summary_id: int, url: str) -> None:
    raise AssertionError("the real body must not run in these tests")


def create_summary(service: TaskService, summary_id: int) -> str:
    """Stands for an endpoint: it enqueues the module-level name, which a test may have patched."""
    return service.enqueue(summarize_article, summary_id, "https://foo.bar/")


def test_under_the_switch_a_function_patched_in_by_name_runs_in_place_of_the_task(
    inprocess: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, str]] = []

    def mock_summarize(summary_id: int, url: str) -> None:  # sync, for an async task
        seen.append((summary_id, url))

    monkeypatch.setattr(sys.modules[__name__], "summarize_article", mock_summarize)
    with finish_request_tasks():
        result = inprocess.wait(create_summary(inprocess, 7), timeout_s=10)
        with pytest.raises(TypeError, match="cannot be called with these arguments"):
            inprocess.enqueue(mock_summarize, 7)  # still checked against the task's own signature
    assert (result.name, result.status, seen) == ("replace.summarize", TaskStatus.SUCCEEDED, [(7, "https://foo.bar/")])


def test_under_the_switch_a_mock_patched_in_stands_in_with_the_fake(
    fake_task_service: FakeTaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in = mock.MagicMock()
    monkeypatch.setattr(sys.modules[__name__], "summarize_article", stand_in)
    with finish_request_tasks():
        create_summary(fake_task_service, 8)
    assert_enqueued(fake_task_service, "replace.summarize", 8, "https://foo.bar/")
    fake_task_service.run_all()
    stand_in.assert_called_once_with(8, "https://foo.bar/")


def test_without_the_switch_a_patched_function_is_refused_naming_the_fix(
    fake_task_service: FakeTaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "summarize_article", lambda summary_id, url: None)
    with pytest.raises(TypeError, match="is not a task: decorate it with @task"):
        create_summary(fake_task_service, 9)


def test_on_celery_a_patched_function_is_refused_saying_the_worker_cannot_run_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    celery = create_task_service(TaskSettings(backend="celery", redis_url="redis://127.0.0.1:9/0"))
    monkeypatch.setattr(sys.modules[__name__], "summarize_article", mock.MagicMock())
    with installed_task_service(celery), finish_request_tasks(), pytest.raises(InProcessOnly) as refused:
        create_summary(celery, 10)
    assert "replaced the task replace.summarize" in str(refused.value)
    assert "--task-backend=fastapi" in str(refused.value)
