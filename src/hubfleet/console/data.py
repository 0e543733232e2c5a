"""The console's read model: what its pages and JSON API show, as plain JSON-safe dicts and charts.

Every function reads the store with a constant number of grouped queries, whatever the number of hubs
(the overview of 1,000 hubs must not cost 1,000 queries): the newest probe, hub sample and deployment of
each hub are index seeks from one statement (correlated subqueries over a VALUES list of the hubs), and
weeks of uptime and latency come from the ProbeDay roll-up instead of raw probe samples.
Every time is timezone-aware UTC; dates and times leave as ISO strings.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Integer, String, case, cast, column, extract, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import TextualSelect

from hubfleet.clock import require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.monitor.incidents import IncidentRecord, incident_record
from hubfleet.monitor.uptime import probe_day_totals, uptime, uptime_percent
from hubfleet.monitor.usage import active_counts, active_series, auth_type
from hubfleet.runtime.processes import pid_alive
from hubfleet.runtime.status_file import read_status, status_path
from hubfleet.store.api import Store
from hubfleet.store.models import (
    Deployment,
    HubSample,
    Incident,
    ProbeDay,
    ProbeSample,
    UserDay,
    UTCDateTime,
)

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
UP_STATES = frozenset({"running", "up"})


# --------------------------------------------------------------------------- chart


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


# --------------------------------------------------------------------------- source


class ConsoleSource:
    """What the console reads: the store, the fleet config and the daemon's view of local hubs."""

    def __init__(
        self, store: Store, fleet: FleetConfig | Callable[[], FleetConfig], state_dir: Path | None
    ) -> None:
        self.store = store
        self._fleet = fleet
        self.state_dir = state_dir
        self._status: tuple[int, dict[str, Any]] | None = None

    @property
    def fleet(self) -> FleetConfig:
        """The current configuration (asked again on every access when a callable was given: reloads)."""
        return self._fleet if isinstance(self._fleet, FleetConfig) else self._fleet()

    def hub_states(self) -> dict[str, dict[str, Any]]:
        """daemon.json's hubs, re-read only when the file changed; {} without a running daemon."""
        if self.state_dir is None:
            return {}
        try:
            mtime = status_path(self.state_dir).stat().st_mtime_ns
        except OSError:
            return {}
        if self._status is None or self._status[0] != mtime:
            status = read_status(self.state_dir)
            if status is None:  # no daemon, or a file caught mid-write: not cached
                return {}
            self._status = (mtime, status)
        status = self._status[1]
        # the daemon may have died without rewriting its file: its pid says so
        return dict(status.get("hubs") or {}) if pid_alive(status.get("pid")) else {}


# --------------------------------------------------------------------------- helpers


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


@functools.lru_cache(maxsize=16)
def _latest_statement(count: int) -> TextualSelect:
    """Per hub of a VALUES list of `count` hubs, the newest probe, version, hub sample and deployment:
    correlated subqueries, each an index seek on (hub, at), in one statement. Plain SQL (SQLite and
    PostgreSQL) because SQLAlchemy compiles a VALUES construct again on every call (it is not cacheable),
    which costs more than the query for hundreds of hubs; this text is compiled once per hub count."""
    hubs = ", ".join(f"(:h{i})" for i in range(count))
    probes, samples, deploys = ProbeSample.__tablename__, HubSample.__tablename__, Deployment.__tablename__

    def newest(value: str, table: str, at: str, where: str = "") -> str:
        return (
            f"(SELECT t.{value} FROM {table} t WHERE t.hub = w.hub{where} "
            f"ORDER BY t.{at} DESC, t.id DESC LIMIT 1)"
        )

    sql = (
        f"WITH wanted(hub) AS (VALUES {hubs}) SELECT w.hub AS hub, "
        f"{newest('at', probes, 'at')} AS probe_at, "
        f"{newest('ok', probes, 'at')} AS probe_ok, "
        f"{newest('version', probes, 'at', ' AND t.version IS NOT NULL')} AS version, "
        f"{newest('running_servers', samples, 'at')} AS running_servers, "
        f"{newest('id', deploys, 'started_at')} AS deploy_id "
        "FROM wanted w"
    )
    return text(sql).columns(
        column("hub", String),
        column("probe_at", UTCDateTime()),
        column("probe_ok", Boolean()),
        column("version", String),
        column("running_servers", Integer),
        column("deploy_id", Integer),
    )


