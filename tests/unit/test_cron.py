"""The 5-field cron schedule of @periodic: parsing, next firing across boundaries, refusals."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskservice import periodic, task
from taskservice.cron import CronSchedule
from taskservice.periodic import periodic_tasks

# The package re-exports the decorator under the module's own name; reach the module itself.
periodic_module = importlib.import_module("taskservice.periodic")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_parse_fields() -> None:
    schedule = CronSchedule.parse("*/15 9-17 1,15 * 1-5")
    assert schedule.minutes == {0, 15, 30, 45}
    assert schedule.hours == set(range(9, 18))
    assert schedule.days == {1, 15}
    assert schedule.months == set(range(1, 13))
    assert schedule.weekdays == {1, 2, 3, 4, 5}


def test_steps_ranges_and_sunday_as_seven() -> None:
    assert CronSchedule.parse("5/20 * * * *").minutes == {5, 25, 45}
    assert CronSchedule.parse("10-30/10 * * * *").minutes == {10, 20, 30}
    assert CronSchedule.parse("0 0 * * 7").weekdays == {0}
    assert CronSchedule.parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert CronSchedule.parse(" 0  12 * *  * ").hours == {12}


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2025-03-10 10:15:30", "2025-03-10 10:16:00"),
        ("* * * * *", "2025-03-10 10:15:00", "2025-03-10 10:16:00"),  # strictly after
        ("30 * * * *", "2025-03-10 10:30:00", "2025-03-10 11:30:00"),
        ("0 0 * * *", "2025-03-10 23:59:59", "2025-03-11 00:00:00"),
        ("0 0 1 * *", "2025-01-31 12:00:00", "2025-02-01 00:00:00"),  # across a month
        ("0 0 31 * *", "2025-01-31 00:00:00", "2025-03-31 00:00:00"),  # skips a month without the 31st
        ("0 0 1 1 *", "2025-12-31 23:59:00", "2026-01-01 00:00:00"),  # across a year
        ("59 23 31 12 *", "2025-12-31 23:59:00", "2026-12-31 23:59:00"),
        ("0 0 29 2 *", "2025-01-01 00:00:00", "2028-02-29 00:00:00"),  # next leap day
        ("0 9 * * 1", "2025-03-10 09:00:00", "2025-03-17 09:00:00"),  # Monday to Monday
        ("0 9 * * 0", "2025-03-10 00:00:00", "2025-03-16 09:00:00"),  # Sunday is 0
        ("0 0 13 * 5", "2025-01-01 00:00:00", "2025-06-13 00:00:00"),  # day and weekday must both match
        ("*/15 9-17 * * 1-5", "2025-03-14 17:50:00", "2025-03-17 09:00:00"),  # Friday evening to Monday
    ],
)
def test_next_after(expression: str, after: str, expected: str) -> None:
    schedule = CronSchedule.parse(expression)
    fired = schedule.next_after(at(after))
    assert fired == at(expected)
    assert fired.tzinfo is not None and schedule.matches(fired)


def test_next_after_works_in_utc_whatever_the_input_zone() -> None:
    paris_winter = timezone(timedelta(hours=1))
    fired = CronSchedule.parse("0 12 * * *").next_after(datetime(2025, 1, 10, 12, 30, tzinfo=paris_winter))
    assert fired == at("2025-01-10 12:00:00")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "must have 5 fields"),
        ("* * * * * *", "must have 5 fields"),
        ("60 * * * *", "minute field '60' is out of range 0-59"),
        ("* 24 * * *", "hour field '24' is out of range 0-23"),
        ("* * 0 * *", "day_of_month field '0' is out of range 1-31"),
        ("* * * 13 *", "month_of_year field '13' is out of range 1-12"),
        ("* * * * 8", "day_of_week field '8' is out of range 0-7"),
        ("*/0 * * * *", "out of range"),
        ("5-1 * * * *", "out of range"),
        ("a * * * *", "minute field 'a' is not valid"),
        ("1,,2 * * * *", "is not valid"),
        ("* * * * MON", "is not valid"),
        ("-1 * * * *", "is not valid"),
    ],
)
def test_invalid_expressions_are_refused(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronSchedule.parse(expression)


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_a_schedule_that_never_fires_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="never fires"):
        CronSchedule.parse(expression).next_after(at("2025-01-01 00:00:00"))


def test_a_rare_schedule_is_found_decades_ahead() -> None:
    """29 February on a Monday: years apart, but it does fire."""
    fired = CronSchedule.parse("0 0 29 2 1").next_after(at("2025-01-01 00:00:00"))
    assert fired == at("2044-02-29 00:00:00")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/15 9-17 * * 1-5", ("0,15,30,45", "9,10,11,12,13,14,15,16,17", "*", "*", "1,2,3,4,5")),
        ("0 0 * * 7", ("0", "0", "*", "*", "0")),
        ("5/20 * * * 5-7", ("5,25,45", "*", "*", "*", "0,5,6")),
        ("* * * * *", ("*", "*", "*", "*", "*")),
        ("0 0 * * 0-7", ("0", "0", "*", "*", "*")),
    ],
)
def test_celery_fields_fire_on_the_same_minutes(expression: str, expected: tuple[str, ...]) -> None:
    """Spelled out from the parsed sets: Celery's crontab refuses 7 for Sunday."""
    fields = CronSchedule.parse(expression).celery_fields()
    assert tuple(fields) == ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    assert tuple(fields.values()) == expected


@task(name="unit.cron.upkeep")
def upkeep() -> None: ...


@pytest.fixture
def own_periodic_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Declarations made here must not reach the schedulers of services started by later tests."""
    monkeypatch.setattr(periodic_module, "_periodic", {})


def test_periodic_registers_a_cron_or_an_interval(own_periodic_table: None) -> None:
    periodic(cron="*/10 * * * *")(upkeep)
    declared = {entry.task_name: entry for entry in periodic_tasks()}["unit.cron.upkeep"]
    assert declared.next_run(at("2025-03-10 10:01:00")) == at("2025-03-10 10:10:00")

    periodic(every=timedelta(minutes=5))(upkeep)
    declared = {entry.task_name: entry for entry in periodic_tasks()}["unit.cron.upkeep"]
    assert declared.every_s == 300
    assert declared.next_run(at("2025-03-10 10:01:00")) == at("2025-03-10 10:06:00")


def test_periodic_refusals() -> None:
    with pytest.raises(TypeError, match="exactly one of every= or cron="):
        periodic()
    with pytest.raises(TypeError, match="exactly one of every= or cron="):
        periodic(every=5, cron="* * * * *")
    with pytest.raises(ValueError, match="positive interval"):
        periodic(every=0)
    with pytest.raises(ValueError, match="must have 5 fields"):
        periodic(cron="hourly")
    with pytest.raises(TypeError, match="@periodic goes above @task"):
        periodic(every=60)(lambda: None)  # type: ignore[type-var]
