"""A hub's page and a community's page (their overview rows plus what happened to them), and the incident
listing they and the incidents page share."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from hubfleet.backup.status import hub_backup_json
from hubfleet.clock import require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.console.data.overview import overview_rows
from hubfleet.console.data.source import ConsoleSource
from hubfleet.monitor.disk_usage import hub_disk
from hubfleet.monitor.incidents import IncidentRecord, incident_record
from hubfleet.monitor.uptime import uptime
from hubfleet.monitor.usage import active_counts, auth_type, user_database_sizes
from hubfleet.store.models import Incident


def _incident_dict(record: IncidentRecord, fleet: FleetConfig, now: datetime) -> dict[str, Any]:
    hub = fleet.hubs.get(record.hub)
    community = record.community or (hub.community if hub else None)  # a cost incident may have no hub
    return {**record.to_dict(now), "community": community, "open": record.open}


def incidents(
    source: ConsoleSource,
    hubs: Sequence[str],
    *,
    state: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
    now: datetime | None = None,
    communities: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Incidents of `hubs`, and those of `communities` that have no hub (a community's budget: kind `cost`;
    default: the communities of `hubs`), newest first. state: "open" | "resolved" | None (both). `since`
    keeps those open at some moment from `since` on (started after it, resolved after it, or still open)."""
    if state not in (None, "open", "resolved"):
        raise ValueError(f"state must be 'open', 'resolved' or None, not {state!r}")
    if not hubs:
        return []
    now = require_aware(now, "now")
    fleet = source.fleet
    if communities is None:
        communities = sorted({fleet.hubs[h].community for h in hubs if h in fleet.hubs})
    owned = (Incident.hub == "") & Incident.community.in_(list(communities))
    query = select(Incident).where(Incident.hub.in_(list(hubs)) | owned)
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
    with source.store.session() as session:
        records = [incident_record(row) for row in session.scalars(query)]
    return [_incident_dict(record, fleet, now) for record in records]


HUB_DEPLOY_OMITS = ("hub", "community", "rendered", "settings")
"""What a hub's page leaves out of its deployments: its own name and community, the long configuration."""
HUB_CHECK_OMITS = ("hub",)
HUB_RESTART_OMITS = ("id", "hub")
HUB_LIMIT_EVENT_OMITS = ("id", "hub")


def record_dict(record: Any, omit: Sequence[str] = ()) -> dict[str, Any]:
    """A store record's fields less `omit`, JSON-safe (datetimes as ISO strings)."""
    names = [field.name for field in dataclasses.fields(record) if field.name not in omit]
    values = {name: getattr(record, name) for name in names}
    return {name: v.isoformat() if isinstance(v, datetime) else v for name, v in values.items()}


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
    """A hub's page: its overview row plus uptime windows, deploys, checks, incidents, restarts and the
    limits its user servers reached. KeyError for a hub not in the fleet."""
    now = require_aware(now, "now")
    fleet = source.fleet
    found = fleet.hubs[hub]
    store = source.store
    deploys = [record_dict(d, HUB_DEPLOY_OMITS) for d in store.deployments(hub, limit=20)]
    checks = [record_dict(c, HUB_CHECK_OMITS) for c in store.checks(hub, limit=20)]
    restarts = [record_dict(r, HUB_RESTART_OMITS) for r in store.restarts(hub, limit=20)]
    limit_events = [record_dict(e, HUB_LIMIT_EVENT_OMITS) for e in store.limit_events(hub, limit=20)]
    return {
        **overview_rows(source, [found], now)[0],
        "uptime": uptime(store, hub, now),
        "uptime_unplanned": uptime(store, hub, now, excluding_planned=True),
        "deploys": deploys,
        "checks": checks,
        "incidents": incidents(source, [hub], limit=50, now=now, communities=()),
        "restarts": restarts,
        "limit_events": limit_events,
        "disk": hub_disk(fleet, store, found, source.state_dir),
        "user_databases": _user_databases(fleet, found.name, source),
        "backup": hub_backup_json(fleet, store, hub, now),
        "auth_type": auth_type(found),
        "contacts": _contacts(fleet, found.community),
    }


def _user_databases(fleet: FleetConfig, hub: str, source: ConsoleSource) -> list[dict[str, Any]] | None:
    """Each user's database size on a local hub with `user_database`, largest first (None: no databases)."""
    found = fleet.hubs[hub]
    if (
        found.user_database is None
        or fleet.clusters[found.cluster].kind != "local"
        or source.state_dir is None
    ):
        return None
    sizes = user_database_sizes(source.state_dir, [found]).get(hub, {})
    return [
        {"username": u, "bytes": b} for u, b in sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    ]
