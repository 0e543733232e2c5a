"""The fleet overview: one row per hub (state, URL, version, uptime, servers, DAU/WAU/MAU, incidents, last
deploy) and the totals over the rows.

The overview of 1,000 hubs must not cost 1,000 queries: the newest probe, hub sample and deployment of each
hub are index seeks from one statement (correlated subqueries over a VALUES list of the hubs), and 30 days
of uptime come from the ProbeDay roll-up instead of raw probe samples: eight statements for any number of
hubs. When the rows asked for are the whole fleet (an operator's overview), the grouped statements read every
hub instead of naming 1,000 of them in an IN list (expanding and binding it cost more than the rows).
`attention_order` puts the hubs that need someone first: a page shows them before the healthy ones.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Integer, String, case, column, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TextualSelect

from hubfleet.backup.status import HubBackupState, backup_states
from hubfleet.clock import as_utc, require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.console.data.active import active_by_hub
from hubfleet.console.data.source import ConsoleSource
from hubfleet.monitor.disk_usage import latest_disk
from hubfleet.monitor.uptime import probe_day_totals, uptime_percent
from hubfleet.store.models import Deployment, HubSample, Incident, ProbeSample, UserDay, UTCDateTime

UP_STATES = frozenset({"running", "up"})


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


def _active_by_hub(
    session: Session, names: Sequence[str] | None, today: date
) -> dict[str, tuple[int, int, int]]:
    """Per hub, distinct users of today, the last 7 and the last 30 days, from one pass over user_days
    (`names` None: every hub). What data/active.py keeps in memory on SQLite, in SQL."""

    def since(first: date) -> Any:
        return func.count(case((UserDay.day >= first, UserDay.username)).distinct())

    query = (
        select(
            UserDay.hub,
            since(today),
            since(today - timedelta(days=6)),
            func.count(UserDay.username.distinct()),
        )
        .where(UserDay.day >= today - timedelta(days=29), UserDay.day <= today, *_among(UserDay.hub, names))
        .group_by(UserDay.hub)
    )
    return {hub: (int(d), int(w), int(m)) for hub, d, w, m in session.execute(query)}


def _among(column: Any, names: Sequence[str] | None) -> list[Any]:
    """The WHERE term keeping `names` (none for None: every row, filtered by the caller's dict lookups)."""
    return [] if names is None else [column.in_(list(names))]


def _open_incidents(session: Session, names: Sequence[str] | None) -> dict[str, int]:
    query = (
        select(Incident.hub, func.count(Incident.id))
        .where(Incident.resolved_at.is_(None), *_among(Incident.hub, names))
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
    if fleet.front_door_site(hub) is not None:  # the address people open, not the daemon's loopback one
        return state, str(fleet.public_url(hub))
    return state, str((daemon or {}).get("url") or fleet.public_url(hub))


def overview_rows(
    source: ConsoleSource, hubs: Sequence[Hub], now: datetime | None = None
) -> list[dict[str, Any]]:
    """One row per hub, in the given order, from eight queries whatever the number of hubs."""
    if not hubs:
        return []
    now = require_aware(now, "now")
    today = now.date()
    fleet = source.fleet
    names = [hub.name for hub in hubs]
    wanted = None if len(set(names)) == len(fleet.hubs) and set(names) == set(fleet.hubs) else names
    states = source.hub_states()
    with source.store.session() as session:
        latest = _latest(session, names)
        active = active_by_hub(session, wanted, today, _active_by_hub)
        incidents_open = _open_incidents(session, wanted)
        probes = probe_day_totals(session, today - timedelta(days=29), today, wanted)
    disk = latest_disk(source.store, names)
    local = [hub.name for hub in hubs if fleet.clusters[hub.cluster].kind == "local"]
    backups = backup_states(fleet, source.store, local, now=now) if local else {}
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
                "disk_bytes": disk[hub.name][1].get("") if hub.name in disk else None,
                **_backup(backups.get(hub.name)),
                "open_incidents": incidents_open.get(hub.name, 0),
                "last_deploy": newest.get("last_deploy"),
                "last_probe_at": _iso(newest.get("probe_at")),
                "last_probe_ok": newest.get("probe_ok"),
            }
        )
    return rows


def _backup(state: HubBackupState | None) -> dict[str, Any]:
    """The overview's backup cell: the hub's backup state and when its last good backup started."""
    last = state.last_good if state else None
    return {
        "backup_state": state.state if state else None,
        "last_backup_at": _iso(as_utc(last.started_at)) if last else None,
    }


ATTENTION = (
    "down or failing its probes",
    "open incidents",
    "not running",
    "backup failed or late",
)
"""Why a hub needs someone, most urgent first (attention_rank's values 0..3; 4: healthy)."""


def attention_rank(row: dict[str, Any]) -> int:
    """0..3: the index of the first reason in ATTENTION that applies to an overview row; 4: none."""
    if row["state"] in ("down", "failed") or row["last_probe_ok"] is False:
        return 0
    if row["open_incidents"]:
        return 1
    if row["state"] not in UP_STATES:
        return 2
    if row["backup_state"] in ("failed", "late"):
        return 3
    return len(ATTENTION)


def attention_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the hubs that need someone first (most urgent first), in their order otherwise."""
    return sorted(rows, key=attention_rank)  # stable: the fleet's order within each rank


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
