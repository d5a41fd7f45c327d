"""The one argument codec every backend uses: plain JSON, checked by a round trip.

Carried: ``str``, ``int``, ``float`` (finite), ``bool``, ``None``, ``list`` and ``dict``
with ``str`` keys, nested. Nothing else: a value that would not come back equal and of
the same type (a tuple, a set, a datetime, a UUID, an object) is refused at enqueue, so
code that works in-process cannot break when the tasks move to Celery workers.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

_SCALARS = (str, int, float, bool, type(None))
# One encoder for every call: json.dumps with options builds a new one each time. ASCII output,
# so the payload's size in bytes is its length.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class Arguments:
    """Positional and keyword arguments of one call, encoded once and decodable again."""

    __slots__ = ("args", "encoded", "kwargs")

    def __init__(self, args: list[Any], kwargs: dict[str, Any], encoded: str) -> None:
        self.args = args
        self.kwargs = kwargs
        self.encoded = encoded

    def decoded_copy(self) -> tuple[list[Any], dict[str, Any]]:
        """Fresh copies, as a worker in another process would receive them."""
        payload = json.loads(self.encoded)
        return payload["args"], payload["kwargs"]


def encode_arguments(
    task_name: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    max_payload_bytes: int,
) -> Arguments:
    """Check the call against the signature and encode it; raise ``TypeError`` naming the argument."""
    for name, value in _named_arguments(task_name, func, args, kwargs):
        problem = _json_problem(value)
        if problem is not None:
            raise TypeError(
                f"argument {name!r} of task {task_name!r} cannot be sent as JSON: {problem}. "
                "Pass plain JSON values (str, int, float, bool, None, list, dict with str keys)."
            )
    encoded = _ENCODER.encode({"args": args, "kwargs": kwargs})
    size = len(encoded)
    if size > max_payload_bytes:
        raise TypeError(
            f"arguments of task {task_name!r} are {size} bytes, over the {max_payload_bytes}-byte cap "
            "(TASK_MAX_PAYLOAD_BYTES): pass an id, not the data"
        )
    return Arguments(list(args), dict(kwargs), encoded)


def _named_arguments(
    task_name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[str, Any]]:
    """Each value with the parameter name it binds to; ``TypeError`` if the call does not fit the signature."""
    simple = _plain_parameters(func)
    if simple is not None and not kwargs and len(args) == len(simple):
        return list(zip(simple, args, strict=True))  # the common case, without Signature.bind
    try:
        bound = _signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"task {task_name!r} cannot be called with these arguments: {exc}") from None
    return _named_values(bound)


@functools.lru_cache(maxsize=4096)
def _plain_parameters(func: Callable[..., Any]) -> tuple[str, ...] | None:
    """Parameter names when all are positional-or-keyword without defaults, else None."""
    parameters = _signature(func).parameters.values()
    if all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in parameters):
        return tuple(p.name for p in parameters)
    return None


@functools.lru_cache(maxsize=4096)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature``, computed once per task function: it is most of an enqueue's cost."""
    return inspect.signature(func)


def _named_values(bound: inspect.BoundArguments) -> list[tuple[str, Any]]:
    """Each argument value with the name to report: ``*args`` items and ``**kwargs`` values one by one."""
    named: list[tuple[str, Any]] = []
    parameters = bound.signature.parameters
    for name, value in bound.arguments.items():
        kind = parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:  # bound as a tuple, but sent as separate JSON values
            named.extend((f"{name}[{index}]", item) for index, item in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named.extend(value.items())
        else:
            named.append((name, value))
    return named


def encode_result(task_name: str, value: Any) -> Any:
    """Return the result as a worker would store it: through JSON, so tuples become lists."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"result of task {task_name!r} cannot be stored as JSON: {exc}") from None


def _json_problem(value: Any, path: str = "") -> str | None:
    """Why ``value`` would not survive a JSON round trip unchanged, or None if it would."""
    kind = type(value)
    if kind in _SCALARS:
        if kind is float and (value != value or value in (float("inf"), float("-inf"))):
            return f"{value!r}{path} is not a finite number"
        return None
    if kind is list:
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"dict key {key!r}{path} is a {type(key).__name__}, JSON keys are strings"
            problem = _json_problem(item, f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
    where = f" at {path}" if path else ""
    hint = " (it would arrive as a list)" if kind is tuple else ""
    return f"a {kind.__name__}{where} is not a JSON type{hint}"
