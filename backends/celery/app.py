"""What ``celery -A backends.celery_app worker|beat|flower`` imports: the Celery app of taskservice.

Importing it reads ``TaskSettings`` from the environment, imports ``TASK_MODULES`` so every
``@task`` is registered (under its own name) and every ``@periodic`` is in the beat schedule,
and makes ``CeleryTaskService`` the process-wide service, so tasks that enqueue tasks reach
Celery too. For ``flower`` it refuses to start without authentication (``FLOWER_BASIC_AUTH``)
unless ``FLOWER_AUTH_DISABLED=1``, and binds to 127.0.0.1 unless ``FLOWER_ADDRESS`` says otherwise.
A worker or beat with no ``TASK_MODULES`` refuses to start, in one line.
"""

from __future__ import annotations

import os
import sys

from backends.celery.beat import beat_schedule
from backends.celery.config import create_celery_app, import_task_modules
from backends.celery.flower_guard import celery_subcommand, guard_flower
from backends.celery.service import CeleryTaskService
from backends.celery.settings import CelerySettings
from backends.celery.worker_task import register_tasks
from taskservice.factory import set_task_service
from taskservice.periodic import periodic_tasks
from taskservice.registry import registered_tasks
from taskservice.startup import settings_or_exit

settings = settings_or_exit(CelerySettings)  # an invalid setting: one line and exit 1, not a traceback
guard_flower(sys.argv, os.environ, settings)
if celery_subcommand(sys.argv) in ("worker", "beat") and not settings.module_names:
    raise SystemExit(
        "taskservice: TASK_MODULES is empty, so this worker would know no task: set TASK_MODULES to the "
        "comma-separated modules that define your tasks (e.g. TASK_MODULES=app.tasks)"
    )
import_task_modules(settings.module_names)

app = create_celery_app(settings, set_as_current=True)
register_tasks(app, registered_tasks().values())
app.conf.beat_schedule = beat_schedule(periodic_tasks())

set_task_service(CeleryTaskService(settings))
