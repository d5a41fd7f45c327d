"""A small 5-field cron schedule (minute hour day-of-month month day-of-week), in UTC.

Fields take ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S`` and comma lists; day-of-week is 0-6
with 0 (or 7) for Sunday. Day-of-month and day-of-week must both match, as in Celery's
``crontab``, so the two backends agree on every firing.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


@dataclasses.dataclass(frozen=True)
class CronSchedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"cron {expression!r} must have 5 fields: minute hour day-of-month month day-of-week")
        sets = [
            _parse_field(text, low, high, name) for text, (low, high), name in zip(fields, _BOUNDS, _NAMES, strict=True)
        ]
        weekdays = frozenset(0 if day == 7 else day for day in sets[4])
        return cls(expression, sets[0], sets[1], sets[2], sets[3], weekdays)

    def celery_fields(self) -> dict[str, str]:
        """The keyword arguments of ``celery.schedules.crontab`` that fire on exactly the same minutes."""
        # Spelled out from the parsed sets rather than passed through: Celery refuses 7 for
        # Sunday and reads some step forms differently, and both backends must agree.
        sets = (self.minutes, self.hours, self.days, self.months, self.weekdays)
        full = (*_BOUNDS[:4], (0, 6))
        return {
            name: "*" if values == frozenset(range(low, high + 1)) else ",".join(str(v) for v in sorted(values))
            for name, values, (low, high) in zip(_NAMES, sets, full, strict=True)
        }

    def matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # Python: Monday=0; cron: Sunday=0
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.day in self.days
            and moment.month in self.months
            and weekday in self.weekdays
        )

    def next_after(self, after: datetime) -> datetime:
        """The first matching minute strictly after ``after``."""
        moment = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        # The calendar repeats every 400 years (146097 days): no match by then means never.
        # Bounded by time, not by steps, so "31 February" is refused instead of overflowing.
        limit = moment + timedelta(days=146097)
        while moment <= limit:
            if moment.month not in self.months:
                moment = (moment.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if moment.day not in self.days or (moment.weekday() + 1) % 7 not in self.weekdays:
                moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if moment.hour not in self.hours:
                moment = moment.replace(minute=0) + timedelta(hours=1)
                continue
            if moment.minute in self.minutes:
                return moment
            moment += timedelta(minutes=1)
        raise ValueError(f"cron {self.expression!r} never fires")


def _parse_field(text: str, low: int, high: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                start, end = low, high
            elif "-" in span:
                first, last = span.split("-", 1)
                start, end = int(first), int(last)
            else:
                start = int(span)
                end = high if step_text else start
        except ValueError:
            raise ValueError(f"cron {name} field {text!r} is not valid") from None
        if step < 1 or not low <= start <= end <= high:
            raise ValueError(f"cron {name} field {text!r} is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)
