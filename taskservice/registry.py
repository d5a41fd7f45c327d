"""The ``@task`` decorator, the ``Task`` handle and the registry of task names."""

from __future__ import annotations

import dataclasses
import inspect
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from taskservice.attempts import MAX_RETRIES, MAX_RETRY_DELAY_S

P = ParamSpec("P")
R = TypeVar("R")

_registry: dict[str, Task[..., Any]] = {}
_registry_lock = threading.Lock()
# Asked about a callable that is not a task before it is refused: the testing kit's stand-ins
# for a task a test patched by name (active only under its finish_request_tasks switch).
non_task_resolvers: list[Callable[[Any], Task[..., Any] | None]] = []


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """Options a task runs with; ``Task.options`` overrides them per call."""

    max_retries: int = 0
    retry_backoff: float = 1.0  # seconds before the first retry; doubles each time, with jitter
    timeout: float | None = None  # seconds one attempt may run
    queue: str | None = None
    unique_key: str | None = None
    after: str | None = None  # the id of a task this one waits for: it runs once that one succeeded

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError("max_retries must be an int")
        if not 0 <= self.max_retries <= MAX_RETRIES:
            raise ValueError(f"max_retries must be between 0 and {MAX_RETRIES}, got {self.max_retries}")
        if not isinstance(self.retry_backoff, int | float) or not 0 <= self.retry_backoff <= MAX_RETRY_DELAY_S:
            raise ValueError(f"retry_backoff must be between 0 and {MAX_RETRY_DELAY_S:g} seconds")
        if self.timeout is not None and not (isinstance(self.timeout, int | float) and 0 < self.timeout < 1e9):
            raise ValueError("timeout must be a positive number of seconds")
        for label, text in (("unique_key", self.unique_key), ("queue", self.queue), ("after", self.after)):
            if text is not None and (not isinstance(text, str) or not text or len(text) > 1000):
                raise ValueError(f"{label} must be a non-empty string of at most 1000 characters")


class Task(Generic[P, R]):
    """A registered task: call it to run the function here, enqueue it to run it in the background."""

    def __init__(self, func: Callable[P, R], name: str, options: TaskOptions) -> None:
        self.func = func
        self.name = name
        self.default_options = options
        self.is_async = inspect.iscoroutinefunction(func)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def options(self, **overrides: Any) -> Task[P, R]:
        """A copy with per-call options: ``unique_key``, ``queue``, ``max_retries``, ``retry_backoff``,
        ``timeout``, ``after`` (the id of a task this call waits for)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(TaskOptions)}
        if unknown:
            raise TypeError(f"unknown task option(s) {sorted(unknown)} for task {self.name!r}")
        return Task(self.func, self.name, dataclasses.replace(self.default_options, **overrides))

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    max_retries: int = 0,
    retry_backoff: float = 1.0,
    timeout: float | None = None,
    queue: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    max_retries: int = 0,
    retry_backoff: float = 1.0,
    timeout: float | None = None,
    queue: str | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a function (sync or async) as a task; its name defaults to ``module.qualname``."""
    options = TaskOptions(max_retries=max_retries, retry_backoff=retry_backoff, timeout=timeout, queue=queue)

    def register(f: Callable[P, R]) -> Task[P, R]:
        if isinstance(f, Task):
            raise TypeError(f"{f.name!r} is already a task")
        if "<locals>" in f.__qualname__ and name is None:
            raise TypeError(
                f"{f.__qualname__} is defined inside a function: give it an explicit name "
                "(@task(name=...)) or move it to module level so workers can import it"
            )
        task_name = name or f"{f.__module__}.{f.__qualname__}"
        handle = Task(f, task_name, options)
        with _registry_lock:
            existing = _registry.get(task_name)
            if existing is not None and _origin(existing.func) != _origin(f):
                raise ValueError(f"task name {task_name!r} is already registered by {_origin(existing.func)}")
            _registry[task_name] = handle
        return handle

    return register(func) if func is not None else register


def _origin(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def resolve_task(func: Any) -> Task[..., Any]:
    """The registered task for a ``Task``, a task name or a decorated function; ``TypeError`` otherwise."""
    if isinstance(func, Task):
        return func
    if isinstance(func, str):
        found = _registry.get(func)
        if found is None:
            raise TypeError(f"no task is registered under the name {func!r}: is its module in TASK_MODULES?")
        return found
    for resolve in non_task_resolvers:
        found = resolve(func)
        if found is not None:
            return found
    if _is_mock(func):
        raise TypeError(
            f"enqueue got a unittest.mock object ({type(func).__name__}), not a task, so nothing can run it: "
            "to replace a task in a test, replace its body, not its name: "
            "`with taskservice.testing.replace_task(your_task) as stand_in: ...` (FakeTaskService and the "
            "in-process backend; a mock can never reach a Celery worker)"
        )
    if callable(func):
        label = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"{label} is not a task: decorate it with @task (from taskservice import task) "
            "so it is registered and workers can run it"
        )
    raise TypeError(f"expected a @task function or a task name, got {type(func).__name__}")


def _is_mock(value: Any) -> bool:
    """A ``unittest.mock`` object, or a function ``create_autospec`` made (it carries its mock)."""
    return "unittest.mock" in (type(value).__module__, type(getattr(value, "mock", None)).__module__)


def registered_tasks() -> dict[str, Task[..., Any]]:
    """A copy of the registry: name -> task."""
    with _registry_lock:
        return dict(_registry)
