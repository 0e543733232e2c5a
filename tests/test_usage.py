"""Usage: the collector's recording, /hub/metrics parsing, DAU/WAU/MAU and server-hours queries, the CLI."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hubfleet.monitor.usage import (
    HubMetrics,
    parse_metrics,
    record_collection,
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
