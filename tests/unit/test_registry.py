"""The @task registry: names, per-call options, and refusals that say how to fix them."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from taskservice import Task, task
from taskservice.registry import TaskOptions, registered_tasks, resolve_task


@task
def resize(image_id: str, size: int = 300) -> str:
    """Resize one image."""
    return f"{image_id}@{size}"


@task(name="unit.registry.build", max_retries=3, retry_backoff=2.0, timeout=120, queue="reports")
async def build(report_id: int) -> str:
    return f"report {report_id}"


def plain(x: int) -> int:
    return x


def test_default_name_is_module_and_qualname() -> None:
    assert resize.name == f"{__name__}.resize" == "tests.unit.test_registry.resize"
    assert registered_tasks()[resize.name] is resize


def test_explicit_name_and_options() -> None:
    assert build.name == "unit.registry.build"
    assert build.default_options == TaskOptions(max_retries=3, retry_backoff=2.0, timeout=120, queue="reports")
    assert build.is_async and not resize.is_async
    assert resolve_task("unit.registry.build") is build


def test_a_task_is_still_callable_as_the_function() -> None:
    assert resize("img-1", size=150) == "img-1@150"
    assert asyncio.run(build(7)) == "report 7"
    assert resize.__doc__ == "Resize one image."
    assert resize.__wrapped__ is resize.func


def test_options_returns_a_copy_with_overrides() -> None:
    keyed = build.options(unique_key="report:7", timeout=5)

    assert isinstance(keyed, Task) and keyed is not build
    assert keyed.name == build.name and keyed.func is build.func
    assert keyed.default_options.unique_key == "report:7"
    assert keyed.default_options.timeout == 5
    assert keyed.default_options.max_retries == 3, "options not overridden are kept"
    assert build.default_options.unique_key is None and build.default_options.timeout == 120
    assert registered_tasks()[build.name] is build, "a copy never replaces the registered task"


def test_options_rejects_unknown_names() -> None:
    with pytest.raises(TypeError, match=r"unknown task option\(s\) \['priority', 'retries'\]"):
        resize.options(retries=2, priority=1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_retries": -1}, "max_retries must be between 0 and 1000"),
        ({"max_retries": 5000}, "max_retries must be between 0 and 1000"),
        ({"retry_backoff": -0.5}, "retry_backoff must be between 0 and 600"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"unique_key": ""}, "unique_key must be a non-empty string"),
    ],
)
def test_option_values_are_checked(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resize.options(**overrides)


def test_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        resize.default_options.max_retries = 5  # type: ignore[misc]


def test_undecorated_function_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"plain is not a task: decorate it with @task"):
        resolve_task(plain)
    with pytest.raises(TypeError, match="@task"):
        resolve_task(lambda: None)


def test_unknown_name_and_other_values_are_refused() -> None:
    with pytest.raises(TypeError, match=r"no task is registered under the name 'unit\.registry\.nope'.*TASK_MODULES"):
        resolve_task("unit.registry.nope")
    with pytest.raises(TypeError, match="expected a @task function or a task name, got int"):
        resolve_task(42)


def test_a_second_function_under_a_taken_name_is_refused() -> None:
    def first() -> None: ...

    def second() -> None: ...

    task(name="unit.registry.taken")(first)
    with pytest.raises(ValueError, match=r"'unit.registry.taken' is already registered by .*first"):
        task(name="unit.registry.taken")(second)
    assert registered_tasks()["unit.registry.taken"].func is first


def test_the_same_function_may_register_again() -> None:
    """A module imported twice (a reload, a worker's autodiscovery) registers the same function again."""

    def again() -> None: ...

    one = task(name="unit.registry.again")(again)
    two = task(name="unit.registry.again")(again)
    assert registered_tasks()["unit.registry.again"] is two and one.name == two.name


def test_nested_function_needs_an_explicit_name() -> None:
    def local() -> None: ...

    with pytest.raises(TypeError, match="defined inside a function: give it an explicit name"):
        task(local)
    assert task(name="unit.registry.local")(local).name == "unit.registry.local"


def test_a_task_cannot_be_decorated_twice() -> None:
    with pytest.raises(TypeError, match="already a task"):
        task(resize)  # type: ignore[arg-type]


def test_registered_tasks_is_a_copy() -> None:
    snapshot = registered_tasks()
    snapshot.clear()
    assert resize.name in registered_tasks()
