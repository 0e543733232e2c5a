"""How the console's pages show numbers and times: the Jinja filters of the templates.

Every filter takes what the data layer gives (datetime, ISO string, number or None) and returns text;
None and unreadable values become a dash, never an exception in the middle of a page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import Environment

from hubfleet.clock import parse_time, utcnow
from hubfleet.units import human_bytes

DASH = "—"


def duration(seconds: Any) -> str:
    """A length of time for people: '45 s', '12 min', '3 h 5 min', '2 d 4 h'."""
    if seconds is None:
        return DASH
    try:
        total = float(seconds)
    except (TypeError, ValueError):
        return DASH
    if total < 0:
        total = 0.0
    if total < 10:
        return f"{total:.1f} s"
    if total < 60:
        return f"{total:.0f} s"
    minutes = int(total // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def took(start: Any, end: Any) -> str:
    """The time from `start` to `end` (a dash while `end` is None)."""
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return DASH
    return duration((last - first).total_seconds())


def ago(value: Any, now: datetime | None = None) -> str:
    """How long ago `value` was: 'just now', '5 min ago', '3 h ago', '2 d ago' (or 'in 3 h')."""
    moment = parse_time(value)
    if moment is None:
        return DASH
    now = now or utcnow()
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 60:
        return "just now"
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 3600:
        text = f"{int(seconds // 60)} min"
    elif seconds < 48 * 3600:
        text = f"{int(seconds // 3600)} h"
    else:
        text = f"{int(seconds // 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def when(value: Any) -> str:
    """A moment in full, in UTC: '2024-05-01 14:03 UTC'."""
    moment = parse_time(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else DASH


def iso(value: Any) -> str:
    """A moment as ISO 8601 (for <time datetime=...>); empty when there is none."""
    moment = parse_time(value)
    return moment.isoformat() if moment else ""


def percent(value: Any, digits: int = 2) -> str:
    """A percentage (the data layer gives 0..100): 99.913 → '99.91 %', 100.0 → '100 %'."""
    if value is None:
        return DASH
    try:
        figure = float(value)
    except (TypeError, ValueError):
        return DASH
    text = f"{figure:.{digits}f}"
    if "." in text:  # trailing zeros of the decimals only: 80 stays 80
        text = text.rstrip("0").rstrip(".")
    return f"{text} %"


def number(value: Any, digits: int = 0) -> str:
    """A count or measure with thousands separators; a dash for None."""
    if value is None or value == "":
        return DASH
    try:
        figure = float(value)
    except (TypeError, ValueError):
        return str(value)
    if digits == 0 and figure == int(figure):
        return f"{int(figure):,}"
    return f"{figure:,.{digits or 1}f}"


def seconds(value: Any) -> str:
    """Seconds with one decimal ('7.3 s'), for check and spawn times."""
    if value is None:
        return DASH
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return DASH


def dash(value: Any) -> Any:
    """The value, or a dash when it is None or empty."""
    return DASH if value is None or value == "" else value


FILTERS = {
    "duration": duration,
    "ago": ago,
    "took": took,
    "when": when,
    "iso": iso,
    "percent": percent,
    "number": number,
    "seconds": seconds,
    "dash": dash,
    "human_bytes": lambda value: DASH if value is None else human_bytes(value),
}


def install(env: Environment) -> None:
    """Make the filters available to every template of `env`."""
    env.filters.update(FILTERS)
