"""Schedules: crontab parsing and next due times, against a table and against a brute-force
oracle that walks the clock minute by minute (hypothesis), in UTC and across DST changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskq.schedules import (
    ScheduleError,
    app_zone,
    as_schedule,
    crontab,
    local_zone,
    schedule,
    zone,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def runs(sched: crontab | schedule, start: datetime, tz: tzinfo, count: int) -> list[datetime]:
    found, last = [], start
    for _ in range(count):
        last = sched.next_after(last, tz)
        found.append(last.astimezone(UTC))
    return found


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("fields", "name", "expected"),
    [
        ({"minute": "*/15"}, "minute", {0, 15, 30, 45}),
        ({"minute": "5/20"}, "minute", {5, 25, 45}),
        ({"minute": "0-10/5,30"}, "minute", {0, 5, 10, 30}),
        ({"minute": [1, 2, 3]}, "minute", {1, 2, 3}),
        ({"minute": 7}, "minute", {7}),
        ({"hour": "22-2"}, "hour", {22, 23, 0, 1, 2}),
        ({"hour": "*/4"}, "hour", {0, 4, 8, 12, 16, 20}),
        ({"day_of_week": "mon-fri"}, "day_of_week", {1, 2, 3, 4, 5}),
        ({"day_of_week": "fri-mon"}, "day_of_week", {5, 6, 0, 1}),
        ({"day_of_week": "sat,SUN"}, "day_of_week", {6, 0}),
        ({"day_of_week": "7"}, "day_of_week", {0}),
        ({"day_of_week": "*/2"}, "day_of_week", {0, 2, 4, 6}),
        ({"day_of_month": "*/10"}, "day_of_month", {1, 11, 21, 31}),
        ({"day_of_month": "1-7,15-21"}, "day_of_month", set(range(1, 8)) | set(range(15, 22))),
        ({"month_of_year": "*/3"}, "month_of_year", {1, 4, 7, 10}),
        ({"month_of_year": "jun-aug"}, "month_of_year", {6, 7, 8}),
    ],
)
def test_fields_read_as_celery_reads_them(
    fields: dict[str, object], name: str, expected: set[int]
) -> None:
    assert getattr(crontab(**fields), name) == expected  # type: ignore[arg-type]


def test_a_crontab_line_has_minute_hour_day_month_weekday() -> None:
    line = crontab.from_string("*/15 9-17 1 */2 mon-fri")
    assert line == crontab(minute="*/15", hour="9-17", day_of_month=1, month_of_year="*/2",
                           day_of_week="mon-fri")  # fmt: skip
    assert repr(line) == "<crontab: */15 9-17 1 */2 mon-fri (m/h/dM/MY/d)>"
    with pytest.raises(ScheduleError, match="five fields"):
        crontab.from_string("* * *")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"minute": "60"}, "minute: 60 in '60' is not within 0-59"),
        ({"hour": "-1"}, "cannot read '-1'"),
        ({"minute": "*/0"}, "step in '\\*/0' must be at least 1"),
        ({"day_of_week": "funday"}, "'funday' is not a number nor one of sun, mon"),
        ({"month_of_year": "13"}, "13 in '13' is not within 1-12"),
        ({"day_of_month": "0"}, "0 in '0' is not within 1-31"),
        ({"day_of_month": 30, "month_of_year": "feb"}, "never occurs in month_of_year='feb'"),
        ({"minute": ""}, "cannot read ''"),
        ({"minute": []}, "none given"),
    ],
)
def test_a_bad_field_says_what_is_wrong(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        crontab(**fields)  # type: ignore[arg-type]


def test_timezones_and_schedule_values() -> None:
    assert zone("Europe/Paris") == PARIS and zone(None) is UTC
    with pytest.raises(ScheduleError, match="Unknown timezone 'Mars/Olympus'"):
        zone("Mars/Olympus")
    assert as_schedule(10, "e") == schedule(10.0)
    assert as_schedule(timedelta(minutes=1), "e") == schedule(60)
    every = crontab(minute=0)
    assert as_schedule(every, "e") is every
    with pytest.raises(ScheduleError, match="nightly: schedule must be seconds"):
        as_schedule("3am", "nightly")
    with pytest.raises(ScheduleError, match="positive interval"):
        schedule(0)


# ------------------------------------------------------------------------ next due time


def test_intervals_count_from_the_last_run_or_round_to_the_interval() -> None:
    assert schedule(10).next_after(utc(2026, 1, 1, 0, 0, 5)) == utc(2026, 1, 1, 0, 0, 15)
    hourly = schedule(3600, relative=True)
    assert hourly.next_after(utc(2026, 1, 1, 0, 20)) == utc(2026, 1, 1, 1, 0)
    assert hourly.next_after(utc(2026, 1, 1, 1, 0)) == utc(2026, 1, 1, 2, 0)


@pytest.mark.parametrize(
    ("spec", "start", "expected"),
    [
        # weekdays at 9: from a Saturday to Monday
        (crontab(minute=0, hour=9, day_of_week="mon-fri"), utc(2026, 12, 5, 10),
         [utc(2026, 12, 7, 9), utc(2026, 12, 8, 9)]),
        # every 15 minutes, strictly after the start
        (crontab(minute="*/15"), utc(2026, 1, 1, 0, 15),
         [utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 0, 45), utc(2026, 1, 1, 1, 0)]),
        # the first Monday of the month (all three day fields must match, as in Celery)
        (crontab(minute=0, hour=8, day_of_week="mon", day_of_month="1-7"), utc(2026, 12, 1),
         [utc(2026, 12, 7, 8), utc(2027, 1, 4, 8)]),
        # February 29 that is a Monday
        (crontab(minute=0, hour=0, day_of_month=29, month_of_year=2, day_of_week="mon"),
         utc(2026, 1, 1), [utc(2044, 2, 29)]),
        # quarterly, on the 31st only where the month has one
        (crontab(minute=0, hour=0, day_of_month=31, month_of_year="*/3"), utc(2026, 1, 1),
         [utc(2026, 1, 31), utc(2026, 7, 31), utc(2026, 10, 31)]),
    ],
)  # fmt: skip
def test_next_due_times_in_utc(spec: crontab, start: datetime, expected: list[datetime]) -> None:
    assert runs(spec, start, UTC, len(expected)) == expected


@pytest.mark.parametrize(
    ("tz", "spec", "start", "expected"),
    [
        # Paris springs forward at 02:00 (01:00 UTC): 02:30 does not exist; it runs once,
        # at 03:00 CEST, the first instant after the gap; then at 02:30 CEST as usual.
        (PARIS, crontab(minute=30, hour=2), datetime(2026, 3, 28, 12, tzinfo=PARIS),
         [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
        # Paris falls back at 03:00 CEST: 02:30 happens twice and runs at the first only.
        (PARIS, crontab(minute=30, hour=2), datetime(2026, 10, 24, 12, tzinfo=PARIS),
         [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        # Hourly at :30 through the fall-back night: the repeated 02:30 is not run again.
        (PARIS, crontab(minute=30), datetime(2026, 10, 25, 1, 0, tzinfo=PARIS),
         [utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30)]),
        # New York springs forward at 02:00 EST (07:00 UTC).
        (NEW_YORK, crontab(minute=30, hour=2), datetime(2026, 3, 7, 12, tzinfo=NEW_YORK),
         [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
        # New York falls back at 02:00 EDT: 01:30 happens twice, runs once (EDT).
        (NEW_YORK, crontab(minute=30, hour=1), datetime(2026, 10, 31, 12, tzinfo=NEW_YORK),
         [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
        # A job on the hour in the gap and right after it: 02:00 and 03:00 are one instant.
        (PARIS, crontab(minute=0, hour="2,3"), datetime(2026, 3, 29, 0, tzinfo=PARIS),
         [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0)]),
    ],
)  # fmt: skip
def test_next_due_times_across_dst(
    tz: tzinfo, spec: crontab, start: datetime, expected: list[datetime]
) -> None:
    assert runs(spec, start, tz, len(expected)) == expected


def test_is_due_answers_celerys_question() -> None:
    every_minute = crontab()
    due, wait = every_minute.is_due(utc(2026, 1, 1, 0, 0), now=utc(2026, 1, 1, 0, 1, 20))
    assert due and wait == 40.0
    due, wait = every_minute.is_due(utc(2026, 1, 1, 0, 1), now=utc(2026, 1, 1, 0, 1, 20))
    assert not due and wait == 40.0
    due, wait = schedule(30).is_due(utc(2026, 1, 1), now=utc(2026, 1, 1, 0, 0, 10))
    assert not due and wait == 20.0


# -------------------------------------------------------------- against a brute-force walk


def oracle(spec: crontab, after: datetime, tz: tzinfo, horizon: timedelta) -> datetime | None:
    """The first due instant after ``after``, by walking the clock minute by minute in UTC.

    Due: a minute whose wall time in ``tz`` matches and is its first occurrence, or the
    instant a forward change ends a gap that holds a matching wall time.
    """
    moment = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = moment + horizon
    while moment < end:
        local = moment.astimezone(tz)
        before = (moment - timedelta(minutes=1)).astimezone(tz)
        jump = local.utcoffset() - before.utcoffset()  # type: ignore[operator]
        if jump > timedelta(0):  # clocks went forward: the skipped wall times run now
            skipped = before.replace(tzinfo=None) + timedelta(minutes=1)
            while skipped < local.replace(tzinfo=None):
                if wall_matches(spec, skipped):
                    return moment
                skipped += timedelta(minutes=1)
        if wall_matches(spec, local.replace(tzinfo=None)) and local.fold == 0:
            return moment
        moment += timedelta(minutes=1)
    return None


def wall_matches(spec: crontab, wall: datetime) -> bool:
    weekday = int(wall.strftime("%w"))  # 0 is Sunday, as in cron
    return (
        weekday in spec.day_of_week
        and wall.day in spec.day_of_month
        and wall.month in spec.month_of_year
        and wall.hour in spec.hour
        and wall.minute in spec.minute
    )


dense_specs = st.builds(
    crontab,
    minute=st.sets(st.integers(0, 59), min_size=1, max_size=6),
    hour=st.sets(st.integers(0, 23), min_size=1, max_size=6),
    day_of_week=st.sets(st.integers(0, 6), min_size=1, max_size=7),
)
# Around the DST changes of both zones in 2026, and anywhere in the year.
CHANGE_DAYS = [datetime(2026, 3, 8), datetime(2026, 3, 29), datetime(2026, 10, 25),
               datetime(2026, 11, 1)]  # fmt: skip
starts = st.one_of(
    st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)),
    st.sampled_from(CHANGE_DAYS).flatmap(
        lambda day: st.datetimes(day - timedelta(hours=30), day + timedelta(hours=30))
    ),
)


@settings(max_examples=150, deadline=None)
@given(spec=dense_specs, start=starts, tz=st.sampled_from([UTC, PARIS, NEW_YORK]))
def test_next_after_matches_a_minute_by_minute_walk(
    spec: crontab, start: datetime, tz: tzinfo
) -> None:
    after = start.replace(tzinfo=UTC)
    expected = oracle(spec, after, tz, timedelta(days=8))
    assert expected is not None  # a day of the week matches within a week
    assert spec.next_after(after, tz).astimezone(UTC) == expected


@settings(max_examples=60, deadline=None)
@given(spec=dense_specs, start=starts, tz=st.sampled_from([PARIS, NEW_YORK]))
def test_due_instants_strictly_increase_and_never_repeat(
    spec: crontab, start: datetime, tz: tzinfo
) -> None:
    seen = runs(spec, start.replace(tzinfo=UTC), tz, 40)
    assert all(a < b for a, b in itertools.pairwise(seen))


def test_the_app_clock_is_utc_unless_a_zone_is_named_or_utc_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert app_zone(None, True) is UTC
    assert app_zone("Europe/Paris", False) == PARIS
    monkeypatch.setenv("TZ", "America/New_York")
    assert app_zone(None, False) == NEW_YORK  # local time, Celery's enable_utc=False
    monkeypatch.setenv("TZ", ":Europe/Paris")
    assert local_zone() == PARIS
