"""The contract suite: one set of behaviour tests every ``TaskService`` backend must pass.

taskservice runs it against each of its backends; run it against yours from a test module of your
own, providing a ``task_service`` fixture (session-scoped: a started service whose tasks run where
``taskservice.testing.contract.tasks`` is imported, i.e. in ``TASK_MODULES`` of your workers)::

    # tests/test_contract.py
    import pytest
    from taskservice.testing.contract import *  # noqa: F403  (the tests and their fixtures)

    @pytest.fixture(scope="session")
    def task_service():
        service = MyTaskService(TaskSettings(backend="my_package.backend:MyTaskService"))
        yield service
        service.close()

Optionally define a ``contract_sink`` fixture next to it that returns the path your task-running
processes write their log records and hook calls to (``taskservice.testing.contract.sink``); the
tests of logs and hooks are skipped without one. A behaviour your backend cannot offer is a capability it declares
(``runs_in_background = False``...), and the tests that need it are skipped, saying so.
"""

from taskservice.testing.contract.helpers import in_background, process_wide_task_service
from taskservice.testing.contract.test_arguments import *  # noqa: F403
from taskservice.testing.contract.test_arguments import nothing_enqueued
from taskservice.testing.contract.test_async_api import *  # noqa: F403
from taskservice.testing.contract.test_attempts import *  # noqa: F403
from taskservice.testing.contract.test_failures import *  # noqa: F403
from taskservice.testing.contract.test_logs_and_hooks import *  # noqa: F403
from taskservice.testing.contract.test_logs_and_hooks import sink_path
from taskservice.testing.contract.test_ordering import *  # noqa: F403
from taskservice.testing.contract.test_retry_and_listing import *  # noqa: F403
from taskservice.testing.contract.test_running import *  # noqa: F403
from taskservice.testing.contract.test_scheduling import *  # noqa: F403
from taskservice.testing.contract.test_unique_key import *  # noqa: F403

# the tests, and the fixtures they use (pytest finds both in the module that star-imports this)
__all__ = ["in_background", "nothing_enqueued", "process_wide_task_service", "sink_path"]
__all__ += [name for name in dir() if name.startswith("test_")]
