"""When periodic tasks are due: intervals and crontabs, in the app's timezone.

``schedule(run_every)`` is due every so many seconds; ``crontab(...)`` takes Celery's five
fields and syntax (``"*/15"``, ``"1-5"``, ``"mon-fri"``, lists, wrapping ranges). A crontab
matches a day only when its day of the week, day of the month and month all match, as
Celery's does (not Unix cron's either/or).

Times are computed as the wall clock of the schedule's timezone, then resolved to instants:
a wall time that does not exist (the hour skipped when clocks go forward) runs at the first
instant after the gap, and one that exists twice (the hour repeated when clocks go back)
runs at its first occurrence only. Each due instant is distinct, so a scheduler that sends
each due instant once sends a 02:30 job once on either day.

The scheduler (``taskq beat``) asks ``next_after(last)``: the first due instant strictly
after ``last``. Celery's ``is_due(last_run_at) -> (due, seconds to next check)`` is there
too for code written against Celery's API.
"""

from __future__ import annotations

import contextlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .exceptions import ConfigurationError

DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                 11: 30, 12: 31}  # fmt: skip
# Every day pattern repeats within 28 years (the Gregorian leap rule aside, 400): a
# crontab that matches no day in that long matches none (Feb 29 on a Monday: 28 years).
SEARCH_DAYS = 366 * 29


class ScheduleError(ConfigurationError):
    """A schedule that cannot be: a bad crontab field, an unknown timezone."""


def zone(name: str | tzinfo | None) -> tzinfo:
    """The timezone a setting names (``"Europe/Paris"``, ``"UTC"``); UTC for None."""
    if name is None:
        return UTC
    if isinstance(name, tzinfo):
        return name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"Unknown timezone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC' ({exc})"
        ) from None


def app_zone(timezone: str | None, enable_utc: bool) -> tzinfo:
    """The clock schedules read: ``timezone``; unset, UTC, or local time when
    ``enable_utc`` is off (Celery's rule)."""
    if timezone is not None or enable_utc:
        return zone(timezone)
    return local_zone()


def local_zone() -> tzinfo:
    """This machine's time zone, by name where it has one (so its clock changes are known)."""
    named = os.environ.get("TZ", "").lstrip(":")
    if not named:
        target = os.path.realpath("/etc/localtime")
        named = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
    if named:
        with contextlib.suppress(ScheduleError):
            return zone(named)
    fixed = datetime.now().astimezone().tzinfo
    return fixed if fixed is not None else UTC


def _aware(value: datetime, tz: tzinfo) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


class BaseSchedule(ABC):
    """What the scheduler asks of a schedule: ``next_after``; and Celery's ``is_due``."""

    @abstractmethod
    def next_after(self, last: datetime, tz: tzinfo = UTC) -> datetime:
        """The first due instant strictly after ``last``."""

    def is_due(
        self, last_run_at: datetime, now: datetime | None = None, tz: tzinfo = UTC
    ) -> tuple[bool, float]:
        """Celery's question: due now, and how many seconds until the next check."""
        current = (now or datetime.now(UTC)).astimezone(UTC)
        due_at = self.next_after(last_run_at, tz).astimezone(UTC)
        if due_at <= current:
            following = self.next_after(current, tz)
            return True, max(0.0, (following - current).total_seconds())
        return False, (due_at - current).total_seconds()


# ---------------------------------------------------------------------------- interval


