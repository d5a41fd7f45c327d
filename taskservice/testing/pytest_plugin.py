"""pytest fixtures, options and the request switch of the taskservice testing kit, loaded automatically
once taskservice is installed.

Fixtures:

- ``fake_task_service``: a fresh ``FakeTaskService``, installed as the process-wide service
  (what ``get_task_service()`` returns) for the test, the previous one restored after.
- ``task_service_override``: the same fake, also served to the FastAPI app of your own
  ``app`` fixture through ``app.dependency_overrides`` (what ``TaskServiceDep`` resolves to).
- ``finish_request_tasks``: for this test, every request runs the tasks it enqueued to
  completion, in order, before the ASGI call returns (BackgroundTasks' test semantics, on the
  real backend); a task that fails fails the test with its traceback.
- ``task_worker_env`` (session): extra environment for the ``--task-backend=celery`` worker;
  override it to point the worker at the test database.

Configuration (``[tool.pytest.ini_options]`` or ``pytest.ini``):

- ``taskservice_finish_request_tasks = true``: the ``finish_request_tasks`` switch for every test;
- ``taskservice_request_task_errors = ignore``: a failed task no longer fails the test;
- ``taskservice_finish_timeout_s = 60``: how long a request waits for each of its tasks;
- ``taskservice_task_modules = app.tasks``: what the Celery worker imports (default: ``TASK_MODULES``,
  else every module that registered a task).

Under the switch, a function or mock a test patched in place of a task (by its name, as suites
written for ``BackgroundTasks`` do) runs as that task with the fake and in-process (``stand_ins``).

Option: ``--task-backend=fastapi|celery`` sets ``TASK_BACKEND`` for the session; with ``celery`` it
starts a throwaway redis-server and a real worker (and beat, if periodic tasks exist) and tears
them down at the end (see ``celery_session``).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from taskservice.factory import set_task_service
from taskservice.request_scope import FinishPolicy, RequestTaskFailed, set_finish_policy
from taskservice.testing.celery_session import CelerySession, session_task_modules
from taskservice.testing.fake import FakeTaskService, installed_task_service, override_task_service
from taskservice.testing.replace import restore_all

_celery_session: CelerySession | None = None
_test_policies: list[FinishPolicy] = []  # the running test's policies (the ini switch, the fixture)
_SAVED_BACKEND = pytest.StashKey[str | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("taskservice")
    group.addoption(
        "--task-backend",
        choices=("fastapi", "celery"),
        default=None,
        help="run the session's tasks in-process (fastapi) or on a real Celery worker with a private redis-server",
    )
    parser.addini("taskservice_finish_request_tasks", "requests finish their tasks before returning", type="bool")
    parser.addini("taskservice_request_task_errors", "fail (default) or ignore: a failed request task", default="fail")
    parser.addini("taskservice_finish_timeout_s", "seconds a request waits for each of its tasks", default="60")
    parser.addini("taskservice_task_modules", "modules the --task-backend=celery worker imports", default="")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Before conftest files import the app: choose the backend, start Redis for ``celery``."""
    global _celery_session
    backend = getattr(early_config.known_args_namespace, "task_backend", None)
    if backend == "fastapi":
        early_config.stash[_SAVED_BACKEND] = _set_env("TASK_BACKEND", "fastapi")
    elif backend == "celery":
        _celery_session = CelerySession()
        early_config.add_cleanup(_close_celery_session)
        _celery_session.start_redis()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SAVED_BACKEND in config.stash:
        _set_env("TASK_BACKEND", config.stash[_SAVED_BACKEND])


def pytest_report_header(config: pytest.Config) -> str | None:
    if _celery_session is not None:
        return f"taskservice: --task-backend=celery, private Redis at {_celery_session.redis_url}"
    return None


def _set_env(name: str, value: str | None) -> str | None:
    previous = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    return previous


def _close_celery_session() -> None:
    global _celery_session
    session, _celery_session = _celery_session, None
    if session is not None:
        session.close()


@pytest.fixture(scope="session")
def task_worker_env() -> dict[str, str]:
    """Extra environment for the ``--task-backend=celery`` worker and beat (override in a conftest)."""
    return {}


