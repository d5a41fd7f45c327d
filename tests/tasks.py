"""Tasks the tests use: the contract suite's (``taskservice.testing.contract.tasks``), under the same names.

Workers started by tests import this module (``TASK_MODULES=tests.tasks``); it registers every
contract task, so a test can name them as ``tests.tasks.add`` or by their task names
(``"contract.add"``).
"""

from taskservice.testing.contract.tasks import *  # noqa: F403
