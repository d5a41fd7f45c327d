"""Under ``finish_request_tasks``: a function or mock patched in place of a task runs as that task's stand-in.

Suites written for ``BackgroundTasks`` replace the background function by its name
(``monkeypatch.setattr(summaries, "generate_summary", fake)``, ``mock.patch(...)``), so the
endpoint hands ``enqueue`` the replacement instead of the task. Under the switch (BackgroundTasks'
test semantics) the registry asks ``stand_in_for``: the replacement is found under a name in the
calling module, that name is the function name of exactly one registered task, and the
replacement then runs as that task (same name, options and argument checks, the real codec
round trip) with the fake and the in-process backend. A Celery worker is another process and can
only run the real body: there the enqueue is refused, saying so. Outside the switch nothing
changes: a callable that is not a task is refused with the fix (``replace_task``).
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from taskservice import request_scope
from taskservice.factory import get_task_service
from taskservice.registry import Task, registered_tasks
from taskservice.testing.replace import InProcessOnly, body_for

_LIBRARY_PREFIXES = ("taskservice.", "backends.")


def stand_in_for(func: Any) -> Task[..., Any] | None:
    """The stand-in task for ``func`` patched where a registered task was; None when it is no such thing."""
    if request_scope.finish_policy() is None or not callable(func):
        return None
    replaced = _replaced_task(func, sys._getframe(1))
    if replaced is None:
        return None
    if not get_task_service().runs_tasks_in_this_process:
        raise InProcessOnly(
            f"this test replaced the task {replaced.name} with {_label(func)}, which a Celery worker can never "
            "run (it runs the real body in its own process): the test depends on in-process patching, so run "
            "it with --task-backend=fastapi (or skip it on celery)"
        )
    body = body_for(replaced.func, func, replaced.is_async)
    return Task(body, replaced.name, replaced.default_options)


def _replaced_task(func: Any, frame: FrameType | None) -> Task[..., Any] | None:
    """The one registered task whose function name ``func`` is bound to in the first non-library frame."""
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(_LIBRARY_PREFIXES):
        frame = frame.f_back
    if frame is None:
        return None
    names = {name for name, value in {**frame.f_globals, **frame.f_locals}.items() if value is func}
    candidates = {
        handle.name: handle
        for handle in registered_tasks().values()
        if getattr(getattr(handle.func, "__wrapped__", handle.func), "__name__", None) in names
    }
    return next(iter(candidates.values())) if len(candidates) == 1 else None


def _label(func: Any) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__
