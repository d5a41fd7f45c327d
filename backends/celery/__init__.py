"""The Celery backend (``TASK_BACKEND=celery``): tasks run in Celery workers, Redis keeps everything.

API side: ``service`` (``CeleryTaskService``). Worker side: ``app`` (what ``backends.celery_app``
re-exports), ``config``, ``worker_task`` (claim, run, retry), ``result_backend``, ``dispatcher``
(schedules), ``beat``, ``flower_guard``. Both: ``states`` (Celery's state names), ``connection``,
and ``store`` (the Redis records, their Lua scripts, the broker messages).
"""
