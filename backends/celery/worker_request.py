"""The worker's request for a delivered message: a message it cannot hand to its pool fails that one task.

A prefork worker's main process pickles the decoded arguments to hand them to a pool process; a
value nested a few hundred levels deep makes that pickling raise ``RecursionError``, which Celery
treats as unrecoverable: the worker exits, the message comes back and kills the next one. Such a
message cannot come through ``enqueue`` (the codec refuses deep nesting), only from a raw Celery
client; here it is refused on receipt: the task ends failed with that reason, the message is
dropped, and the worker carries on.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.request import Request

from backends.celery.result_backend import ANONYMOUS, OUTCOME_REQUEST_ATTRIBUTE, TOKEN_REQUEST_ATTRIBUTE
from backends.celery.store.messages import DEFAULT_QUEUE
from taskservice import attempts
from taskservice.attempts import AttemptInfo
from taskservice.codec import MAX_NESTING_DEPTH


def nesting_depth_over(values: Any, limit: int) -> bool:
    """Whether lists and dicts in ``values`` nest more than ``limit`` deep (iterative: no recursion to blow)."""
    stack: list[tuple[Any, int]] = [(values, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, list | tuple):
            if depth > limit:
                return True
            stack.extend((item, depth + 1) for item in value if isinstance(item, list | tuple | dict))
        elif isinstance(value, dict):
            if depth > limit:
                return True
            stack.extend((item, depth + 1) for item in value.values() if isinstance(item, list | tuple | dict))
    return False


class CheckedRequest(Request):  # type: ignore[misc]  # celery ships no type hints
    """Celery's request, refusing arguments no pool could be handed (see the module docstring)."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        # +1: the (args, kwargs) pair itself is one level
        if nesting_depth_over((self._args, self._kwargs), MAX_NESTING_DEPTH + 1):
            error = (
                f"ValueError: the arguments of this message nest deeper than {MAX_NESTING_DEPTH} levels, "
                "which no worker can take: it was refused on receipt (enqueue refuses such arguments)"
            )
            self._fail(error)
            raise InvalidTaskError(f"task {self.id} refused: {error}")

    def _fail(self, error: str) -> None:
        queue = (self._delivery_info or {}).get("routing_key") or DEFAULT_QUEUE
        self.task.backend.records.adopt(self.id, self.task.claim_defaults(queue))  # a raw message has no record
        outcome = attempts.interrupted(AttemptInfo(self.id, self.name, 0), error)
        context = self._context
        setattr(context, OUTCOME_REQUEST_ATTRIBUTE, outcome)
        setattr(context, TOKEN_REQUEST_ATTRIBUTE, ANONYMOUS)
        self.task.backend.mark_as_failure(self.id, ValueError(error), request=context)
