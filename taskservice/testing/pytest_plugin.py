"""pytest fixtures of the taskservice testing kit, loaded automatically once taskservice is installed.

- ``fake_task_service``: a fresh ``FakeTaskService``, installed as the process-wide service
  (what ``get_task_service()`` returns) for the test, the previous one restored after.
- ``task_service_override``: the same fake, also served to the FastAPI app of your own
  ``app`` fixture through ``app.dependency_overrides`` (what ``TaskServiceDep`` resolves to).

Without an ``app`` fixture, swap the fake in yourself::

    def test_upload(fake_task_service):
        with override_task_service(my_app, fake_task_service), TestClient(my_app) as client:
            ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskservice.testing.fake import FakeTaskService, installed_task_service, override_task_service

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
