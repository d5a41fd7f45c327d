"""Bad calls are refused at enqueue, with the same error on every backend, and nothing is enqueued."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from taskservice import TaskService, TaskStatus
from taskservice.testing.contract import tasks


@pytest.fixture
def nothing_enqueued(task_service: TaskService) -> Iterator[None]:
    before = {result.id for result in task_service.list_tasks(limit=1000)}
    yield
    assert {result.id for result in task_service.list_tasks(limit=1000)} == before, "a refused call left a task"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        ((1, 2), "tuple"),
        (b"bytes", "bytes"),
        (dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "datetime"),
        (uuid.UUID(int=1), "UUID"),
        (object(), "object"),
        ({1: "int key"}, "int"),
        ([{"nested": {3}}], "set"),
        (float("nan"), "nan"),
    ],
)
def test_values_json_cannot_carry_are_refused_naming_the_argument(
    task_service: TaskService, nothing_enqueued: None, value: object, type_name: str
) -> None:
    with pytest.raises(TypeError, match=r"argument 'b' of task 'contract.add'") as caught:
        task_service.enqueue(tasks.add, 1, value)
    assert type_name in str(caught.value)


def _nested(depth: int) -> list[object]:
    outer: list[object] = []
    inner = outer
    for _ in range(depth - 1):
        deeper: list[object] = []
        inner.append(deeper)
        inner = deeper
    return outer


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (10**5000, "more than 4300 digits"),
        (_nested(65), "deeper than 64 levels"),
        (_nested(5000), "deeper than 64 levels"),
        ({"a": _nested(64)}, "deeper than 64 levels"),
        ("name\udcff", "lone surrogate"),
        ({"key\udcff": 1}, "lone surrogate"),
    ],
    ids=["huge-int", "65-deep", "5000-deep", "deep-in-a-dict", "surrogate", "surrogate-key"],
)
def test_values_some_part_of_the_way_would_choke_on_are_a_type_error(
    task_service: TaskService, nothing_enqueued: None, value: object, problem: str
) -> None:
    """Never a ValueError, a RecursionError or a worker that dies: the same TypeError on every backend."""
    with pytest.raises(TypeError, match=r"argument 'b' of task 'contract\.add'") as caught:
        task_service.enqueue(tasks.add, 1, value)
    assert problem in str(caught.value)


def test_nesting_up_to_the_limit_is_carried(task_service: TaskService) -> None:
    deep = _nested(62)  # in a dict: 64 levels as an argument, and as a result inside mutate's own dict
    result = task_service.wait(task_service.enqueue(tasks.mutate, {"deep": deep}, []))
    assert result.status == TaskStatus.SUCCEEDED, result.error
    assert result.result is not None and result.result["data"]["deep"] == deep


def test_keyword_arguments_are_named_too(task_service: TaskService, nothing_enqueued: None) -> None:
    with pytest.raises(TypeError, match="argument 'data'"):
        task_service.enqueue(tasks.mutate, items=[1], data={"when": dt.date(2030, 1, 1)})


def test_schedule_checks_arguments_too(task_service: TaskService, nothing_enqueued: None) -> None:
    with pytest.raises(TypeError, match="argument 'a'"):
        task_service.schedule(tasks.add, dt.timedelta(seconds=5), {1}, 2)


def test_oversized_payload_is_refused(task_service: TaskService, nothing_enqueued: None) -> None:
    too_big = "x" * (task_service.settings.max_payload_bytes + 1)
    with pytest.raises(TypeError, match="pass an id, not the data"):
        task_service.enqueue(tasks.touch, too_big)


def test_wrong_arguments_for_the_signature_are_refused(task_service: TaskService, nothing_enqueued: None) -> None:
    with pytest.raises(TypeError, match=r"contract\.add"):
        task_service.enqueue(tasks.add, 1)
    with pytest.raises(TypeError, match=r"contract\.add"):
        task_service.enqueue(tasks.add, 1, 2, c=3)


def test_undecorated_function_is_refused_with_the_fix(task_service: TaskService, nothing_enqueued: None) -> None:
    with pytest.raises(TypeError, match="@task"):
        task_service.enqueue(tasks.not_a_task, 1)


def test_unknown_task_name_is_refused(task_service: TaskService, nothing_enqueued: None) -> None:
    with pytest.raises(TypeError, match="no task is registered"):
        task_service.enqueue("contract.no_such_task")
