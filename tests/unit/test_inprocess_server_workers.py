"""Detecting several server worker processes, where memory:// would split the task records.

The real servers are started in ``test_inprocess_uvicorn.py``; here the command lines they
run are fed to the detection one by one.
"""

from __future__ import annotations

import os

import pytest

from backends.inprocess.server_workers import ProcessView, several_workers

PYTHON = "/srv/.venv/bin/python3"


@pytest.mark.parametrize(
    ("parent_argv", "environ", "expected"),
    [
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app", "--workers", "4"], {}, "uvicorn --workers 4"),
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app", "--workers=2"], {}, "uvicorn --workers 2"),
        ([PYTHON, "-m", "uvicorn", "app.main:app", "--workers", "3"], {}, "uvicorn --workers 3"),
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app"], {"WEB_CONCURRENCY": "4"}, "WEB_CONCURRENCY=4"),
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app"], {"UVICORN_WORKERS": "2"}, "UVICORN_WORKERS=2"),
        ([PYTHON, "/srv/.venv/bin/fastapi", "run", "--workers", "4", "app/main.py"], {}, "fastapi --workers 4"),
        (
            ["/srv/.venv/bin/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "4", "app.main:app"],
            {},
            "gunicorn --workers 4",
        ),
        (["/srv/.venv/bin/gunicorn", "-w4", "app.main:app"], {}, "gunicorn --workers 4"),
        (["gunicorn", "app.main:app"], {"GUNICORN_CMD_ARGS": "--workers=3 --bind :80"}, "GUNICORN_CMD_ARGS"),
        (["hypercorn", "--workers", "2", "app.main:app"], {}, "hypercorn --workers 2"),
    ],
)
def test_several_workers_are_detected(parent_argv: list[str], environ: dict[str, str], expected: str) -> None:
    found = several_workers(ProcessView(parent_argv, environ))
    assert found is not None and expected in found


@pytest.mark.parametrize(
    ("parent_argv", "environ"),
    [
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app", "--reload"], {}),
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app", "--reload", "--workers", "4"], {}),  # reload wins
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app", "--reload"], {"WEB_CONCURRENCY": "4"}),
        ([PYTHON, "/srv/.venv/bin/uvicorn", "app.main:app", "--workers", "1"], {"WEB_CONCURRENCY": "4"}),
        ([PYTHON, "/srv/.venv/bin/fastapi", "dev", "app/main.py"], {}),
        (["/srv/.venv/bin/gunicorn", "-w", "1", "app.main:app"], {}),
        (["/bin/bash", "-c", "make run"], {"WEB_CONCURRENCY": "4"}),  # a single server started by a shell
        ([PYTHON, "/srv/.venv/bin/pytest", "-n", "4"], {}),  # test workers each own their tasks
        ([], {}),
    ],
)
def test_one_worker_and_the_reloader_are_fine(parent_argv: list[str], environ: dict[str, str]) -> None:
    assert several_workers(ProcessView(parent_argv, environ)) is None


def test_gunicorn_workers_from_a_config_file_are_seen_as_copies_of_this_process() -> None:
    argv = ["/srv/.venv/bin/gunicorn", "-c", "gunicorn.conf.py", "app.main:app"]  # forked workers share it
    assert several_workers(ProcessView(argv, {}, own_argv=argv, sibling_argvs=[argv])) is not None
    assert several_workers(ProcessView(argv, {}, own_argv=argv, sibling_argvs=[])) is None


def test_this_process_is_read_from_proc() -> None:
    view = ProcessView.current()
    assert view.own_argv and view.parent_argv, "the test runner and its parent have command lines"
    assert view.environ.get("PATH") == os.environ.get("PATH")
    assert several_workers(view) is None, "pytest is not a server with several workers"
