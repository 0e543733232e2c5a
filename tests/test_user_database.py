"""A database per user on a local hub, the way users and operators meet it: a real root daemon, real OS
accounts, each user's own real PostgreSQL 15 server (Debian's binaries) started by the broker with their
Jupyter server, SQL run from a real kernel in that server, a real restic repository for the hub's backups.

Alice makes a table from her server; it survives a server restart and a restart of the whole fleet (hub and
daemon); bob's database is another one and alice cannot reach his socket; `hubfleet user-db backup/restore/
reset` and the hub's own backup round-trip; nothing holds a password.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from console_helpers import write_accounts
from fleet_helpers import (
    copy_demo_fleet,
    daemon_status,
    drop_section,
    edit,
    hubfleet,
    running_fleet,
    wait_for,
)
from hubfleet.isolation.user_postgres import PG_BIN, UserDb, missing_binaries, postmaster_pid
from hubfleet.runtime.layout import layout

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="per-user databases run as users' accounts: root only"),
    pytest.mark.skipif(missing_binaries() is not None, reason=missing_binaries() or ""),
]

HUB = "uni-a-staging"
KEEP = {"communities/uni-a/hubs/staging.yaml"}
NO_SCHEDULE = {"HUBFLEET_BACKUP_DELAY": "100000", "HUBFLEET_COLLECT_INTERVAL": "1"}
"""No scheduled backup (every snapshot is one a test took); the usage collector, which sees who left the hub,
every second."""
REPO_PASSWORD = "a-test-repo-password"
PSQL = str(PG_BIN / "psql")
SQL_HELPER = (
    "import os, subprocess\n"
    "def sql(q, **kw):\n"
    f"    r = subprocess.run([{PSQL!r}, '-qAtX', '-v', 'ON_ERROR_STOP=1', '-c', q], capture_output=True, "
    "text=True, env={**os.environ, **kw})\n"
    "    return (r.stdout + r.stderr).strip()\n"
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("userdb")
    root = copy_demo_fleet(base / "demo", keep=KEEP)
    hub_file = root / "communities/uni-a/hubs/staging.yaml"
    hub_file.write_text(drop_section(hub_file.read_text(), "user_database"))
    edit(hub_file, "auth:", "user_database:\n  engine: postgres\n  retention_days: 0\nauth:")
    fleet_yaml = root / "fleet.yaml"
    text = drop_section(fleet_yaml.read_text(), "backups").rstrip("\n") + "\n"
    fleet_yaml.write_text(text + f"backups:\n  repository: {base / 'repo'}\n  password: {REPO_PASSWORD}\n")
    write_accounts(root, {"ops": "operator"})
    token = hubfleet("console-token", "create", "ops", fleet=root, check=True).stdout.strip()
    (base / "console-token").write_text(token)
    with running_fleet(root, env=NO_SCHEDULE) as running:
        yield running


class Hub:
    """The hub as the operator sees it: REST API with the operator token, code run in users' kernels."""

    def __init__(self, root: Path):
        token = hubfleet("token", HUB, fleet=root, check=True).stdout.strip()
        self.token = token
        self.url = daemon_status(root)["hubs"][HUB]["url"]
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"token {token}"}, timeout=60)

    def server(self, user: str) -> dict[str, object] | None:
        return self.client.get(f"/hub/api/users/{user}").json().get("servers", {}).get("")

    def start(self, user: str) -> None:
        self.client.post(f"/hub/api/users/{user}")
        response = self.client.post(f"/hub/api/users/{user}/server")
        assert response.status_code in (201, 202, 400), response.text
        wait_for(lambda: bool((s := self.server(user)) and s.get("ready")), timeout=120)

    def stop(self, user: str) -> None:
        self.client.delete(f"/hub/api/users/{user}/server")
        wait_for(lambda: self.server(user) is None, timeout=120)

    def run(self, user: str, code: str, timeout: float = 120) -> str:
        """`code` in a new kernel of the user's server (shut down after); its stdout, or the error."""
        response = self.client.post(f"/user/{user}/api/kernels", json={})
        assert response.status_code == 201, response.text
        kernel = response.json()["id"]
        try:
            return self._execute(user, kernel, SQL_HELPER + code, timeout)
        finally:
            self.client.delete(f"/user/{user}/api/kernels/{kernel}")

    def _execute(self, user: str, kernel: str, code: str, timeout: float) -> str:
        session, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "username": user,
                "session": session,
                "msg_type": "execute_request",
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "channel": "shell",
            "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
        }
        out: list[str] = []
        url = "ws" + self.url.removeprefix("http") + f"/user/{user}/api/kernels/{kernel}/channels"
        deadline = time.monotonic() + timeout
        with ws_connect(url, additional_headers={"Authorization": f"token {self.token}"}) as ws:
            ws.send(json.dumps(request))
            while time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message.get("msg_type"), message.get("content", {})
                if kind == "stream":
                    out.append(content.get("text", ""))
                elif kind == "error":
                    out.append(f"ERROR {content.get('ename')}: {content.get('evalue')}")
                elif kind == "status" and content.get("execution_state") == "idle":
                    break
        return "".join(out).strip()


