"""The console's charts: the table behind each one (one row per x value, None for a gap) and its CSV.

Day-based charts read the ProbeDay and usage roll-ups; running servers and spawns read the hourly roll-ups
of hub samples (hubfleet.store.metric_rollups), which each request first brings up to the newest sample, and
raw samples only for what the roll-ups cannot answer (a chart of a past moment). Each chart is a constant
number of statements, whatever the number of hubs it covers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hubfleet.clock import require_aware
from hubfleet.console.data.source import ConsoleSource
from hubfleet.monitor.uptime import uptime_percent
from hubfleet.monitor.usage import active_series
from hubfleet.store import metric_rollups
from hubfleet.store.metric_rollups import HOUR
from hubfleet.store.models import ProbeDay

CHARTS: dict[str, str] = {
    "active-users": "Active users",
    "running-servers": "Running servers",
    "spawn-duration": "Spawn duration",
    "probe-latency": "Probe latency",
    "uptime": "Uptime",
}
Y_TITLES: dict[str, str] = {
    "active-users": "people",
    "running-servers": "servers",
    "spawn-duration": "seconds",
    "probe-latency": "ms",
    "uptime": "%",
}
MAX_DAYS = 400
"""Longest chart window: ProbeDay rows are kept ~400 days (raw samples 31, hub samples 35)."""
RUNNING_BUCKETS = (3600, 3 * 3600, 6 * 3600, 86400)
"""Bucket sizes (s) of the running-servers chart: the smallest giving at most MAX_POINTS buckets and
MAX_CELLS values (hours at least: the roll-ups are hourly)."""
MAX_POINTS = 1000
MAX_CELLS = 50_000
"""At most this many values in a running-servers chart (a column per hub; turning them into JSON costs
≈ 5 µs each): 1,000 hubs over a day get hours, over a week 6-hour buckets, over a month days."""
SPAWN_BUCKET = HOUR


@dataclass(frozen=True)
class Chart:
    """A table behind one chart: the first column is the x axis ("day" ISO date or "at" ISO datetime)."""

    name: str
    title: str
    y_title: str
    columns: list[str]
    rows: list[list[Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "y_title": self.y_title,
            "columns": list(self.columns),
            "rows": [list(row) for row in self.rows],
        }

    def to_csv(self) -> str:
        """RFC 4180 (CRLF line ends, quoting when needed); a gap (None) is an empty field."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def _at(bucket: int, seconds: int) -> str:
    return datetime.fromtimestamp(bucket * seconds, UTC).isoformat()


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _probe_days(
    session: Session, hubs: Sequence[str], first: date, last: date
) -> dict[date, tuple[Any, ...]]:
    """Per day: (probes, ok, latency sum, latency max) summed over `hubs`."""
    query = (
        select(
            ProbeDay.day,
            func.sum(ProbeDay.probes),
            func.sum(ProbeDay.ok),
            func.sum(ProbeDay.latency_ms_sum),
            func.max(ProbeDay.latency_ms_max),
        )
        .where(ProbeDay.day >= first, ProbeDay.day <= last, ProbeDay.hub.in_(list(hubs)))
        .group_by(ProbeDay.day)
    )
    return {day: tuple(rest) for day, *rest in session.execute(query)}


def _chart_probe_latency(
    source: ConsoleSource, hubs: Sequence[str], first: date, last: date
) -> list[list[Any]]:
    """Mean latency of the ok probes (weighted by their number on each hub) and the day's slowest."""
    with source.store.session() as session:
        days = _probe_days(session, hubs, first, last)
    rows = []
    for day in _days(first, last):
        _, ok, total, slowest = days.get(day, (0, 0, 0.0, None))
        mean = round(total / ok, 1) if ok else None
        rows.append([day.isoformat(), mean, None if slowest is None else round(slowest, 1)])
    return rows


def _chart_uptime(source: ConsoleSource, hubs: Sequence[str], first: date, last: date) -> list[list[Any]]:
    with source.store.session() as session:
        days = _probe_days(session, hubs, first, last)
    rows = []
    for day in _days(first, last):
        probes, ok, _, _ = days.get(day, (0, 0, 0.0, None))
        rows.append([day.isoformat(), uptime_percent(int(probes or 0), int(ok or 0))])
    return rows


