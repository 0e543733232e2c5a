"""Abnormal-activity rules against generated store rows: each fires once, resolves when its condition clears,
uses per-hub settings merged over fleet defaults, and the baseline is the median of past weeks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.monitor import anomaly
from hubfleet.monitor.anomaly import AnomalyMonitor, counter_increase, evaluate, running_baseline
from hubfleet.monitor.incidents import IncidentRecord, list_incidents
from hubfleet.store import Store, open_store
from hubfleet.store.models import HubSample, ServerSession

T0 = datetime(2025, 3, 3, 10, 30, tzinfo=UTC)  # a Monday, 10:30 UTC


def write_fleet(
    root: Path,
    hubs: dict[str, dict[str, Any]],
    defaults: dict[str, Any] | None = None,
    monitoring: dict[str, Any] | None = None,
    console: dict[str, Any] | None = None,
) -> FleetConfig:
    """A fleet on disk (loaded by the real loader, so per-hub settings merge over defaults): community `c`
    on a local cluster; `hubs` maps hub name -> its `anomalies` overrides (and `stage` if given)."""
    (root / "clusters").mkdir(parents=True)
    (root / "communities" / "c" / "hubs").mkdir(parents=True)
    fleet: dict[str, Any] = {"name": "t", "defaults": {"anomalies": defaults or {}}}
    if monitoring:
        fleet["monitoring"] = monitoring
    if console:
        fleet["console"] = console
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    (root / "clusters" / "local.yaml").write_text("name: local\nkind: local\n")
    (root / "communities" / "c" / "community.yaml").write_text("name: c\n")
    for port, (name, settings) in enumerate(hubs.items(), start=20001):
        settings = dict(settings)
        hub = {
            "name": name,
            "community": "c",
            "cluster": "local",
            "stage": settings.pop("stage", "staging"),
            "port": port,
            "auth": {"type": "native", "admin_users": ["ann"]},
        }
        if settings:
            hub["anomalies"] = settings
        (root / "communities" / "c" / "hubs" / f"{name}.yaml").write_text(yaml.safe_dump(hub))
    return load_fleet(root)


def add_sample(store: Store, hub: str, at: datetime, running: int, ok: float | None = None,
               failed: float | None = None) -> None:  # fmt: skip
    with store.session() as session, session.begin():
        session.add(
            HubSample(
                hub=hub, at=at, running_servers=running, spawn_success_total=ok, spawn_failure_total=failed
            )
        )


def add_server(store: Store, hub: str, user: str, started: datetime, stopped: datetime | None = None) -> None:
    with store.session() as session, session.begin():
        session.add(ServerSession(hub=hub, username=user, started_at=started, stopped_at=stopped))


def anomalies(store: Store, *, open_only: bool = False) -> list[IncidentRecord]:
    return list_incidents(store, kind="anomaly", open_only=open_only)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with open_store(tmp_path / "state") as s:
        yield s


# --------------------------------------------------------------------------- running servers above a cap


def test_cap_fires_once_uses_per_hub_override_and_resolves(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(
        tmp_path / "f", {"a": {}, "b": {"max_running_servers": 5}}, {"max_running_servers": 50}
    )
    assert fleet.hubs["a"].anomalies.max_running_servers == 50  # fleet default
    assert fleet.hubs["b"].anomalies.max_running_servers == 5  # hub override
    assert fleet.hubs["b"].anomalies.max_server_age_hours == 72  # the rest still merged from defaults
    monitor = AnomalyMonitor(store, fleet)
    for hub in ("a", "b"):
        add_sample(store, hub, T0 - timedelta(seconds=30), 7)

    first = monitor.check(T0)
    assert [(r.hub, r.rule) for r in first.opened] == [("b", "max_running_servers")]
    assert first.opened[0].cause == "7 user servers running, above the cap of 5"

    # Still above the cap a minute later, also from a fresh monitor (a restarted daemon): no duplicate.
    add_sample(store, "b", T0 + timedelta(seconds=30), 9)
    assert monitor.check(T0 + timedelta(minutes=1)).opened == []
    assert AnomalyMonitor(store, fleet).check(T0 + timedelta(minutes=1)).opened == []
    assert len(anomalies(store)) == 1

    # No fresh sample (collector or hub down): unknown, so the incident stays open.
    assert monitor.check(T0 + timedelta(minutes=20)).resolved == []
    assert len(anomalies(store, open_only=True)) == 1

    add_sample(store, "b", T0 + timedelta(minutes=21), 4)
    resolved = monitor.check(T0 + timedelta(minutes=21, seconds=30)).resolved
    assert [(r.hub, r.rule) for r in resolved] == [("b", "max_running_servers")]
    (incident,) = anomalies(store)
    assert incident.resolved_at == T0 + timedelta(minutes=21, seconds=30)
    assert incident.kind == "anomaly" and incident.rule == "max_running_servers"


# --------------------------------------------------------------------------- baseline for the hour of week


def test_baseline_is_the_median_of_weekly_medians_for_the_same_hour(tmp_path: Path, store: Store) -> None:
    hour = T0.replace(minute=0)
    week = timedelta(weeks=1)
    # week -1: 2, 2, 3 (median 2); week -2: 4; week -3: an outlier week (100); week -4: no samples.
    for minute, value in ((0, 2), (20, 2), (59, 3)):
        add_sample(store, "a", hour - week + timedelta(minutes=minute), value)
    add_sample(store, "a", hour - 2 * week + timedelta(minutes=10), 4)
    add_sample(store, "a", hour - 3 * week + timedelta(minutes=5), 100)
    add_sample(store, "a", hour - 3 * week + timedelta(minutes=50), 100)
    # Other hours and other hubs do not count.
    add_sample(store, "a", hour - week + timedelta(hours=1), 500)
    add_sample(store, "a", hour - week - timedelta(minutes=1), 500)
    add_sample(store, "other", hour - week, 500)
    with store.session() as session:
        assert running_baseline(session, "a", T0) == 4
        assert running_baseline(session, "a", T0, weeks=1) is None  # one week is not a baseline
        assert running_baseline(session, "a", T0, weeks=2) == 3  # median of 2 and 4
        assert running_baseline(session, "other", T0) is None


@pytest.mark.parametrize(
    ("current", "fires"),
    [(12, False), (13, False), (14, True), (40, True)],  # > 3 x 4 and at least 10 above 4
)
def test_baseline_rule_needs_factor_and_excess(
    tmp_path: Path, store: Store, current: int, fires: bool
) -> None:
    fleet = write_fleet(tmp_path / "f", {"a": {}})
    hour = T0.replace(minute=0)
    for k, value in ((1, 2), (2, 4), (3, 100)):
        add_sample(store, "a", hour - timedelta(weeks=k) + timedelta(minutes=15), value)
    add_sample(store, "a", T0 - timedelta(seconds=10), current)
    cause = evaluate(store, fleet, T0).results[("a", "running_above_baseline")]
    assert bool(cause) is fires
    if fires:
        assert cause.startswith(f"{current} user servers running, usually 4 at this hour of the week")


def test_baseline_override_and_no_history_means_no_alert(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(
        tmp_path / "f", {"a": {}, "b": {"baseline_factor": 1.5, "baseline_min_excess": 2}, "new": {}}
    )
    hour = T0.replace(minute=0)
    for hub in ("a", "b"):
        for k in (1, 2, 3):
            add_sample(store, hub, hour - timedelta(weeks=k) + timedelta(minutes=15), 4)
    for hub in ("a", "b", "new"):
        add_sample(store, hub, T0 - timedelta(seconds=10), 7)
    add_sample(store, "new", hour - timedelta(weeks=1), 0)  # a single week of history
    result = AnomalyMonitor(store, fleet).check(T0)
    assert [(r.hub, r.rule) for r in result.opened] == [("b", "running_above_baseline")]


# --------------------------------------------------------------------------- server age


def test_server_age_names_user_and_age_and_resolves(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(
        tmp_path / "f", {"a": {}, "b": {"max_server_age_hours": 48}}, {"max_server_age_hours": 24}
    )
    add_server(store, "a", "alice", T0 - timedelta(hours=30))
    add_server(store, "a", "bob", T0 - timedelta(hours=2))
    add_server(store, "a", "carol", T0 - timedelta(hours=40), stopped=T0 - timedelta(hours=1))
    add_server(store, "b", "dave", T0 - timedelta(hours=30))  # under b's own 48 h
    monitor = AnomalyMonitor(store, fleet)

    opened = monitor.check(T0).opened
    assert [(r.hub, r.rule) for r in opened] == [("a", "max_server_age")]
    assert opened[0].cause == "server of alice (30.0 h) running longer than 24 h"
    assert monitor.check(T0 + timedelta(minutes=1)).opened == []

    with store.session() as session, session.begin():
        session.execute(update(ServerSession).where(ServerSession.username == "alice").values(stopped_at=T0))
    resolved = monitor.check(T0 + timedelta(minutes=2)).resolved
    assert [(r.hub, r.rule) for r in resolved] == [("a", "max_server_age")]
    assert anomalies(store, open_only=True) == []


def test_server_age_lists_several_servers(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "f", {"a": {"max_server_age_hours": 1}})
    for i in range(7):
        add_server(store, "a", f"u{i}", T0 - timedelta(hours=10 - i))
    cause = evaluate(store, fleet, T0).results[("a", "max_server_age")]
    assert cause == (
        "servers of u0 (10.0 h), u1 (9.0 h), u2 (8.0 h), u3 (7.0 h), u4 (6.0 h) and 2 more "
        "running longer than 1 h"
    )


# --------------------------------------------------------------------------- spawn failure rate


def test_counter_increase_handles_resets() -> None:
    assert counter_increase([]) == 0
    assert counter_increase([5]) == 0
    assert counter_increase([10, 12, 1, 2]) == 2 + 1 + 1  # the hub restarted between 12 and 1


def test_spawn_failure_rate_from_counter_deltas(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(
        tmp_path / "f", {"a": {}, "picky": {"min_spawns": 20}, "lax": {"spawn_failure_rate": 0.6}}
    )
    for hub in fleet.hubs:
        add_sample(store, hub, T0 - timedelta(minutes=61), 0, ok=0, failed=0)  # before the window: ignored
        add_sample(store, hub, T0 - timedelta(minutes=60), 0, ok=10, failed=1)  # the window's base
        add_sample(store, hub, T0 - timedelta(minutes=30), 0, ok=12, failed=3)
        add_sample(store, hub, T0 - timedelta(minutes=20), 0, ok=1, failed=1)  # hub restarted
        add_sample(store, hub, T0 - timedelta(minutes=10), 0)  # no /hub/metrics this time
        add_sample(store, hub, T0 - timedelta(minutes=1), 0, ok=2, failed=2)
    with store.session() as session:
        assert anomaly.spawn_counts(session, "a", T0) == (4, 4)
    monitor = AnomalyMonitor(store, fleet)
    opened = monitor.check(T0).opened
    assert [(r.hub, r.rule) for r in opened] == [("a", "spawn_failure_rate")]
    assert opened[0].cause.startswith("4 of 8 spawns failed in the last hour (50%")

    # An hour later every spawn succeeds: the rule clears.
    add_sample(store, "a", T0 + timedelta(minutes=59), 0, ok=20, failed=2)
    add_sample(store, "a", T0 + timedelta(minutes=119), 0, ok=40, failed=2)
    resolved = monitor.check(T0 + timedelta(minutes=120)).resolved
    assert [(r.hub, r.rule) for r in resolved] == [("a", "spawn_failure_rate")]


# --------------------------------------------------------------------------- restarts


def test_restarts_above_the_hourly_limit(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "f", {"a": {}, "b": {}, "off": {"max_restarts_per_hour": None}})
    for i in range(4):
        store.record_restart("a", reason=f"exit {i}", exit_code=1, at=T0 - timedelta(minutes=50 - 10 * i))
        store.record_restart("off", reason="crash", at=T0 - timedelta(minutes=50 - 10 * i))
    for i in range(3):  # exactly the limit: fine
        store.record_restart("b", reason="crash", at=T0 - timedelta(minutes=30 - i))
    store.record_restart("b", reason="long ago", at=T0 - timedelta(minutes=61))
    monitor = AnomalyMonitor(store, fleet)
    opened = monitor.check(T0).opened
    assert [(r.hub, r.rule) for r in opened] == [("a", "restarts")]
    assert opened[0].cause == "hub restarted 4 times in the last hour (alert above 3); last: exit 3"
    resolved = monitor.check(T0 + timedelta(minutes=45)).resolved
    assert [(r.hub, r.rule) for r in resolved] == [("a", "restarts")]


# --------------------------------------------------------------------------- the monitor itself


class RecordingAlerter:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []

    async def incident_opened(self, incident: IncidentRecord) -> None:
        self.events.append(("opened", incident.hub, incident.rule))

    async def incident_resolved(self, incident: IncidentRecord) -> None:
        self.events.append(("resolved", incident.hub, incident.rule))


def test_one_alert_per_open_and_resolve(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "f", {"a": {"max_running_servers": 2}})
    alerter = RecordingAlerter()
    monitor = AnomalyMonitor(store, fleet, alerter=alerter)

    async def scenario() -> None:
        for minute, running in enumerate((3, 4, 5, 1, 1)):
            at = T0 + timedelta(minutes=minute)
            add_sample(store, "a", at - timedelta(seconds=5), running)
            monitor.check(at)
        await monitor.drain(5)

    asyncio.run(scenario())
    assert alerter.events == [
        ("opened", "a", "max_running_servers"),
        ("resolved", "a", "max_running_servers"),
    ]


def test_removed_hub_and_broken_rule(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubfleet.monitor.incidents import open_incident

    fleet = write_fleet(tmp_path / "f", {"a": {"max_running_servers": 2}})
    open_incident(store, "gone", "anomaly", "old", rule="restarts", at=T0 - timedelta(days=1))

    def broken(ctx: anomaly.Context) -> str | None:
        raise RuntimeError("bug")

    monkeypatch.setitem(anomaly.RULES, "broken", broken)
    add_sample(store, "a", T0 - timedelta(seconds=5), 3)
    result = AnomalyMonitor(store, fleet).check(T0)
    assert [(r.hub, r.rule) for r in result.opened] == [("a", "max_running_servers")]  # others still ran
    assert [(r.hub, r.rule) for r in result.resolved] == [("gone", "restarts")]


def test_run_survives_errors_and_stops(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = write_fleet(tmp_path / "f", {"a": {}})
    monitor = AnomalyMonitor(store, fleet)
    calls: list[int] = []

    def flaky(now: datetime | None = None) -> anomaly.PassResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return anomaly.PassResult()

    monkeypatch.setattr(monitor, "check", flaky)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop, interval=0.01))
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(scenario())
    assert len(calls) >= 3


def test_rules_are_stored_by_name(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "f", {"a": {"max_running_servers": 1, "max_restarts_per_hour": 1}})
    add_sample(store, "a", T0, 2)
    for minute in (1, 2):
        store.record_restart("a", at=T0 - timedelta(minutes=minute))
    AnomalyMonitor(store, fleet).check(T0)
    with store.session() as session:
        from hubfleet.store.models import Incident

        rows = session.execute(select(Incident.kind, Incident.rule).order_by(Incident.rule)).all()
    assert [tuple(r) for r in rows] == [("anomaly", "max_running_servers"), ("anomaly", "restarts")]