@pytest.fixture(scope="module")
def hub(fleet: Path) -> Hub:
    return Hub(fleet)


def user_db(root: Path, user: str) -> UserDb:
    where = layout(root / ".hubfleet")
    return UserDb.at(where.data_dir, where.state_dir, where.instance, HUB, user)


def test_the_server_gets_its_database_without_a_password(fleet: Path, hub: Hub) -> None:
    hub.start("alice")
    env = json.loads(
        hub.run(
            "alice",
            "import json\n"
            "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(('PG', 'DATA'))}))",
        )
    )
    db = user_db(fleet, "alice")
    assert env["PGHOST"] == str(db.socket_dir) and env["PGUSER"] == db.account
    assert env["PGDATABASE"] == db.database and env["PGPORT"] == "5432"
    assert env["DATABASE_URL"] == f"postgresql://{db.account}@/{db.database}?host={db.socket_dir}&port=5432"
    assert "PGPASSWORD" not in env and ":" not in env["DATABASE_URL"].split("@")[0].removeprefix(
        "postgresql://"
    )
    assert (
        hub.run("alice", "print(sql('SELECT current_user, current_database()'))")
        == f"{db.account}|{db.account}"
    )
    # peer authentication over the socket only: no TCP listener, no password in the server's settings
    assert hub.run("alice", "print(sql('SHOW listen_addresses'))") == ""
    hba = hub.run("alice", "print(sql('SELECT DISTINCT auth_method FROM pg_hba_file_rules'))")
    assert set(hba.split()) <= {"peer", "reject"}, hba
    # the postmaster runs as alice's account, its data in a 0700 directory of hers outside her home
    pid = postmaster_pid(db)
    assert pid is not None
    assert (db.root.stat().st_mode & 0o777, db.socket_dir.stat().st_mode & 0o777) == (0o700, 0o700)
    assert db.root.stat().st_uid == db.socket_dir.stat().st_uid == Path(f"/proc/{pid}").stat().st_uid
    # nothing of the hub's config or log names a database password
    where = layout(fleet / ".hubfleet")
    for path in (where.hub_data(HUB) / "jupyterhub_config.py", where.hub_state(HUB) / "hub.log"):
        text = path.read_text()
        assert "PGPASSWORD" not in text and "DATABASE_URL" not in text, path


def test_a_table_survives_server_and_fleet_restarts(fleet: Path, hub: Hub) -> None:
    hub.start("alice")
    made = hub.run(
        "alice",
        "print(sql('CREATE TABLE notes (id int, body text); INSERT INTO notes VALUES (1, $$kept$$)'))",
    )
    assert made == "", made
    db = user_db(fleet, "alice")
    hub.stop("alice")
    wait_for(lambda: postmaster_pid(db) is None, timeout=60)  # stopped with the server, cleanly
    assert "database system is shut down" in db.log_path.read_text()
    hub.start("alice")
    assert hub.run("alice", "print(sql('SELECT body FROM notes'))") == "kept"
    hubfleet("down", fleet=fleet, check=True)
    assert postmaster_pid(db) is None
    hubfleet("up", "--detach", fleet=fleet, env=NO_SCHEDULE, check=True)
    again = Hub(fleet)
    again.start("alice")
    assert again.run("alice", "print(sql('SELECT body FROM notes'))") == "kept"
    hub.__dict__.update(again.__dict__)


def test_two_users_have_distinct_databases_and_cannot_reach_each_other(fleet: Path, hub: Hub) -> None:
    hub.start("alice")
    hub.start("bob")
    assert "does not exist" in hub.run("bob", "print(sql('SELECT body FROM notes'))")
    assert hub.run("bob", "print(sql('CREATE TABLE mine (x int)'))") == ""
    alice, bob = user_db(fleet, "alice"), user_db(fleet, "bob")
    assert alice.root != bob.root and alice.socket_dir != bob.socket_dir
    # bob points libpq at alice's socket, as himself and as her role: the directory refuses him
    for role in (bob.account, alice.account):
        answer = hub.run("bob", f"print(sql('SELECT 1', PGHOST={str(alice.socket_dir)!r}, PGUSER={role!r}))")
        assert "Permission denied" in answer, answer
    assert "Permission denied" in hub.run("bob", f"print(os.listdir({str(alice.root)!r}))")


