"""Who is on first-line duty at a moment: fleet.yaml `support.rota` (ISO weeks in the calendar's zone)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from hubfleet.config.models_support import Support

EPOCH = date(2024, 1, 1)
"""A Monday: without `rota.starting` the turns are counted from it (so the rota still turns weekly)."""


def week_of(support: Support, at: datetime) -> str:
    """The ISO week (2026-W49) of `at` in the calendar's time zone."""
    year, week, _ = at.astimezone(ZoneInfo(support.calendar.time_zone)).isocalendar()
    return f"{year}-W{week:02d}"


def on_duty(support: Support, at: datetime) -> str | None:
    """The first-line account for `at`: an override for its week, else the rotation (the weeks before
    `starting` continue it backwards); None without a rota."""
    week = week_of(support, at)
    for override in support.rota.overrides:
        if override.week == week:
            return override.account
    rota = support.rota
    if not rota.first_line:
        return None
    local = at.astimezone(ZoneInfo(support.calendar.time_zone)).date()
    monday = local - timedelta(days=local.weekday())
    start = rota.starting or EPOCH
    weeks = (monday - start).days // 7
    return rota.first_line[(weeks // rota.weeks_each) % len(rota.first_line)]
