"""The contract suite of ``taskservice.testing.contract``, run against every harness of ``tests.harnesses``."""

from taskservice.testing.contract import *  # noqa: F403