def test_user_db_backup_restore_and_reset(fleet: Path, hub: Hub, tmp_path: Path) -> None:
    hub.start("alice")
    hub.run("alice", "sql('CREATE TABLE IF NOT EXISTS scores (n int); INSERT INTO scores VALUES (7)')")
    dump = tmp_path / "alice.pgdump"
    out = hubfleet("user-db", "backup", HUB, "alice", "--out", str(dump), fleet=fleet, check=True)
    assert "alice's database written" in out.stdout and dump.read_bytes().startswith(b"PGDMP")
    hub.run("alice", "sql('DROP TABLE scores')")
    hubfleet("user-db", "restore", HUB, "alice", str(dump), "--yes", fleet=fleet, check=True)
    assert hub.run("alice", "print(sql('SELECT sum(n) FROM scores'))") == "7"
    # reset asks first (and without a terminal, says to pass --yes); with --yes it empties
    asked = hubfleet("user-db", "reset", HUB, "alice", fleet=fleet, input="y\n")
    assert asked.returncode == 1 and "--yes" in asked.stderr + asked.stdout
    assert hub.run("alice", "print(sql('SELECT sum(n) FROM scores'))") == "7"
    hubfleet("user-db", "reset", HUB, "alice", "--yes", fleet=fleet, check=True)
    assert (
        hub.run("alice", "print(sql('SELECT count(*) FROM pg_tables WHERE schemaname = $$public$$'))") == "0"
    )
    # a stopped server's database: backed up by starting it briefly, and stopped again
    hubfleet("user-db", "restore", HUB, "alice", str(dump), "--yes", fleet=fleet, check=True)
    hub.stop("alice")
    db = user_db(fleet, "alice")
    again = tmp_path / "again.pgdump"
    hubfleet("user-db", "backup", HUB, "alice", "--out", str(again), fleet=fleet, check=True)
    assert postmaster_pid(db) is None and again.stat().st_size > 0


def test_user_db_errors_are_one_clear_line(fleet: Path, tmp_path: Path) -> None:
    cases = {
        ("backup", "no-such-hub", "alice"): "no hub named 'no-such-hub'",
        ("backup", HUB, "nobody"): "has no database yet",
        ("reset", HUB, "nobody", "--yes"): "has no database yet",
    }
    not_a_dump = tmp_path / "notes.txt"
    not_a_dump.write_text("hello")
    cases[("restore", HUB, "alice", str(not_a_dump), "--yes")] = "is not a database dump"
    for args, expected in cases.items():
        result = hubfleet("user-db", *args, fleet=fleet)
        assert result.returncode != 0 and expected in result.stderr + result.stdout, (args, result)
        assert "Traceback" not in result.stderr


def test_the_hub_backup_holds_each_users_database(fleet: Path, hub: Hub, tmp_path: Path) -> None:
    hub.start("alice")
    hub.run("alice", "sql('CREATE TABLE snap (v text); INSERT INTO snap VALUES ($$in the snapshot$$)')")
    hubfleet("backup", HUB, fleet=fleet, check=True)
    hub.run("alice", "sql('DROP TABLE snap')")
    repo = fleet.parent / "repo"
    env = {**os.environ, "RESTIC_PASSWORD": REPO_PASSWORD, "RESTIC_REPOSITORY": str(repo)}
    subprocess.run(
        ["restic", "restore", "latest", "--target", str(tmp_path), "--include", f"/backup/{HUB}"],
        env=env,
        check=True,
        capture_output=True,
    )
    dumped = tmp_path / "backup" / HUB / "userdb-alice.pgdump"
    assert dumped.read_bytes().startswith(b"PGDMP")
    hubfleet("user-db", "restore", HUB, "alice", str(dumped), "--yes", fleet=fleet, check=True)
    assert hub.run("alice", "print(sql('SELECT v FROM snap'))") == "in the snapshot"