def _running_bucket(days: int, hubs: int = 1) -> int:
    """The smallest bucket giving at most MAX_POINTS rows and MAX_CELLS values (one column per hub)."""
    return next(
        (
            b
            for b in RUNNING_BUCKETS
            if days * 86400 / b <= MAX_POINTS and days * 86400 / b * hubs <= MAX_CELLS
        ),
        RUNNING_BUCKETS[-1],
    )


def _chart_running(
    source: ConsoleSource, hubs: Sequence[str], days: int, now: datetime, rollups: bool = True
) -> tuple[list[str], list[list[Any]]]:
    """Max running servers per hub and bucket, every bucket of the window (None where no sample)."""
    seconds = _running_bucket(days, len(hubs))
    last = int(now.timestamp()) // seconds
    first = last - days * 86400 // seconds + 1
    peaks = metric_rollups.running_peaks(source.store, hubs, first * seconds // HOUR, now, seconds, rollups)
    rows = [[_at(b, seconds), *(peaks.get((hub, b)) for hub in hubs)] for b in range(first, last + 1)]
    return ["at", *hubs], rows


def _chart_spawns(
    source: ConsoleSource, hubs: Sequence[str], days: int, now: datetime, rollups: bool = True
) -> list[list[Any]]:
    """Hourly spawns summed over the hubs (counter deltas: hubfleet.store.metric_rollups); the mean is the
    successful spawns' seconds over their number. Hours without a spawn are left out."""
    first = int((now - timedelta(days=days)).timestamp()) // HOUR
    rows = []
    for hour, (ok, failed, seconds, timed_ok) in sorted(
        metric_rollups.spawn_totals(source.store, hubs, first, now, rollups).items()
    ):
        if (ok or 0) + (failed or 0) <= 0:
            continue
        mean = round(seconds / timed_ok, 3) if seconds is not None and timed_ok else None
        ok, failed = round(ok or 0), round(failed or 0)
        rows.append([_at(hour, SPAWN_BUCKET), mean, ok + failed, failed])
    return rows


def chart(
    source: ConsoleSource,
    name: str,
    hubs: Sequence[str],
    days: int = 30,
    now: datetime | None = None,
    rollups: bool = True,
) -> Chart:
    """The table of chart `name` (one of CHARTS; KeyError otherwise) over `hubs` and the last `days`
    (clipped to 1..400) up to `now`. Day-based charts have one row per UTC day, today included.
    `rollups=False` computes running servers and spawns from raw samples only (the same figures, slower)."""
    title = CHARTS[name]
    now = require_aware(now, "now")
    days = max(1, min(MAX_DAYS, int(days)))
    hubs = list(hubs)
    last = now.date()
    first = last - timedelta(days=days - 1)
    columns: list[str]
    if name == "active-users":
        columns = ["day", "dau", "wau", "mau"]
        series = active_series(source.store, first, last, hubs) if hubs else []
        found = {row["day"]: row for row in series}
        rows = []
        for day in _days(first, last):
            row = found.get(day.isoformat(), {"dau": 0, "wau": 0, "mau": 0})
            rows.append([day.isoformat(), row["dau"], row["wau"], row["mau"]])
    elif name == "running-servers":
        columns, rows = _chart_running(source, hubs, days, now, rollups)
    elif name == "spawn-duration":
        columns = ["at", "mean_spawn_seconds", "spawns", "failures"]
        rows = _chart_spawns(source, hubs, days, now, rollups) if hubs else []
    elif name == "probe-latency":
        columns = ["day", "mean_latency_ms", "max_latency_ms"]
        rows = _chart_probe_latency(source, hubs, first, last)
    else:
        columns = ["day", "uptime_percent"]
        rows = _chart_uptime(source, hubs, first, last)
    return Chart(name=name, title=title, y_title=Y_TITLES[name], columns=columns, rows=rows)
