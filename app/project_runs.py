"""A project's run state: ``idle -> processing -> completed | error``.

The API records that a run was requested and a worker records how it went, in either
order: a Celery worker may finish a small CSV before the API has written "processing".
Each run carries a ``run_token`` (microseconds since the epoch at the request), and every
write is conditional on it, so the later run always wins and no write is lost or reverted.
"""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import CursorResult, or_, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from app.db import Database
from app.models import Project

_FRESH_RUN: dict[str, Any] = {"status": "processing", "progress": 0.0, "error_message": None, "result": None}


def new_run_token() -> int:
    return time.time_ns() // 1000


def record_requested(db: Database, project_id: str, token: int, task_id: str) -> None:
    """The API's write after enqueueing: ``processing`` unless the worker already moved this run on."""
    with db.session() as session:
        newer = or_(Project.run_token.is_(None), Project.run_token < token)
        statement = _project(project_id).where(newer).values(run_token=token, task_id=task_id, **_FRESH_RUN)
        claimed = _execute(session, statement)
        if not claimed:  # the worker got there first: only the task id is ours to add
            session.execute(_project(project_id).where(Project.run_token == token).values(task_id=task_id))


class ProjectRun:
    """The worker's side of one run; each method is a no-op once a newer run owns the project."""

    def __init__(self, db: Database, project_id: str, token: int) -> None:
        self.db = db
        self.project_id = project_id
        self.token = token

    def start(self) -> bool:
        """Mark the run ``processing``; False when a newer run has taken the project over."""
        with self.db.session() as session:
            not_newer = or_(Project.run_token.is_(None), Project.run_token <= self.token)
            statement = _project(self.project_id).where(not_newer).values(run_token=self.token, **_FRESH_RUN)
            return _execute(session, statement)

    def progress(self, percent: float) -> None:
        self._write(progress=round(percent, 1))

    def complete(self, summary: dict[str, Any]) -> None:
        self._write(status="completed", progress=100.0, result=summary, error_message=None)

    def fail(self, message: str) -> bool:
        return self._write(status="error", error_message=message)

    def _write(self, **values: Any) -> bool:
        with self.db.session() as session:
            statement = _project(self.project_id).where(Project.run_token == self.token, Project.status == "processing")
            return _execute(session, statement.values(**values))


def _project(project_id: str) -> Update:
    return update(Project).where(Project.id == project_id).execution_options(synchronize_session=False)


def _execute(session: Session, statement: Update) -> bool:
    """Run an UPDATE; True if it changed a row."""
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount > 0
