"""The taskservice testing kit: a fake service, assertions on it, and pytest fixtures.

Unit tests of callers never need Redis or a worker::

    def test_upload_enqueues_a_thumbnail(fake_task_service, client):
        client.post("/images", files={"file": ...})
        assert_enqueued(fake_task_service, generate_thumbnail, ANY)
        [result] = fake_task_service.run_all()
        assert result.status == TaskStatus.SUCCEEDED

The fixtures (``fake_task_service``, ``task_service_override``) come from the pytest plugin
``taskservice.testing.pytest_plugin``, registered automatically when taskservice is installed.
"""

from taskservice.testing.assertions import assert_enqueued, assert_not_enqueued, assert_scheduled
from taskservice.testing.fake import (
    FakeTaskService,
    RecordedCall,
    installed_task_service,
    override_task_service,
)

__all__ = [
    "FakeTaskService",
    "RecordedCall",
    "assert_enqueued",
    "assert_not_enqueued",
    "assert_scheduled",
    "installed_task_service",
    "override_task_service",
]
