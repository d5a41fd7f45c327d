"""The database the API and the workers share: SQLite under ``APP_DATA_DIR`` or PostgreSQL.

Tables are created at API start-up and, lazily, on first use in a worker process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.models import Base
from app.settings import AppSettings, get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """An engine and a session factory for one URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._tables_ready = False
        self._lock = threading.Lock()

    def create_tables(self) -> None:
        """Create missing tables; safe to call from several processes at once."""
        with self._lock:
            if self._tables_ready:
                return
            try:
                Base.metadata.create_all(self.engine)
            except DBAPIError:
                # Another process created the same table between our check and our CREATE
                # (PostgreSQL reports it as a unique violation on its catalog): check again.
                Base.metadata.create_all(self.engine)
            self._tables_ready = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on an exception."""
        if not self._tables_ready:
            self.create_tables()
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (see "begin").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer, so the API keeps answering while workers write.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout). A deferred
        # transaction that reads and then writes fails at once with "database is locked"
        # when another process wrote in between, which busy_timeout cannot help.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_database: Database | None = None
_database_lock = threading.Lock()


def get_database(settings: AppSettings | None = None) -> Database:
    """The process-wide database for the app settings (created on first use)."""
    global _database
    url = (settings or get_settings()).effective_database_url
    with _database_lock:
        if _database is None or _database.url != url:
            if _database is not None:
                _database.dispose()
            _database = Database(url)
        return _database


def reset_database() -> None:
    """Forget the process-wide database (tests call this after changing ``DATABASE_URL``)."""
    global _database
    with _database_lock:
        if _database is not None:
            _database.dispose()
        _database = None
