from __future__ import annotations

from datetime import datetime

import pytest

from agent.schedule import ScheduleError, parse_schedule

WEEKDAYS_AND_WEEKEND = "Mon-Fri 09:00-18:00,Sat-Sun 00:00-24:00"


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (datetime(2026, 11, 30, 8, 59), False),  # Monday
        (datetime(2026, 11, 30, 9, 0), True),
        (datetime(2026, 11, 30, 17, 59), True),
        (datetime(2026, 11, 30, 18, 0), False),  # the end is exclusive
        (datetime(2026, 12, 4, 12, 0), True),  # Friday
        (datetime(2026, 12, 5, 0, 0), True),  # Saturday, all day
        (datetime(2026, 12, 6, 23, 59), True),  # Sunday
    ],
)
def test_schedule_weekdays_and_weekend(when: datetime, open_: bool) -> None:
    assert parse_schedule(WEEKDAYS_AND_WEEKEND).is_open(when) is open_


def test_schedule_ranges_wrap_over_the_weekend_and_days_are_case_insensitive() -> None:
    schedule = parse_schedule("fri-MON 20:00-23:30")
    assert schedule.is_open(datetime(2026, 12, 6, 21, 0))  # Sunday
    assert schedule.is_open(datetime(2026, 11, 30, 21, 0))  # Monday
    assert not schedule.is_open(datetime(2026, 12, 1, 21, 0))  # Tuesday


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Mon-Fri", "is not 'DAYS HH:MM-HH:MM'"),
        ("Mon-Fri 9:00-18:00", "is not 'DAYS HH:MM-HH:MM'"),
        ("Monday 09:00-18:00", "is not 'DAYS HH:MM-HH:MM'"),
        ("Mon-Fry 09:00-18:00", "unknown day 'Fry'"),
        ("Mon 09:60-18:00", "09:60 is not a time"),
        ("Mon 09:00-24:01", "24:01 is not a time"),
        ("Mon 22:00-06:00", "two entries"),
        ("Mon 09:00-09:00", "end must be after the start"),
        ("Mon 09:00-18:00,", "is not 'DAYS HH:MM-HH:MM'"),
        ("Mon 09:00-18:00;Tue 09:00-18:00", "is not 'DAYS HH:MM-HH:MM'"),
        (",".join(["Mon 09:00-10:00"] * 65), "at most 64"),
    ],
)
def test_schedule_strict_parser_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(text)
