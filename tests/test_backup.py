"""Backups and restores the way an operator and a user meet them, on a real one-hub fleet with a real restic
repository in tmp: a user saves a notebook through their Jupyter server, it is backed up, changed, backed up
again and deleted, and one `hubfleet restore` brings back the first version into a new folder of their home
that they read through their server; a backup taken while users are being created restores a consistent
hub database; a hub whose database file is lost gets its users back with `hubfleet restore --database`.

Faults (wrong password, missing repository, full disk) and S3 storage: tests/test_backup_faults.py."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from fleet_helpers import (
    command_of,
    copy_demo_fleet,
    daemon_status,
    drop_section,
    fleet_processes,
    hubfleet,
    running_fleet,
    wait_for,
)
from hubfleet.backup.hub_backup import backup_setup
from hubfleet.config.validate import load_fleet

pytestmark = pytest.mark.integration
HUB = "uni-a-staging"
KEEP = {"communities/uni-a/hubs/staging.yaml"}
NO_SCHEDULE = {"HUBFLEET_BACKUP_DELAY": "100000"}
"""The daemon's scheduled backups wait past the module's end: every snapshot here is one a test took."""
NOTEBOOK = "work/analysis.ipynb"


def use_repository(root: Path, backups: str) -> None:
    text = drop_section((root / "fleet.yaml").read_text(), "backups").rstrip("\n") + "\n"
    (root / "fleet.yaml").write_text(text + backups)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("backup")
    root = copy_demo_fleet(base / "demo", keep=KEEP)
    use_repository(root, f"backups:\n  repository: {base / 'repo'}\n  password: a-test-repo-password\n")
    with running_fleet(root, env=NO_SCHEDULE) as running:
        yield running


def admin(root: Path) -> httpx.Client:
    token = hubfleet("token", HUB, fleet=root, check=True).stdout.strip()
    url = daemon_status(root)["hubs"][HUB]["url"]
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30)


def homes(root: Path) -> Path:
    layout = json.loads((root / ".hubfleet" / "layout.json").read_text())
    return Path(layout["data_dir"]) / "homes" / HUB


def user_clients(client: httpx.Client, *users: str) -> list[tuple[httpx.Client, str]]:
    """The users with running servers (started together): a client with a token of each user's own, and
    their server's URL."""
    tokens = {}
    for user in users:
        client.post(f"/hub/api/users/{user}")
        tokens[user] = client.post(f"/hub/api/users/{user}/tokens", json={"note": "test"}).json()["token"]
        client.post(f"/hub/api/users/{user}/server")
    found = []
    for user in users:

        def ready(user: str = user) -> str | None:
            server = client.get(f"/hub/api/users/{user}").json().get("servers", {}).get("")
            return server["url"] if server and server.get("ready") else None

        url = wait_for(ready, timeout=90)
        headers = {"Authorization": f"token {tokens[user]}"}
        found.append((httpx.Client(base_url=client.base_url, headers=headers, timeout=30), url))
    return found


