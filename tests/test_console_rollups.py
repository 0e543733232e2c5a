"""The console at fleet scale: hourly roll-ups of hub samples (hubfleet.store.metric_rollups) give the same
running-servers and spawn charts as raw samples; migration 0021 back-fills them; the overview of a few
hundred generated hubs lists the hubs needing attention first, a page at a time, and shows a community
leader nothing of other communities.

Real SQLite stores, the real ASGI app through starlette's TestClient (httpx); no hub runs: pages and charts
read the store, as they do in the daemon.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.console import accounts
from hubfleet.console.app import create_app
from hubfleet.console.data.charts import chart
from hubfleet.console.data.source import ConsoleSource
from hubfleet.console.pages import PAGE_SIZE
from hubfleet.console.web import SESSION_COOKIE
from hubfleet.store import db as store_db
from hubfleet.store import metric_rollups
from hubfleet.store.api import Store, open_store
from hubfleet.store.metric_rollups import HubSampleHour, RollupMark
from hubfleet.store.models import HubSample, Incident, ProbeSample

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its TestClient; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NOW = datetime(2026, 6, 30, 12, 20, tzinfo=UTC)
HUBS = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state") as opened:
        yield opened


def generated_samples(hubs: list[str], start: datetime, end: datetime, seed: int) -> list[dict[str, Any]]:
    """Samples every 5 minutes with what the collector meets: spawns, failures, restarts (counters from 0),
    hubs without `_sum` (seconds None), samples without /hub/metrics (no counters), gaps of less and of
    more than an hour. Seconds are multiples of 1/4, so that every sum is exact whatever its order."""
    rnd = random.Random(seed)
    rows = []
    for index, hub in enumerate(hubs):
        ok = failed = 0
        seconds = 0.0
        at = start + timedelta(seconds=rnd.randrange(300))
        while at < end:
            if rnd.random() < 0.01:  # collector or hub down for 20 minutes to 3 hours
                at += timedelta(minutes=rnd.randrange(20, 180))
            if rnd.random() < 0.005:  # the hub restarted: its counters start again
                ok, failed, seconds = 0, 0, 0.0
            if rnd.random() < 0.3:
                spawns = rnd.randrange(1, 4)
                ok += spawns
                seconds += spawns * rnd.randrange(4, 40) / 4
            if rnd.random() < 0.03:
                failed += 1
            counters = rnd.random() >= 0.02  # now and then no /hub/metrics
            rows.append(
                {
                    "hub": hub,
                    "at": at,
                    "running_servers": rnd.randrange(0, 30),
                    "spawn_success_total": float(ok) if counters else None,
                    "spawn_failure_total": float(failed) if counters else None,
                    "spawn_seconds_total": seconds if counters and index != 2 else None,  # hub c: no _sum
                }
            )
            at += timedelta(minutes=5, seconds=rnd.randrange(-20, 20))
    return rows


def add_samples(store: Store, rows: list[dict[str, Any]]) -> None:
    if rows:
        with store.session() as session, session.begin():
            session.execute(insert(HubSample), rows)


def assert_charts_equal_raw(source: ConsoleSource, hubs: list[str], now: datetime, days: list[int]) -> None:
    for name in ("running-servers", "spawn-duration"):
        for k in days:
            rolled = chart(source, name, hubs, k, now)
            raw = chart(source, name, hubs, k, now, rollups=False)
            assert rolled.rows == raw.rows, f"{name} over {k} days at {now}"
            assert rolled.columns == raw.columns


def rollup_state(store: Store) -> tuple[int, int | None]:
    """(roll-up rows, the mark: the highest sample id folded in)."""
    with store.session() as session:
        rows = session.scalar(select(func.count()).select_from(HubSampleHour))
        mark = session.scalar(select(RollupMark.max_id).where(RollupMark.name == metric_rollups.MARK))
    return int(rows or 0), mark


def newest_id(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.max(HubSample.id))) or 0)


def stored_rollups(store: Store) -> dict[tuple[str, int], metric_rollups.HourFigures]:
    """The roll-ups of the hubs; checks on the way that the FLEET rows sum them per hour."""
    with store.session() as session:
        found = {
            (r.hub, r.hour): metric_rollups.HourFigures(*(getattr(r, name) for name in metric_rollups.FIELDS))
            for r in session.scalars(select(HubSampleHour))
        }
    hubs = {key: f for key, f in found.items() if key[0] != metric_rollups.FLEET}
    fleet = {hour: f for (hub, hour), f in found.items() if hub == metric_rollups.FLEET}
    sums: dict[int, list[float]] = {}
    for (_, hour), f in hubs.items():
        row = sums.setdefault(hour, [0.0] * 5)
        for i, value in enumerate((f.samples, *(getattr(f, n) for n in metric_rollups.FIELDS[2:]))):
            row[i] += value or 0.0
    got = {
        hour: [f.samples, *((getattr(f, n) or 0.0) for n in metric_rollups.FIELDS[2:])]
        for hour, f in fleet.items()
    }
    assert {h: v for h, v in got.items() if any(v)} == {h: v for h, v in sums.items() if any(v)}
    with store.session() as session:
        days = {(r.hub, r.day): r.running_max for r in session.scalars(select(metric_rollups.HubSampleDay))}
    peaks: dict[tuple[str, int], int] = {}
    for (hub, hour), f in hubs.items():
        if f.running_max is not None:
            peaks[(hub, hour // 24)] = max(peaks.get((hub, hour // 24), f.running_max), f.running_max)
    assert days == peaks
    return hubs


def one_pass(store: Store) -> dict[tuple[str, int], metric_rollups.HourFigures]:
    """What the SQL computes from every raw sample at once."""
    with store.engine.connect() as conn:
        return metric_rollups.hour_figures(conn, datetime(2000, 1, 1, tzinfo=UTC))


def test_rolled_up_charts_equal_the_raw_computation(demo_like: FleetConfig, store: Store) -> None:
    add_samples(store, generated_samples(HUBS, NOW - timedelta(days=4), NOW, seed=21))
    source = ConsoleSource(store, demo_like, None)
    assert rollup_state(store) == (0, None)  # nothing rolled up before a chart asks

    assert_charts_equal_raw(source, HUBS, NOW, [1, 3, 7])
    rows, mark = rollup_state(store)
    assert rows > 0 and mark == newest_id(store)  # the first chart folded every sample in, in one pass
    spawns = chart(source, "spawn-duration", HUBS, 3, NOW)
    assert spawns.rows and all(r[2] >= r[3] >= 0 for r in spawns.rows)
    assert any(r[1] is None for r in chart(source, "spawn-duration", ["c"], 3, NOW).rows)  # no _sum on c
    # a subset of the hubs, and a leader's single hub, read the same roll-ups
    assert_charts_equal_raw(source, ["b", "e"], NOW, [1, 2])
    assert_charts_equal_raw(source, ["f"], NOW, [3])
    assert_charts_equal_raw(source, ["a", "b", "c", "e", "f"], NOW, [2])  # the fleet rows less hub d
    assert_charts_equal_raw(source, [*HUBS, "gone"], NOW, [2])  # a hub without samples
    assert len(chart(source, "running-servers", HUBS, 300, NOW).rows) == 300  # daily peaks
    assert_charts_equal_raw(source, HUBS, NOW, [300])
    assert_charts_equal_raw(source, HUBS, NOW - timedelta(hours=30, minutes=7), [300])


def test_roll_ups_follow_new_hours_and_samples_written_late(demo_like: FleetConfig, store: Store) -> None:
    add_samples(store, generated_samples(HUBS, NOW - timedelta(days=2), NOW, seed=5))
    source = ConsoleSource(store, demo_like, None)
    assert_charts_equal_raw(source, HUBS, NOW, [2])
    later = NOW + timedelta(hours=3)
    add_samples(store, generated_samples(HUBS, NOW, later, seed=6))
    assert_charts_equal_raw(source, HUBS, later, [1, 3])
    assert rollup_state(store)[1] == newest_id(store)
    assert stored_rollups(store) == one_pass(store)

    # a sample written now but dated in an hour rolled up long ago (a clock set back, an import)
    late = NOW - timedelta(hours=30)
    add_samples(store, [{"hub": "d", "at": late, "running_servers": 99, "spawn_success_total": None}])
    assert_charts_equal_raw(source, HUBS, later, [2, 300])
    assert stored_rollups(store) == one_pass(store)
    running = chart(source, "running-servers", ["d"], 2, later)
    assert 99 in [row[1] for row in running.rows]
    # a chart as of a past moment counts nothing after it, rolled up or not
    assert_charts_equal_raw(source, HUBS, NOW - timedelta(hours=5, minutes=17), [1])


def test_a_chart_of_no_samples_and_of_no_hubs(demo_like: FleetConfig, store: Store) -> None:
    source = ConsoleSource(store, demo_like, None)
    assert chart(source, "spawn-duration", HUBS, 7, NOW).rows == []
    assert chart(source, "running-servers", [], 1, NOW).columns == ["at"]
    assert rollup_state(store) == (0, None)


def test_folding_samples_in_as_they_come_equals_one_pass_of_sql(store: Store) -> None:
    """The collector's rhythm: a quarter of an hour of samples, then a roll-up, over two days; now and then
    a hub's samples arrive late (dated before what was folded in already)."""
    samples = sorted(generated_samples(HUBS, NOW - timedelta(days=2), NOW, seed=13), key=lambda r: r["at"])
    add_samples(store, samples[:50])
    metric_rollups.roll_up(store)  # the first one: one pass of SQL
    rest, late = samples[50:], []
    rnd = random.Random(4)
    while rest:
        chunk, rest = rest[:18], rest[18:]
        held = [r for r in chunk if rnd.random() < 0.02]  # written two chunks later
        add_samples(store, [r for r in chunk if r not in held] + late)
        late = held
        metric_rollups.roll_up(store)
    add_samples(store, late)
    mark, newest = metric_rollups.roll_up(store)
    assert mark == newest == newest_id(store)
    assert stored_rollups(store) == one_pass(store)


