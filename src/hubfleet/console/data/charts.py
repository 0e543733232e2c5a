"""The console's charts: the table behind each one (one row per x value, None for a gap) and its CSV.

Day-based charts read the ProbeDay and UserDay roll-ups; the others group hub samples into buckets in SQL.
Each chart is a constant number of statements, whatever the number of hubs it covers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, cast, extract, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from hubfleet.clock import require_aware
from hubfleet.console.data.source import ConsoleSource
from hubfleet.monitor.uptime import uptime_percent
from hubfleet.monitor.usage import active_series
from hubfleet.store.models import HubSample, ProbeDay

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
RUNNING_BUCKETS = (900, 1800, 3600, 3 * 3600, 6 * 3600, 86400)
"""Bucket sizes (s) of the running-servers chart: the smallest giving at most MAX_POINTS buckets."""
MAX_POINTS = 1000
SPAWN_BUCKET = 3600
SPAWN_LOOKBACK = timedelta(hours=1)
"""The sample before the window's first one, so that the first bucket gets its counter delta."""


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


def _bucket(value: Any, seconds: int, dialect: str) -> ColumnElement[int]:
    """Which `seconds`-long bucket since the Unix epoch a datetime column falls in (an integer)."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", value), Integer) // seconds
    return cast(func.floor(extract("epoch", value) / seconds), Integer)


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


def _running_bucket(days: int) -> int:
    return next((b for b in RUNNING_BUCKETS if days * 86400 / b <= MAX_POINTS), RUNNING_BUCKETS[-1])


def _chart_running(
    source: ConsoleSource, hubs: Sequence[str], days: int, now: datetime
) -> tuple[list[str], list[list[Any]]]:
    """Max running servers per hub and bucket, every bucket of the window (None where no sample)."""
    seconds = _running_bucket(days)
    last = int(now.timestamp()) // seconds
    first = last - days * 86400 // seconds + 1
    dialect = source.store.engine.dialect.name
    bucket = _bucket(HubSample.at, seconds, dialect).label("bucket")
    query = (
        select(HubSample.hub, bucket, func.max(HubSample.running_servers))
        .where(
            HubSample.hub.in_(list(hubs)),
            HubSample.at >= datetime.fromtimestamp(first * seconds, UTC),
            HubSample.at <= now,
        )
        .group_by(HubSample.hub, bucket)
    )
    with source.store.session() as session:
        peaks = {(hub, int(b)): int(n) for hub, b, n in session.execute(query)}
    rows = [[_at(b, seconds), *(peaks.get((hub, b)) for hub in hubs)] for b in range(first, last + 1)]
    return ["at", *hubs], rows


def _chart_spawns(source: ConsoleSource, hubs: Sequence[str], days: int, now: datetime) -> list[list[Any]]:
    """Hourly spawns from the counters' deltas between consecutive samples of each hub, summed over the hubs.
    A counter lower than before means the hub restarted (counters start again at 0): its new value is
    the delta then. The mean is the successful spawns' seconds over their number."""
    start = datetime.fromtimestamp(
        int((now - timedelta(days=days)).timestamp()) // SPAWN_BUCKET * SPAWN_BUCKET, UTC
    )
    dialect = source.store.engine.dialect.name
    counters = {
        "s": HubSample.spawn_success_total,
        "f": func.coalesce(HubSample.spawn_failure_total, 0.0),
        "t": HubSample.spawn_seconds_total,
    }
    order = (HubSample.at, HubSample.id)
    previous = {
        f"p{k}": func.lag(v).over(partition_by=HubSample.hub, order_by=order) for k, v in counters.items()
    }
    inner = (
        select(
            HubSample.at.label("at"),
            *(v.label(k) for k, v in counters.items()),
            *(v.label(k) for k, v in previous.items()),
        )
        .where(
            HubSample.hub.in_(list(hubs)),
            HubSample.at >= start - SPAWN_LOOKBACK,
            HubSample.at <= now,
            HubSample.spawn_success_total.is_not(None),
        )
        .subquery()
    )
    c = inner.c
    reset = (c.s < c.ps) | (c.f < c.pf) | (c.t < c.pt)

    def delta(cur: Any, prev: Any) -> Any:
        return case((c.ps.is_(None), None), (reset, cur), else_=cur - prev)

    ds, df, dt = delta(c.s, c.ps), delta(c.f, c.pf), delta(c.t, c.pt)
    timed = func.sum(case((dt.is_not(None), ds)))
    bucket = _bucket(c.at, SPAWN_BUCKET, dialect).label("bucket")
    changed = (c.s != c.ps) | (c.f != c.pf) | (c.t != c.pt)  # most samples change nothing: skip them early
    query = (
        select(bucket, func.sum(ds), func.sum(df), func.sum(dt), timed)
        .where(c.at >= start, changed)
        .group_by(bucket)
        .having(func.coalesce(func.sum(ds), 0) + func.coalesce(func.sum(df), 0) > 0)
        .order_by(bucket)
    )
    with source.store.session() as session:
        found = session.execute(query).all()
    rows = []
    for bucket, ok, failed, seconds, timed_ok in found:
        mean = round(seconds / timed_ok, 3) if seconds is not None and timed_ok else None
        ok, failed = round(ok or 0), round(failed or 0)
        rows.append([_at(int(bucket), SPAWN_BUCKET), mean, ok + failed, failed])
    return rows


def chart(
    source: ConsoleSource, name: str, hubs: Sequence[str], days: int = 30, now: datetime | None = None
) -> Chart:
    """The table of chart `name` (one of CHARTS; KeyError otherwise) over `hubs` and the last `days`
    (clipped to 1..400) up to `now`. Day-based charts have one row per UTC day, today included."""
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
        columns, rows = _chart_running(source, hubs, days, now)
    elif name == "spawn-duration":
        columns = ["at", "mean_spawn_seconds", "spawns", "failures"]
        rows = _chart_spawns(source, hubs, days, now) if hubs else []
    elif name == "probe-latency":
        columns = ["day", "mean_latency_ms", "max_latency_ms"]
        rows = _chart_probe_latency(source, hubs, first, last)
    else:
        columns = ["day", "uptime_percent"]
        rows = _chart_uptime(source, hubs, first, last)
    return Chart(name=name, title=title, y_title=Y_TITLES[name], columns=columns, rows=rows)
