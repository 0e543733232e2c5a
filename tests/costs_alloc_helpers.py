"""A small fleet with clusters of every kind of cost, and real store rows (imports, cost lines, server
sessions, groups, home usage) for the allocation tests (test_costs_allocation.py, test_costs_cli.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, select

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.store import Store
from hubfleet.store.costs import CostImport, CostLine
from hubfleet.store.models import HomeUsage, HubUserGroup, ServerSession

GIB = 1024**3
HUBS = {"h1": "a", "h2": "a", "h3": "a", "h4": "b", "h5": "p", "h6": "p"}
"""Cluster a: three hubs (shared costs, idle); b: one hub; p: a price sheet."""


def write_fleet(
    root: Path,
    *,
    a_costs: dict[str, Any] | None = None,
    p_sheet: dict[str, Any] | None = None,
    hub_settings: dict[str, dict[str, Any]] | None = None,
) -> FleetConfig:
    """The fleet on disk, loaded by the real loader; every hub a staging hub of community `c` (h1-h3) or
    `d` (h4-h6)."""
    (root / "clusters").mkdir(parents=True, exist_ok=True)
    (root / "fleet.yaml").write_text(yaml.safe_dump({"name": "t"}))
    clusters: dict[str, dict[str, Any]] = {
        "a": {"name": "a", "kind": "local", "costs": a_costs or {}},
        "b": {"name": "b", "kind": "local"},
        "p": {"name": "p", "kind": "local", "costs": {"price_sheet": p_sheet or {"cpu_hour": "0.10"}}},
    }
    for name, cluster in clusters.items():
        (root / "clusters" / f"{name}.yaml").write_text(yaml.safe_dump(cluster))
    for port, (hub, cluster) in enumerate(HUBS.items(), start=20001):
        community = "c" if hub in ("h1", "h2", "h3") else "d"
        hubs_dir = root / "communities" / community / "hubs"
        hubs_dir.mkdir(parents=True, exist_ok=True)
        (root / "communities" / community / "community.yaml").write_text(f"name: {community}\n")
        settings = {
            "name": hub,
            "community": community,
            "cluster": cluster,
            "stage": "staging",
            "port": port,
            "auth": {"type": "native", "admin_users": ["ann"]},
        } | (hub_settings or {}).get(hub, {})
        (hubs_dir / f"{hub}.yaml").write_text(yaml.safe_dump(settings))
    return load_fleet(root)


def at(month: str, day: int, hour: float = 0) -> datetime:
    year, number = int(month[:4]), int(month[5:])
    return datetime(year, number, day, tzinfo=UTC) + timedelta(hours=hour)


def put_import(
    store: Store,
    account: str,
    month: str,
    lines: list[tuple[int, str | None, str | None, str, str, int]],
    currency: str = "USD",
) -> int:
    """A billing export's import as `hubfleet costs import` stores it (replacing the account's month):
    lines are (day of month, cluster, hub, charge category, service, billed micros)."""
    with store.session() as session, session.begin():
        old = session.execute(
            select(CostImport.id).where(CostImport.account == account, CostImport.month == month)
        ).scalar()
        if old is not None:
            session.execute(delete(CostLine).where(CostLine.import_id == old))
            session.execute(delete(CostImport).where(CostImport.id == old))
        row = CostImport(
            account=account,
            month=month,
            currency=currency,
            rows=len(lines),
            billed_micros=sum(line[-1] for line in lines),
            effective_micros=None,
            files=[],
            raw_path="",
            imported_at=datetime.now(UTC),
            actor="test",
        )
        session.add(row)
        session.flush()
        for day, cluster, hub, category, service, micros in lines:
            session.add(
                CostLine(
                    import_id=row.id,
                    account=account,
                    sub_account="",
                    month=month,
                    day=date(int(month[:4]), int(month[5:]), day),
                    cluster=cluster,
                    hub=hub,
                    category=category,
                    service=service,
                    currency=currency,
                    billed_micros=micros,
                    effective_micros=None,
                    list_micros=None,
                    rows=1,
                )
            )
        return row.id


def put_session(
    store: Store,
    hub: str,
    user: str,
    start: datetime,
    hours: float | None,
    *,
    cpu: float | None = 1.0,
    memory_gib: float | None = 1.0,
    environment: str | None = None,
    cpu_seconds: float | None = None,
    memory_peak_gib: float | None = None,
) -> None:
    """A server session; `hours` None: still running."""
    with store.session() as session, session.begin():
        session.add(
            ServerSession(
                hub=hub,
                username=user,
                started_at=start,
                stopped_at=None if hours is None else start + timedelta(hours=hours),
                environment=environment,
                cpu_request=cpu,
                memory_request_bytes=None if memory_gib is None else int(memory_gib * GIB),
                cpu_seconds_used=cpu_seconds,
                memory_peak_bytes=None if memory_peak_gib is None else int(memory_peak_gib * GIB),
            )
        )


def put_groups(
    store: Store,
    hub: str,
    memberships: dict[str, list[str]],
    *,
    first_seen: datetime | None = None,
    last_seen: datetime | None = None,
) -> None:
    """Memberships as the collector records them: seen from `first_seen` (default: long ago) until
    `last_seen` (default: now, a current membership)."""
    since = first_seen or datetime(2000, 1, 1, tzinfo=UTC)
    until = last_seen or datetime.now(UTC)
    with store.session() as session, session.begin():
        for user, groups in memberships.items():
            for group in groups:
                session.add(
                    HubUserGroup(hub=hub, username=user, group=group, first_seen=since, last_seen=until)
                )


def put_home(store: Store, hub: str, user: str, when: datetime, gib: float) -> None:
    with store.session() as session, session.begin():
        session.add(HomeUsage(hub=hub, username=user, at=when, bytes=int(gib * GIB)))


def clear_usage(store: Store) -> None:
    with store.session() as session, session.begin():
        for model in (ServerSession, HubUserGroup, HomeUsage, CostLine, CostImport):
            session.execute(delete(model))
