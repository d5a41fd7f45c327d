"""The Celery app's configuration, messages, status mapping, beat schedule and Flower guard (no processes)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import states
from celery.exceptions import TimeLimitExceeded
from celery.schedules import crontab
from pydantic import SecretStr

from backends.celery.beat import beat_schedule
from backends.celery.config import celery_config, create_celery_app, import_task_modules, lease_ms
from backends.celery.connection import reaching_redis, safe_url
from backends.celery.dispatcher import ScheduleDispatcher
from backends.celery.flower_guard import FLOWER_REFUSAL, celery_subcommand, guard_flower
from backends.celery.result_backend import RecordingRedisBackend, record_change
from backends.celery.settings import CelerySettings
from backends.celery.states import PROGRESS, STATUS_OF_STATE, status_of_state
from backends.celery.store.messages import hard_limit_s, task_message
from taskservice import BackendUnavailable, TaskStatus
from taskservice.attempts import timeout_error
from taskservice.cron import CronSchedule
from taskservice.periodic import PeriodicTask


def settings(**overrides: Any) -> CelerySettings:
    return CelerySettings(backend="celery", redis_url="redis://:secret@127.0.0.1:6390/2", **overrides)


# --- configuration ---------------------------------------------------------------------------


def test_the_app_is_safe_by_default() -> None:
    conf = celery_config(settings(visibility_timeout_s=120, worker_prefetch=3, result_ttl_s=3600))

    assert (conf["task_serializer"], conf["result_serializer"]) == ("json", "json")
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] is True and conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 3
    assert conf["broker_transport_options"]["visibility_timeout"] == 120
    assert conf["broker_transport_options"]["unacked_restore_interval"] <= 120 / 4
    assert conf["result_expires"] == 3600
    assert conf["worker_enable_remote_control"] is True
    assert conf["broker_url"] == conf["result_backend"] == "redis://:secret@127.0.0.1:6390/2"


@pytest.mark.parametrize("visibility_s", [2.0, 8.0, 60.0, 300.0, 3600.0])
def test_a_lease_always_expires_before_the_broker_redelivers(visibility_s: float) -> None:
    lease = lease_ms(settings(visibility_timeout_s=visibility_s))
    assert 1_000 <= lease <= 30_000
    assert lease < visibility_s * 1000


def test_the_app_stores_results_through_the_recording_backend() -> None:
    app = create_celery_app(settings(result_ttl_s=600))
    try:
        assert isinstance(app.backend, RecordingRedisBackend)
        assert app.backend.expires == 600
        assert app.conf.result_backend == "redis://:secret@127.0.0.1:6390/2"
        assert ScheduleDispatcher in app.steps["worker"]
    finally:
        app.close()


def test_a_missing_task_module_is_named_with_the_setting() -> None:
    with pytest.raises(ImportError, match=r"TASK_MODULES names 'tests\.no_such_module'"):
        import_task_modules(["tests.tasks", "tests.no_such_module"])


# --- messages ----------------------------------------------------------------------------------


def test_our_message_is_the_one_apply_async_would_send() -> None:
    app = create_celery_app(settings())
    try:
        theirs = app.amqp.as_task_v2(
            "id-1", "contract.add", args=(1, 2), kwargs={"c": 3}, time_limit=hard_limit_s(5), soft_time_limit=5
        )
    finally:
        app.close()
    ours = json.loads(task_message("id-1", "contract.add", [1, 2], {"c": 3}, queue="reports", timeout_s=5))

    assert set(ours["headers"]) == set(theirs.headers)
    for key in ("lang", "task", "id", "root_id", "retries", "eta", "expires", "group", "ignore_result"):
        assert ours["headers"][key] == theirs.headers[key], key
    assert ours["headers"]["timelimit"] == list(theirs.headers["timelimit"]) == [hard_limit_s(5), 5]
    args, kwargs, embed = json.loads(base64.b64decode(ours["body"]))
    assert (args, kwargs) == ([1, 2], {"c": 3})
    assert embed == {key: theirs.body[2][key] for key in embed}
    assert ours["content-type"] == "application/json"
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": "reports"}
    assert ours["properties"]["correlation_id"] == "id-1"


def test_a_hard_limit_leaves_the_soft_one_room() -> None:
    assert hard_limit_s(1) == 2.0
    assert hard_limit_s(120) == 132.0
    assert hard_limit_s(3600) == 3630.0


# --- status mapping and what the result backend records --------------------------------------


def test_every_celery_state_has_a_status() -> None:
    for state in [*states.ALL_STATES, PROGRESS]:
        assert status_of_state(state) is not None, state
    assert status_of_state("SOMETHING_ELSE") is None


def test_every_status_but_scheduled_has_a_celery_state() -> None:
    # Celery has no "scheduled" state: taskservice keeps schedules out of the broker.
    assert set(STATUS_OF_STATE.values()) == set(TaskStatus) - {TaskStatus.SCHEDULED}


def test_success_records_the_result_and_clears_an_earlier_error() -> None:
    change = record_change([1, 2], states.SUCCESS, None, None)
    assert change.mode == "final"
    assert change.fields["status"] == "succeeded" and json.loads(str(change.fields["result"])) == [1, 2]
    assert change.fields["error"] is None and change.fields["traceback"] is None, "removed from the record"


def test_failure_records_type_message_and_traceback() -> None:
    change = record_change(KeyError("missing"), states.FAILURE, "Traceback ...", None)
    assert (change.mode, change.fields["status"]) == ("final", "failed")
    assert change.fields["error"] == "KeyError: 'missing'"
    assert change.fields["traceback"] == "Traceback ..."


def test_a_hard_time_limit_says_it_timed_out_in_the_core_s_words() -> None:
    error = str(record_change(TimeLimitExceeded(6.0), states.FAILURE, None, None).fields["error"])
    assert error == timeout_error(6.0)


def test_a_retry_carries_its_delay_and_message() -> None:
    request = SimpleNamespace(taskservice_retry=(12.5, "the message"))
    change = record_change(RuntimeError("run 1"), states.RETRY, "tb", request)
    assert (change.mode, change.retry_delay_s) == ("retry", 12.5)
    assert change.fields == {
        "status": "retrying",
        "error": "RuntimeError: run 1",
        "traceback": "tb",
        "message": "the message",
    }


def test_progress_and_revoke() -> None:
    progress = record_change({"progress": 40, "message": None}, PROGRESS, None, None)
    assert (progress.mode, progress.fields) == ("progress", {"progress": "40.0", "progress_message": None})
    revoked = record_change(Exception("revoked"), states.REVOKED, None, None)
    assert (revoked.mode, revoked.fields["status"]) == ("final", "cancelled")
    assert record_change({"pid": 1}, states.STARTED, None, None).mode == "meta"


# --- errors ---------------------------------------------------------------------------------


def test_redis_failures_say_what_to_check_without_the_password() -> None:
    config = settings()
    with pytest.raises(BackendUnavailable) as caught, reaching_redis(config):
        raise redis.exceptions.ConnectionError("Error 111 connecting")
    message = str(caught.value)
    assert "REDIS_URL" in message and "Redis is running" in message
    assert "secret" not in message and "redis://:***@127.0.0.1:6390/2" in message
    assert safe_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert safe_url("redis://host:1/0") == "redis://host:1/0"


# --- beat -------------------------------------------------------------------------------------


def test_beat_schedule_from_periodic_declarations() -> None:
    entries = beat_schedule(
        [
            PeriodicTask("upkeep.every", 30.0, None),
            PeriodicTask("upkeep.cron", None, CronSchedule.parse("*/15 2 * * 1-5")),
        ]
    )
    assert entries["upkeep.every"] == {"task": "upkeep.every", "schedule": timedelta(seconds=30)}
    assert entries["upkeep.cron"]["task"] == "upkeep.cron"
    assert entries["upkeep.cron"]["schedule"] == crontab(minute="*/15", hour="2", day_of_week="1-5")


# --- Flower guard -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["celery", "-A", "backends.celery_app", "flower"], "flower"),
        (["celery", "--app=backends.celery_app", "-q", "flower", "--port=1"], "flower"),
        (["celery", "-A", "backends.celery_app", "worker", "-Q", "flower"], "worker"),
        (["celery", "-b", "redis://x", "beat"], "beat"),
        (["celery"], None),
    ],
)
def test_the_subcommand_is_found_past_global_options(argv: list[str], expected: str | None) -> None:
    assert celery_subcommand(argv) == expected


FLOWER = ["celery", "-A", "backends.celery_app", "flower"]


def test_flower_refuses_to_start_without_credentials() -> None:
    with pytest.raises(SystemExit) as caught:
        guard_flower(FLOWER, {}, settings())
    assert caught.value.code == FLOWER_REFUSAL and "FLOWER_BASIC_AUTH=user:password" in FLOWER_REFUSAL


@pytest.mark.parametrize("bad", ["", "admin", "admin:", ":pw", "a:b,c", "admin:pw,"])
def test_flower_refuses_malformed_credentials(bad: str) -> None:
    with pytest.raises(SystemExit):
        guard_flower(FLOWER, {"FLOWER_BASIC_AUTH": bad}, settings())


@pytest.mark.parametrize(
    "argv",
    [
        ["--auth="],
        ["--auth", "--port=1"],
        ["--basic-auth="],
        ["--basic_auth=admin:"],
        ["--basic-auth=admin:"],
        ["--basic-auth", "admin:"],
        ["--auth=.*@example.com"],  # an e-mail pattern needs an OAuth provider to check it
    ],
)
def test_flower_refuses_every_empty_or_unusable_auth_option(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        guard_flower([*FLOWER, *argv], {}, settings())
    assert FLOWER_REFUSAL in str(caught.value.code)
    with pytest.raises(SystemExit):  # valid credentials elsewhere do not excuse an empty one
        guard_flower([*FLOWER, *argv], {"FLOWER_BASIC_AUTH": "admin:pw"}, settings())


@pytest.mark.parametrize("environ", [{"FLOWER_AUTH": ""}, {"FLOWER_AUTH": ".*"}, {"FLOWER_BASIC_AUTH": "admin:"}])
def test_flower_refuses_unusable_auth_from_the_environment(environ: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        guard_flower(FLOWER, dict(environ), settings())


def test_flower_reads_its_configuration_file_as_flower_does(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("basic_auth = ['admin:']\n")
    with pytest.raises(SystemExit):
        guard_flower([*FLOWER, f"--conf={empty}"], {}, settings())
    good = tmp_path / "good.py"
    good.write_text("basic_auth = ['admin:pw']\n")
    guard_flower([*FLOWER, f"--conf={good}"], {}, settings())
    oauth = tmp_path / "oauth.py"
    oauth.write_text("auth = '.*@example.com'\nauth_provider = 'flower.views.auth.GithubLoginHandler'\n")
    guard_flower([*FLOWER, f"--conf={oauth}"], {}, settings())


def test_flower_starts_with_credentials_on_loopback_by_default() -> None:
    environ = {"FLOWER_BASIC_AUTH": "admin:pw"}
    guard_flower(FLOWER, environ, settings())
    assert environ["FLOWER_ADDRESS"] == "127.0.0.1"

    explicit = {"FLOWER_BASIC_AUTH": "admin:pw", "FLOWER_ADDRESS": "0.0.0.0"}
    guard_flower(FLOWER, explicit, settings())
    assert explicit["FLOWER_ADDRESS"] == "0.0.0.0"
    guard_flower([*FLOWER, "--basic-auth=admin:pw"], {}, settings())


def test_flower_takes_credentials_from_settings_and_can_be_opened_on_purpose() -> None:
    environ: dict[str, str] = {}
    guard_flower(FLOWER, environ, settings(flower_basic_auth=SecretStr("admin:pw")))
    assert environ["FLOWER_BASIC_AUTH"] == "admin:pw"
    guard_flower(FLOWER, {"FLOWER_AUTH_DISABLED": "1"}, settings())


def test_other_commands_are_not_guarded() -> None:
    guard_flower(["celery", "-A", "backends.celery_app", "worker"], {}, settings())


# --- Redis outages on the worker side ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "out of memory"),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), "read-only replica"),
        (redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots"), "(MISCONF)"),
        (redis.exceptions.ConnectionError("Error 111 connecting"), "cannot be reached"),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), "cannot be reached"),
    ],
)
def test_a_redis_refusing_writes_is_an_outage_on_the_worker_side(error: Exception, words: str) -> None:
    from backends.celery.outage import is_outage, unavailable

    assert is_outage(error)
    assert isinstance(unavailable(error), BackendUnavailable) and words in str(unavailable(error))


def test_a_redis_error_that_is_a_bug_is_not_an_outage() -> None:
    from backends.celery.outage import is_outage

    assert not is_outage(redis.exceptions.ResponseError("WRONGTYPE Operation against a key"))
    assert not is_outage(ValueError("not redis at all"))