def test_usage_and_the_console_show_each_users_database_size(fleet: Path, hub: Hub) -> None:
    hub.start("alice")
    hub.run("alice", "sql('CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g')")
    report = json.loads(hubfleet("usage", "--hub", HUB, "--json", fleet=fleet, check=True).stdout)
    sizes = report["user_databases"][HUB]
    assert sizes["alice"] > 20_000_000 and sizes["alice"] > sizes["bob"] > 0, sizes
    table = hubfleet("usage", "--hub", HUB, fleet=fleet, check=True).stdout
    assert f"user databases of {HUB}" in " ".join(table.split()) and "alice" in table
    console = daemon_status(fleet)["console"]
    token = (fleet.parent / "console-token").read_text()
    ops = httpx.Client(base_url=console, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    detail = ops.get(f"/api/hubs/{HUB}").json()
    shown = {row["username"]: row["bytes"] for row in detail["user_databases"]}
    assert shown["alice"] > 20_000_000 and set(shown) >= {"alice", "bob"}, shown
    page = ops.get(f"/hubs/{HUB}")
    if page.status_code == 200:  # pages take a session cookie; where a token is enough, the table is there
        assert 'data-userdb-user="alice"' in page.text


def test_a_user_who_left_keeps_a_dump_and_their_database_goes(fleet: Path, hub: Hub) -> None:
    """retention_days is 0 here: the collector notes bob gone, the next collection dumps and removes."""
    from hubfleet.store import open_store
    from hubfleet.store.user_dbs import gone

    hub.start("bob")
    hub.run("bob", "sql('CREATE TABLE IF NOT EXISTS leaving (x int); INSERT INTO leaving VALUES (9)')")
    bob = user_db(fleet, "bob")
    assert bob.exists()
    hub.stop("bob")
    assert hub.client.delete("/hub/api/users/bob").status_code == 204
    wait_for(lambda: not bob.root.exists(), timeout=120)
    with open_store(fleet / ".hubfleet") as store:
        [record] = gone(store, HUB, removed=True)
    assert record.username == "bob" and record.removed_at is not None and record.last_dump
    last = Path(record.last_dump)
    assert last.read_bytes().startswith(b"PGDMP") and last.stat().st_mode & 0o077 == 0
    listed = subprocess.run(
        [str(PG_BIN / "pg_restore"), "--list", str(last)], capture_output=True, text=True, check=True
    )
    assert "leaving" in listed.stdout
    # alice stays: her database is untouched
    assert user_db(fleet, "alice").exists()


def test_retiring_the_hub_archives_each_database_and_purging_removes_them(fleet: Path, hub: Hub) -> None:
    """Last in this module (it retires the hub): the retirement's archive holds alice's database as a dump
    pg_restore reads; `--purge-now` removes every database of the hub with its locks."""
    alice = user_db(fleet, "alice")
    assert alice.exists()
    retired = hubfleet("retire", HUB, "--yes", fleet=fleet)
    assert retired.returncode == 0, retired.stdout + retired.stderr
    archive = fleet / ".hubfleet" / "retired" / HUB / "user-databases"
    [dump] = list(archive.iterdir())
    assert dump.read_bytes().startswith(b"PGDMP") and dump.stat().st_mode & 0o077 == 0
    listed = subprocess.run(
        [str(PG_BIN / "pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=True
    )
    assert "TABLE" in listed.stdout
    assert "user-databases/" in (fleet / ".hubfleet" / "retired" / HUB / "README.md").read_text()
    purged = hubfleet("retire", HUB, "--purge-now", "--yes", fleet=fleet)
    assert purged.returncode == 0, purged.stdout + purged.stderr
    where = layout(fleet / ".hubfleet")
    assert not (where.data_dir / "userdbs" / HUB).exists()
    assert not (where.state_dir / "userdbs" / HUB).exists()


def test_without_root_accounts_validate_and_up_say_it_needs_root(tmp_path: Path) -> None:
    """HUBFLEET_ISOLATION=single is the single-account mode a non-root daemon runs in."""
    root = copy_demo_fleet(tmp_path / "demo", keep=KEEP)
    edit(root / "communities/uni-a/hubs/staging.yaml", "auth:", "user_database:\n  engine: postgres\nauth:")
    single = {"HUBFLEET_ISOLATION": "single"}
    validated = hubfleet("validate", fleet=root, env=single, check=True)
    assert f"hub {HUB} has `user_database`, which needs hubfleet running as root" in validated.stderr
    try:
        started = hubfleet("up", "--detach", fleet=root, env=single)
        said = " ".join((started.stdout + started.stderr).split())
        assert started.returncode != 0 and "needs hubfleet running as root" in said, said
    finally:
        hubfleet("down", fleet=root, env=single)
