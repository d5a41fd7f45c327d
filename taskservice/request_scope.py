"""Hold tasks enqueued during an HTTP request until its response has been sent; in tests, finish them.

``TaskServiceMiddleware`` opens a scope per request. The in-process backend puts each new task's
start into it (``defer_until_response_sent``), and the scope releases them once the last body chunk
is sent, or in any case when the request ends (an error, a client that went away), so no task is
ever left waiting. The tasks themselves are owned by the backend's runner.

Under a ``FinishPolicy`` (``set_finish_policy``; the testing kit's ``finish_request_tasks`` switch)
the middleware gives a request BackgroundTasks' test semantics: before the ASGI call returns, the
tasks the request enqueued run to completion, one after the other in enqueue order. Each starts
once the one before it has finished, and each is also chained to the one before it with ``after=``
(``chained_after``), so the order holds on a backend that dispatches at enqueue (Celery) too. A
task that failed, or did not finish in time, raises ``RequestTaskFailed`` from the ASGI call.
Scheduled tasks (a ``run_at``) and services that never run tasks by themselves (the fake) are not
waited for.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskservice.models import TaskStatus

if TYPE_CHECKING:
    from taskservice.service import TaskService

log = logging.getLogger("taskservice")

Starter = Callable[[], None]
ASGIApp = Callable[[Any, Any, Any], Any]


class RequestTaskFailed(AssertionError):
    """A task a request enqueued failed (or did not finish) while its test waited for it."""

    def __init__(self, message: str, failures: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = failures if failures is not None else [message]


@dataclasses.dataclass
class FinishPolicy:
    """How requests finish their tasks: wait up to ``timeout_s`` for each; raise failures or not.

    ``failures`` collects the message of every failed task, ``raised`` the errors raised for them
    (the pytest plugin fails a test whose client swallowed one).
    """

    timeout_s: float = 60.0
    raise_errors: bool = True
    failures: list[str] = dataclasses.field(default_factory=list)
    raised: list[RequestTaskFailed] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Submitted:
    service: TaskService
    task_id: str
    wait: bool  # False for scheduled tasks: their time has not come
    starters: list[Starter]  # the deferred starts handed over while this task was submitted


class RequestScope:
    """The tasks of one request: starts deferred until the response is sent, or finished in order."""

    __slots__ = ("finishing", "released", "starters", "submitted")

    def __init__(self, finishing: FinishPolicy | None) -> None:
        self.starters: list[Starter] = []  # deferred starts not yet attributed to a task
        self.submitted: list[_Submitted] = []
        self.released = False
        self.finishing = finishing

    def release(self) -> None:
        """Start everything still deferred, in the order it was deferred."""
        if self.released:
            return
        self.released = True
        starters = [start for item in self.submitted for start in item.starters] + self.starters
        for item in self.submitted:
            item.starters = []
        self.starters = []
        _start_all(starters)

    async def finish(self, policy: FinishPolicy, where: str) -> None:
        """Run each task to its end before the next one starts; then raise the first failure."""
        self.released = True
        failures: list[str] = []
        for item in self.submitted:
            starters, item.starters = item.starters, []
            _start_all(starters)
            if item.wait and item.service.runs_in_background:
                failure = await _wait_for(item, policy.timeout_s, where)
                if failure is not None:
                    failures.append(failure)
        leftovers, self.starters = self.starters, []
        _start_all(leftovers)
        policy.failures.extend(failures)
        if failures and policy.raise_errors:
            more = f"\n\n({len(failures) - 1} more task(s) of this request failed too)" if len(failures) > 1 else ""
            error = RequestTaskFailed(failures[0] + more, failures)
            policy.raised.append(error)
            raise error


def _start_all(starters: list[Starter]) -> None:
    for start in starters:
        try:
            start()
        except Exception:  # one task's hand-off must not stop the others'
            log.exception("taskservice: could not start a deferred task")


async def _wait_for(item: _Submitted, timeout_s: float, where: str) -> str | None:
    """None once the task succeeded (or was cancelled); otherwise what went wrong, with its traceback."""
    try:
        result = await item.service.await_result(item.task_id, timeout_s=timeout_s)
    except TimeoutError:
        return f"task {item.task_id} enqueued by {where} did not finish within {timeout_s:g} s"
    except Exception as exc:  # the backend went away or forgot the task: the test must hear of it
        return f"task {item.task_id} enqueued by {where} could not be followed: {type(exc).__name__}: {exc}"
    if result.status is not TaskStatus.FAILED:
        return None
    text = f"task {result.name} ({result.id}) enqueued by {where} failed: {result.error}"
    if not item.service.runs_tasks_in_this_process:
        text += " (it ran in a worker process: patches and mocks made by the test do not apply there)"
    return f"{text}\n\n{result.traceback}" if result.traceback else text


_current_scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "taskservice_request_scope", default=None
)
_finish_policy: FinishPolicy | None = None  # process-wide: TestClient runs the app on a thread of its own


def set_finish_policy(policy: FinishPolicy | None) -> FinishPolicy | None:
    """Make requests finish their tasks under ``policy`` (None: the normal behaviour); return the previous."""
    global _finish_policy
    previous, _finish_policy = _finish_policy, policy
    return previous


def finish_policy() -> FinishPolicy | None:
    """The policy requests finish their tasks under, or None (the normal behaviour)."""
    return _finish_policy


def defer_until_response_sent(start: Starter) -> bool:
    """Queue ``start`` behind the current response; False when not inside a request."""
    scope = _current_scope.get()
    if scope is None or scope.released:
        return False
    scope.starters.append(start)
    return True


def in_request_scope() -> bool:
    return _current_scope.get() is not None


def note_submitted(service: TaskService, task_id: str, *, scheduled: bool) -> None:
    """Called by ``TaskService`` after each accepted call: a finishing request waits for it."""
    scope = _current_scope.get()
    if scope is None or scope.finishing is None or scope.released:
        return
    scope.submitted.append(_Submitted(service, task_id, not scheduled, scope.starters))
    scope.starters = []


def chained_after(service: TaskService) -> str | None:
    """The task a new enqueue of ``service`` should wait for (``after=``): the request's previous one."""
    scope = _current_scope.get()
    if scope is None or scope.finishing is None or scope.released or not service.runs_in_background:
        return None
    for item in reversed(scope.submitted):
        if item.service is service and item.wait:
            return item.task_id
    return None


class TaskServiceMiddleware:
    """ASGI middleware: tasks enqueued while handling a request start after its response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = _finish_policy
        request = RequestScope(policy)
        token = _current_scope.set(request)

        async def send_then_release(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and policy is None:
                request.release()

        try:
            await self.app(scope, receive, send_then_release)
        except BaseException:
            request.release()
            raise
        finally:
            _current_scope.reset(token)
        if policy is None:
            request.release()
        else:
            await request.finish(policy, f"{scope.get('method', '')} {scope.get('path', '')}".strip())
