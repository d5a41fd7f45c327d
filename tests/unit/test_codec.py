"""The one argument codec: JSON values round-trip, everything else is refused at enqueue, naming the argument."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from typing import Any

import pytest

from taskservice import TaskSettings, task
from taskservice.codec import encode_arguments, encode_result
from taskservice.testing import FakeTaskService


@task
def store(report_id: int, payload: Any = None, *, label: str = "") -> None:
    """Takes any value in ``payload``; the codec decides what may pass."""


@task
def gather(first: Any, *rest: Any, **extra: Any) -> None:
    """Variadic parameters: each item is checked and named on its own."""


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.fixture
def fake() -> FakeTaskService:
    return FakeTaskService(TaskSettings(_env_file=None, max_payload_bytes=4096))


JSON_VALUES: list[Any] = [
    "text",
    "",
    "ünïcødé ✓",
    0,
    -(2**70),
    1.5,
    -0.0,
    True,
    False,
    None,
    [],
    {},
    [1, "two", 3.0, None, [True]],
    {"nested": {"list": [{"deep": [1, 2]}], "empty": {}}},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_every_json_value_round_trips_with_its_type(fake: FakeTaskService, value: Any) -> None:
    fake.enqueue(store, 1, value, label="x")

    [call] = fake.calls
    assert call.args == [1, value] and call.kwargs == {"label": "x"}
    assert type(call.args[1]) is type(value)
    assert json.dumps(call.args[1]) == json.dumps(value)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        ((1, 2), "tuple"),
        (b"raw", "bytes"),
        (bytearray(b"raw"), "bytearray"),
        (dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "datetime"),
        (dt.date(2030, 1, 1), "date"),
        (uuid.UUID(int=7), "UUID"),
        (decimal.Decimal("1.10"), "Decimal"),
        (object(), "object"),
        (Colour.RED, "Colour"),
        (Level.HIGH, "Level"),
        ({1: "int key"}, "int"),
        ({("a", "b"): 1}, "tuple"),
        ({"ok": [1, {"deeper": {2}}]}, "set"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        ([float("nan")], "nan"),
    ],
    ids=repr,
)
def test_values_that_would_not_come_back_equal_are_refused(fake: FakeTaskService, value: Any, named: str) -> None:
    with pytest.raises(TypeError, match=rf"argument 'payload' of task '{store.name}'") as caught:
        fake.enqueue(store, 1, value)
    assert named in str(caught.value)
    assert fake.calls == [], "a refused call was recorded"


def test_positional_and_keyword_arguments_are_named_by_parameter(fake: FakeTaskService) -> None:
    with pytest.raises(TypeError, match="argument 'report_id'"):
        fake.enqueue(store, (1,))
    with pytest.raises(TypeError, match="argument 'payload'"):
        fake.enqueue(store, 1, payload={2})
    with pytest.raises(TypeError, match="argument 'label'"):
        fake.enqueue(store, 1, label=b"x")
    assert fake.calls == []


def test_nested_problems_say_where_they_are(fake: FakeTaskService) -> None:
    with pytest.raises(TypeError, match=r"\['ok'\]\[1\]\['deeper'\]"):
        fake.enqueue(store, 1, {"ok": [1, {"deeper": {2}}]})


def test_variadic_arguments_are_checked_item_by_item(fake: FakeTaskService) -> None:
    fake.enqueue(gather, 1, 2, [3], key={"a": 1})
    [call] = fake.calls
    assert call.args == [1, 2, [3]] and call.kwargs == {"key": {"a": 1}}

    with pytest.raises(TypeError, match=r"argument 'rest\[1\]'.*set"):
        fake.enqueue(gather, 1, 2, {3})
    with pytest.raises(TypeError, match=r"argument 'key'.*tuple"):
        fake.enqueue(gather, 1, key=(1, 2))
    assert len(fake.calls) == 1


def test_wrong_arity_is_refused_at_enqueue(fake: FakeTaskService) -> None:
    with pytest.raises(TypeError, match=rf"task '{store.name}' cannot be called with these arguments"):
        fake.enqueue(store)
    with pytest.raises(TypeError, match="cannot be called"):
        fake.enqueue(store, 1, 2, 3)
    with pytest.raises(TypeError, match="cannot be called"):
        fake.enqueue(store, 1, colour="red")
    with pytest.raises(TypeError, match="cannot be called"):
        fake.schedule(store, dt.timedelta(seconds=1), 1, 2, "label is keyword-only")
    assert fake.calls == []


def test_payload_over_the_cap_is_refused_with_the_fix(fake: FakeTaskService) -> None:
    fake.enqueue(store, 1, "x" * 3000)  # under the 4096-byte cap

    with pytest.raises(TypeError, match="pass an id, not the data") as caught:
        fake.enqueue(store, 1, "x" * 5000)
    assert "4096" in str(caught.value) and "TASK_MAX_PAYLOAD_BYTES" in str(caught.value)
    with pytest.raises(TypeError, match="pass an id, not the data"):
        fake.schedule(store, dt.timedelta(minutes=1), 1, ["y" * 100] * 50)
    assert len(fake.calls) == 1


def test_the_cap_is_on_the_encoded_payload_and_inclusive() -> None:
    size = len(encode_arguments("t", store.func, (1, "é" * 10), {}, max_payload_bytes=10_000).encoded.encode())
    assert size > 10 * 2, "non-ASCII text counts as what is sent, not as characters"

    encode_arguments("t", store.func, (1, "é" * 10), {}, max_payload_bytes=size)
    with pytest.raises(TypeError, match=f"are {size} bytes, over the {size - 1}-byte cap"):
        encode_arguments("t", store.func, (1, "é" * 10), {}, max_payload_bytes=size - 1)


def test_decoded_copies_are_fresh_every_time() -> None:
    data = {"items": [1, 2]}
    arguments = encode_arguments("t", store.func, (1, data), {}, max_payload_bytes=1000)
    data["items"].append(3)  # the caller changing its object afterwards changes nothing

    first_args, _ = arguments.decoded_copy()
    first_args[1]["items"].append(99)
    second_args, second_kwargs = arguments.decoded_copy()

    assert second_args == [1, {"items": [1, 2]}]
    assert second_kwargs == {}


def test_results_go_through_json_as_a_worker_stores_them() -> None:
    assert encode_result("t", (1, 2)) == [1, 2]
    assert encode_result("t", {"a": (None, 1.5)}) == {"a": [None, 1.5]}
    assert encode_result("t", None) is None
    for bad in (object(), {1, 2}, float("nan"), dt.date(2030, 1, 1)):
        with pytest.raises(TypeError, match="result of task 't' cannot be stored as JSON"):
            encode_result("t", bad)
