"""How a failed attempt is described and when the next one comes: the same words on every backend."""

from __future__ import annotations

import math
import random

MAX_RETRY_DELAY_S = 600.0  # as Celery's retry_backoff_max


def describe_error(exc: BaseException) -> str:
    """``"ExceptionType: message"`` (just the type when the message is empty)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def timeout_error(timeout_s: float) -> str:
    """The error text of an attempt that ran past its ``timeout``."""
    return f"TimeoutError: task timed out after {timeout_s:g} s"


def retry_delay_s(retry_backoff: float, attempt: int) -> float:
    """Seconds before the attempt after ``attempt``: ``retry_backoff * 2**(attempt-1)``, +/-25 % jitter, capped."""
    return min(retry_backoff * math.pow(2, attempt - 1), MAX_RETRY_DELAY_S) * random.uniform(0.75, 1.25)
