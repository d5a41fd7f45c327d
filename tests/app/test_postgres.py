"""The key flows once more with ``DATABASE_URL`` on PostgreSQL (Celery backend: API, worker and beat share it).

A throwaway database is created on the local server and dropped afterwards. Without a
reachable server the tests are skipped with the reason, except under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.app import flows
from tests.app.live import LiveApp, live_app

pytestmark = pytest.mark.slow

ADMIN_URL = os.environ.get("APP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def pg_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {ADMIN_URL} (set APP_TEST_POSTGRES_URL): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- the PostgreSQL run must not be skipped in CI")
        pytest.skip(message)
    name = f"taskservice_app_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    try:
        with live_app(
            "celery", tmp_path_factory.mktemp("live-postgres"), database_url.render_as_string(hide_password=False)
        ) as live:
            yield live
            live.database.dispose()
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def test_postgres_images_and_periodic_check(pg_live: LiveApp) -> None:
    assert pg_live.database.engine.dialect.name == "postgresql"
    with pg_live.client() as client:
        image_id = flows.image_flow(pg_live, client)
        flows.upkeep_flow(pg_live, client, image_id)


def test_postgres_projects(pg_live: LiveApp) -> None:
    with pg_live.client() as client:
        flows.project_flow(client)
        flows.bad_project_flow(client)


def test_postgres_notifications(pg_live: LiveApp) -> None:
    with pg_live.client() as client:
        flows.notification_flow(pg_live, client)
