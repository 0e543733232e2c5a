"""A store that never silently loses: damaged stores (cut to half, to 0 bytes, overwritten) give one line
naming the file and the way back, never a traceback or a silent empty store; rolling backups with SQLite's
online backup API; `hubfleet store backup / backups / restore`, with the real CLI in processes of its own."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from console_helpers import write_accounts
from fleet_helpers import copy_demo_fleet, hubfleet, running_fleet
from hubfleet.console import accounts
from hubfleet.daemon.detached import daemon_lock
from hubfleet.runtime.status_file import write_status
from hubfleet.settings import UserError
from hubfleet.store import StoreDamaged, open_store, safety
from hubfleet.store import db as store_db

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PASSWORD = "a-long-console-password"


def _filled_store(state: Path, rows: int = 300) -> Path:
    with open_store(state) as store:
        for i in range(rows):
            store.record_restart(f"hub{i % 7}", reason="exited " + "x" * 300, exit_code=1, at=T0)
    return state / store_db.DB_FILENAME


def _cut(path: Path, fraction: float) -> bytes:
    for suffix in ("-wal", "-shm"):  # what a crash or a careless copy leaves: the main file alone
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    os.truncate(path, int(path.stat().st_size * fraction))
    return path.read_bytes()


# -- damage is one clear error, and the file stays ----------------------------------------------------
@pytest.mark.parametrize("fraction", [0.5, 0.0])
def test_a_cut_store_is_an_error_naming_the_file_and_the_newest_backup(
    tmp_path: Path, fraction: float
) -> None:
    db_path = _filled_store(tmp_path)
    newest = safety.take_backup(db_path)
    damaged = _cut(db_path, fraction)
    with pytest.raises(StoreDamaged) as caught, open_store(tmp_path, check=True) as store:
        store.history()
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert str(db_path) in message and f"hubfleet store restore {newest}" in message
    assert ("empty (0 bytes)" if fraction == 0 else "damaged") in message
    assert db_path.read_bytes() == damaged  # never recreated, never repaired behind the operator's back


def test_a_half_store_fails_on_use_even_without_the_integrity_check(tmp_path: Path) -> None:
    db_path = _filled_store(tmp_path)
    _cut(db_path, 0.5)
    with (
        pytest.raises(StoreDamaged, match="database disk image is malformed") as caught,
        open_store(tmp_path) as store,
    ):
        store.restarts()
    assert "no backup in" in str(caught.value)


def test_not_a_database_and_no_backup_says_how_to_go_on(tmp_path: Path) -> None:
    (tmp_path / store_db.DB_FILENAME).write_text("not a database at all\n" * 20)
    with pytest.raises(StoreDamaged) as caught:
        open_store(tmp_path)
    message = str(caught.value)
    assert "is damaged (file is not a database)" in message
    assert f"no backup in {tmp_path / 'backups'}" in message and "hubfleet store restore BACKUP" in message


def test_a_missing_store_is_a_fresh_one(tmp_path: Path) -> None:
    with open_store(tmp_path / "new", check=True) as store:
        assert store.history() == []
    assert (tmp_path / "new" / store_db.DB_FILENAME).stat().st_size > 0


# -- backups ------------------------------------------------------------------------------------------
def test_backups_are_consistent_private_verified_and_rolled(tmp_path: Path) -> None:
    db_path = _filled_store(tmp_path, rows=20)
    made = [safety.take_backup(db_path, keep=3) for _ in range(5)]
    kept = safety.list_backups(db_path)
    assert kept == made[-3:][::-1]  # newest first, the oldest two rolled away
    assert stat.S_IMODE((tmp_path / "backups").stat().st_mode) == 0o700
    for path in kept:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
            assert conn.execute("SELECT count(*) FROM restarts").fetchone() == (20,)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
    out = safety.backup(db_path, tmp_path / "elsewhere" / "copy.sqlite")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with pytest.raises(UserError, match="already exists"):
        safety.backup(db_path, out)


def test_a_damaged_store_never_pushes_good_backups_out(tmp_path: Path) -> None:
    db_path = _filled_store(tmp_path)
    good = [safety.take_backup(db_path, keep=2) for _ in range(2)]
    _cut(db_path, 0.5)
    with pytest.raises(StoreDamaged):
        safety.take_backup(db_path, keep=2)
    assert safety.list_backups(db_path) == good[::-1]
    assert not list((tmp_path / "backups").glob(".*partial"))


def test_the_daemon_task_backs_up_at_start_then_periodically(tmp_path: Path) -> None:
    _filled_store(tmp_path, rows=5)

    async def run() -> None:
        stop = asyncio.Event()
        with open_store(tmp_path) as store:
            task = asyncio.create_task(safety.run_backups(store.engine, stop, interval=0.3, keep=2))
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(run())
    assert len(safety.list_backups(tmp_path / store_db.DB_FILENAME)) == 2

    async def in_memory() -> None:  # backups are for SQLite files only: nothing to do, returns at once
        with open_store("sqlite://") as memory:
            await asyncio.wait_for(safety.run_backups(memory.engine, asyncio.Event(), interval=60), 5)

    asyncio.run(in_memory())


# -- restore ------------------------------------------------------------------------------------------
def test_restore_sets_the_damaged_store_and_its_wal_aside(tmp_path: Path) -> None:
    db_path = _filled_store(tmp_path, rows=10)
    backup = safety.take_backup(db_path)
    with open_store(tmp_path) as store:
        store.record_restart("later", at=T0)  # in the WAL at the time of the cut
    os.truncate(db_path, db_path.stat().st_size // 2)
    wal = db_path.with_name(db_path.name + "-wal")
    wal.write_bytes(b"stale wal")
    done = safety.restore(db_path, backup)
    assert done.set_aside is not None and done.set_aside.name.startswith("hubfleet.sqlite.damaged-")
    assert done.set_aside.exists() and done.set_aside.with_name(done.set_aside.name + "-wal").exists()
    assert not wal.exists() and done.revision == store_db.head_revision()
    with open_store(tmp_path, check=True) as store:
        assert len(store.restarts()) == 10


def test_restore_refuses_what_is_not_a_hubfleet_store(tmp_path: Path) -> None:
    db_path = _filled_store(tmp_path / "state", rows=1)
    before = db_path.read_bytes()
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    newer = tmp_path / "newer.sqlite"
    safety.backup(db_path, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    for bad, why in [
        (other, "not a hubfleet store"),
        (newer, "revision 9999, which this hubfleet does not know"),
        (empty, "is empty"),
        (tmp_path / "missing.sqlite", "no such backup"),
    ]:
        with pytest.raises(UserError, match=why):
            safety.restore(db_path, bad)
    assert db_path.read_bytes() == before
    assert (
        sorted(p.name for p in db_path.parent.iterdir() if "restoring" in p.name or "damaged" in p.name) == []
    )


# -- the real CLI -------------------------------------------------------------------------------------
def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    write_accounts(root, {"ops": "operator"})
    return root


@pytest.mark.parametrize("fraction", [0.5, 0.0])
def test_cli_names_a_cut_store_and_restore_brings_the_accounts_back(fleet: Path, fraction: float) -> None:
    state = fleet / ".hubfleet"
    db_path = _filled_store(state)  # enough pages that half of the file loses some
    with open_store(state) as store:
        accounts.set_password(store, "ops", PASSWORD)
        accounts.create_token(store, "ops", "ci")
    made = hubfleet("store", "backup", fleet=fleet, check=True)
    [backup] = safety.list_backups(db_path)
    assert str(backup) in made.stdout

    damaged = _cut(db_path, fraction)
    line = _one_error_line(hubfleet("history", fleet=fleet))
    assert line.startswith(f"error: store {db_path} ") and f"hubfleet store restore {backup}" in line
    assert ("empty (0 bytes)" if fraction == 0 else "is damaged") in line
    line = _one_error_line(
        hubfleet("console-password", "ops", "--stdin", fleet=fleet, input="another-pass-1\n")
    )
    assert str(db_path) in line
    assert db_path.read_bytes() == damaged  # still there, still as it was: nothing recreated over it

    restored = hubfleet("store", "restore", str(backup), fleet=fleet, check=True)
    assert "restored" in restored.stdout and "damaged-" in restored.stdout
    [aside] = state.glob("hubfleet.sqlite.damaged-*")
    assert aside.read_bytes() == damaged
    with open_store(state, check=True) as store:
        assert accounts.check_password(store, "ops", PASSWORD)
        assert [t.name for t in accounts.list_tokens(store, "ops")] == ["ci"]
        assert len(store.restarts()) == 300


def test_up_with_a_cut_store_is_one_line_and_starts_nothing(fleet: Path) -> None:
    state = fleet / ".hubfleet"
    _filled_store(state)
    damaged = _cut(state / store_db.DB_FILENAME, 0.5)
    for detach in ([], ["--detach"]):  # checked before anything starts, so --detach is one line too
        line = _one_error_line(hubfleet("up", *detach, fleet=fleet, timeout=120))
        assert "is damaged" in line and "integrity check" in line
        assert (state / store_db.DB_FILENAME).read_bytes() == damaged
        assert not (state / "daemon.json").exists()


def test_restore_refuses_while_the_daemon_runs(fleet: Path) -> None:
    state = fleet / ".hubfleet"
    db_path = _filled_store(state, rows=1)
    backup = safety.take_backup(db_path)
    listed = json.loads(hubfleet("store", "backups", "--json", fleet=fleet, check=True).stdout)["backups"]
    assert [row["path"] for row in listed] == [str(backup)]
    write_status(state, {"pid": os.getpid(), "hubs": {}})  # a daemon that is alive, as far as the file says
    line = _one_error_line(hubfleet("store", "restore", str(backup), fleet=fleet))
    assert "the fleet is up" in line and "hubfleet down" in line
    (state / "daemon.json").unlink()
    with daemon_lock(state):  # a daemon starting (or running in the foreground) holds the lock
        line = _one_error_line(hubfleet("store", "restore", str(backup), fleet=fleet))
        assert "already up" in line
    assert not list(state.glob("hubfleet.sqlite.*-*"))


def test_the_daemon_backs_up_the_store_when_it_starts(fleet: Path) -> None:
    state = fleet / ".hubfleet"
    with open_store(state) as store:
        accounts.set_password(store, "ops", PASSWORD)
    with running_fleet(fleet):
        db_path = state / store_db.DB_FILENAME
        deadline = time.monotonic() + 60
        while not safety.list_backups(db_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        [backup] = safety.list_backups(db_path)
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        with sqlite3.connect(backup) as conn:
            assert conn.execute("SELECT username FROM console_passwords").fetchall() == [("ops",)]
        refused = hubfleet("store", "restore", str(backup), fleet=fleet)
        assert refused.returncode == 1 and "the fleet is up" in refused.stderr