@dataclass(frozen=True)
class schedule(BaseSchedule):  # Celery's name, so beat_schedule dicts port unchanged
    """Due every ``run_every`` (seconds or a timedelta), counted from the last run.

    ``relative=True`` (Celery's flag) rounds the due times to the interval, so an hourly
    entry runs on the hour rather than an hour after the scheduler started.
    """

    run_every: timedelta
    relative: bool = False

    def __init__(self, run_every: float | timedelta, relative: bool = False):
        every = run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        if every <= timedelta(0):
            raise ScheduleError(f"An interval schedule needs a positive interval, not {every}")
        object.__setattr__(self, "run_every", every)
        object.__setattr__(self, "relative", relative)

    def next_after(self, last: datetime, tz: tzinfo = UTC) -> datetime:
        last = _aware(last, tz)
        if not self.relative:
            return last + self.run_every
        step = self.run_every.total_seconds()
        epoch = last.timestamp()
        return datetime.fromtimestamp((epoch // step + 1) * step, tz=last.tzinfo)

    def __repr__(self) -> str:
        return f"<every {self.run_every.total_seconds():g} s>"


# ----------------------------------------------------------------------------- crontab


def _number(text: str, names: dict[str, int], what: str) -> int:
    lowered = text.strip().lower()
    if lowered in names:
        return names[lowered]
    if lowered.isdigit():
        return int(lowered)
    raise ScheduleError(f"crontab {what}: {text!r} is not a number" + (
        f" nor one of {', '.join(names)}" if names else ""))  # fmt: skip


def parse_field(
    spec: str | int | Iterable[int], low: int, high: int, what: str, names: dict[str, int]
) -> frozenset[int]:
    """The values a crontab field stands for, each within ``low..high``."""
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = set()
        for part in spec.split(","):
            values |= _parse_part(part.strip(), low, high, what, names)
    else:
        values = {int(v) for v in spec}
    if what == "day_of_week":
        values = {0 if v == 7 else v for v in values}  # 7 is Sunday too, as in cron
    bad = sorted(v for v in values if not low <= v <= high)
    if bad or not values:
        raise ScheduleError(
            f"crontab {what}={spec!r}: values must be within {low}-{high}"
            + (f" ({', '.join(map(str, bad))} is not)" if bad else " (none given)")
        )
    return frozenset(values)


_PART = re.compile(r"^(?P<base>\*|[\w]+(?:-[\w]+)?)(?:/(?P<step>\d+))?$")


def _parse_part(part: str, low: int, high: int, what: str, names: dict[str, int]) -> set[int]:
    found = _PART.match(part)
    if found is None:
        raise ScheduleError(f"crontab {what}: cannot read {part!r} (use *, 5, 1-5, */15, 1-30/2)")
    base, step_text = found["base"], found["step"]
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ScheduleError(f"crontab {what}: the step in {part!r} must be at least 1")
    if base == "*":
        start, end = low, high
    elif "-" in base:
        first, last = base.split("-", 1)
        start, end = _number(first, names, what), _number(last, names, what)
    else:
        start = _number(base, names, what)
        end = high if step_text else start  # "5/15": from 5 to the end, by 15
    for value in (start, end):
        if not low <= value <= high:
            raise ScheduleError(f"crontab {what}: {value} in {part!r} is not within {low}-{high}")
    if end >= start:
        return set(range(start, end + 1, step))
    # A range that wraps ("fri-mon", "22-2"): on to the top, then from the bottom.
    span = list(range(start, high + 1)) + list(range(low, end + 1))
    return set(span[::step])


@dataclass(frozen=True)
class crontab(BaseSchedule):  # Celery's name and signature
    """Due at every minute the five fields allow, in the schedule's timezone."""

    minute: frozenset[int] = field(default=frozenset(range(60)))
    hour: frozenset[int] = field(default=frozenset(range(24)))
    day_of_week: frozenset[int] = field(default=frozenset(range(7)))
    day_of_month: frozenset[int] = field(default=frozenset(range(1, 32)))
    month_of_year: frozenset[int] = field(default=frozenset(range(1, 13)))
    spec: tuple[str, ...] = field(default=("*",) * 5, compare=False)
    _hours: tuple[int, ...] = field(default=(), compare=False, repr=False)
    _minutes: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __init__(
        self,
        minute: str | int | Iterable[int] = "*",
        hour: str | int | Iterable[int] = "*",
        day_of_week: str | int | Iterable[int] = "*",
        day_of_month: str | int | Iterable[int] = "*",
        month_of_year: str | int | Iterable[int] = "*",
        **_ignored: Any,  # Celery's nowfun/app: taskq's scheduler gives the time itself
    ):
        fields = {
            "minute": parse_field(minute, 0, 59, "minute", {}),
            "hour": parse_field(hour, 0, 23, "hour", {}),
            "day_of_week": parse_field(day_of_week, 0, 7, "day_of_week", DAY_NAMES),
            "day_of_month": parse_field(day_of_month, 1, 31, "day_of_month", {}),
            "month_of_year": parse_field(month_of_year, 1, 12, "month_of_year", MONTH_NAMES),
        }
        if not any(d <= DAYS_IN_MONTH[m] for m in fields["month_of_year"]
                   for d in fields["day_of_month"]):  # fmt: skip
            raise ScheduleError(
                f"crontab day_of_month={day_of_month!r} never occurs in "
                f"month_of_year={month_of_year!r}"
            )
        for name, values in fields.items():
            object.__setattr__(self, name, values)
        raw = (minute, hour, day_of_month, month_of_year, day_of_week)
        object.__setattr__(self, "spec", tuple(_show(v) for v in raw))
        object.__setattr__(self, "_hours", tuple(sorted(fields["hour"])))
        object.__setattr__(self, "_minutes", tuple(sorted(fields["minute"])))

    @classmethod
    def from_string(cls, line: str) -> crontab:
        """``"*/15 9-17 * * mon-fri"``: minute, hour, day of month, month, day of week."""
        parts = line.split()
        if len(parts) != 5:
            raise ScheduleError(f"A crontab line has five fields, not {len(parts)}: {line!r}")
        minute, hour, dom, month, dow = parts
        return cls(minute, hour, dow, dom, month)

    def matches_day(self, day: date) -> bool:
        return (
            day.month in self.month_of_year
            and day.day in self.day_of_month
            and (day.isoweekday() % 7) in self.day_of_week
        )

    def next_after(self, last: datetime, tz: tzinfo = UTC) -> datetime:
        """The first due instant strictly after ``last``, read on ``tz``'s wall clock."""
        after = _aware(last, tz).astimezone(UTC)  # instants compare right only in UTC
        # Wall times more than a clock change before ``last`` cannot be after it.
        floor = after.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)
        day = floor.date()
        for _ in range(SEARCH_DAYS):
            if self.matches_day(day):
                for hour in self._hours:
                    for minute in self._minutes:
                        wall = datetime(day.year, day.month, day.day, hour, minute)
                        if wall < floor:
                            continue
                        moment = resolve(wall, tz)
                        if moment.astimezone(UTC) > after:
                            return moment
            day += timedelta(days=1)
        raise ScheduleError(f"{self!r} never matches a day")  # __init__ rules most out

    def __repr__(self) -> str:
        return f"<crontab: {' '.join(self.spec)} (m/h/dM/MY/d)>"


def _show(value: str | int | Iterable[int]) -> str:
    if isinstance(value, str | int):
        return str(value)
    return ",".join(str(v) for v in sorted(value))


def resolve(wall: datetime, tz: tzinfo) -> datetime:
    """The instant of a naive wall time in ``tz``: the first of two, or the end of a gap."""
    first = wall.replace(tzinfo=tz, fold=0)
    back = first.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) == wall:
        return first  # exists (if twice, fold=0 is the first)
    # In a gap: fold=0 reads it with the offset before the change, so it lands after the
    # gap by the gap's length. The gap ends at the change itself: the later offset's
    # reading (fold=1) falls before it; the first instant after the gap is the change.
    later = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    earlier = first.astimezone(UTC)
    low, high = min(later, earlier), max(later, earlier)
    # Search the change between the two readings, to the second.
    while (high - low) > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0).astimezone(tz)


Schedule = schedule | crontab


def as_schedule(value: Any, what: str) -> Schedule:
    """A beat_schedule entry's ``schedule``: seconds, a timedelta, or a schedule object."""
    if isinstance(value, schedule | crontab):
        return value
    if isinstance(value, timedelta):
        return schedule(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return schedule(float(value))
    raise ScheduleError(
        f"{what}: schedule must be seconds, a timedelta, schedule(...) or crontab(...), "
        f"not {value!r}"
    )


__all__ = [
    "BaseSchedule",
    "Schedule",
    "ScheduleError",
    "app_zone",
    "as_schedule",
    "crontab",
    "parse_field",
    "resolve",
    "schedule",
    "zone",
]
