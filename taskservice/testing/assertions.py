"""Assertions on what a ``FakeTaskService`` recorded, with failure messages that show what happened.

Expected arguments are matched the way the task would receive them: bound to the task's
signature with defaults filled in, so ``f(1)``, ``f(x=1)`` and ``f(1, flag=False)`` (a
default) are the same call; ``unittest.mock.ANY`` matches any value. With no expected
arguments at all, any call of the task matches.
"""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta
from typing import Any

from taskservice.registry import registered_tasks
from taskservice.testing.fake import FakeTaskService, RecordedCall, task_name_of

# How far a recorded delay may be from an expected ``timedelta``: schedule() turns the
# delay into a time, and the recorded enqueue time is taken a moment later.
SCHEDULE_DELAY_TOLERANCE_S = 1.0


def assert_enqueued(fake: FakeTaskService, task_or_name: Any, /, *args: Any, **kwargs: Any) -> RecordedCall:
    """Fail unless the task was enqueued (with these arguments, if given); return the first matching call."""
    name = task_name_of(task_or_name)
    expected = _Expected(name, args, kwargs)
    for call in fake.enqueued(name):
        if expected.matches(call):
            return call
    raise AssertionError(_missing_message(fake, name, f"{expected} to have been enqueued", fake.enqueued(name)))


def assert_scheduled(
    fake: FakeTaskService, task_or_name: Any, run_at: Any, /, *args: Any, **kwargs: Any
) -> RecordedCall:
    """Like ``assert_enqueued`` for ``schedule`` calls; ``run_at`` as given to ``schedule``, or ``mock.ANY``.

    An aware datetime must match exactly; a ``timedelta`` matches a call scheduled that far
    ahead of its enqueue time (within ``SCHEDULE_DELAY_TOLERANCE_S``).
    """
    if isinstance(run_at, datetime) and run_at.utcoffset() is None:
        raise TypeError("assert_scheduled: run_at is a naive datetime; schedule() never records one")
    name = task_name_of(task_or_name)
    expected = _Expected(name, args, kwargs)
    for call in fake.scheduled(name):
        if expected.matches(call) and _run_at_matches(call, run_at):
            return call
    what = f"{expected} to have been scheduled at {_describe_run_at(run_at)}"
    raise AssertionError(_missing_message(fake, name, what, fake.scheduled(name)))


def assert_not_enqueued(fake: FakeTaskService, task_or_name: Any, /, *args: Any, **kwargs: Any) -> None:
    """Fail if the task was enqueued or scheduled (with these arguments, if given)."""
    name = task_name_of(task_or_name)
    expected = _Expected(name, args, kwargs)
    found = [call for call in fake.calls if call.name == name and expected.matches(call)]
    if found:
        lines = "\n".join(f"  - {call}" for call in found)
        raise AssertionError(f"expected {expected} not to have been enqueued or scheduled, but it was:\n{lines}")


class _Expected:
    """Expected arguments of one task, normalized against its signature when it is registered."""

    def __init__(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.any_arguments = not args and not kwargs
        handle = registered_tasks().get(name)
        self.signature = inspect.signature(handle.func) if handle is not None else None
        self.normalized = self._normalize(list(args), kwargs) if not self.any_arguments else None
        if self.signature is not None and not self.any_arguments and self.normalized is None:
            plain = self.signature.replace(
                parameters=[
                    parameter.replace(annotation=inspect.Parameter.empty)
                    for parameter in self.signature.parameters.values()
                ],
                return_annotation=inspect.Signature.empty,
            )
            raise TypeError(f"the expected arguments {self} do not fit the signature of {name}{plain}")

    def _normalize(self, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        if self.signature is None:
            return {"args": args, "kwargs": kwargs}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        return dict(bound.arguments)

    def matches(self, call: RecordedCall) -> bool:
        if self.any_arguments:
            return True
        actual = self._normalize(call.args, call.kwargs)
        return actual is not None and self.normalized is not None and actual == self.normalized

    def __str__(self) -> str:
        if self.any_arguments:
            return self.name
        parts = [repr(value) for value in self.args] + [f"{key}={value!r}" for key, value in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


def _run_at_matches(call: RecordedCall, run_at: Any) -> bool:
    assert call.run_at is not None  # only scheduled calls get here
    if isinstance(run_at, timedelta):
        delay = call.run_at - call.enqueued_at
        return abs((delay - run_at).total_seconds()) <= SCHEDULE_DELAY_TOLERANCE_S
    return bool(call.run_at == run_at)


def _describe_run_at(run_at: Any) -> str:
    if isinstance(run_at, timedelta):
        return f"now + {run_at}"
    if isinstance(run_at, datetime):
        return run_at.isoformat()
    return repr(run_at)


def _missing_message(fake: FakeTaskService, name: str, what: str, same_kind: list[RecordedCall]) -> str:
    lines = [f"expected {what}, but it was not."]
    if same_kind:
        lines.append(f"Calls of {name} that were recorded:")
        lines.extend(f"  - {call}" for call in same_kind)
    others = [call for call in fake.calls if call not in same_kind]
    if others:
        lines.append("Other recorded calls:")
        lines.extend(f"  - {call}" for call in others[:20])
        if len(others) > 20:
            lines.append(f"  ... and {len(others) - 20} more")
    if not fake.calls:
        lines.append("Nothing was enqueued or scheduled at all.")
    return "\n".join(lines)