def test_a_roll_up_folds_at_most_max_rows_and_charts_read_the_rest_raw(
    demo_like: FleetConfig, store: Store
) -> None:
    samples = generated_samples(HUBS, NOW - timedelta(days=2), NOW, seed=17)
    add_samples(store, samples[:10])
    metric_rollups.roll_up(store)
    add_samples(store, samples[10:])
    mark, newest = metric_rollups.roll_up(store, max_rows=100)
    assert mark < newest
    source = ConsoleSource(store, demo_like, None)
    assert_charts_equal_raw(source, HUBS, NOW, [3])  # the next calls go on (200,000 samples a call)
    assert rollup_state(store)[1] == newest

    add_samples(store, generated_samples(HUBS, NOW, NOW + timedelta(hours=1), seed=18))

    def busy(*_: Any, **__: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    with pytest.MonkeyPatch.context() as patch:  # a store too busy to roll up: nothing more is folded in
        patch.setattr(metric_rollups, "roll_up_connection", busy)
        assert_charts_equal_raw(source, HUBS, NOW + timedelta(hours=1), [1, 3])
    assert rollup_state(store)[1] == newest


def test_migration_0021_back_fills_the_stored_samples(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    samples = generated_samples(HUBS[:3], now - timedelta(hours=30), now, seed=9)
    store = open_store(tmp_path / "state", migrate=False)
    try:
        store_db.upgrade(store.engine, "0020")
        add_samples(store, samples)
        store_db.upgrade(store.engine, "head")
        rows, mark = rollup_state(store)
        assert mark == newest_id(store) == len(samples) and rows >= 3 * 20
        assert stored_rollups(store) == one_pass(store)
    finally:
        store.engine.dispose()


# --------------------------------------------------------------------------- the overview at 300 hubs

COMMUNITIES = 150
BIG_FAILED: set[str] = set()
"""The hubs the daemon reports failed in the `big` fleet."""


def generated_fleet(root: Path, communities: int = COMMUNITIES) -> FleetConfig:
    """Communities of a staging and a prod hub (local hubs), an operator and a leader of c001."""
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(
        "name: big\noperators:\n  - name: Ada\n    email: ada@example.org\n"
        "console:\n  accounts:\n    - {username: ops, role: operator}\n"
        "    - {username: lead, role: community-leader, communities: [c001]}\n"
    )
    (root / "clusters" / "local.yaml").write_text("name: local\nkind: local\n")
    for i in range(communities):
        name = f"c{i:03d}"
        hubs = root / "communities" / name / "hubs"
        hubs.mkdir(parents=True)
        (root / "communities" / name / "community.yaml").write_text(
            f"name: {name}\ncontacts:\n  - name: Lead {i}\n    email: lead{i}@example.org\n"
            "    role: teacher\n"
        )
        for k, stage in enumerate(("staging", "prod")):
            hub = name if stage == "prod" else f"{name}-staging"
            (hubs / f"{stage}.yaml").write_text(
                f"name: {hub}\ncommunity: {name}\ncluster: local\nstage: {stage}\nport: {20000 + 2 * i + k}\n"
                f"auth:\n  type: {'native' if stage == 'prod' else 'dummy'}\n  admin_users: [lead{i}]\n"
            )
    return load_fleet(root)


@pytest.fixture(scope="module")
def big(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FleetConfig, Store, Path, dict[str, int]]]:
    """The fleet, its store and daemon.json: hubs failing their newest probe, hubs with open incidents,
    hubs the daemon reports failed or starting; every other hub healthy."""
    import json
    import os

    tmp = tmp_path_factory.mktemp("big")
    fleet = generated_fleet(tmp / "fleet")
    names = sorted(fleet.hubs)
    state = tmp / "state"
    store = open_store(state)
    now = datetime.now(UTC)
    rank, failed = {}, set()
    probes, incidents, daemon = [], [], {}
    for i, hub in enumerate(names):
        down = i % 37 == 5
        incident = i % 41 == 7
        kind = "failed" if i % 53 == 11 else "starting" if i % 59 == 13 else "running"
        if kind == "failed":
            failed.add(hub)
        rank[hub] = 0 if down or kind == "failed" else 1 if incident else 2 if kind != "running" else 4
        daemon[hub] = {"state": kind, "url": f"http://127.0.0.1:{30000 + i}", "pid": 1, "restarts": 0}
        for back, ok in ((60, True), (30, not down)):
            probes.append(
                {"hub": hub, "at": now - timedelta(seconds=back), "ok": ok, "latency_ms": 9.0, "error": ""}
            )
        if incident:
            incidents.append(
                {"hub": hub, "kind": "down", "started_at": now - timedelta(minutes=3), "cause": "x"}
            )
    with store.session() as session, session.begin():
        session.execute(insert(ProbeSample), probes)
        session.execute(insert(Incident), incidents)
    (state / "daemon.json").write_text(json.dumps({"pid": os.getpid(), "hubs": daemon}))
    BIG_FAILED.clear()
    BIG_FAILED.update(failed)
    yield fleet, store, state, rank
    store.engine.dispose()


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory: pytest.TempPathFactory) -> FleetConfig:
    """A fleet for ConsoleSource (the running-servers and spawn charts read only the hub names given)."""
    return generated_fleet(tmp_path_factory.mktemp("small"), 2)