def _latest(session: Session, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per hub: newest probe (at, ok), newest known version, newest running servers, newest deployment."""
    params = {f"h{i}": name for i, name in enumerate(names)}
    query = session.execute(_latest_statement(len(names)), params)
    latest = {}
    for hub, probe_at, probe_ok, version, running, deploy_id in query:
        latest[hub] = {
            "probe_at": probe_at,
            "probe_ok": None if probe_ok is None else bool(probe_ok),
            "version": version,
            "running_servers": running,
            "deploy_id": deploy_id,
        }
    ids = [row["deploy_id"] for row in latest.values() if row["deploy_id"] is not None]
    deploys = {}
    if ids:
        columns = (
            Deployment.id,
            Deployment.started_at,
            Deployment.result,
            Deployment.actor,
            Deployment.message,
        )
        for deploy_id, at, result, actor, message in session.execute(
            select(*columns).where(Deployment.id.in_(ids))
        ):
            deploys[deploy_id] = {"at": _iso(at), "result": result, "actor": actor, "message": message}
    for row in latest.values():
        row["last_deploy"] = deploys.get(row.pop("deploy_id"))
    return latest


def _active_by_hub(session: Session, names: Sequence[str], today: date) -> dict[str, tuple[int, int, int]]:
    """Per hub, distinct users of today, the last 7 and the last 30 days, from one pass over user_days."""

    def since(first: date) -> Any:
        return func.count(case((UserDay.day >= first, UserDay.username)).distinct())

    query = (
        select(
            UserDay.hub,
            since(today),
            since(today - timedelta(days=6)),
            func.count(UserDay.username.distinct()),
        )
        .where(UserDay.day >= today - timedelta(days=29), UserDay.day <= today, UserDay.hub.in_(list(names)))
        .group_by(UserDay.hub)
    )
    return {hub: (int(d), int(w), int(m)) for hub, d, w, m in session.execute(query)}


def _open_incidents(session: Session, names: Sequence[str]) -> dict[str, int]:
    query = (
        select(Incident.hub, func.count(Incident.id))
        .where(Incident.resolved_at.is_(None), Incident.hub.in_(list(names)))
        .group_by(Incident.hub)
    )
    return {hub: int(n) for hub, n in session.execute(query)}


def _state_and_url(
    fleet: FleetConfig, hub: Hub, daemon: dict[str, Any] | None, probe_ok: bool | None
) -> tuple[str, str]:
    """Local hubs: the daemon's state; kubernetes hubs: up/down from the newest probe."""
    local = fleet.clusters[hub.cluster].kind == "local"
    if local:
        state = str(daemon.get("state") or "stopped") if daemon else "stopped"
    else:
        state = "unknown" if probe_ok is None else "up" if probe_ok else "down"
    url = (daemon or {}).get("url") or fleet.public_url(hub)
    return state, str(url)


# --------------------------------------------------------------------------- overview


def overview_rows(
    source: ConsoleSource, hubs: Sequence[Hub], now: datetime | None = None
) -> list[dict[str, Any]]:
    """One row per hub, in the given order, from five queries whatever the number of hubs."""
    if not hubs:
        return []
    now = require_aware(now, "now")
    today = now.date()
    fleet = source.fleet
    names = [hub.name for hub in hubs]
    states = source.hub_states()
    with source.store.session() as session:
        latest = _latest(session, names)
        active = _active_by_hub(session, names, today)
        incidents_open = _open_incidents(session, names)
        probes = probe_day_totals(session, today - timedelta(days=29), today, names)
    rows = []
    for hub in hubs:
        newest = latest.get(hub.name) or {}
        state, url = _state_and_url(fleet, hub, states.get(hub.name), newest.get("probe_ok"))
        dau, wau, mau = active.get(hub.name, (0, 0, 0))
        rows.append(
            {
                "name": hub.name,
                "display_name": hub.display_name or hub.name,
                "community": hub.community,
                "cluster": hub.cluster,
                "cluster_kind": fleet.clusters[hub.cluster].kind,
                "stage": hub.stage,
                "url": url,
                "state": state,
                "version": newest.get("version"),
                "uptime_30d": uptime_percent(*probes.get(hub.name, (0, 0))),
                "running_servers": newest.get("running_servers"),
                "dau": dau,
                "wau": wau,
                "mau": mau,
                "open_incidents": incidents_open.get(hub.name, 0),
                "last_deploy": newest.get("last_deploy"),
                "last_probe_at": _iso(newest.get("probe_at")),
                "last_probe_ok": newest.get("probe_ok"),
            }
        )
    return rows


def fleet_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The overview's header figures, from its rows (no query)."""
    by_state: dict[str, int] = {}
    for row in rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    return {
        "hubs": len(rows),
        "running": sum(1 for row in rows if row["state"] in UP_STATES),
        "running_servers": sum(row["running_servers"] or 0 for row in rows),
        "open_incidents": sum(row["open_incidents"] for row in rows),
        "by_state": dict(sorted(by_state.items())),
    }


# --------------------------------------------------------------------------- incidents


def _incident_dict(record: IncidentRecord, fleet: FleetConfig, now: datetime) -> dict[str, Any]:
    hub = fleet.hubs.get(record.hub)
    return {**record.to_dict(now), "community": hub.community if hub else None, "open": record.open}


def incidents(
    source: ConsoleSource,
    hubs: Sequence[str],
    *,
    state: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Incidents of `hubs`, newest first. state: "open" | "resolved" | None (both). `since` keeps those
    open at some moment from `since` on (started after it, resolved after it, or still open)."""
    if state not in (None, "open", "resolved"):
        raise ValueError(f"state must be 'open', 'resolved' or None, not {state!r}")
    if not hubs:
        return []
    now = require_aware(now, "now")
    query = select(Incident).where(Incident.hub.in_(list(hubs)))
    if state is not None:
        resolved = Incident.resolved_at.is_(None)
        query = query.where(resolved if state == "open" else ~resolved)
    if kind is not None:
        query = query.where(Incident.kind == kind)
    if since is not None:
        since = require_aware(since, "since")
        query = query.where(
            (Incident.started_at >= since) | Incident.resolved_at.is_(None) | (Incident.resolved_at >= since)
        )
    query = query.order_by(Incident.started_at.desc(), Incident.id.desc()).limit(max(0, limit))
    fleet = source.fleet
    with source.store.session() as session:
        records = [incident_record(row) for row in session.scalars(query)]
    return [_incident_dict(record, fleet, now) for record in records]


# --------------------------------------------------------------------------- community and hub pages

HUB_DEPLOY_OMITS = ("hub", "community", "rendered", "settings")
"""What a hub's page leaves out of its deployments: its own name and community, the long configuration."""
HUB_CHECK_OMITS = ("hub",)
HUB_RESTART_OMITS = ("id", "hub")


def record_dict(record: Any, omit: Sequence[str] = ()) -> dict[str, Any]:
    """A store record's fields less `omit`, JSON-safe (datetimes as ISO strings)."""
    names = [field.name for field in dataclasses.fields(record) if field.name not in omit]
    values = {name: getattr(record, name) for name in names}
    return {name: _iso(v) if isinstance(v, datetime) else v for name, v in values.items()}


def _contacts(fleet: FleetConfig, community: str) -> list[dict[str, str]]:
    found = fleet.communities.get(community)
    return [{"name": c.name, "email": c.email, "role": c.role} for c in (found.contacts if found else [])]


def community_detail(source: ConsoleSource, community: str, now: datetime | None = None) -> dict[str, Any]:
    """A community's page: its contacts, its hubs' rows, distinct people over its hubs, recent incidents.
    KeyError for a community not in the fleet."""
    now = require_aware(now, "now")
    fleet = source.fleet
    found = fleet.communities[community]
    hubs = sorted((h for h in fleet.hubs.values() if h.community == community), key=lambda h: h.name)
    names = [hub.name for hub in hubs]
    active = active_counts(source.store, now.date(), names) if names else {"dau": 0, "wau": 0, "mau": 0}
    return {
        "name": found.name,
        "display_name": found.display_name or found.name,
        "contacts": _contacts(fleet, community),
        "hubs": overview_rows(source, hubs, now),
        "active": active,
        "incidents": incidents(source, names, limit=50, now=now),
    }


def hub_detail(source: ConsoleSource, hub: str, now: datetime | None = None) -> dict[str, Any]:
    """A hub's page: its overview row plus uptime windows, deploys, checks, incidents and restarts.
    KeyError for a hub not in the fleet."""
    now = require_aware(now, "now")
    fleet = source.fleet
    found = fleet.hubs[hub]
    store = source.store
    deploys = [record_dict(d, HUB_DEPLOY_OMITS) for d in store.deployments(hub, limit=20)]
    checks = [record_dict(c, HUB_CHECK_OMITS) for c in store.checks(hub, limit=20)]
    restarts = [record_dict(r, HUB_RESTART_OMITS) for r in store.restarts(hub, limit=20)]
    return {
        **overview_rows(source, [found], now)[0],
        "uptime": uptime(store, hub, now),
        "deploys": deploys,
        "checks": checks,
        "incidents": incidents(source, [hub], limit=50, now=now),
        "restarts": restarts,
        "auth_type": auth_type(found),
        "contacts": _contacts(fleet, found.community),
    }


# --------------------------------------------------------------------------- charts


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
