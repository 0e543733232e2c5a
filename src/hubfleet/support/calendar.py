"""Working time on the support calendar: how much of it lies between two moments, and which moment lies a
given amount of it after another. Response-time targets are counted in it.

Days are walked in the calendar's time zone (so a daylight-saving change shortens or lengthens that day's
working hours as a wall clock would); a day is working when its weekday is listed and it is not a holiday.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hubfleet.config.models_support import WEEKDAYS, SupportCalendar

MAX_DAYS = 3 * 366
"""How many days without working time add_working walks before it gives up."""


def _clock(text: str) -> tuple[int, int]:
    hours, minutes = (int(part) for part in text.split(":"))
    return hours, minutes


def _window(calendar: SupportCalendar, day: date, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
    """The working hours of `day` as aware UTC datetimes, or None on a day off."""
    if WEEKDAYS[day.weekday()] not in calendar.working_days or day in calendar.holidays:
        return None
    start_h, start_m = _clock(calendar.day_start)
    end_h, end_m = _clock(calendar.day_end)
    start = datetime.combine(day, time(start_h, start_m), zone)
    end = (
        datetime.combine(day + timedelta(days=1), time(0, 0), zone)
        if end_h == 24
        else datetime.combine(day, time(end_h, end_m), zone)
    )
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    # a day_start in the hour a spring-forward skips can land after day_end (02:30 to 03:00 on that day)
    return (start, end) if start < end else None


def _windows(
    calendar: SupportCalendar, start: datetime, end: datetime | None = None
) -> Iterator[tuple[datetime, datetime]]:
    """The working windows that end after `start`, in order: up to `end`, else on and on, until MAX_DAYS
    days pass without one (a calendar with no working time in reach)."""
    zone = ZoneInfo(calendar.time_zone)
    day = start.astimezone(zone).date() - timedelta(days=1)  # a window can begin the local day before
    last = end.astimezone(zone).date() if end is not None else None
    idle = 0
    while (last is None or day <= last) and idle <= MAX_DAYS:
        window = _window(calendar, day, zone)
        idle += 1
        if window is not None and window[1] > start:
            idle = 0
            yield window
        day += timedelta(days=1)


def working_seconds(calendar: SupportCalendar, start: datetime, end: datetime) -> float:
    """Working seconds in [start, end) (0 when end is not after start)."""
    # in UTC: datetimes that share a tzinfo subtract and compare as wall clocks, blind to a DST change
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        return 0.0
    total = 0.0
    for window_start, window_end in _windows(calendar, start, end):
        if window_start >= end:
            break
        total += (min(end, window_end) - max(start, window_start)).total_seconds()
    return total


def add_working(calendar: SupportCalendar, start: datetime, seconds: float) -> datetime:
    """The moment `seconds` of working time after `start` (start itself, moved to the next working moment,
    for 0)."""
    left = max(0.0, seconds)
    start = start.astimezone(UTC)
    for window_start, window_end in _windows(calendar, start):
        begin = max(start, window_start)
        room = (window_end - begin).total_seconds()
        if left <= room:
            return begin + timedelta(seconds=left)
        left -= room
    raise ValueError(f"the support calendar has no working time for {MAX_DAYS} days after {start:%Y-%m-%d}")


def paused_seconds(
    calendar: SupportCalendar, pauses: Sequence[tuple[datetime, datetime | None]], until: datetime
) -> float:
    """Working seconds inside the pauses, each counted up to `until` (an open pause runs until then)."""
    return sum(working_seconds(calendar, begin, min(end or until, until)) for begin, end in pauses)


def elapsed(
    calendar: SupportCalendar,
    start: datetime,
    until: datetime,
    pauses: Sequence[tuple[datetime, datetime | None]] = (),
) -> float:
    """Working seconds from `start` to `until`, without the time paused."""
    return max(0.0, working_seconds(calendar, start, until) - paused_seconds(calendar, pauses, until))


def due(
    calendar: SupportCalendar,
    start: datetime,
    target_hours: float,
    pauses: Sequence[tuple[datetime, datetime | None]] = (),
) -> datetime | None:
    """When `target_hours` of unpaused working time since `start` will have passed (or passed). None while a
    pause is open and the target was not yet reached before it began: the clock stands still, so there is no
    due moment until it runs again.

    The pauses are walked in order, so a pause that began after the target was already reached does not move
    the due moment (a missed target stays missed at the moment it was missed)."""
    left = target_hours * 3600
    running_from = start.astimezone(UTC)
    for begin, end in sorted(pauses, key=lambda pause: pause[0]):
        if begin > running_from:
            run = working_seconds(calendar, running_from, begin)
            if left <= run:
                return add_working(calendar, running_from, left)
            left -= run
        if end is None:
            return None
        running_from = max(running_from, end)
    return add_working(calendar, running_from, left)