def client_for(big: tuple[FleetConfig, Store, Path, dict[str, int]], username: str) -> TestClient:
    fleet, store, state, _ = big
    session_id, _ = accounts.create_session(store, username, "password", hours=1)
    client = TestClient(create_app(store, fleet, state_dir=state), base_url="http://127.0.0.1")
    client.cookies.set(SESSION_COOKIE, session_id)
    return client


def hub_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-hub="([^"]+)"', html)


def test_the_overview_lists_hubs_needing_attention_first_a_page_at_a_time(big: Any) -> None:
    fleet, _, _, rank = big
    names = sorted(fleet.hubs)
    expected = sorted(names, key=lambda h: rank[h])  # stable: the fleet's order within a rank
    unhealthy = [h for h in expected if rank[h] < 4]
    assert 10 < len(unhealthy) < PAGE_SIZE
    with client_for(big, "ops") as client:
        first = client.get("/")
        assert first.status_code == 200
        assert hub_rows(first.text) == expected[:PAGE_SIZE]
        assert hub_rows(first.text)[: len(unhealthy)] == unhealthy
        assert (
            f"Showing 1–{PAGE_SIZE} of 300 hubs; the {len(unhealthy)} needing attention first." in first.text
        )
        assert 'href="/?page=2" rel="next"' in first.text and "Page 1 of 3" in first.text
        last = client.get("/?page=3")
        assert hub_rows(last.text) == expected[2 * PAGE_SIZE :]
        assert 'rel="prev"' in last.text and 'rel="next"' not in last.text
        assert hub_rows(client.get("/?page=99").text) == expected[2 * PAGE_SIZE :]  # clamped
        assert hub_rows(client.get("/?page=x").text) == expected[:PAGE_SIZE]
        # filters apply before the pages, and the pager keeps them
        failed = client.get("/?state=failed")
        assert (
            hub_rows(failed.text) == [h for h in expected if h in BIG_FAILED]
            and "Page 1 of" not in failed.text
        )
        assert f"Showing 1–{len(BIG_FAILED)} of {len(BIG_FAILED)} (300 in all) hubs" in failed.text
        staging = client.get("/?community=c001")
        assert hub_rows(staging.text) == sorted(["c001", "c001-staging"], key=lambda h: rank[h])
        totals = client.get("/api/hubs", headers={"accept": "application/json"})
        assert totals.status_code == 200 and totals.json()["totals"]["hubs"] == 300


