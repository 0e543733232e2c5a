"""The console's read model (hubfleet.console.data) over a real SQLite store, the probe_days roll-up that
record_samples keeps, the uptime windows built on it, the probed hub version and the spawn-seconds counter."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from fleet_helpers import REPO, copy_demo_fleet
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.console.data.charts import CHARTS, Chart, chart
from hubfleet.console.data.details import community_detail, hub_detail, incidents
from hubfleet.console.data.overview import fleet_totals, overview_rows
from hubfleet.console.data.source import ConsoleSource
from hubfleet.monitor.collector import parse_metrics, record_collection
from hubfleet.monitor.incidents import open_incident, resolve_incident
from hubfleet.monitor.prober import probe_hub
from hubfleet.monitor.uptime import ProbeResult, prune_samples, record_samples, uptime
from hubfleet.store.api import Store, open_store
from hubfleet.store.models import HubSample, ProbeDay, ProbeSample, UserDay

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
K8S_FLEET = REPO / "tests" / "fixtures" / "k8s-fleet"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[Store]:
    with open_store(state) as opened:
        yield opened


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> FleetConfig:
    return load_fleet(copy_demo_fleet(tmp_path_factory.mktemp("demo") / "fleet"))


def probe(
    hub: str, at: datetime, ok: bool, latency: float | None = 10.0, version: str | None = None
) -> ProbeResult:
    status = 200 if ok else 503
    return ProbeResult(
        hub, "http://x", at, ok, status, status, latency, "" if ok else "HTTP 503", None, version
    )


def add(store: Store, *rows: Any) -> None:
    with store.session() as session, session.begin():
        session.add_all(rows)


def probe_day(
    hub: str, day: date, probes: int, ok: int, total: float = 0.0, slowest: float | None = None
) -> ProbeDay:
    return ProbeDay(hub=hub, day=day, probes=probes, ok=ok, latency_ms_sum=total, latency_ms_max=slowest)


def hub_sample(
    hub: str, at: datetime, running: int = 0, counters: tuple[Any, Any, Any] | None = None
) -> HubSample:
    ok, failed, seconds = counters or (None, None, None)
    return HubSample(
        hub=hub,
        at=at,
        running_servers=running,
        spawn_success_total=ok,
        spawn_failure_total=failed,
        spawn_seconds_total=seconds,
    )


def user_day(hub: str, username: str, day: date, auth: str = "native") -> UserDay:
    at = datetime.combine(day, datetime.min.time(), UTC)
    return UserDay(
        hub=hub, username=username, day=day, identity=f"{auth}:{username}", first_seen=at, last_seen=at
    )


def write_daemon(state: Path, hubs: dict[str, dict[str, Any]], pid: int | None = None) -> Path:
    state.mkdir(parents=True, exist_ok=True)
    path = state / "daemon.json"
    path.write_text(json.dumps({"pid": pid or os.getpid(), "hubs": hubs}))
    return path


def seed_overview(store: Store) -> None:
    """uni-a: probes, hub samples, users, incidents and deploys; uni-a-staging a little; hackweek nothing."""
    record_samples(
        store,
        [
            probe("uni-a", NOW - timedelta(minutes=10), True, 20.0, "6.1.1"),
            probe("uni-a", NOW - timedelta(minutes=5), False, 5.0),
            probe("uni-a-staging", NOW - timedelta(minutes=1), True, 30.0, "5.3.0"),
        ],
    )
    add(
        store,
        probe_day("uni-a", TODAY - timedelta(days=29), 8, 6, 60.0, 12.0),
        probe_day("uni-a", TODAY - timedelta(days=30), 100, 0),  # outside the 30 days
        hub_sample("uni-a", NOW - timedelta(minutes=2), 3),
        hub_sample("uni-a", NOW - timedelta(minutes=1), 5),
        user_day("uni-a", "alice", TODAY),
        user_day("uni-a", "alice", TODAY - timedelta(days=1)),
        user_day("uni-a", "bob", TODAY - timedelta(days=3)),
        user_day("uni-a", "carol", TODAY - timedelta(days=20)),
        user_day("uni-a", "dave", TODAY - timedelta(days=30)),  # outside MAU
        user_day("uni-a-staging", "alice", TODAY),  # the same person (identity) as on uni-a
        user_day("uni-a-staging", "erin", TODAY - timedelta(days=8)),
    )
    add(store, hub_sample("uni-a", NOW - timedelta(minutes=30), 9))  # a newer row, an older sample
    open_incident(store, "uni-a", "down", "HTTP 503", at=NOW - timedelta(minutes=5))
    open_incident(store, "uni-a", "anomaly", "spike", rule="max_running_servers", at=NOW - timedelta(days=3))
    resolve_incident(store, "uni-a", "anomaly", rule="max_running_servers", at=NOW - timedelta(days=2))
    open_incident(store, "uni-a-staging", "down", "refused", at=NOW - timedelta(days=4))
    resolve_incident(store, "uni-a-staging", "down", at=NOW - timedelta(days=4) + timedelta(minutes=2))
    for days_ago, result, actor, message in ((2, "ok", "ada", "first"), (1, "failed", "bob", "second")):
        at = NOW - timedelta(days=days_ago)
        store.record_deployment(
            "uni-a", f"hash{days_ago}", result, started_at=at, finished_at=at + timedelta(seconds=30),
            actor=actor, message=message, community="uni-a", stage="prod",
        )  # fmt: skip
    older = NOW - timedelta(days=3)  # recorded last, started first: not the newest
    store.record_deployment("uni-a", "hash3", "ok", started_at=older, finished_at=older, actor="cy")


# --------------------------------------------------------------------------- roll-up and uptime


def test_record_samples_upserts_probe_days_and_stores_the_version(store: Store) -> None:
    late = datetime(2026, 6, 29, 23, 59, 30, tzinfo=UTC)
    record_samples(
        store,
        [
            probe("a", late, True, 40.0, "6.1.1"),
            probe("a", late + timedelta(seconds=30), True, 10.0, "6.1.1"),  # the next UTC day
            probe("a", late + timedelta(seconds=60), False, 3.0),  # failed: not in the latency sums
            probe("b", late, False, None),
        ],
    )
    record_samples(store, [probe("a", NOW, True, 25.0, "6.1.2"), probe("a", NOW, True, 5.0)])
    with store.session() as session:
        days = {
            (d.hub, d.day): (d.probes, d.ok, d.latency_ms_sum, d.latency_ms_max)
            for d in session.scalars(select(ProbeDay))
        }
        versions = [s.version for s in session.scalars(select(ProbeSample).order_by(ProbeSample.id))]
    assert days == {
        ("a", date(2026, 6, 29)): (1, 1, 40.0, 40.0),
        ("a", TODAY): (4, 3, 40.0, 25.0),
        ("b", date(2026, 6, 29)): (1, 0, 0.0, None),
    }
    assert versions == ["6.1.1", "6.1.1", None, None, "6.1.2", None]
    assert record_samples(store, []) == 0


def test_uptime_7d_and_30d_are_whole_days_from_probe_days_plus_today(store: Store) -> None:
    add(
        store,
        probe_day("a", TODAY - timedelta(days=6), 10, 5),  # in 7d
        probe_day("a", TODAY - timedelta(days=7), 10, 0),  # in 30d only
        probe_day("a", TODAY - timedelta(days=29), 20, 20),  # in 30d
        probe_day("a", TODAY - timedelta(days=30), 50, 0),  # in no window
        probe_day("b", TODAY - timedelta(days=2), 4, 3),
    )
    record_samples(
        store,
        [
            probe("a", NOW - timedelta(hours=13), True),  # yesterday: in 24h; its day row too
            probe("a", NOW - timedelta(hours=2), True),
            probe("a", NOW - timedelta(hours=1), False),
            probe("a", NOW + timedelta(minutes=5), False),  # after `now`: in no window
        ],
    )
    # 24h: 2 of 3 raw samples; 7d: today (1/2) + 6 days before (5/10 and yesterday's 1/1);
    # 30d: those + 0/10 + 20/20
    assert uptime(store, "a", NOW) == {"24h": 66.667, "7d": 53.846, "30d": 62.791}
    assert uptime(store, "b", NOW) == {"24h": None, "7d": 75.0, "30d": 75.0}
    assert uptime(store, "c", NOW) == {"24h": None, "7d": None, "30d": None}


def test_prune_keeps_probe_days_for_400_days(store: Store) -> None:
    record_samples(store, [probe("a", NOW - timedelta(days=40), True), probe("a", NOW, True)])
    add(
        store,
        probe_day("a", TODAY - timedelta(days=399), 1, 1),
        probe_day("a", TODAY - timedelta(days=401), 1, 1),
    )
    assert prune_samples(store, NOW) == 1
    with store.session() as session:
        kept = sorted(d.day for d in session.scalars(select(ProbeDay)))
        samples = session.scalars(select(ProbeSample)).all()
    assert kept == [TODAY - timedelta(days=399), TODAY - timedelta(days=40), TODAY]
    assert [s.at for s in samples] == [NOW]


# --------------------------------------------------------------------------- hub version, spawn seconds


def _api_answer(body: bytes, content_type: str = "application/json") -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        payload = body if request.url.path == "/hub/api/" else b"{}"
        return httpx.Response(200, content=payload, headers={"Content-Type": content_type})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("body", "version"),
    [
        (b'{"version": "6.1.1"}', "6.1.1"),
        (b"<html>a proxy's page</html>", None),
        (b"\xff\xfe not utf-8", None),
        (b'["6.1.1"]', None),
        (b'{"version": 6}', None),
        (b'{"version": "' + b"9" * 60 + b'"}', "9" * 40),
    ],
)
def test_probe_reads_the_version_from_the_api_body_robustly(body: bytes, version: str | None) -> None:
    async def run() -> ProbeResult:
        async with httpx.AsyncClient(transport=_api_answer(body)) as client:
            return await probe_hub(client, "http://hub.test", 5, hub="h")

    result = asyncio.run(run())
    assert result.ok and result.version == version
    assert result.to_dict()["version"] == version


def test_spawn_seconds_from_metrics_are_recorded(store: Store) -> None:
    text = (
        "# TYPE jupyterhub_server_spawn_duration_seconds histogram\n"
        'jupyterhub_server_spawn_duration_seconds_count{reason="",status="success"} 3.0\n'
        'jupyterhub_server_spawn_duration_seconds_sum{reason="",status="success"} 7.5\n'
        'jupyterhub_server_spawn_duration_seconds_count{reason="throttled",status="failure"} 1.0\n'
        'jupyterhub_server_spawn_duration_seconds_sum{reason="throttled",status="failure"} 0.25\n'
    )
    metrics = parse_metrics(text)
    assert (metrics.spawn_success_total, metrics.spawn_failure_total, metrics.spawn_seconds_total) == (
        3,
        1,
        7.5,
    )
    with store.session() as session, session.begin():
        record_collection(session, "h", "dummy", [], now=NOW, since=NOW, metrics=metrics)
    with store.session() as session:
        [sample] = session.scalars(select(HubSample)).all()
    assert (sample.spawn_success_total, sample.spawn_seconds_total) == (3.0, 7.5)


# --------------------------------------------------------------------------- overview


def test_overview_rows_of_local_hubs(demo: FleetConfig, store: Store, state: Path) -> None:
    seed_overview(store)
    write_daemon(
        state,
        {
            "uni-a": {"state": "running", "url": "http://127.0.0.1:9999", "pid": 1},
            "uni-a-staging": {"state": "failed", "url": None},
            "hackweek": {"state": "starting"},
        },
    )
    source = ConsoleSource(store, demo, state)
    order = ["uni-a", "hackweek-staging", "uni-a-staging", "hackweek"]
    rows = overview_rows(source, [demo.hubs[n] for n in order], NOW)
    assert [row["name"] for row in rows] == order
    by_name = {row["name"]: row for row in rows}
    assert by_name["uni-a"] == {
        "name": "uni-a",
        "display_name": "University A",
        "community": "uni-a",
        "cluster": "local",
        "cluster_kind": "local",
        "stage": "prod",
        "url": "http://127.0.0.1:9999",
        "state": "running",
        "version": "6.1.1",  # the newest probe failed: the newest known version
        "uptime_30d": 70.0,  # today 1/2 + 6/8 on the 30th day back; not the 31st
        "running_servers": 5,
        "dau": 1,
        "wau": 2,
        "mau": 3,
        "disk_bytes": None,  # never measured
        "backup_state": "never",
        "last_backup_at": None,
        "open_incidents": 1,
        "last_deploy": {"at": (NOW - timedelta(days=1)).isoformat(), "result": "failed", "actor": "bob",
                        "message": "second"},
        "last_probe_at": (NOW - timedelta(minutes=5)).isoformat(),
        "last_probe_ok": False,
    }  # fmt: skip
    staging = by_name["uni-a-staging"]
    assert staging["url"] == f"http://127.0.0.1:{demo.hubs['uni-a-staging'].port}"
    assert (staging["state"], staging["version"], staging["uptime_30d"]) == ("failed", "5.3.0", 100.0)
    assert (staging["dau"], staging["wau"], staging["mau"], staging["open_incidents"]) == (1, 1, 2, 0)
    assert (staging["running_servers"], staging["last_deploy"], staging["last_probe_ok"]) == (
        None,
        None,
        True,
    )
    quiet = by_name["hackweek-staging"]
    assert (quiet["state"], quiet["display_name"], quiet["url"]) == (
        "stopped",
        "Ocean Hackweek (staging)",
        f"http://127.0.0.1:{demo.hubs['hackweek-staging'].port}",
    )
    assert [
        quiet[k] for k in ("version", "uptime_30d", "running_servers", "last_probe_at", "last_probe_ok")
    ] == [None] * 5
    assert (quiet["dau"], quiet["wau"], quiet["mau"], quiet["open_incidents"]) == (0, 0, 0, 0)
    assert by_name["hackweek"]["state"] == "starting"
    json.dumps(rows)  # JSON-safe

    assert fleet_totals(rows) == {
        "hubs": 4,
        "running": 1,
        "running_servers": 5,
        "open_incidents": 1,
        "by_state": {"failed": 1, "running": 1, "starting": 1, "stopped": 1},
    }
    assert overview_rows(source, [], NOW) == []


def count_statements(store: Store) -> list[str]:
    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_overview_query_count_does_not_grow_with_hubs(demo: FleetConfig, store: Store) -> None:
    seed_overview(store)
    source = ConsoleSource(store, demo, None)
    overview_rows(source, [demo.hubs["uni-a"]], NOW)  # the active-user sets are built once (two statements)
    statements = count_statements(store)
    overview_rows(source, [demo.hubs["uni-a"]], NOW)
    one = len(statements)
    statements.clear()
    overview_rows(source, list(demo.hubs.values()), NOW)
    assert len(statements) == one <= 8


def test_kubernetes_hub_state_comes_from_the_newest_probe(store: Store) -> None:
    fleet = load_fleet(K8S_FLEET)
    record_samples(
        store,
        [
            probe("astro", NOW - timedelta(minutes=2), False),
            probe("astro", NOW - timedelta(minutes=1), True, version="5.2.1"),
            probe("bio", NOW - timedelta(minutes=2), True),
            probe("bio", NOW - timedelta(minutes=1), False),
        ],
    )
    source = ConsoleSource(store, fleet, None)
    rows = {row["name"]: row for row in overview_rows(source, list(fleet.hubs.values()), NOW)}
    assert rows["astro"]["state"] == "up" and rows["astro"]["version"] == "5.2.1"
    assert rows["bio"]["state"] == "down"
    assert {row["state"] for name, row in rows.items() if name not in ("astro", "bio")} == {"unknown"}
    assert (rows["astro"]["url"], rows["astro"]["cluster"], rows["astro"]["cluster_kind"]) == (
        "https://astro.hubs.example.org",
        "eks",
        "kubernetes",
    )
    assert fleet_totals(list(rows.values()))["by_state"] == {"down": 1, "unknown": 7, "up": 1}
    assert fleet_totals(list(rows.values()))["running"] == 1


def test_hub_states_are_cached_by_mtime_and_need_a_live_daemon(
    demo: FleetConfig, store: Store, state: Path
) -> None:
    source = ConsoleSource(store, demo, state)
    assert source.hub_states() == {}  # no daemon.json
    path = write_daemon(state, {"uni-a": {"state": "running"}})
    assert source.hub_states() == {"uni-a": {"state": "running"}}
    stamp = path.stat().st_mtime_ns
    write_daemon(state, {"uni-a": {"state": "failed"}})
    os.utime(path, ns=(stamp, stamp))
    assert source.hub_states() == {"uni-a": {"state": "running"}}  # same mtime: not read again
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert source.hub_states() == {"uni-a": {"state": "failed"}}
    write_daemon(state, {"uni-a": {"state": "running"}}, pid=2**31 - 2)  # no such process
    assert source.hub_states() == {}
    assert ConsoleSource(store, demo, None).hub_states() == {}


def test_fleet_may_be_a_callable_for_reloads(demo: FleetConfig, store: Store) -> None:
    current = [demo]
    source = ConsoleSource(store, lambda: current[0], None)
    assert source.fleet is demo
    other = load_fleet(K8S_FLEET)
    current[0] = other
    assert source.fleet is other and source.store is store


# --------------------------------------------------------------------------- incidents, community, hub


def test_incidents_filters_and_order(demo: FleetConfig, store: Store) -> None:
    def make(
        hub: str, kind: str, started: timedelta, resolved: timedelta | None, rule: str | None = None
    ) -> int:
        record, _ = open_incident(store, hub, kind, f"{kind} of {hub}", rule, at=NOW - started)
        if resolved is not None:
            resolve_incident(store, hub, kind, rule, at=NOW - resolved)
        return record.id

    old = make("uni-a", "down", timedelta(days=10), timedelta(days=10) - timedelta(hours=1))
    spike = make("uni-a", "anomaly", timedelta(days=2), None, "max_running_servers")
    cert = make("hackweek", "certificate", timedelta(days=5), timedelta(days=1))
    gone = make("removed-hub", "down", timedelta(hours=1), None)
    source = ConsoleSource(store, demo, None)
    hubs = [*demo.hubs, "removed-hub"]

    def ids(**filters: Any) -> list[int]:
        return [i["id"] for i in incidents(source, filters.pop("hubs", hubs), now=NOW, **filters)]

    assert ids() == [gone, spike, cert, old]
    assert ids(state="open") == [gone, spike]
    assert ids(state="resolved") == [cert, old]
    assert ids(kind="down") == [gone, old]
    assert ids(since=NOW - timedelta(days=3)) == [gone, spike, cert]  # cert resolved after `since`
    assert ids(limit=2) == [gone, spike]
    assert ids(hubs=["uni-a"]) == [spike, old]
    assert ids(hubs=[]) == []
    listed = {i["id"]: i for i in incidents(source, hubs, now=NOW)}
    assert listed[spike] == {
        "id": spike,
        "hub": "uni-a",
        "community": "uni-a",
        "kind": "anomaly",
        "rule": "max_running_servers",
        "started_at": (NOW - timedelta(days=2)).isoformat(),
        "resolved_at": None,
        "open": True,
        "duration_seconds": 172800.0,
        "cause": "anomaly of uni-a",
    }
    assert (listed[old]["duration_seconds"], listed[old]["open"]) == (3600.0, False)
    assert listed[gone]["community"] is None
    with pytest.raises(ValueError, match="state"):
        incidents(source, hubs, state="closed")


def test_community_detail(demo: FleetConfig, store: Store) -> None:
    seed_overview(store)
    detail = community_detail(ConsoleSource(store, demo, None), "uni-a", NOW)
    assert (detail["name"], detail["display_name"]) == ("uni-a", "University A, Department of Physics")
    assert detail["contacts"] == [
        {"name": "Grace Teacher", "email": "grace@uni-a.example", "role": "teacher"}
    ]
    assert [row["name"] for row in detail["hubs"]] == ["uni-a", "uni-a-staging"]
    # alice is active on both hubs today: one person; erin 8 days ago
    assert detail["active"] == {"dau": 1, "wau": 2, "mau": 4}
    assert [(i["hub"], i["kind"]) for i in detail["incidents"]] == [
        ("uni-a", "down"),
        ("uni-a", "anomaly"),
        ("uni-a-staging", "down"),
    ]
    with pytest.raises(KeyError):
        community_detail(ConsoleSource(store, demo, None), "nope", NOW)


def test_hub_detail(demo: FleetConfig, store: Store) -> None:
    seed_overview(store)
    for minute in range(22):
        at = NOW - timedelta(hours=5) + timedelta(minutes=minute)
        store.record_check({"ok": minute != 21, "failed_step": None if minute != 21 else "spawn",
                            "total_seconds": 4.0, "steps": [{"name": "login", "ok": True, "seconds": 0.5}]},
                           hub="uni-a", at=at)  # fmt: skip
        store.record_restart("uni-a", reason=f"exit {minute}", exit_code=1, attempt=minute + 1, at=at)
    detail = hub_detail(ConsoleSource(store, demo, None), "uni-a", NOW)
    assert detail["name"] == "uni-a" and detail["state"] == "stopped" and detail["mau"] == 3
    assert detail["uptime"] == {"24h": 50.0, "7d": 50.0, "30d": 70.0}
    assert [d["message"] for d in detail["deploys"]] == ["second", "first", ""]
    assert detail["deploys"][0] == {
        "id": detail["deploys"][0]["id"],
        "started_at": (NOW - timedelta(days=1)).isoformat(),
        "finished_at": (NOW - timedelta(days=1) + timedelta(seconds=30)).isoformat(),
        "result": "failed",
        "actor": "bob",
        "message": "second",
        "stage": "prod",
        "config_hash": "hash1",
        "reasons": None,  # the audit trail (recorded by `deploy`; none given here)
        "commit": None,
    }
    assert len(detail["checks"]) == 20
    newest = NOW - timedelta(hours=5) + timedelta(minutes=21)
    assert detail["checks"][0] == {
        "id": detail["checks"][0]["id"],
        "at": newest.isoformat(),
        "ok": False,
        "failed_step": "spawn",
        "total_seconds": 4.0,
        "steps": [{"name": "login", "ok": True, "seconds": 0.5, "detail": ""}],
    }
    assert len(detail["restarts"]) == 20
    assert detail["restarts"][0] == {
        "at": newest.isoformat(),
        "reason": "exit 21",
        "exit_code": 1,
        "attempt": 22,
    }
    assert [(i["kind"], i["open"]) for i in detail["incidents"]] == [("down", True), ("anomaly", False)]
    assert detail["auth_type"] == "native"
    assert detail["contacts"] == [
        {"name": "Grace Teacher", "email": "grace@uni-a.example", "role": "teacher"}
    ]
    json.dumps(detail)
    with pytest.raises(KeyError):
        hub_detail(ConsoleSource(store, demo, None), "nope", NOW)


def test_hub_detail_lists_the_newest_20_limit_events_of_the_hub_in_one_query(
    demo: FleetConfig, store: Store
) -> None:
    start = NOW - timedelta(hours=1)
    for minute in range(22):
        kind = "memory" if minute % 2 else "pids"
        detail = f"{kind} limit reached: {minute + 1} refused"
        store.record_limit_event("uni-a", username=f"user{minute}", kind=kind, detail=detail,
                                 count=minute + 1, at=start + timedelta(minutes=minute))  # fmt: skip
    store.record_limit_event("uni-a-staging", username="elsewhere", kind="memory", detail="x", at=NOW)
    source = ConsoleSource(store, demo, None)
    statements = count_statements(store)
    detail = hub_detail(source, "uni-a", NOW)
    assert len([sql for sql in statements if "FROM limit_events" in sql]) == 1
    events = detail["limit_events"]
    assert [e["username"] for e in events] == [f"user{minute}" for minute in range(21, 1, -1)]
    assert events[0] == {
        "username": "user21",
        "kind": "memory",
        "at": (start + timedelta(minutes=21)).isoformat(),
        "count": 22,
        "detail": "memory limit reached: 22 refused",
    }
    assert hub_detail(source, "hackweek", NOW)["limit_events"] == []
    json.dumps(detail)


# --------------------------------------------------------------------------- charts


def test_active_users_chart(demo: FleetConfig, store: Store) -> None:
    seed_overview(store)
    source = ConsoleSource(store, demo, None)
    one = chart(source, "active-users", ["uni-a"], days=3, now=NOW)
    assert (one.name, one.title, one.columns) == (
        "active-users",
        "Active users",
        ["day", "dau", "wau", "mau"],
    )
    assert one.rows == [["2026-06-28", 0, 1, 3], ["2026-06-29", 1, 2, 4], ["2026-06-30", 1, 2, 3]]
    both = chart(source, "active-users", ["uni-a", "uni-a-staging"], days=1, now=NOW)
    assert both.rows == [["2026-06-30", 1, 2, 4]]  # alice on both hubs is one person
    assert chart(source, "active-users", [], days=2, now=NOW).rows == [
        ["2026-06-29", 0, 0, 0],
        ["2026-06-30", 0, 0, 0],
    ]


def test_running_servers_chart_buckets_take_the_max(demo: FleetConfig, store: Store) -> None:
    seed_overview(store)  # uni-a: 9 at 11:30, 3 at 11:58 and 5 at 11:59
    add(
        store,
        hub_sample("uni-a-staging", NOW - timedelta(minutes=10), 2),
        hub_sample("uni-a-staging", NOW - timedelta(hours=25), 7),  # before the window
        hub_sample("uni-a-staging", NOW + timedelta(minutes=1), 8),  # after `now`
    )
    found = chart(ConsoleSource(store, demo, None), "running-servers", ["uni-a", "uni-a-staging"], 1, NOW)
    assert found.columns == ["at", "uni-a", "uni-a-staging"]
    assert len(found.rows) == 24  # hourly buckets over one day (the roll-ups are hourly)
    assert found.rows[0] == ["2026-06-29T13:00:00+00:00", None, None]
    assert found.rows[-3:] == [
        ["2026-06-30T10:00:00+00:00", None, None],
        ["2026-06-30T11:00:00+00:00", 9, 2],
        ["2026-06-30T12:00:00+00:00", None, None],  # the sample after `now` is not counted
    ]
    month = chart(ConsoleSource(store, demo, None), "running-servers", ["uni-a"], 30, NOW)
    assert len(month.rows) == 720 and month.rows[-1] == ["2026-06-30T12:00:00+00:00", None]  # hourly
    assert month.rows[-2] == ["2026-06-30T11:00:00+00:00", 9]


def test_spawn_duration_chart_from_counter_deltas_with_a_reset(demo: FleetConfig, store: Store) -> None:
    def at(day: int, hour: int, minute: int) -> datetime:
        return datetime(2026, 6, day, hour, minute, tzinfo=UTC)

    add(
        store,
        hub_sample("hackweek", at(29, 11, 30), counters=(0, 0, 0.0)),  # before the window: the base
        hub_sample("hackweek", at(29, 12, 10), counters=(1, 0, 5.0)),
        hub_sample("hackweek", at(30, 9, 0), counters=(1, 0, 5.0)),
        hub_sample("hackweek", at(30, 9, 30), counters=(3, 0, 15.0)),
        hub_sample("hackweek", at(30, 10, 10), counters=(4, 1, 19.0)),
        hub_sample("hackweek", at(30, 10, 40), counters=(2, 0, 6.0)),  # the hub restarted: counters from 0
        hub_sample("hackweek", at(30, 11, 20), counters=(2, 0, 6.0)),
        hub_sample("hackweek", at(30, 11, 40)),  # no /hub/metrics this time
        hub_sample("uni-a-staging", at(30, 9, 5), counters=(0, 0, 0.0)),
        hub_sample("uni-a-staging", at(30, 9, 35), counters=(1, 0, 3.0)),
        hub_sample("hackweek-staging", at(30, 9, 0), counters=(0, 0, None)),  # a hub without `_sum`
        hub_sample("hackweek-staging", at(30, 9, 20), counters=(2, 0, None)),
    )
    source = ConsoleSource(store, demo, None)
    found = chart(source, "spawn-duration", ["hackweek", "uni-a-staging"], days=1, now=NOW)
    assert found.columns == ["at", "mean_spawn_seconds", "spawns", "failures"]
    assert found.rows == [
        ["2026-06-29T12:00:00+00:00", 5.0, 1, 0],
        ["2026-06-30T09:00:00+00:00", 4.333, 3, 0],  # (10 + 3) s over 3 successful spawns
        ["2026-06-30T10:00:00+00:00", 3.333, 4, 1],  # 1 + 2 after the reset (6 s), 1 failure
    ]
    untimed = chart(source, "spawn-duration", ["hackweek-staging"], days=1, now=NOW)
    assert untimed.rows == [["2026-06-30T09:00:00+00:00", None, 2, 0]]


def test_probe_latency_and_uptime_charts_from_probe_days(demo: FleetConfig, store: Store) -> None:
    seed_overview(store)  # today: uni-a 2 probes, 1 ok at 20 ms; uni-a-staging 1 ok at 30 ms
    yesterday = TODAY - timedelta(days=1)
    add(
        store,
        probe_day("uni-a", yesterday, 10, 4, 40.0, 15.0),
        probe_day("uni-a-staging", yesterday, 10, 6, 120.0, 50.0),
        probe_day("hackweek", yesterday, 10, 0),  # not asked for
    )
    source = ConsoleSource(store, demo, None)
    hubs = ["uni-a", "uni-a-staging"]
    latency = chart(source, "probe-latency", hubs, days=3, now=NOW)
    assert latency.columns == ["day", "mean_latency_ms", "max_latency_ms"]
    # weighted by ok probes: (40 + 120) / (4 + 6) yesterday, (20 + 30) / 2 today
    assert latency.rows == [
        ["2026-06-28", None, None],
        ["2026-06-29", 16.0, 50.0],
        ["2026-06-30", 25.0, 30.0],
    ]
    up = chart(source, "uptime", hubs, days=3, now=NOW)
    assert (up.columns, up.y_title) == (["day", "uptime_percent"], "%")
    assert up.rows == [["2026-06-28", None], ["2026-06-29", 50.0], ["2026-06-30", 66.667]]


def test_chart_names_days_json_and_csv(demo: FleetConfig, store: Store) -> None:
    seed_overview(store)
    source = ConsoleSource(store, demo, None)
    assert set(CHARTS) == {"active-users", "running-servers", "spawn-duration", "probe-latency", "uptime"}
    with pytest.raises(KeyError):
        chart(source, "nope", ["uni-a"], now=NOW)
    assert len(chart(source, "uptime", ["uni-a"], days=0, now=NOW).rows) == 1
    assert len(chart(source, "uptime", ["uni-a"], days=10_000, now=NOW).rows) == 400
    for name in CHARTS:
        found = chart(source, name, ["uni-a", "uni-a-staging"], days=2, now=NOW)
        data = found.to_json()
        assert data == json.loads(json.dumps(data))
        assert data == {"name": name, "title": CHARTS[name], "y_title": found.y_title,
                        "columns": found.columns, "rows": found.rows}  # fmt: skip
        text = found.to_csv()
        assert text.endswith("\r\n") and text.count("\r\n") == len(found.rows) + 1
        parsed = list(csv.reader(io.StringIO(text, newline="")))
        assert parsed[0] == found.columns
        assert parsed[1:] == [["" if v is None else str(v) for v in row] for row in found.rows]
    odd = Chart("uptime", "Uptime", "%", ["day", 'a "quoted", name'], [["2026-06-30", None], ["x\ny", 1.5]])
    assert list(csv.reader(io.StringIO(odd.to_csv(), newline=""))) == [
        ["day", 'a "quoted", name'],
        ["2026-06-30", ""],
        ["x\ny", "1.5"],
    ]
