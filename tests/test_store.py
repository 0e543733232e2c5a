"""The control-plane store: migrations, round trips, history, concurrent writers, `hubfleet history`; the
round trips and writers on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from hubfleet.checks.synthetic import CheckResult, StepResult
from hubfleet.store import db as store_db
from hubfleet.store import open_store
from postgres_helpers import PostgresServer, postgres_server

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | str]:
    """A real PostgreSQL on loopback for this worker's store tests (or why none could start)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives: a state directory (SQLite), or a new database on a real PostgreSQL,
    since the docs promise any SQLAlchemy URL."""
    if request.param == "sqlite":
        return str(tmp_path)
    server = request.getfixturevalue("postgres")
    if isinstance(server, str):
        pytest.skip(f"PostgreSQL could not start: {server}")
    return server.new_database()


def test_migrations_create_the_schema_in_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"  # created on open
    with open_store(state) as store:
        tables = set(inspect(store.engine).get_table_names())
        assert {"deployments", "restarts", "checks", "alembic_version"} <= tables
        columns = {c["name"] for c in inspect(store.engine).get_columns("checks")}
        assert columns == {"id", "hub", "at", "ok", "failed_step", "total_seconds", "steps"}
        assert store_db.current_revision(store.engine) == store_db.head_revision() == "0021"
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == store_db.BUSY_TIMEOUT_MS
    assert (state / "hubfleet.sqlite").is_file()


def test_head_and_revision_without_alembic_agree_with_alembic(tmp_path: Path) -> None:
    """db.head_revision reads the version files and db.current_revision the version table themselves
    (importing Alembic costs every process ~0.25 s). Alembic answers the same; several rows still fail."""
    from alembic.runtime.migration import MigrationContext

    assert store_db.head_revision() == store_db._alembic_head()
    with open_store(tmp_path / "state") as store:
        with store.engine.connect() as conn:
            alembic_says = MigrationContext.configure(conn).get_current_revision()
        assert store_db.current_revision(store.engine) == alembic_says == store_db.head_revision()
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO alembic_version VALUES ('0001')"))
        with pytest.raises(Exception, match="more than one head"):
            store_db.current_revision(store.engine)


def test_upgrade_is_idempotent_and_downgrade_round_trips(where: str) -> None:
    with open_store(where) as store:
        store.record_restart("a", reason="crash", at=T0)
    # Re-open (fast path) and run Alembic itself again (full path): both no-ops that keep the data.
    with open_store(where) as store:
        command.upgrade(store_db.alembic_config(store.engine), "head")
        store_db.upgrade(store.engine)
        assert len(store.restarts()) == 1
        command.downgrade(store_db.alembic_config(store.engine), "base")
        assert store_db.current_revision(store.engine) is None
        assert "restarts" not in inspect(store.engine).get_table_names()
    with open_store(where) as store:
        assert store.restarts() == []


def test_open_store_accepts_a_sqlalchemy_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with open_store(url) as store:
        store.record_deployment("a", "h1", "ok", started_at=T0)
    assert (tmp_path / "elsewhere.db").is_file()
    with open_store("sqlite://") as memory:  # in-memory works too (one connection per engine)
        assert memory.history() == []


def test_deployments_round_trip_as_aware_utc(where: str) -> None:
    cet = timezone(timedelta(hours=1))
    with open_store(where) as store:
        store.record_deployment(
            "uni-a",
            "abc123",
            "failed",
            started_at=datetime(2025, 3, 1, 13, 0, tzinfo=cet),
            finished_at=datetime(2025, 3, 1, 13, 5, tzinfo=cet),
            message="health gate failed",
            actor="alice",
        )
        store.record_deployment("uni-a", "def456", "ok", started_at=T0 + timedelta(hours=1), actor="bob")
        store.record_deployment("uni-b", "zzz", "rolled_back", started_at=T0 + timedelta(hours=2))
    with open_store(where) as store:
        last = store.last_deployment("uni-a")
        assert last is not None and last.config_hash == "def456" and last.actor == "bob"
        failed = store.last_deployment("uni-a", result="failed")
        assert failed is not None
        assert failed.started_at == T0 and failed.started_at.tzinfo == UTC
        assert failed.finished_at == T0 + timedelta(minutes=5)
        assert (failed.result, failed.message, failed.actor) == ("failed", "health gate failed", "alice")
        assert store.last_deployment("nobody") is None
        assert [d.hub for d in store.deployments()] == ["uni-b", "uni-a", "uni-a"]
        with pytest.raises(ValueError, match="ok, failed, rolled_back"):
            store.record_deployment("uni-a", "x", "exploded")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timezone-aware"):
            store.record_deployment("uni-a", "x", "ok", started_at=datetime(2025, 1, 1))


def test_restarts_filter_by_hub_and_since(where: str) -> None:
    with open_store(where) as store:
        for minute, hub in [(0, "a"), (10, "b"), (20, "a"), (30, "a")]:
            store.record_restart(
                hub, reason="exited", exit_code=1, attempt=minute // 10 + 1, at=T0 + timedelta(minutes=minute)
            )
        assert [r.at.minute for r in store.restarts()] == [30, 20, 10, 0]
        assert [r.at.minute for r in store.restarts("a")] == [30, 20, 0]
        assert [r.at.minute for r in store.restarts("a", since=T0 + timedelta(minutes=20))] == [30, 20]
        restart = store.restarts("b")[0]
        assert (restart.reason, restart.exit_code, restart.attempt) == ("exited", 1, 2)


def test_upgrading_a_0005_store_adds_limit_events_and_keeps_its_rows(tmp_path: Path) -> None:
    engine = store_db.make_engine(store_db.store_url(tmp_path))
    try:
        store_db.upgrade(engine, "0005")
        assert "limit_events" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO restarts (hub, at, reason, attempt) VALUES ('a', :at, 'crash', 1)"),
                {"at": "2025-03-01 12:00:00.000000"},  # how SQLAlchemy writes T0 to SQLite
            )
    finally:
        engine.dispose()
    with open_store(tmp_path) as store:  # upgrades to head on open
        assert store_db.current_revision(store.engine) == store_db.head_revision()
        columns = {c["name"] for c in inspect(store.engine).get_columns("limit_events")}
        assert columns == {"id", "hub", "username", "kind", "at", "count", "detail"}
        indexes = {i["name"]: i["column_names"] for i in inspect(store.engine).get_indexes("limit_events")}
        assert indexes == {"ix_limit_events_hub_at": ["hub", "at"]}
        assert [(r.reason, r.at) for r in store.restarts()] == [("crash", T0)]
        store.record_limit_event("a", username="ada", kind="pids", detail="fork refused", at=T0)
        command.downgrade(store_db.alembic_config(store.engine), "0005")
        assert "limit_events" not in inspect(store.engine).get_table_names()
        assert [r.reason for r in store.restarts()] == ["crash"]


def test_limit_events_round_trip_newest_first_and_filter(where: str) -> None:
    cet = timezone(timedelta(hours=1))
    with open_store(where) as store:
        first = store.record_limit_event(
            "a",
            username="ada",
            kind="memory",
            detail="memory limit 512M reached: 1 process killed",
            at=datetime(2025, 3, 1, 13, 0, tzinfo=cet),  # T0 in UTC
        )
        assert (first.hub, first.username, first.kind, first.count) == ("a", "ada", "memory", 1)
        for minute, hub, kind in [(10, "b", "pids"), (20, "a", "pids"), (30, "a", "memory")]:
            store.record_limit_event(
                hub,
                username=f"user{minute}",
                kind=kind,  # type: ignore[arg-type]
                detail=f"{kind} at {minute}",
                count=minute,
                at=T0 + timedelta(minutes=minute),
            )
    with open_store(where) as store:
        assert [e.at.minute for e in store.limit_events()] == [30, 20, 10, 0]
        assert [e.at.minute for e in store.limit_events("a")] == [30, 20, 0]
        assert [e.at.minute for e in store.limit_events("a", since=T0 + timedelta(minutes=20))] == [30, 20]
        assert [e.at.minute for e in store.limit_events(limit=2)] == [30, 20]
        assert [e.at.minute for e in store.limit_events("a", limit=1)] == [30]
        assert store.limit_events("nobody") == []
        oldest = store.limit_events("a")[-1]
        assert oldest == first and oldest.at == T0 and oldest.at.tzinfo == UTC
        assert oldest.detail == "memory limit 512M reached: 1 process killed"
        pids = store.limit_events("b")[0]
        assert (pids.username, pids.kind, pids.count, pids.detail) == ("user10", "pids", 10, "pids at 10")
        with pytest.raises(ValueError, match="memory, pids"):
            store.record_limit_event("a", username="ada", kind="cpu", detail="x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least 1"):
            store.record_limit_event("a", username="ada", kind="memory", detail="x", count=0)
        with pytest.raises(ValueError, match="timezone-aware"):
            store.record_limit_event("a", username="ada", kind="memory", detail="x", at=datetime(2025, 1, 1))
        with pytest.raises(ValueError, match="timezone-aware"):
            store.limit_events(since=datetime(2025, 1, 1))
        assert len(store.limit_events()) == 4
        now = store.record_limit_event("c", username="bob", kind="memory", detail="")
        assert now.at.tzinfo == UTC and store.limit_events("c") == [now]


def test_checks_round_trip_from_result_objects_and_dicts(where: str) -> None:
    result = CheckResult(
        ok=False,
        failed_step="execute",
        steps=[StepResult("create_user", True, 0.1, "exists"), StepResult("execute", False, 1.5, "boom")],
        total_seconds=1.6,
        hub="uni-a",
        at=T0,
    )
    with open_store(where) as store:
        store.record_check(result)
        store.record_check(json.loads(CheckResult(True, None, [], 3.0, hub="uni-b").to_json()))
        with pytest.raises(ValueError, match="hub"):
            store.record_check(CheckResult(True, None, [], 1.0))
        [check] = store.checks("uni-a")
        assert check.at == T0 and not check.ok and check.failed_step == "execute"
        assert check.steps[1] == {"name": "execute", "ok": False, "seconds": 1.5, "detail": "boom"}
        assert store.checks("uni-b")[0].ok


def test_history_is_newest_first_filtered_and_limited(where: str) -> None:
    with open_store(where) as store:
        store.record_deployment("a", "hash-a", "ok", started_at=T0, actor="ci")
        store.record_restart("b", reason="exited", exit_code=137, at=T0 + timedelta(minutes=1))
        store.record_check(CheckResult(True, None, [], 4.2, hub="a", at=T0 + timedelta(minutes=2)))
        store.record_check(
            CheckResult(
                False,
                "start_server",
                [StepResult("start_server", False, 9, "HTTP 500: x")],
                9,
                hub="b",
                at=T0 + timedelta(minutes=3),
            )
        )
        events = store.history()
        assert [(e.kind, e.hub) for e in events] == [
            ("check", "b"),
            ("check", "a"),
            ("restart", "b"),
            ("deployment", "a"),
        ]
        assert events[0].summary == "check failed at start_server: HTTP 500: x" and not events[0].ok
        assert events[1].summary == "check ok in 4.2s"
        assert events[2].summary == "restart #1 (exit 137): exited"
        assert events[3].summary == "deploy hash-a: ok by ci" and events[3].ok
        assert [e.kind for e in store.history("a")] == ["check", "deployment"]
        assert [e.kind for e in store.history(limit=2)] == ["check", "check"]
        assert store.history("nobody") == []
        assert events[0].to_dict()["at"] == "2025-03-01T12:03:00+00:00"


WRITER = textwrap.dedent(
    """
    import sys
    from hubfleet.store import open_store

    state, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open_store(state) as store:
        for i in range(count):
            store.record_restart(name, reason=f"r{i}", attempt=i)
            check = {"hub": name, "ok": True, "failed_step": None, "total_seconds": 0.1, "steps": []}
            store.record_check(check)
            store.history(name, limit=5)
    """
)


def test_processes_write_concurrently_to_a_fresh_store(where: str) -> None:
    # Each writer opens a store that does not exist yet, so they also race on the migration.
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, where, f"hub{n}", "40"], stderr=subprocess.PIPE)
        for n in range(3)
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with open_store(where) as store:
        for n in range(3):
            assert len(store.restarts(f"hub{n}")) == 40
            assert len(store.checks(f"hub{n}")) == 40
        assert len(store.history(limit=1000)) == 240


def test_two_connections_in_one_process_interleave(where: str) -> None:
    first, second = open_store(where), open_store(where)
    try:
        with first.engine.connect() as reader:
            reader.execute(text("BEGIN"))
            assert reader.execute(text("SELECT count(*) FROM restarts")).scalar() == 0
            second.record_restart("a", at=T0)  # WAL: a writer is not blocked by an open reader
            reader.execute(text("COMMIT"))
        assert len(first.restarts()) == 1
    finally:
        first.close()
        second.close()


def test_history_command_prints_a_table_and_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hubfleet.cli.main import app

    state = tmp_path / "state"
    with open_store(state) as store:
        store.record_deployment("uni-a", "abcdef1234567890", "ok", started_at=T0, actor="ci")
        store.record_restart("uni-b", reason="exited", exit_code=1, at=T0 + timedelta(minutes=1))
    runner = CliRunner()
    args = ["--fleet", str(tmp_path), "--state-dir", str(state)]

    table = runner.invoke(app, ["history", *args])
    assert table.exit_code == 0, table.output
    assert "uni-a" in table.output and "uni-b" in table.output and "deploy abcdef123456" in table.output

    only_a = runner.invoke(app, ["history", "uni-a", *args, "--json"])
    assert only_a.exit_code == 0, only_a.output
    events = json.loads(only_a.stdout)["events"]
    assert [(e["kind"], e["hub"], e["at"]) for e in events] == [
        ("deployment", "uni-a", "2025-03-01T12:00:00+00:00")
    ]

    empty = runner.invoke(app, ["history", "nobody", *args])
    assert empty.exit_code == 0 and "no events recorded for nobody" in empty.output

    missing = runner.invoke(app, ["history", "--fleet", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "fleet directory not found" in missing.output