def test_a_leaders_overview_and_fleet_charts_hold_only_their_hubs(big: Any) -> None:
    fleet, store, _, rank = big
    now = datetime.now(UTC)
    add_samples(
        store, generated_samples(["c001", "c002", "c001-staging"], now - timedelta(hours=3), now, seed=2)
    )
    with client_for(big, "lead") as client:
        page = client.get("/")
        assert page.status_code == 200
        assert sorted(hub_rows(page.text)) == ["c001", "c001-staging"]
        others = {h for h in fleet.hubs if h not in ("c001", "c001-staging")}
        named = set(re.findall(r"c\d{3}(?:-staging)?", page.text))
        assert not named & others, (
            f"another community's hubs on a leader's overview: {sorted(named & others)[:5]}"
        )
        assert "Page 1 of" not in page.text
        running = client.get("/api/fleet/charts/running-servers?days=1").json()
        assert running["columns"] == ["at", "c001", "c001-staging"]
        spawns = client.get("/api/fleet/charts/spawn-duration?days=1").json()
        source = ConsoleSource(store, fleet, None)
        own = chart(source, "spawn-duration", ["c001", "c001-staging"], 1, now, rollups=False)
        assert spawns["rows"] == own.rows  # c002's spawns are not in it
        assert spawns["rows"]


