"""Usage: the collector's recording, /hub/metrics parsing, DAU/WAU/MAU and server-hours queries, the CLI."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hubfleet.monitor.collector import HubMetrics, excluded_usernames, parse_metrics, record_collection
from hubfleet.monitor.usage import (
    active_by_hub,
    active_counts,
    active_series,
    active_users,
    daily_servers,
    server_hours,
)
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.store.models import HubSample, ServerSession, UserDay

# Captured from a running JupyterHub 6.1.1 hub's /hub/metrics (after one spawn), trimmed to the families
# the collector reads plus one it must ignore.
METRICS_6_1_1 = """\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 5.39
# HELP jupyterhub_server_spawn_duration_seconds Time taken for server spawning operation
# TYPE jupyterhub_server_spawn_duration_seconds histogram
jupyterhub_server_spawn_duration_seconds_bucket{le="0.5",reason="",status="success"} 0.0
jupyterhub_server_spawn_duration_seconds_bucket{le="+Inf",reason="",status="success"} 1.0
jupyterhub_server_spawn_duration_seconds_count{reason="",status="success"} 1.0
jupyterhub_server_spawn_duration_seconds_sum{reason="",status="success"} 0.1064331
jupyterhub_server_spawn_duration_seconds_count{reason="",status="failure"} 0.0
jupyterhub_server_spawn_duration_seconds_count{reason="",status="error"} 0.0
jupyterhub_server_spawn_duration_seconds_count{reason="throttled",status="failure"} 0.0
jupyterhub_server_spawn_duration_seconds_count{reason="too-many-users",status="failure"} 0.0
jupyterhub_server_spawn_duration_seconds_count{reason="already-pending",status="failure"} 0.0
# HELP jupyterhub_running_servers The number of user servers currently running
# TYPE jupyterhub_running_servers gauge
jupyterhub_running_servers 1.0
# HELP jupyterhub_total_users Total number of users
# TYPE jupyterhub_total_users gauge
jupyterhub_total_users 3.0
# HELP jupyterhub_active_users Number of users who were active in the given time period
# TYPE jupyterhub_active_users gauge
jupyterhub_active_users{period="24h"} 0.0
jupyterhub_active_users{period="7d"} 0.0
jupyterhub_active_users{period="30d"} 0.0
"""


def t(day: int, hour: float = 12.0) -> datetime:
    """A time in June 2025 (day of month, hour)."""
    return datetime(2025, 6, day, tzinfo=UTC) + timedelta(hours=hour)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def user(name: str, last: datetime | None = None, **servers: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "last_activity": iso(last) if last else None, "servers": servers}


def server(started: datetime, last: datetime | None = None, *, ready: bool = True, **extra: Any) -> dict:
    return {
        "started": iso(started),
        "last_activity": iso(last or started),
        "ready": ready,
        "stopped": False,
        "pending": None,
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with open_store(tmp_path) as s:
        yield s


def collect(store: Store, hub: str, users: list[dict], now: datetime, since: datetime, **kw: Any):  # noqa: ANN201
    with store.session() as session, session.begin():
        return record_collection(session, hub, "dummy", users, now=now, since=since, **kw)


# --------------------------------------------------------------------------- /hub/metrics


def test_parse_metrics_of_jupyterhub_6_1_1() -> None:
    metrics = parse_metrics(METRICS_6_1_1)
    assert metrics == HubMetrics(
        active_24h=0,
        active_7d=0,
        active_30d=0,
        running_servers=1,
        total_users=3,
        spawn_success_total=1.0,
        spawn_failure_total=0.0,
        spawn_seconds_total=0.1064331,
        # the whole histogram, kept for events' spawn quantiles (hubfleet.events.spawns)
        spawn_histogram={"success": {"count": 1.0, "sum": 0.106433, "buckets": [[0.5, 0.0]]}},
    )


def test_parse_metrics_sums_failure_reasons_and_error() -> None:
    text = METRICS_6_1_1.replace(
        'count{reason="throttled",status="failure"} 0.0', 'count{reason="throttled",status="failure"} 2.0'
    ).replace('count{reason="",status="error"} 0.0', 'count{reason="",status="error"} 1.0')
    text = text.replace('{period="7d"} 0.0', '{period="7d"} 4.0')
    metrics = parse_metrics(text)
    assert metrics.spawn_failure_total == 3.0
    assert metrics.active_7d == 4


def test_parse_metrics_without_usage_families() -> None:
    assert parse_metrics("# TYPE up gauge\nup 1.0\n") == HubMetrics()


# --------------------------------------------------------------------------- recording


def test_collection_records_user_days_sessions_and_sample(store: Store) -> None:
    users = [
        user("alice", t(2, 10), **{"": server(t(2, 9), t(2, 10))}),
        user("bob", t(1, 23)),  # before `since`: not active in this collection
        user("carol", None),  # created, never active
        user("hubfleet-check", t(2, 10), **{"": server(t(2, 9))}),
        user("ada", t(2, 10)),
    ]
    result = collect(
        store,
        "h1",
        users,
        now=t(2, 11),
        since=t(2, 0),
        excluded={"hubfleet-check", "ada"},
        metrics=parse_metrics(METRICS_6_1_1),
    )
    assert result.active_users == 1 and result.sessions_opened == 1 and result.running_servers == 2
    with store.session() as s:
        days = s.scalars(select(UserDay)).all()
        assert [(d.hub, d.username, d.day, d.identity) for d in days] == [
            ("h1", "alice", date(2025, 6, 2), "dummy:alice")
        ]
        assert (days[0].first_seen, days[0].last_seen) == (t(2, 9), t(2, 10))
        sessions = s.scalars(select(ServerSession)).all()
        assert [(x.username, x.started_at, x.stopped_at) for x in sessions] == [("alice", t(2, 9), None)]
        sample = s.scalars(select(HubSample)).one()
        assert (sample.running_servers, sample.users, sample.spawn_success_total) == (2, 5, 1.0)
        assert (sample.active_24h, sample.active_7d, sample.active_30d) == (0, 0, 0)


def test_sessions_close_at_the_stop_time_and_reopen_on_restart(store: Store) -> None:
    collect(store, "h1", [user("alice", t(2, 10), **{"": server(t(2, 9))})], now=t(2, 10), since=t(2, 0))
    # stopping: still open
    stopping = server(t(2, 9), ready=False, pending="stop")
    collect(store, "h1", [user("alice", t(2, 10), **{"": stopping})], now=t(2, 11), since=t(2, 10))
    with store.session() as s:
        assert s.scalars(select(ServerSession)).one().stopped_at is None
    # stopped: JupyterHub set last_activity to the stop time
    stopped = {"started": None, "last_activity": iso(t(2, 11.5)), "ready": False, "stopped": True}
    collect(store, "h1", [user("alice", t(2, 11.5), **{"": stopped})], now=t(2, 12), since=t(2, 11))
    # a new start, then the user is deleted while it runs (closed at now)
    collect(store, "h1", [user("alice", t(2, 13), **{"": server(t(2, 13))})], now=t(2, 14), since=t(2, 12))
    collect(store, "h1", [], now=t(2, 15), since=t(2, 14))
    with store.session() as s:
        rows = s.scalars(select(ServerSession).order_by(ServerSession.id)).all()
        assert [(r.started_at, r.stopped_at) for r in rows] == [(t(2, 9), t(2, 11.5)), (t(2, 13), t(2, 15))]


def test_restart_between_collections_closes_the_old_session(store: Store) -> None:
    collect(
        store, "h1", [user("a", t(2, 9), **{"": server(t(2, 9), t(2, 9.5))})], now=t(2, 10), since=t(2, 0)
    )
    collect(store, "h1", [user("a", t(2, 11), **{"": server(t(2, 10.5))})], now=t(2, 11), since=t(2, 10))
    with store.session() as s:
        rows = s.scalars(select(ServerSession).order_by(ServerSession.id)).all()
        assert [(r.started_at, r.stopped_at) for r in rows] == [(t(2, 9), t(2, 9.5)), (t(2, 10.5), None)]


def test_activity_across_midnight_records_both_days_once(store: Store) -> None:
    alice = user("alice", t(3, 0.5), **{"": server(t(2, 23), t(3, 0.5))})
    collect(store, "h1", [alice], now=t(3, 1), since=t(2, 22))
    collect(store, "h1", [alice], now=t(3, 2), since=t(2, 22))  # the same again: no duplicates
    with store.session() as s:
        days = s.scalars(select(UserDay).order_by(UserDay.day)).all()
        assert [(d.day, d.first_seen, d.last_seen) for d in days] == [
            (date(2025, 6, 2), t(2, 23), t(2, 23)),
            (date(2025, 6, 3), t(3, 0.5), t(3, 0.5)),
        ]


# --------------------------------------------------------------------------- queries on hand-made rows

D = date(2025, 6, 28)


def add_days(store: Store, rows: list[tuple[str, str, str, date]]) -> None:
    with store.session() as s, s.begin():
        for hub, auth, name, day in rows:
            moment = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
            s.add(
                UserDay(
                    hub=hub,
                    username=name,
                    day=day,
                    identity=f"{auth}:{name}",
                    first_seen=moment,
                    last_seen=moment,
                )
            )


@pytest.fixture
def activity(store: Store) -> Store:
    add_days(
        store,
        [
            ("h1", "dummy", "alice", date(2025, 6, 1)),
            ("h1", "dummy", "alice", date(2025, 6, 10)),
            ("h1", "dummy", "alice", D),
            ("h1", "dummy", "bob", D),
            ("h1", "dummy", "dave", date(2025, 5, 29)),  # in the MAU of June 27, not of June 28
            ("h2", "dummy", "alice", date(2025, 6, 27)),  # the same person as alice on h1
            ("h2", "dummy", "carol", date(2025, 6, 22)),  # first day of the week ending June 28
            ("h3", "github", "alice", D),  # another auth type: another person
        ],
    )
    return store


def test_dau_wau_mau_fleet_wide_count_people_once(activity: Store) -> None:
    assert active_counts(activity, D) == {"dau": 3, "wau": 4, "mau": 4}
    assert active_counts(activity, D - timedelta(days=1)) == {"dau": 1, "wau": 2, "mau": 3}
    assert active_counts(activity, D, hubs=["h1", "h2"]) == {"dau": 2, "wau": 3, "mau": 3}
    assert active_users(activity, date(2025, 6, 21), window=7) == 0  # nobody from the 15th to the 21st
    assert active_users(activity, date(2025, 6, 22), window=7) == 1  # carol
    assert active_users(activity, D, window=365) == 5


def test_active_by_hub(activity: Store) -> None:
    assert active_by_hub(activity, D) == {"h1": 2, "h3": 1}
    assert active_by_hub(activity, D, 7) == {"h1": 2, "h2": 2, "h3": 1}
    assert active_by_hub(activity, D, 30) == {"h1": 2, "h2": 2, "h3": 1}
    assert active_by_hub(activity, D - timedelta(days=1), 30, hubs=["h1"]) == {"h1": 2}  # alice, dave


def test_series_equals_the_per_day_queries(activity: Store) -> None:
    first = date(2025, 5, 25)
    series = active_series(activity, first, D)
    assert len(series) == 35
    for row in series:
        day = date.fromisoformat(row["day"])
        assert {k: row[k] for k in ("dau", "wau", "mau")} == active_counts(activity, day), day
    only_h2 = active_series(activity, D, D, hubs=["h2"])
    assert only_h2 == [{"day": "2025-06-28", "dau": 0, "wau": 2, "mau": 2}]


def test_series_on_random_activity_matches_brute_force(store: Store) -> None:
    import random

    rnd = random.Random(5)
    start = date(2025, 1, 1)
    rows = {
        (
            f"h{rnd.randint(1, 3)}",
            "dummy",
            f"u{rnd.randint(1, 40)}",
            start + timedelta(days=rnd.randint(0, 90)),
        )
        for _ in range(600)
    }
    add_days(store, sorted(rows))
    people = {}
    for _hub, _, name, day in rows:
        people.setdefault(day, set()).add(name)
    series = active_series(store, start + timedelta(days=20), start + timedelta(days=100))
    for row in series:
        day = date.fromisoformat(row["day"])
        for key, window in (("dau", 1), ("wau", 7), ("mau", 30)):
            expected = set().union(*(people.get(day - timedelta(days=i), set()) for i in range(window)))
            assert row[key] == len(expected), (day, key)


def add_session(store: Store, hub: str, name: str, started: datetime, stopped: datetime | None) -> None:
    with store.session() as s, s.begin():
        s.add(ServerSession(hub=hub, username=name, started_at=started, stopped_at=stopped))


def test_server_hours_are_clipped_to_the_window_and_open_sessions_run_until_now(store: Store) -> None:
    add_session(store, "h1", "alice", t(27, 22), t(28, 2))  # across midnight: 2 h on each day
    add_session(store, "h1", "bob", t(28, 10), None)  # still running at now = 12:00: 2 h
    add_session(store, "h2", "carol", t(28, 11), t(28, 11.5))
    add_session(store, "h2", "carol", t(20, 11), t(20, 15))  # outside the window
    now = t(28, 12)
    day = (t(28, 0), t(29, 0))
    assert server_hours(store, *day, now=now) == {"h1": 4.0, "h2": 0.5}
    assert server_hours(store, *day, by="user", now=now) == {
        ("h1", "alice"): 2.0,
        ("h1", "bob"): 2.0,
        ("h2", "carol"): 0.5,
    }
    assert server_hours(store, *day, hubs=["h2"], by="total", now=now) == {None: 0.5}
    daily = daily_servers(store, date(2025, 6, 27), date(2025, 6, 29), now=now)
    assert daily == {
        date(2025, 6, 27): {"server_hours": 2.0, "peak_servers": 1},
        date(2025, 6, 28): {"server_hours": 4.5, "peak_servers": 2},  # bob and carol at 11:00
        date(2025, 6, 29): {"server_hours": 0.0, "peak_servers": 0},
    }


def test_back_to_back_sessions_do_not_overlap_in_the_peak(store: Store) -> None:
    add_session(store, "h1", "a", t(5, 9), t(5, 10))
    add_session(store, "h1", "b", t(5, 10), t(5, 11))
    assert daily_servers(store, date(2025, 6, 5), date(2025, 6, 5), now=t(9))[date(2025, 6, 5)] == {
        "server_hours": 2.0,
        "peak_servers": 1,
    }


# --------------------------------------------------------------------------- exclusions


def test_excluded_usernames_follow_the_fleet_settings() -> None:
    from hubfleet.config.validate import load_fleet

    fleet = load_fleet(Path(__file__).resolve().parent.parent / "examples" / "demo-fleet")
    hub = fleet.hubs["uni-a-staging"]  # dummy auth; operator ada has dummy: ada
    assert excluded_usernames(fleet, hub) == {"hubfleet-check", "ada"}
    monitoring = fleet.settings.monitoring.model_copy(
        update={"exclude_staff": False, "exclude_users": ["bot"]}
    )
    changed = dataclasses.replace(
        fleet, settings=fleet.settings.model_copy(update={"monitoring": monitoring})
    )
    assert excluded_usernames(changed, hub) == {"hubfleet-check", "bot"}


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def fleet_with_usage(tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "demo"
    demo = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
    shutil.copytree(demo, root, ignore=shutil.ignore_patterns(".hubfleet"))
    with open_store(root / ".hubfleet") as store:
        add_days(
            store,
            [
                ("uni-a", "native", "alice", D),
                ("hackweek", "native", "alice", D),
                ("hackweek", "native", "omar", D - timedelta(days=3)),
                ("uni-a-staging", "dummy", "alice", D),
            ],
        )
        add_session(store, "uni-a", "alice", t(28, 9), t(28, 10.5))
        with store.session() as s, s.begin():
            s.add(
                HubSample(
                    hub="uni-a", at=t(28, 11), running_servers=0, active_24h=1, active_7d=1, active_30d=2
                )
            )
    return root


def run_usage(root: Path, *args: str) -> str:
    from typer.testing import CliRunner

    from hubfleet.cli.main import app

    result = CliRunner().invoke(app, ["usage", "--fleet", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_json(fleet_with_usage: Path) -> None:
    report = json.loads(run_usage(fleet_with_usage, "--json", "--from", "2025-06-22", "--to", "2025-06-28"))
    assert report["window"]["from"] == "2025-06-22" and report["window"]["to"] == "2025-06-28"
    # native:alice on uni-a and hackweek is one person; dummy:alice on uni-a-staging another
    assert report["fleet"] == {"dau": 2, "wau": 3, "mau": 3, "server_hours": 1.5, "peak_servers": 1}
    assert set(report["hubs"]) == {"uni-a", "uni-a-staging", "hackweek", "hackweek-staging"}
    uni = report["hubs"]["uni-a"]
    assert (uni["dau"], uni["wau"], uni["mau"], uni["server_hours"], uni["peak_servers"]) == (1, 1, 1, 1.5, 1)
    assert (uni["hub_reported_active_24h"], uni["hub_reported_active_30d"]) == (1, 2)
    assert report["hubs"]["hackweek"]["wau"] == 2
    assert report["hubs"]["hackweek-staging"]["hub_reported_active_24h"] is None
    assert [d["day"] for d in report["days"]][0] == "2025-06-22" and len(report["days"]) == 7
    assert report["days"][-1] == {
        "day": "2025-06-28",
        "dau": 2,
        "wau": 3,
        "mau": 3,
        "server_hours": 1.5,
        "peak_servers": 1,
    }
    community = json.loads(
        run_usage(fleet_with_usage, "--json", "--community", "hackweek", "--to", "2025-06-28")
    )
    assert set(community["hubs"]) == {"hackweek", "hackweek-staging"}
    assert community["fleet"]["wau"] == 2


def test_cli_csv_and_table(fleet_with_usage: Path) -> None:
    out = run_usage(fleet_with_usage, "--csv", "--hub", "uni-a", "--from", "2025-06-27", "--to", "2025-06-28")
    assert out.splitlines() == [
        "day,dau,wau,mau,server_hours,peak_servers",
        "2025-06-27,0,0,0,0.0,0",
        "2025-06-28,1,1,1,1.5,1",
    ]
    table = run_usage(fleet_with_usage, "--to", "2025-06-28")
    assert "2025-06-28" in table and "fleet (distinct people)" in table


def test_cli_errors_are_one_line(fleet_with_usage: Path) -> None:
    from typer.testing import CliRunner

    from hubfleet.cli.main import app

    for args, message in (
        (["--to", "June"], "not a date"),
        (["--hub", "nope"], "no hub named 'nope'"),
        (["--community", "nope"], "no community named 'nope'"),
        (["--from", "2025-06-29", "--to", "2025-06-28"], "is after"),
    ):
        result = CliRunner().invoke(app, ["usage", "--fleet", str(fleet_with_usage), *args])
        assert result.exit_code == 1 and message in result.output, result.output


def test_hub_samples_older_than_retention_are_pruned(tmp_path: Path) -> None:
    from hubfleet.monitor.collector import prune_hub_samples
    from hubfleet.store.models import HubSample

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    with open_store(tmp_path) as store:
        with store.session() as session, session.begin():
            for days in (1, 34, 36, 400):
                session.add(HubSample(hub="h", at=now - timedelta(days=days), running_servers=days))
        assert prune_hub_samples(store, now) == 2
        with store.session() as session:
            kept = sorted(s.running_servers for s in session.query(HubSample))
    assert kept == [1, 34]
