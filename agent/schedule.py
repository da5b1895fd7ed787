"""Working hours: when the owner lets the agent take work, in the machine's local time.

Syntax (``--schedule``): comma-separated entries ``DAYS HH:MM-HH:MM``, where
``DAYS`` is a day (``Mon``) or a range (``Mon-Fri``, ``Fri-Mon`` wraps over the
weekend); ``24:00`` ends a day. An entry may not run past midnight: write
``Fri 22:00-24:00,Sat 00:00-06:00`` instead. Example::

    Mon-Fri 09:00-18:00,Sat-Sun 00:00-24:00

The parser is strict: anything else is a :class:`ScheduleError` naming the
entry and what is wrong with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_ENTRIES = 64
_ENTRY = re.compile(
    r"^(?P<first>[A-Za-z]{3})(?:-(?P<last>[A-Za-z]{3}))?\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})\Z"
)


class ScheduleError(ValueError):
    """A working-hours string that does not parse; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Window:
    day: int  # 0 = Monday, like datetime.weekday()
    start_min: int
    end_min: int  # exclusive; 1440 = midnight at the end of the day


@dataclass(frozen=True, slots=True)
class Schedule:
    text: str
    windows: tuple[Window, ...]

    def is_open(self, when: datetime) -> bool:
        """Whether ``when`` (local, naive or aware) falls inside the working hours."""
        minute = when.hour * 60 + when.minute
        day = when.weekday()
        return any(w.day == day and w.start_min <= minute < w.end_min for w in self.windows)


def _day(name: str, entry: str) -> int:
    try:
        return DAYS.index(name.lower())
    except ValueError:
        raise ScheduleError(
            f"{entry!r}: unknown day {name!r}; use Mon, Tue, Wed, Thu, Fri, Sat or Sun"
        ) from None


def _minutes(text: str, entry: str) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ScheduleError(f"{entry!r}: {text} is not a time between 00:00 and 24:00")
    return hours * 60 + minutes


def parse_schedule(text: str) -> Schedule:
    """Parse ``--schedule``; raises :class:`ScheduleError`."""
    entries = [part.strip() for part in text.split(",")]
    if not text.strip():
        raise ScheduleError("the schedule is empty; e.g. 'Mon-Fri 09:00-18:00'")
    if len(entries) > MAX_ENTRIES:
        raise ScheduleError(f"at most {MAX_ENTRIES} entries, got {len(entries)}")
    windows: list[Window] = []
    for entry in entries:
        match = _ENTRY.match(entry)
        if match is None:
            raise ScheduleError(
                f"{entry!r} is not 'DAYS HH:MM-HH:MM' (e.g. 'Mon-Fri 09:00-18:00' or "
                "'Sat 10:00-14:00'); separate entries with commas"
            )
        first = _day(match["first"], entry)
        last = first if match["last"] is None else _day(match["last"], entry)
        start, end = _minutes(match["start"], entry), _minutes(match["end"], entry)
        if end <= start:
            raise ScheduleError(
                f"{entry!r}: the end must be after the start; for hours past midnight "
                "write two entries, e.g. 'Fri 22:00-24:00,Sat 00:00-06:00'"
            )
        day = first
        while True:
            windows.append(Window(day, start, end))
            if day == last:
                break
            day = (day + 1) % 7
    return Schedule(text.strip(), tuple(windows))