@pytest.fixture(scope="session", autouse=True)
def _taskservice_celery_worker(request: pytest.FixtureRequest) -> Iterator[None]:
    if _celery_session is not None:
        extra_env: dict[str, str] = request.getfixturevalue("task_worker_env")
        modules = session_task_modules(str(request.config.getini("taskservice_task_modules")))
        _celery_session.start_worker(modules, extra_env)
    yield


@pytest.fixture(autouse=True)
def _taskservice_test_scope(request: pytest.FixtureRequest) -> Iterator[None]:
    """Per test: no stopped service left over, the ini switch's policy, every ``replace_task`` undone after."""
    _forget_stopped_service()
    policy = _policy_from_ini(request.config) if request.config.getini("taskservice_finish_request_tasks") else None
    previous = set_finish_policy(policy) if policy is not None else None
    if policy is not None:
        _test_policies.append(policy)
    try:
        yield
    finally:
        restore_all()
        if policy is not None:
            _test_policies.remove(policy)
            set_finish_policy(previous)


def _forget_stopped_service() -> None:
    """A process-wide service an earlier test's lifespan stopped would refuse work (``ServiceStopped``)
    in a test without a lifespan (a plain ``TestClient(app)``): the next use gets a fresh one."""
    current = set_task_service(None)
    if current is not None and not current.stopped:
        set_task_service(current)


def _policy_from_ini(config: pytest.Config) -> FinishPolicy:
    errors = str(config.getini("taskservice_request_task_errors")).strip().lower()
    if errors not in ("fail", "ignore"):
        raise pytest.UsageError(f"taskservice_request_task_errors must be fail or ignore, got {errors!r}")
    try:
        timeout_s = float(str(config.getini("taskservice_finish_timeout_s")))
    except ValueError:
        raise pytest.UsageError("taskservice_finish_timeout_s must be a number of seconds") from None
    return FinishPolicy(timeout_s=timeout_s, raise_errors=errors == "fail")


@pytest.fixture
def finish_request_tasks(request: pytest.FixtureRequest) -> Iterator[FinishPolicy]:
    """For this test, requests finish their tasks before returning; the policy can be changed in the test."""
    policy = _policy_from_ini(request.config)
    previous = set_finish_policy(policy)
    _test_policies.append(policy)
    try:
        yield policy
    finally:
        _test_policies.remove(policy)
        set_finish_policy(previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """A test that passed although a task it caused failed (its client swallowed the error) fails;
    a test that failed shows the failed tasks' tracebacks in its report."""
    try:
        outcome = yield
    except BaseException:
        for policy in _test_policies:
            if policy.failures:
                item.add_report_section("call", "taskservice", "\n\n".join(policy.failures))
        raise
    for policy in _test_policies:
        caught = {
            id(message) for error in policy.raised if _caught_by_the_test(error, item) for message in error.failures
        }
        swallowed = [message for message in policy.failures if id(message) not in caught]
        if swallowed and policy.raise_errors:
            raise RequestTaskFailed(
                "a task enqueued by a request of this test failed (the client did not raise it):\n\n" + swallowed[0]
            )
    return outcome


def _caught_by_the_test(error: BaseException, item: pytest.Item) -> bool:
    """The error reached the test's own code (``pytest.raises``) rather than dying in a client.

    The head of an exception's traceback is the frame where it stopped: the test function
    for an error the test caught, the client's transport for one it swallowed."""
    trace = error.__traceback__
    return trace is not None and trace.tb_frame.f_code.co_filename == str(item.path)


# The contract suite's asserts say what differed, like those of a test module (before it is imported).
pytest.register_assert_rewrite("taskservice.testing.contract")


@pytest.fixture
def fake_task_service() -> Iterator[FakeTaskService]:
    """A fresh ``FakeTaskService``, installed as the process-wide service for this test."""
    with installed_task_service(FakeTaskService()) as fake:
        yield fake


@pytest.fixture
def task_service_override(
    request: pytest.FixtureRequest, fake_task_service: FakeTaskService
) -> Iterator[FakeTaskService]:
    """``fake_task_service``, also served to the app returned by your ``app`` fixture."""
    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError:
        pytest.fail(
            "task_service_override needs a fixture named 'app' that returns your FastAPI app; "
            "or use fake_task_service with `with override_task_service(app, fake_task_service):`",
            pytrace=False,
        )
    with override_task_service(app, fake_task_service) as fake:
        yield fake
