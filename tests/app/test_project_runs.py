"""Run-state writes of a project, in every order the API and a worker can make them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import Database
from app.models import Project
from app.project_runs import ProjectRun, record_requested


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    with database.session() as session:
        session.add(Project(id="p1", filename="a.csv", size_bytes=1))
    yield database
    database.dispose()


def state(db: Database) -> tuple[str, str | None, float]:
    with db.session() as session:
        project = session.get_one(Project, "p1")
        return project.status, project.task_id, project.progress


def test_api_first_then_worker(db: Database) -> None:
    record_requested(db, "p1", 100, "task-a")
    assert state(db) == ("processing", "task-a", 0.0)
    run = ProjectRun(db, "p1", 100)
    assert run.start()
    run.progress(40)
    assert state(db) == ("processing", "task-a", 40.0)
    run.complete({"rows": 1})
    assert state(db) == ("completed", "task-a", 100.0)


def test_worker_finishes_before_the_api_records_the_request(db: Database) -> None:
    run = ProjectRun(db, "p1", 100)
    assert run.start()
    run.complete({"rows": 1})
    record_requested(db, "p1", 100, "task-a")  # late: must not turn "completed" back into "processing"
    assert state(db) == ("completed", "task-a", 100.0)


def test_a_late_write_of_an_older_run_changes_nothing(db: Database) -> None:
    record_requested(db, "p1", 200, "task-new")
    old = ProjectRun(db, "p1", 100)
    assert not old.start()
    assert not old.fail("stale")
    record_requested(db, "p1", 100, "task-old")
    assert state(db) == ("processing", "task-new", 0.0)


def test_failure_is_recorded_once_and_only_while_processing(db: Database) -> None:
    record_requested(db, "p1", 100, "task-a")
    run = ProjectRun(db, "p1", 100)
    assert run.start() and run.fail("line 3, column 2 (region): must be 1 to 100 characters")
    assert not run.fail("a second verdict")
    with db.session() as session:
        project = session.get_one(Project, "p1")
        assert (project.status, project.error_message) == (
            "error",
            "line 3, column 2 (region): must be 1 to 100 characters",
        )
