"""Time in one convention: every datetime hubfleet keeps or compares is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken to be UTC already (SQLite hands those back)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def require_aware(value: datetime | None, what: str = "timestamps") -> datetime:
    """`value` in UTC, or now when it is None; a naive datetime is a caller's mistake, not a guess to make."""
    if value is None:
        return utcnow()
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    """`value` (datetime, date, ISO 8601 string such as JupyterHub's '2024-05-01T10:00:00.123Z') as an
    aware UTC datetime; None when it is none of those."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None
