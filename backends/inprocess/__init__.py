"""The in-process backend (``TASK_BACKEND=fastapi``): tasks run in the API process.

- ``service``: ``FastAPITaskService``, its lifecycle (home loop, start, stop)
- ``runner``: claims and runs attempts on the home loop (async) and on ``threads`` (sync)
- ``scheduler``: timers for scheduled, retried and periodic tasks, and the store's upkeep
- ``store``: where records live (``memory://``, ``sqlite:///PATH``), every status transition
- ``process_identity``, ``server_workers``: who owns a task, and whether several server workers run
"""
