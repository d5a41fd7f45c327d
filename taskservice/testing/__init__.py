"""The taskservice testing kit: a fake service, assertions on it, the request switch, and pytest fixtures.

Unit tests of callers never need Redis or a worker::

    def test_upload_enqueues_a_thumbnail(fake_task_service, client):
        client.post("/images", files={"file": ...})
        assert_enqueued(fake_task_service, generate_thumbnail, ANY)
        [result] = fake_task_service.run_all()
        assert result.status == TaskStatus.SUCCEEDED

Integration tests that assert the effect right after a request, as with ``BackgroundTasks``,
turn on ``finish_request_tasks`` (one ini line in pytest: ``taskservice_finish_request_tasks =
true``); ``replace_task`` runs a stand-in instead of a task's body (fake and in-process only).

The fixtures (``fake_task_service``, ``task_service_override``, ``finish_request_tasks``) and the
``--task-backend=fastapi|celery`` option come from the pytest plugin
``taskservice.testing.pytest_plugin``, registered automatically when taskservice is installed.
"""

from taskservice import registry as _registry
from taskservice.testing.assertions import assert_enqueued, assert_not_enqueued, assert_scheduled
from taskservice.testing.fake import (
    FakeTaskService,
    RecordedCall,
    installed_task_service,
    override_task_service,
)
from taskservice.testing.replace import InProcessOnly, TaskReplacement, replace_task
from taskservice.testing.request_tasks import FinishPolicy, RequestTaskFailed, finish_request_tasks
from taskservice.testing.stand_ins import stand_in_for as _stand_in_for

if _stand_in_for not in _registry.non_task_resolvers:
    _registry.non_task_resolvers.append(_stand_in_for)

__all__ = [
    "FakeTaskService",
    "FinishPolicy",
    "InProcessOnly",
    "RecordedCall",
    "RequestTaskFailed",
    "TaskReplacement",
    "assert_enqueued",
    "assert_not_enqueued",
    "assert_scheduled",
    "finish_request_tasks",
    "installed_task_service",
    "override_task_service",
    "replace_task",
]
