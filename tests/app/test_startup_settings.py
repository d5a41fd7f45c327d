"""An invalid setting stops the API, a worker and beat with ONE line (variable, value, what is valid)
and a non-zero exit, instead of a traceback; the values of secrets and URL passwords stay hidden."""

from __future__ import annotations

import subprocess

import pytest

from tests.processes import REPO_ROOT, VENV_BIN, base_env

pytestmark = pytest.mark.slow


def started(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = base_env(TASK_MODULES="app.tasks", REDIS_URL="redis://127.0.0.1:9/0", **env)
    return subprocess.run(args, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=60)


API = [str(VENV_BIN / "uvicorn"), "app.main:app", "--port", "0"]
WORKER = [str(VENV_BIN / "celery"), "-A", "backends.celery_app", "worker", "--pool=solo"]
BEAT = [str(VENV_BIN / "celery"), "-A", "backends.celery_app", "beat"]


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (API, {"TASK_BACKEND": "celry"}, "invalid setting TASK_BACKEND='celry': must be one of fastapi, celery, or"),
        (
            API,
            {"TASK_STORE_URL": "postgres://db"},
            "invalid setting TASK_STORE_URL='postgres://db': must be 'memory://'",
        ),
        (API, {"APP_MAX_UPLOAD_BYTES": "ten"}, "invalid setting APP_MAX_UPLOAD_BYTES='ten': Input should be a valid"),
        (
            WORKER,
            {"TASK_BACKEND": "celery", "TASK_REDIS_TIMEOUT_S": "soon"},
            "invalid setting TASK_REDIS_TIMEOUT_S='soon'",
        ),
        (BEAT, {"TASK_BACKEND": "celery", "APP_UPKEEP_INTERVAL_S": "0"}, "invalid setting APP_UPKEEP_INTERVAL_S='0'"),
    ],
    ids=["api-backend", "api-store", "api-app-setting", "worker", "beat"],
)
def test_an_invalid_setting_prints_one_line_and_exits_non_zero(args: list[str], env: dict[str, str], line: str) -> None:
    completed = started(args, **env)

    assert completed.returncode != 0
    printed = [text for text in (completed.stdout + completed.stderr).splitlines() if text.strip()]
    assert len(printed) == 1 and printed[0].startswith(line), printed


def test_a_password_in_an_invalid_url_is_not_printed() -> None:
    completed = started(API, DATABASE_URL="mysql://app:hunter2@db/app")
    assert completed.returncode != 0
    assert "hunter2" not in completed.stderr and "mysql://app:***@db/app" in completed.stderr
