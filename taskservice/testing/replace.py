"""``replace_task``: run a stand-in instead of a task's body in a test, with the fake or the in-process backend.

Patching the *name* of a task (``mock.patch("app.api.generate_thumbnail")``) hands ``enqueue`` a
mock, which is not a task: the call is refused. Replace the task's *body* instead; every
reference to the task (the endpoint's, the registry's) then runs the stand-in, after the same
argument checks and codec round trip as the real body::

    with replace_task(generate_thumbnail) as stand_in:      # a MagicMock unless you pass a function
        client.post("/images/img-1/thumbnail")
    stand_in.assert_called_once_with("img-1")

The stand-in runs where the task runs: in this process with ``FakeTaskService`` and the
in-process backend. A Celery worker is another process and always runs the real body, so under
``TASK_BACKEND=celery`` (``--task-backend=celery``) ``replace_task`` raises ``InProcessOnly``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any
from unittest import mock

from taskservice.factory import get_task_service
from taskservice.registry import Task, registered_tasks, resolve_task

_active: list[TaskReplacement] = []


class InProcessOnly(RuntimeError):
    """The test replaces a task's body, which only tasks run in this process can see."""


class TaskReplacement:
    """One replaced task; ``restore()`` (or the end of the ``with`` block) puts the real body back."""

    def __init__(self, handle: Task[..., Any], stand_in: Callable[..., Any]) -> None:
        self.task = handle
        self.stand_in = stand_in
        handles = [handle]
        registered = registered_tasks().get(handle.name)
        if registered is not None and registered is not handle:  # handle is an .options() copy
            handles.append(registered)
        self._originals = [(replaced, replaced.func) for replaced in handles]
        body = body_for(handle.func, stand_in, handle.is_async)
        for replaced, _ in self._originals:
            replaced.func = body
        _active.append(self)

    def restore(self) -> None:
        """Put the real body back (idempotent)."""
        for replaced, original in self._originals:
            replaced.func = original
        self._originals = []
        if self in _active:
            _active.remove(self)

    def __enter__(self) -> Any:
        return self.stand_in

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.restore()


def replace_task(task_or_name: Any, stand_in: Callable[..., Any] | None = None) -> TaskReplacement:
    """Run ``stand_in`` (a new ``MagicMock`` by default) instead of the task's function, from now on.

    Use it as a context manager (``with replace_task(t) as stand_in:``) or call ``restore()``;
    the pytest plugin restores every replacement at the end of each test. ``InProcessOnly``
    when the task service runs tasks in Celery workers, which can never see the stand-in.
    """
    handle = resolve_task(task_or_name)
    service = get_task_service()
    if not service.runs_tasks_in_this_process:
        raise InProcessOnly(
            f"replace_task({handle.name}) cannot work with TASK_BACKEND={service.backend_name}: the tasks run "
            "in worker processes, which always run the real body and never see a stand-in made in this test. "
            "This test depends on in-process patching: run it with --task-backend=fastapi (or skip it on celery)."
        )
    return TaskReplacement(handle, stand_in if stand_in is not None else mock.MagicMock(name=handle.name))


def restore_all() -> None:
    """Undo every replacement still active (the pytest plugin calls this after each test)."""
    for replacement in list(reversed(_active)):
        replacement.restore()


def body_for(original: Callable[..., Any], stand_in: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """``stand_in`` shaped like ``original``: its signature (for the argument checks) and sync/async kind."""
    if is_async:

        @functools.wraps(original)
        async def async_body(*args: Any, **kwargs: Any) -> Any:
            value = stand_in(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return _storable(value)

        return async_body

    @functools.wraps(original)
    def body(*args: Any, **kwargs: Any) -> Any:
        value = stand_in(*args, **kwargs)
        if inspect.isawaitable(value):  # an AsyncMock or async stand-in of a sync task (on a task thread)
            value = asyncio.run(_awaited(value))
        return _storable(value)

    return body


async def _awaited(value: Any) -> Any:
    return await value


def _storable(value: Any) -> Any:
    """A mock's return value is another mock, which no store can keep: it counts as None."""
    return None if isinstance(value, mock.NonCallableMock) else value