def notebook(text: str) -> dict:
    cell = {"cell_type": "markdown", "metadata": {}, "source": text}
    return {
        "type": "notebook",
        "content": {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
    }


def save(user: httpx.Client, server: str, text: str) -> None:
    user.put(f"{server}api/contents/work", json={"type": "directory"}).raise_for_status()
    user.put(f"{server}api/contents/{NOTEBOOK}", json=notebook(text)).raise_for_status()


def tree(path: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry under `path`: (mode, uid, mtime_ns, content or link target)."""
    found = {}
    for entry in [path, *path.rglob("*")]:
        st = entry.lstat()
        body = os.readlink(entry) if entry.is_symlink() else entry.read_bytes() if entry.is_file() else b""
        found[str(entry.relative_to(path))] = (st.st_mode, st.st_uid, st.st_mtime_ns, body)
    return found


def snapshots(root: Path) -> list[dict]:
    listed = hubfleet("backups", "list", HUB, "--json", fleet=root, check=True)
    return json.loads(listed.stdout)["snapshots"]


def error_line(result) -> str:  # noqa: ANN001 - CompletedProcess
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_deleted_notebook_comes_back_as_of_an_earlier_backup(fleet: Path, tmp_path: Path) -> None:
    client = admin(fleet)
    (kim, kim_server), (lee, lee_server) = user_clients(client, "kim", "lee")
    save(lee, lee_server, "lee's own notebook")
    save(kim, kim_server, "first version")

    assert hubfleet("backup", HUB, fleet=fleet, check=True).stdout.startswith(f"{HUB}: snapshot ")
    save(kim, kim_server, "second version")
    hubfleet("backup", HUB, fleet=fleet, check=True)
    kim.delete(f"{kim_server}api/contents/{NOTEBOOK}").raise_for_status()

    listed = snapshots(fleet)
    assert len(listed) == 2 and all(s["files"] and s["size_bytes"] and s["time"] for s in listed)
    assert [s["trigger"] for s in listed] == ["manual", "manual"]
    first = listed[0]["time"]
    stamp = re.sub(r"[-:]", "", first[:19]).replace("T", "-")
    stamp = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}"  # 2026-11-30-214501, as the restore folder names it

    # kim plants links named as the restore folder would be, pointing out of the home: none is written through
    outside = tmp_path / "outside"
    outside.mkdir()
    kim_home, lee_home = homes(fleet) / "kim", homes(fleet) / "lee"
    owner = kim_home.stat()
    for name in (f"restored-{stamp}", f"restored-{stamp}-1"):
        (kim_home / name).symlink_to(outside)
        os.lchown(kim_home / name, owner.st_uid, owner.st_gid)
    before_kim, before_lee = tree(kim_home), tree(lee_home)

    done = hubfleet("restore", HUB, "--user", "kim", "--path", NOTEBOOK, "--at", first, fleet=fleet)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = f"restored-{stamp}-2"
    assert f"into {kim_home / folder}" in done.stdout.replace("\n", "")
    assert list(outside.iterdir()) == []
    got = kim.get(f"{kim_server}api/contents/{folder}/{NOTEBOOK}")
    assert got.status_code == 200, got.text
    assert got.json()["content"]["cells"][0]["source"] == "first version"
    after_kim = tree(kim_home)
    assert {k: v for k, v in after_kim.items() if not k.startswith(folder)} == {
        k: v for k, v in before_kim.items() if k != "."
    } | {".": after_kim["."]}  # only the home's own mtime changed: a folder was added
    assert {k for k in after_kim if k.startswith(folder)} == {
        folder,
        f"{folder}/work",
        f"{folder}/{NOTEBOOK}",
    }
    assert all(v[1] == owner.st_uid for k, v in after_kim.items() if k.startswith(folder))
    assert tree(lee_home) == before_lee

    # the newest backup (no --at) holds the second version; a whole-home restore takes a new folder again
    newest = hubfleet("restore", HUB, "--user", "kim", fleet=fleet, check=True)
    assert "restored the home of kim" in newest.stdout
    second = homes(fleet) / "kim" / (newest.stdout.split(" into ")[-1].strip().split("/")[-1])
    assert "".join(json.loads((second / NOTEBOOK).read_text())["cells"][0]["source"]) == "second version"

    # the refusals: before any backup, a path not in it, a path out of the home, a user name with '/'
    early = hubfleet("restore", HUB, "--user", "kim", "--at", "2020-01-01", fleet=fleet)
    assert error_line(early).startswith(
        f"error: hub {HUB} has no backup from 2020-01-01 or earlier; its oldest"
    )
    missing = hubfleet("restore", HUB, "--user", "kim", "--path", "work/nope.ipynb", fleet=fleet)
    assert "work/nope.ipynb of user kim is not in the backup of hub" in error_line(missing)
    escape = hubfleet("restore", HUB, "--user", "kim", "--path", "../lee/work", fleet=fleet)
    assert "--path '../lee/work': give a path inside the user's home" in error_line(escape)
    slash = hubfleet("restore", HUB, "--user", "kim/../lee", fleet=fleet)
    assert "--user 'kim/../lee'" in error_line(slash)
    assert tree(lee_home) == before_lee

    for user in ("kim", "lee"):
        client.delete(f"/hub/api/users/{user}/server")
    wait_for(lambda: not [p for p in fleet_processes(fleet) if "singleuser" in command_of(p)], timeout=60)


def test_a_backup_taken_while_users_are_created_restores_a_consistent_database(
    fleet: Path, tmp_path: Path
) -> None:
    client = admin(fleet)
    created: list[str] = []
    stop = threading.Event()

    def create() -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=30) as writer:
            while not stop.is_set():
                name = f"u{len(created):04d}"
                if writer.post(f"/hub/api/users/{name}").status_code in (201, 409):  # 409: made, reply lost
                    created.append(name)

    thread = threading.Thread(target=create)
    thread.start()
    try:
        wait_for(lambda: len(created) >= 5, timeout=60, interval=0.05)
        before = list(created)
        hubfleet("backup", HUB, fleet=fleet, check=True)
    finally:
        stop.set()
        thread.join()
    assert len(created) > len(before)  # users were created while the backup ran

    setup = backup_setup(load_fleet(fleet), fleet / ".hubfleet")
    newest = setup.repository.snapshots(host=setup.host, tag=setup.hub_tag(HUB))[-1]
    setup.repository.restore(newest.id, tmp_path / "restored", [f"/backup/{HUB}/jupyterhub.sqlite"])
    database = sqlite3.connect(tmp_path / "restored" / "backup" / HUB / "jupyterhub.sqlite")
    assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    names = {row[0] for row in database.execute("SELECT name FROM users WHERE name LIKE 'u0%'")}
    database.close()
    assert set(before) <= names
    assert names == set(created[: len(names)])  # a prefix: every user in it was created, none skipped


def test_a_lost_hub_database_comes_back_with_its_users(fleet: Path) -> None:
    client = admin(fleet)
    assert client.get("/hub/api/users/kim").status_code == 200
    hubfleet("backup", HUB, fleet=fleet, check=True)

    data = homes(fleet).parents[1] / "hubs" / HUB
    (data / "jupyterhub.sqlite").unlink()
    [hub] = [p for p in fleet_processes(fleet) if is_hub(p)]
    hub.send_signal(signal.SIGKILL)
    wait_for(lambda: answers(client, "/hub/api/users/kim") == 404, timeout=90)  # restarted, empty

    done = hubfleet("restore", HUB, "--database", fleet=fleet)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the hub was restarted" in done.stdout
    wait_for(lambda: answers(client, "/hub/api/users/kim") == 200, timeout=90)
    names = {u["name"] for u in client.get("/hub/api/users").json()}
    assert {"kim", "lee", "u0000"} <= names


def answers(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.HTTPError:
        return None


def is_hub(proc: psutil.Process) -> bool:
    cmd = command_of(proc).split()
    return any(part.endswith("/jupyterhub") for part in cmd[:2]) and "-f" in cmd
