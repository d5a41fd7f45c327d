"""``taskservice.__all__`` lists exactly the public names, and each of them resolves."""

from __future__ import annotations

import types

import taskservice
import taskservice.testing

# Fixed by the design document: other code and tests rely on these names.
DESIGN_NAMES = {
    "task",
    "Task",
    "TaskService",
    "TaskResult",
    "TaskStatus",
    "TaskSettings",
    "get_task_service",
    "set_progress",
    "TaskNotFound",
    "TaskConflict",
    "TaskServiceError",
}


def public_names(module: types.ModuleType) -> set[str]:
    """What a reader of the package sees: attributes without a leading underscore, submodules aside."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_lists_exactly_the_public_names() -> None:
    assert set(taskservice.__all__) == public_names(taskservice)
    assert len(taskservice.__all__) == len(set(taskservice.__all__)), "a name is listed twice"
    assert taskservice.__all__ == sorted(taskservice.__all__)


def test_the_names_of_the_design_are_public() -> None:
    assert set(taskservice.__all__) >= DESIGN_NAMES


def test_every_listed_name_resolves_and_star_import_works() -> None:
    for name in taskservice.__all__:
        assert getattr(taskservice, name) is not None
    namespace: dict[str, object] = {}
    exec("from taskservice import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(taskservice.__all__)


def test_public_names_come_from_taskservice_itself() -> None:
    for name in taskservice.__all__:
        module = getattr(getattr(taskservice, name), "__module__", "taskservice")
        assert module.startswith("taskservice"), f"{name} is re-exported from {module}"


def test_the_error_tree() -> None:
    errors = (taskservice.TaskNotFound, taskservice.TaskConflict, taskservice.BackendUnavailable)
    for error in errors:
        assert issubclass(error, taskservice.TaskServiceError)
    assert issubclass(taskservice.TaskNotFound, LookupError), "callers may catch it as a LookupError"


def test_the_testing_kit_lists_exactly_its_public_names() -> None:
    assert set(taskservice.testing.__all__) == public_names(taskservice.testing)
    for name in taskservice.testing.__all__:
        assert getattr(taskservice.testing, name) is not None
