"""The backends behind ``taskservice.TaskService``, one package each; ``taskservice`` never imports them eagerly.

- ``backends.inprocess``: ``FastAPITaskService`` (``TASK_BACKEND=fastapi``), tasks in the API process;
  records in ``backends.inprocess.store`` (memory or SQLite).
- ``backends.celery``: ``CeleryTaskService`` (``TASK_BACKEND=celery``), tasks in Celery workers on Redis;
  records, Lua scripts and broker messages in ``backends.celery.store``.
- ``backends.celery_app``: what ``celery -A backends.celery_app worker|beat|flower`` names.
"""
