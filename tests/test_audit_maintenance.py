"""The audit trail (who deployed, why, from which commit) and planned maintenance (deploys are not outages),
against a real SQLite store and a real git repository."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from hubfleet.clock import utcnow
from hubfleet.deploy.audit import deploy_actor, fleet_commit
from hubfleet.monitor.uptime import ProbeResult, record_samples, uptime_by_hub
from hubfleet.store import db as store_db
from hubfleet.store import open_store


def probe(hub: str, ok: bool, at: datetime) -> ProbeResult:
    return ProbeResult(
        hub=hub, url="http://127.0.0.1:1", at=at, ok=ok, health_status=200 if ok else None, api_status=None,
        latency_ms=5.0,
    )  # fmt: skip


def test_failed_probes_during_a_deploy_are_planned_downtime(tmp_path: Path) -> None:
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)  # samples at fixed times; the window is open in real time
    yesterday = now - timedelta(days=1, hours=1)
    with open_store(tmp_path) as store:
        record_samples(store, [probe("a", True, now - timedelta(minutes=m)) for m in (50, 40)])
        window = store.begin_maintenance("a", reason="deploy (update)", actor="ada via hubfleet deploy")
        assert store.in_maintenance() == {"a"} and store.in_maintenance(["b"]) == set()
        # two failures while the hub restarts for its deploy: one today, one on yesterday's ProbeDay row
        record_samples(store, [probe("a", False, now - timedelta(minutes=30)), probe("a", False, yesterday)])
        store.end_maintenance(window)
        assert store.in_maintenance() == set()
        record_samples(store, [probe("a", False, now - timedelta(minutes=10)), probe("a", True, now)])

        counted = uptime_by_hub(store, ["a"], now)["a"]
        planned_excluded = uptime_by_hub(store, ["a"], now, excluding_planned=True)["a"]
    assert counted["24h"] == 60.0  # 3 of the last 24 h's 5 probes ok
    assert planned_excluded["24h"] == 80.0  # the failure during the deploy is not downtime; the later one is
    assert counted["7d"] == 50.0  # today's 5 samples + yesterday's ProbeDay row (1 probe, failed, planned)
    assert planned_excluded["7d"] == pytest.approx(100 * 5 / 6, abs=0.001)


def test_a_window_left_open_by_a_killed_deploy_stops_counting_after_an_hour(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.begin_maintenance("a", reason="deploy (update)")
        assert store.in_maintenance(now=utcnow() + timedelta(minutes=59)) == {"a"}
        assert store.in_maintenance(now=utcnow() + timedelta(minutes=61)) == set()


def test_deployments_record_reasons_and_commit(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.record_deployment(
            "a", "f" * 64, "ok", actor="Ada <ada@x> via hubfleet deploy", reasons=["max_users: 100 → 150"],
            commit="0123456789abcdef",
        )  # fmt: skip
        [event] = [e for e in store.history("a") if e.kind == "deployment"]
    assert event.details["reasons"] == ["max_users: 100 → 150"]
    assert event.details["commit"] == "0123456789abcdef"
    assert "by Ada <ada@x> via hubfleet deploy at 0123456789ab (max_users: 100 → 150)" in event.summary


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_actor_and_commit_come_from_the_setting_or_the_fleet_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUBFLEET_ACTOR", raising=False)
    repo = tmp_path / "fleet"
    repo.mkdir()
    assert fleet_commit(repo) is None  # not a repository: no commit, no error
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "Ada Operator")
    git(repo, "config", "user.email", "ada@hubfleet.example")
    (repo / "fleet.yaml").write_text("name: demo\n")
    git(repo, "add", "fleet.yaml")
    git(repo, "commit", "-qm", "fleet")
    head = git(repo, "rev-parse", "HEAD").strip()

    assert deploy_actor(repo) == "Ada Operator <ada@hubfleet.example> via hubfleet deploy"
    assert fleet_commit(repo) == head
    (repo / "fleet.yaml").write_text("name: demo2\n")
    assert fleet_commit(repo) == f"{head}-dirty"
    monkeypatch.setenv("HUBFLEET_ACTOR", "CI deploy key")
    assert deploy_actor(repo, "hubfleet up") == "CI deploy key via hubfleet up"


def test_upgrading_a_0006_store_keeps_its_rows(tmp_path: Path) -> None:
    engine = store_db.make_engine(store_db.store_url(tmp_path))
    try:
        store_db.upgrade(engine, "0006")
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO probe_samples (hub, at, ok, error) VALUES ('a', :at, 0, 'down');"),
                {"at": "2025-03-01 12:00:00.000000"},
            )
    finally:
        engine.dispose()
    with open_store(tmp_path) as store:
        assert {"reasons", "commit"} <= {c["name"] for c in inspect(store.engine).get_columns("deployments")}
        assert "maintenance" in inspect(store.engine).get_table_names()
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT hub, planned FROM probe_samples")).all() == [("a", False)]
        command.downgrade(store_db.alembic_config(store.engine), "0006")
        assert "maintenance" not in inspect(store.engine).get_table_names()