def test_roll_ups_older_than_400_days_go(store: Store) -> None:
    old = [{"hub": "a", "at": NOW - timedelta(days=402), "running_servers": 3, "spawn_success_total": None}]
    add_samples(store, old)
    metric_rollups.roll_up(store)
    assert rollup_state(store)[0] == 2  # the hub's hour and the fleet's
    add_samples(store, generated_samples(["a"], NOW - timedelta(hours=1), NOW, seed=3))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metric_rollups, "_pruned_day", [0])
        metric_rollups.roll_up(store)
    assert (
        min(hour for _, hour in stored_rollups(store)) >= int((NOW - timedelta(days=1)).timestamp()) // 3600
    )


def test_the_overviews_active_users_kept_in_memory_equal_the_sql_count(store: Store) -> None:
    from hubfleet.console.data.active import active_by_hub
    from hubfleet.console.data.overview import _active_by_hub
    from hubfleet.store.models import UserDay

    rnd = random.Random(8)
    today = NOW.date()

    def user_days(count: int, offset: int) -> list[dict[str, Any]]:
        rows = {}
        for _ in range(count):
            hub, user, back = (
                rnd.choice(HUBS),
                f"u{rnd.randrange(offset, offset + 60)}",
                rnd.randrange(-1, 40),
            )
            day = today - timedelta(days=back)  # a day after today, too (a clock ahead)
            at = datetime.combine(day, datetime.min.time(), UTC)
            rows[(hub, user, day)] = {"hub": hub, "username": user, "day": day, "identity": f"native:{user}"}
            rows[(hub, user, day)] |= {"first_seen": at, "last_seen": at}
        return list(rows.values())

    def check(day: date) -> None:
        with store.session() as session:
            kept = active_by_hub(session, None, day, _active_by_hub)
            assert kept == _active_by_hub(session, None, day) and kept
            assert active_by_hub(session, ["b", "e", "zz"], day, _active_by_hub) == _active_by_hub(
                session, ["b", "e", "zz"], day
            )

    with store.session() as session, session.begin():
        session.execute(insert(UserDay), user_days(400, 0))
    check(today)
    for offset in (20, 40):  # new rows between two page loads: new people, and known ones on new days
        with store.session() as session, session.begin():
            known = {(r.hub, r.username, r.day) for r in session.scalars(select(UserDay))}
            fresh = [r for r in user_days(150, offset) if (r["hub"], r["username"], r["day"]) not in known]
            session.execute(insert(UserDay), fresh)
        check(today)
    check(today + timedelta(days=1))  # a new UTC day: the windows move


def test_roll_ups_on_postgresql_equal_the_raw_computation(demo_like: FleetConfig) -> None:
    """The same on a real PostgreSQL (the store takes any SQLAlchemy URL): its SQL (epoch hours, the gap
    rule, upserts) and the folding in Python agree there too."""
    from postgres_helpers import postgres_server

    with postgres_server() as server:
        if isinstance(server, str):
            pytest.skip(f"PostgreSQL could not start: {server}")
        with open_store(server.new_database()) as pg:
            samples = sorted(
                generated_samples(HUBS, NOW - timedelta(days=2), NOW, seed=23), key=lambda r: r["at"]
            )
            add_samples(pg, samples[:300])
            metric_rollups.roll_up(pg)
            for start in range(300, len(samples), 100):
                add_samples(pg, samples[start : start + 100])
                metric_rollups.roll_up(pg)
            add_samples(pg, [{"hub": "b", "at": NOW - timedelta(hours=20), "running_servers": 77}])  # late
            assert_charts_equal_raw(ConsoleSource(pg, demo_like, None), HUBS, NOW, [1, 2, 300])
            assert stored_rollups(pg) == one_pass(pg)
