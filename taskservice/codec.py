"""The one argument codec every backend uses: plain JSON, checked by a round trip.

Carried: ``str``, ``int``, ``float`` (finite), ``bool``, ``None``, ``list`` and ``dict``
with ``str`` keys, nested. Nothing else: a value that would not come back equal and of
the same type (a tuple, a set, a datetime, a UUID, an object) is refused at enqueue, so
code that works in-process cannot break when the tasks move to Celery workers.

Also refused, because some part of the way would choke on them: nesting deeper than
``MAX_NESTING_DEPTH`` (a worker hands arguments to its pool process by pickling them,
which recurses), an ``int`` of more than ``MAX_INT_DIGITS`` digits (Python will not print
it), and a ``str`` holding a lone surrogate (not UTF-8: no store can keep it). Results
pass the same checks, except that a tuple is accepted and stored as a list.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import inspect
import json
import uuid
from collections.abc import Callable
from typing import Any

_SCALARS = (str, int, float, bool, type(None))
MAX_NESTING_DEPTH = 64  # lists/dicts inside lists/dicts
MAX_INT_DIGITS = 4300  # Python's own limit for turning an int into text (sys.get_int_max_str_digits)
_INT_LIMIT = 10**MAX_INT_DIGITS
_FEW_BITS = 14_000  # an int of at most this many bits has fewer than MAX_INT_DIGITS digits
# One encoder for every call: json.dumps with options builds a new one each time. ASCII output,
# so the payload's size in bytes is its length.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class Arguments:
    """Positional and keyword arguments of one call, encoded once and decodable again.

    A call of plain scalars only (``scalars_only``: str, int, finite float, bool, None) needs no JSON
    to be copied (they are immutable, and JSON gives them back as they are), so its encoding is
    made only when a store or a broker asks for it.
    """

    __slots__ = ("_encoded", "args", "kwargs", "scalars_only")

    def __init__(
        self, args: list[Any], kwargs: dict[str, Any], encoded: str | None = None, *, scalars_only: bool = False
    ) -> None:
        self.args = args
        self.kwargs = kwargs
        self._encoded = encoded
        self.scalars_only = scalars_only

    @property
    def encoded(self) -> str:
        """The JSON text of the call: ``{"args": [...], "kwargs": {...}}``."""
        if self._encoded is None:
            self._encoded = _ENCODER.encode({"args": self.args, "kwargs": self.kwargs})
        return self._encoded

    def decoded_copy(self) -> tuple[list[Any], dict[str, Any]]:
        """Fresh copies, as a worker in another process would receive them."""
        if self.scalars_only:
            return list(self.args), dict(self.kwargs)
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
    scalars_only = True
    bound = 32  # an upper bound of the encoded size, for calls of scalars only: {"args":[],"kwargs":{}}
    for name, value in _named_arguments(task_name, func, args, kwargs):
        kind = type(value)
        problem = None if kind is str and value.isascii() else _json_problem(value)  # ASCII text: nothing to check
        if problem is not None:
            raise TypeError(
                f"argument {name!r} of task {task_name!r} cannot be sent as JSON: {problem}. "
                "Pass plain JSON values (str, int, float, bool, None, list, dict with str keys)."
            )
        if scalars_only:
            if kind is str:
                bound += 6 * len(value) + 3  # every character escaped at worst, quotes, a comma
            elif kind is int:
                bound += value.bit_length() // 3 + 3  # 3.32 bits per digit, a sign, a comma
            elif kind is float or kind is bool or value is None:
                bound += 26
            else:
                scalars_only = False
    if scalars_only:
        bound += sum(6 * len(key) + 4 for key in kwargs)
        if bound <= max_payload_bytes:  # within the cap whatever the encoding: make it only when asked
            return Arguments(list(args), dict(kwargs), scalars_only=True)
    encoded = _ENCODER.encode({"args": args, "kwargs": kwargs})
    size = len(encoded)
    if size > max_payload_bytes:
        raise TypeError(
            f"arguments of task {task_name!r} are {size} bytes, over the {max_payload_bytes}-byte cap "
            "(TASK_MAX_PAYLOAD_BYTES): pass an id, not the data"
        )
    return Arguments(list(args), dict(kwargs), encoded, scalars_only=scalars_only)


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
    """Return the result as a worker would store it: through JSON, so tuples become lists.

    ``TypeError`` for a value JSON cannot carry, or that fails the checks arguments pass.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None or kind is float:
        problem = _json_problem(value)  # what JSON gives back anyway: no round trip needed
        if problem is None:
            return value
    else:
        problem = _json_problem(value, tuples_ok=True, other_keys_ok=True)
        if problem is None:
            try:
                return json.loads(_ENCODER.encode(value))
            except (TypeError, ValueError) as exc:
                problem = str(exc)
    raise TypeError(f"result of task {task_name!r} cannot be stored as JSON: {problem}")


