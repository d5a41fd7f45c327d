"""The testing switch: a request's tasks finish before its ASGI call returns (BackgroundTasks' test semantics).

``BackgroundTasks`` runs a request's tasks, in order, before ``TestClient.post()`` returns, so
tests assert the effect right after the request. Under ``finish_request_tasks`` taskservice does
the same with the real backend: the real codec round trip, the real store, and on
``--task-backend=celery`` a real worker. ``TaskServiceMiddleware`` must be installed (it is what
knows where a request ends); it works with ``TestClient`` and ``httpx.ASGITransport`` alike.

In pytest the switch is one line of configuration (``taskservice_finish_request_tasks = true``)
or the ``finish_request_tasks`` fixture; elsewhere::

    with finish_request_tasks():
        response = client.post("/images", files=...)   # the thumbnail task has run
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from taskservice.request_scope import FinishPolicy, RequestTaskFailed, set_finish_policy

__all__ = ["FinishPolicy", "RequestTaskFailed", "finish_request_tasks"]


@contextlib.contextmanager
def finish_request_tasks(*, timeout_s: float = 60.0, raise_errors: bool = True) -> Iterator[FinishPolicy]:
    """Inside the block, each request runs its tasks to completion, in enqueue order, before it returns.

    A task that fails raises ``RequestTaskFailed`` (the task's error and traceback) from the
    request, unless ``raise_errors=False``; ``timeout_s`` bounds the wait for each task. The
    yielded policy lists the failures seen (``policy.failures``) and can be changed in the block.
    """
    policy = FinishPolicy(timeout_s=timeout_s, raise_errors=raise_errors)
    previous = set_finish_policy(policy)
    try:
        yield policy
    finally:
        set_finish_policy(previous)
