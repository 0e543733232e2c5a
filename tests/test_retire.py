"""`hubfleet retire`: a real one-hub daemon with a user who has files, retired for real. The hub stops
with its users' servers and stays stopped across `down` + `up`; each user's archive opens with tarfile and
holds every file of theirs and only theirs (a link stays a link); the manifest's sha256 match; a final restic
snapshot exists; `plan` and `deploy` say it is retired; `--purge-now` removes its data, snapshots and
archives."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from fleet_helpers import copy_demo_fleet, daemon_status, drop_section, hubfleet, running_fleet, wait_for
from hubfleet.clock import utcnow
from hubfleet.store import open_store
from hubfleet.store.retirements import record_retirement, retirement

pytestmark = pytest.mark.integration
HUB = "uni-a-staging"
AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("retire") / "demo", keep={"communities/uni-a/hubs/staging.yaml"}
    )
    with running_fleet(root) as running:
        yield running


def admin(fleet: Path) -> httpx.Client:
    token = hubfleet("token", HUB, fleet=fleet, check=True).stdout.strip()
    url = daemon_status(fleet)["hubs"][HUB]["url"]
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30)


def hub_state(fleet: Path) -> dict:
    result = hubfleet("status", "--json", fleet=fleet, check=True)
    return {h["name"]: h for h in json.loads(result.stdout)["hubs"]}[HUB]


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_retire_archives_every_users_files_stays_stopped_and_purges(fleet: Path) -> None:
    layout = json.loads((fleet / ".hubfleet" / "layout.json").read_text())
    homes = Path(layout["data_dir"]) / "homes" / HUB
    client = admin(fleet)
    # kim signs in and runs a server (their home and account are made); lee exists with files of their own
    client.post("/hub/api/users/kim")
    client.post("/hub/api/users/kim/server")
    server = wait_for(lambda: (client.get("/hub/api/users/kim").json()["servers"].get("") or {}).get("ready"))
    assert server
    kim = homes / "kim"
    owner = kim.stat()
    (kim / "work").mkdir()
    (kim / "work" / "analysis.ipynb").write_text('{"cells": []}')
    (kim / "notes.txt").write_text("kim's notes\n")
    (kim / "passwords").symlink_to("/etc/shadow")  # a link out of the home: kept as a link, never read
    for path in (kim / "work", kim / "work" / "analysis.ipynb", kim / "notes.txt", kim / "passwords"):
        os.lchown(path, owner.st_uid, owner.st_gid)
    client.post("/hub/api/users/lee")
    (homes / "lee").mkdir(mode=0o700)
    (homes / "lee" / "lee.txt").write_text("lee's file\n")
    assert not AS_ROOT or _pids_of(owner.st_uid)  # kim's server runs as kim's account

    refused = hubfleet("retire", HUB, fleet=fleet)  # no terminal, no --yes: nothing happens
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert hub_state(fleet)["state"] == "running"

    retired = hubfleet("retire", HUB, "--yes", fleet=fleet)
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert "final backup: snapshot" in retired.stdout
    assert hub_state(fleet)["state"] == "retired"
    assert not AS_ROOT or not _pids_of(owner.st_uid)  # kim's server stopped with the hub
    again = hubfleet("retire", HUB, "--yes", fleet=fleet)
    assert again.returncode == 1 and "retired already" in again.stderr and "kept until" in again.stderr

    where = fleet / ".hubfleet" / "retired" / HUB
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["contacts"] == [
        {"name": "Grace Teacher", "email": "grace@uni-a.example", "role": "teacher"}
    ]
    users = {u["username"]: u for u in manifest["users"]}
    # the hub's admins never signed in: listed without a home; the check user is the fleet's, not listed
    assert {name for name, user in users.items() if user["archive"]} == {"kim", "lee"}
    assert {name for name, user in users.items() if not user["archive"]} == {"ada", "grace"}
    for user in (users["kim"], users["lee"]):
        archive = where / user["archive"]
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == user["sha256"]
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    kim_files = members(where / users["kim"]["archive"])
    assert {n for n, m in kim_files.items() if m.isfile()} >= {"kim/notes.txt", "kim/work/analysis.ipynb"}
    assert all(name == "kim" or name.startswith("kim/") for name in kim_files)
    assert kim_files["kim/passwords"].issym() and kim_files["kim/passwords"].linkname == "/etc/shadow"
    with tarfile.open(where / users["kim"]["archive"]) as tar:
        assert tar.extractfile("kim/notes.txt").read() == b"kim's notes\n"  # type: ignore[union-attr]
    assert set(members(where / users["lee"]["archive"])) == {"lee", "lee/lee.txt"}
    assert users["lee"]["files"] == 1 and users["lee"]["bytes"] == len("lee's file\n")
    assert (where / "database" / "jupyterhub.sqlite").exists() and (where / "bundle" / "data").is_dir()
    readme = (where / "README.md").read_text()
    assert "grace@uni-a.example" in readme and users["kim"]["sha256"] in readme
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert b"demo-staging" not in (where / "bundle" / "jupyterhub_config.py").read_bytes()

    listed = json.loads(hubfleet("backups", "list", HUB, "--json", fleet=fleet, check=True).stdout)
    assert [s["trigger"] for s in listed["snapshots"]][-1] == "retire"

    plan = json.loads(hubfleet("plan", "--json", fleet=fleet, check=True).stdout)
    assert [(h["name"], h["action"]) for h in plan["hubs"]] == [(HUB, "retired")]
    assert plan["waves"] == [[], []]
    deploy = hubfleet("deploy", "--hub", HUB, fleet=fleet)
    assert deploy.returncode == 1 and "remove its hub file" in deploy.stderr

    # a retired hub stays stopped when the daemon starts again; the daemon purges (at start) what is due
    hubfleet("down", fleet=fleet, check=True)
    old = fleet / ".hubfleet" / "retired" / "old-hub"
    (old / "users").mkdir(parents=True)
    (old / "users" / "someone.tar.gz").write_bytes(b"")
    with open_store(fleet / ".hubfleet") as store:
        long_ago = utcnow() - timedelta(days=100)
        record_retirement(
            store,
            "old-hub",
            "uni-a",
            retired_at=long_ago,
            purge_after=long_ago + timedelta(days=90),
            archive_dir=str(old),
            snapshot_id=None,
        )
    hubfleet("up", "--detach", fleet=fleet, check=True)
    state = hub_state(fleet)
    assert state["state"] == "retired" and "kept until" in daemon_status(fleet)["hubs"][HUB]["error"]
    wait_for(lambda: not old.exists(), timeout=60)
    with open_store(fleet / ".hubfleet") as store:
        assert retirement(store, "old-hub").purged_at is not None  # type: ignore[union-attr]
        assert retirement(store, HUB).purged_at is None  # not due: kept
    assert (homes / "kim" / "notes.txt").exists()

    purged = hubfleet("retire", HUB, "--purge-now", "--yes", fleet=fleet)
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not homes.exists() and not where.exists()
    assert not (Path(layout["data_dir"]) / "hubs" / HUB).exists()
    listed = json.loads(hubfleet("backups", "list", HUB, "--json", fleet=fleet, check=True).stdout)
    assert listed["snapshots"] == []
    plan = json.loads(hubfleet("plan", "--json", fleet=fleet, check=True).stdout)
    assert plan["hubs"][0]["data"]["retirement"]["purged_at"]


def _pids_of(uid: int) -> set[int]:
    """Processes of an OS account (a user's server runs as their own account when hubfleet is root)."""
    found = set()
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is not None and uids.real == uid:
            found.add(proc.pid)
    return found


def test_retire_without_backups_archives_all_the_same(tmp_path: Path) -> None:
    """A fleet without `backups:` says so and still archives (no daemon: the hub's file is gone, as `plan`
    suggests retiring it then). A link to a directory outside the home, a pipe and a socket are not followed
    or archived; the purge after it needs no repository."""
    from hubfleet.backup.retire import RemovedHub, purge_retired, retire_hub
    from hubfleet.config.validate import load_fleet
    from hubfleet.runtime.layout import layout

    root = copy_demo_fleet(tmp_path / "demo", keep={"communities/uni-a/hubs/staging.yaml"})
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(drop_section(fleet_yaml.read_text(), "backups"))
    config = load_fleet(root)
    state = root / ".hubfleet"
    home = layout(state).homes("gone") / "kim"
    (home / "deep" / "er").mkdir(parents=True)
    (home / "deep" / "er" / "f.txt").write_text("f")
    (home / "etc").symlink_to("/etc", target_is_directory=True)
    os.mkfifo(home / "pipe")
    with open_store(state) as store:
        retired = retire_hub(config, state, store, RemovedHub(name="gone", community="uni-a"))
        assert "no backups" in retired.backup and retired.record.snapshot_id is None
        assert (retired.record.purge_after - retired.record.retired_at).days == 90
        [kim] = retired.archives
        names = members(Path(retired.record.archive_dir) / str(kim.archive))
        assert set(names) == {"kim", "kim/deep", "kim/deep/er", "kim/deep/er/f.txt", "kim/etc"}
        assert names["kim/etc"].issym() and kim.files == 1
        assert not (Path(retired.record.archive_dir) / "bundle").exists()  # no hub file, no bundle
        assert "No standalone bundle" in (Path(retired.record.archive_dir) / "README.md").read_text()
        assert purge_retired(config, state, store, "gone")[-1].startswith("its archives")
        assert not home.exists() and not Path(retired.record.archive_dir).exists()