def _json_problem(
    value: Any, path: str = "", depth: int = 0, *, tuples_ok: bool = False, other_keys_ok: bool = False
) -> str | None:
    """Why ``value`` would not survive a JSON round trip unchanged, or None if it would."""
    kind = type(value)
    if kind is str:
        return None if value.isascii() or _is_utf8(value) else f"the text{_at(path)} holds a lone surrogate (not UTF-8)"
    if kind is int:
        if value.bit_length() > _FEW_BITS and not -_INT_LIMIT < value < _INT_LIMIT:
            return f"the int{_at(path)} has more than {MAX_INT_DIGITS} digits"
        return None
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            return f"{value!r}{path} is not a finite number"
        return None
    if kind is bool or value is None:
        return None
    if kind is list or (tuples_ok and kind is tuple):
        if depth >= MAX_NESTING_DEPTH:
            return f"it nests deeper than {MAX_NESTING_DEPTH} levels of lists and dicts"
        for index, item in enumerate(value):
            problem = _json_problem(
                item, f"{path}[{index}]", depth + 1, tuples_ok=tuples_ok, other_keys_ok=other_keys_ok
            )
            if problem is not None:
                return problem
        return None
    if kind is dict:
        if depth >= MAX_NESTING_DEPTH:
            return f"it nests deeper than {MAX_NESTING_DEPTH} levels of lists and dicts"
        for key, item in value.items():
            if type(key) is not str and not (other_keys_ok and type(key) in _SCALARS):
                return f"dict key {_short_repr(key)}{path} is a {type(key).__name__}, JSON keys are strings"
            if type(key) is str and not (key.isascii() or _is_utf8(key)):
                return f"a dict key{_at(path)} holds a lone surrogate (not UTF-8)"
            if type(key) is not str:
                key_problem = _json_problem(key, path, depth + 1)
                if key_problem is not None:
                    return key_problem
            problem = _json_problem(
                item, f"{path}[{_short_repr(key)}]", depth + 1, tuples_ok=tuples_ok, other_keys_ok=other_keys_ok
            )
            if problem is not None:
                return problem
        return None
    return f"a {kind.__name__}{_at(path)} is not a JSON type{_hint(value)}"


def _hint(value: Any) -> str:
    """What to pass instead, for the values people pass most often."""
    if isinstance(value, tuple):
        return " (it would arrive as a list)"
    if isinstance(value, set | frozenset):
        return " (pass a list)"
    if isinstance(value, datetime.date | datetime.time):
        return " (pass value.isoformat() and parse it in the task)"
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return " (pass str(value))"
    if isinstance(value, enum.Enum):
        return " (pass value.value)"
    if isinstance(value, bytes | bytearray):
        return " (store the bytes and pass where they are, or pass base64 text)"
    if callable(getattr(value, "model_dump", None)):  # a pydantic model
        return " (pass model.model_dump(mode='json') and rebuild it in the task with model_validate)"
    if dataclasses.is_dataclass(value):
        return " (pass dataclasses.asdict(value) and rebuild it in the task)"
    return " (pass its id, or the plain values it holds, and load the object in the task)"


def _at(path: str) -> str:
    return f" at {path}" if path else ""


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
