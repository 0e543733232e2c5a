"""What goes wrong with backups, as the operator sees it: a wrong repository password, a repository that went
missing after good backups, a full disk, no restic, no `backups` block. Each is one line on stderr and exit
1, no traceback, no secret, and the failed run recorded in the store with its error (the daemon turns that
into an incident: tests/test_backup_schedule.py).

No hub needs to run for restic to read a home, so these fleets stay down: a user's home is written where the
fleet's layout puts it. The full disk is a 2 MiB tmpfs mounted on the repository's directory in a private
mount namespace (`unshare --mount`) of the one `hubfleet backup` run; nothing else on the machine sees it.

S3: restic talks to moto's S3 server on loopback (`moto[server]` from PyPI), which stands in for cloud
storage (no bucket is reachable from here); the password and keys are fleet-level age-encrypted secrets."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from fleet_helpers import HUBFLEET, copy_demo_fleet, drop_section, hubfleet, hubfleet_env, new_identity
from hubfleet.backup import records
from hubfleet.backup.hub_backup import backup_setup, fleet_lock, pick_snapshot
from hubfleet.backup.restic import Repository, Snapshot
from hubfleet.config.validate import load_fleet
from hubfleet.runtime.layout import layout
from hubfleet.settings import UserError
from hubfleet.store import open_store
from test_secrets import add_recipient

HUB = "uni-a-staging"
KEEP = {"communities/uni-a/hubs/staging.yaml"}
PASSWORD = "the-repo-password-Zq81"


def make_fleet(tmp_path: Path, backups: str | None) -> Path:
    """A down one-hub fleet with `backups` (None: without the block) and kim's home holding a notebook."""
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP)
    text = drop_section((root / "fleet.yaml").read_text(), "backups").rstrip("\n") + "\n"
    (root / "fleet.yaml").write_text(text + (backups or ""))
    home = layout(root / ".hubfleet").homes(HUB) / "kim"
    (home / "work").mkdir(parents=True)
    (home / "work" / "analysis.ipynb").write_text('{"cells": []}\n')
    return root


def local(repo: Path, password: str = PASSWORD) -> str:
    return f"backups:\n  repository: {repo}\n  password: {password}\n"


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def last_run(root: Path) -> records.BackupRunRecord:
    with open_store(root / ".hubfleet") as store:
        return records.hub_runs(store, HUB, limit=1)[0]


def test_wrong_password(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    env = {
        "PATH": os.environ["PATH"],
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_PASSWORD": "made-with-this-one",
    }
    subprocess.run(["restic", "init"], env=env, capture_output=True, check=True)
    root = make_fleet(tmp_path, local(repo))

    failed = hubfleet("backup", HUB, fleet=root)
    assert error_line(failed) == (
        f"error: {HUB}: backup failed: backup repository {repo}: wrong password (backups.password does "
        "not open it); set the password the repository was made with, or point backups.repository at a "
        "new location"
    )
    assert PASSWORD not in failed.stdout + failed.stderr
    run = last_run(root)
    assert run.ok is False and "wrong password" in run.error and PASSWORD not in run.error


def test_no_repository_yet(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, local(tmp_path / "repo"))
    listed = hubfleet("backups", "list", HUB, "--json", fleet=root)
    assert (
        f"backup repository {tmp_path / 'repo'}: no repository there; before the first backup"
        in error_line(listed)
    )
    assert not (tmp_path / "repo").exists()


def test_missing_repository_is_not_made_afresh_silently(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    root = make_fleet(tmp_path, local(repo))
    leftover = layout(root / ".hubfleet").homes(HUB) / ".hubfleet-restore-0a1b2c"  # of a killed restore
    (leftover / "homes").mkdir(parents=True)
    kim = layout(root / ".hubfleet").homes(HUB) / "kim"
    (kim / "work" / "a[1].ipynb").write_text("brackets")
    (kim / "work" / "a1.ipynb").write_text("no brackets")
    hubfleet("backup", HUB, fleet=root, check=True)
    setup = backup_setup(load_fleet(root), root / ".hubfleet")
    listed = setup.repository.run("ls", "latest").splitlines()
    assert f"/homes/{HUB}/kim/work/analysis.ipynb" in listed and not [p for p in listed if "restore" in p]
    # a path is a name, not a pattern: a[1].ipynb restores that file alone
    one = hubfleet("restore", HUB, "--user", "kim", "--path", "work/a[1].ipynb", fleet=root, check=True)
    folder = Path(one.stdout.split(" into ")[-1].strip())
    assert [p.name for p in (folder / "work").iterdir()] == ["a[1].ipynb"]
    shutil.rmtree(repo)

    failed = hubfleet("backup", HUB, fleet=root)
    line = error_line(failed)
    assert f"backup repository {repo}: no repository there, but this fleet has backed up to it before" in line
    assert "`hubfleet backup --new-repository` to start a new, empty one" in line
    assert not repo.exists()
    assert last_run(root).ok is False and "backed up to it before" in last_run(root).error
    # while another backup holds the fleet's lock (here: this test), the command says it waits
    env = hubfleet_env()
    with fleet_lock(root / ".hubfleet"):
        again = subprocess.Popen(
            [str(HUBFLEET), "backup", HUB, "--new-repository", "--fleet", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert again.stderr is not None
        assert again.stderr.readline().startswith("waiting for another backup or restore of this fleet")
    assert again.wait(timeout=120) == 0, again.communicate()
    assert last_run(root).ok is True and (repo / "config").exists()


def unshare_refused() -> str | None:
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --mount refused: {probe.stderr.strip()}"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_full_disk(tmp_path: Path) -> None:
    if reason := unshare_refused():
        pytest.skip(reason)
    disk = tmp_path / "disk"
    disk.mkdir()
    root = make_fleet(tmp_path, local(disk / "repo"))
    home = layout(root / ".hubfleet").homes(HUB) / "kim"
    (home / "data.bin").write_bytes(os.urandom(10 * 1024 * 1024))  # incompressible, 5 times the disk

    script = 'mount -t tmpfs -o size=2m hubfleet-test "$0" && exec "$1" backup "$2" --fleet "$3"'
    env = hubfleet_env()
    failed = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(disk), str(HUBFLEET), HUB, str(root)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    line = error_line(failed)
    assert line == (
        f"error: {HUB}: backup failed: backup repository {disk / 'repo'}: the disk holding it is full; free "
        "space there or move the repository"
    )
    assert last_run(root).ok is False and "is full" in last_run(root).error
    assert list(disk.iterdir()) == []  # the tmpfs went with its namespace


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_restore_into_a_home_on_a_filesystem_of_its_own(tmp_path: Path) -> None:
    """A home that is its own filesystem (a btrfs subvolume with a quota, a mount): the restored tree cannot
    be renamed in, so it is copied in as the home's owner (here uid 65534), never by root. The home is a
    tmpfs in a private mount namespace of the one `hubfleet restore` run."""
    if reason := unshare_refused():
        pytest.skip(reason)
    root = make_fleet(tmp_path, local(tmp_path / "repo"))
    home = layout(root / ".hubfleet").homes(HUB) / "kim"
    for path in [home, *home.rglob("*")]:
        os.lchown(path, 65534, 65534)
    hubfleet("backup", HUB, fleet=root, check=True)
    script = (
        'mount -t tmpfs -o size=8m,uid=65534,gid=65534,mode=0700 hubfleet-test "$0" && '
        '"$1" restore "$2" --user kim --path work/analysis.ipynb --fleet "$3" && '
        'stat -c "%u %n" "$0"/restored-*/work/analysis.ipynb "$0"/restored-* && cat "$0"/restored-*/work/*'
    )
    env = hubfleet_env()
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(home), str(HUBFLEET), HUB, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("restored work/analysis.ipynb of kim as of ")
    owners = [line.split()[0] for line in lines[1:3]]
    assert owners == ["65534", "65534"] and lines[3] == '{"cells": []}', lines
    assert not [p for p in home.parent.iterdir() if p.name.startswith(".hubfleet-restore-")]
    assert not list(home.glob("restored-*"))  # the copy went to the tmpfs, not under it


def test_no_restic_a_damaged_database_and_no_backups_block(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, local(tmp_path / "repo"))
    empty = tmp_path / "bin"
    empty.mkdir()
    failed = hubfleet("backup", HUB, fleet=root, env={"PATH": str(empty)})
    assert error_line(failed) == (
        f"error: {HUB}: backup failed: restic is not installed; install Debian's restic package (make setup "
        "does, as root)"
    )
    assert last_run(root).ok is False

    database = layout(root / ".hubfleet").hub_data(HUB) / "jupyterhub.sqlite"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"not a database, the first page overwritten" * 100)
    damaged = hubfleet("backup", HUB, fleet=root)
    assert error_line(damaged) == (
        f"error: {HUB}: backup failed: the database {database} could not be copied (file is not a "
        "database); check it with sqlite3's `PRAGMA integrity_check`, or bring back a good one with "
        f"`hubfleet restore {HUB} --database`"
    )
    assert "could not be copied" in last_run(root).error

    (root / "fleet.yaml").write_text(drop_section((root / "fleet.yaml").read_text(), "backups"))
    for command in (["backup"], ["restore", HUB, "--database"]):
        result = hubfleet(*command, fleet=root)
        assert error_line(result) == (
            "error: this fleet has no backups: add a `backups:` block to fleet.yaml (repository and "
            "password; see docs/operator-guide.md, 'Backups')"
        ), command


def test_s3_backup_and_restore_with_keys_as_fleet_secrets(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        backups = (
            f"backups:\n  repository: s3:http://127.0.0.1:{port}/hubfleet-backups/uni-a\n"
            "  password: {secret: backup_password}\n"
            "  s3:\n    access_key_id: {secret: s3_key_id}\n    secret_access_key: {secret: s3_secret}\n"
        )
        root = make_fleet(tmp_path, backups)
        identity = tmp_path / "ada.txt"
        add_recipient(root, new_identity(identity))
        env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
        values = {
            "backup_password": PASSWORD,
            "s3_key_id": "AKIAHUBFLEETTEST",
            "s3_secret": "s3-secret-Wm4Rk",
        }
        for key, value in values.items():
            hubfleet(
                "secrets", "set", "--fleet-level", key, fleet=root, env=env, input=f"{value}\n", check=True
            )

        # a restic in front of the real one writes down every command line it is given
        shim, calls = tmp_path / "shim", tmp_path / "restic-calls"
        shim.mkdir()
        (shim / "restic").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {shutil.which("restic")} "$@"\n')
        (shim / "restic").chmod(0o755)
        path = {"PATH": f"{shim}:{os.environ['PATH']}"}
        done = hubfleet("backup", HUB, fleet=root, env=env | path, check=True)
        assert done.stdout.startswith(f"{HUB}: snapshot ")
        assert "backup --json" in calls.read_text()
        assert not [v for v in values.values() if v in calls.read_text()]
        restored = hubfleet("restore", HUB, "--user", "kim", fleet=root, env=env, check=True)
        folder = Path(restored.stdout.split(" into ")[-1].strip())
        assert (folder / "work" / "analysis.ipynb").read_text() == '{"cells": []}\n'
        listed = hubfleet("backups", "list", HUB, fleet=root, env=env, check=True)
        everything = done.stdout + done.stderr + restored.stdout + restored.stderr + listed.stdout
        assert "s3:http://127.0.0.1" in listed.stdout
        assert not [v for v in values.values() if v in everything]

        import boto3

        bucket = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="any",
            aws_secret_access_key="any",
            region_name="us-east-1",
        )
        keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="hubfleet-backups")["Contents"]]
        assert "uni-a/config" in keys and any(k.startswith("uni-a/snapshots/") for k in keys)
    finally:
        server.stop()
    # the storage gone (a network outage) is not a missing repository to start afresh (without a region
    # restic asks the bucket's location first, which fails at once; with one, it retries for ~12 s)
    for command in (["backup", HUB], ["backups", "list", HUB]):
        line = error_line(hubfleet(*command, fleet=root, env=env))
        assert f"s3:http://127.0.0.1:{port}/hubfleet-backups/uni-a: not reachable (" in line, line
        assert "check the address and the network" in line and "new-repository" not in line


REPOSITORY = "s3:https://s3.example.org/bucket/p"
OPEN = "Fatal: unable to open config file: "
ASKS = f"\nIs there a repository at the following location?\n{REPOSITORY}\n"


@pytest.mark.parametrize(
    ("stderr", "says"),
    [
        (
            OPEN + "Stat: The specified bucket does not exist" + ASKS,
            "no repository",
        ),
        (
            OPEN + "Stat: The specified key does not exist." + ASKS,
            "no repository",
        ),
        (
            OPEN + "stat /b/config: no such file or directory" + ASKS,
            "no repository",
        ),
        (
            OPEN + "Stat: The AWS Access Key Id you provided does not exist in our records." + ASKS,
            "the storage refused the credentials",
        ),
        (
            OPEN + "Stat: Access Denied." + ASKS,
            "the storage refused the credentials",
        ),
        (
            OPEN
            + 'Stat: Get "https://s3.example.org/bucket/?location=": dial tcp: lookup: no such host'
            + ASKS,
            "not reachable",
        ),
        (OPEN + "stat /b/config: permission denied" + ASKS, "cannot be opened"),
    ],
)
def test_why_a_repository_does_not_open(stderr: str, says: str) -> None:
    """restic adds 'Is there a repository...?' to every failure to open one; only a missing file or bucket is
    a missing repository (the text is restic 0.14's and S3's own)."""
    explained = Repository(REPOSITORY, "pw", Path("/nonexistent")).explain("snapshots", stderr)
    assert explained.startswith(f"backup repository {REPOSITORY}: {says}"), explained


def test_at_picks_the_newest_backup_at_or_before_it() -> None:
    def snap(hex_id: str, when: str) -> Snapshot:
        return Snapshot(hex_id * 8, hex_id, datetime.fromisoformat(when), (), ())

    taken = [snap("aaaaaaaa", "2026-11-29T22:00:00+00:00"), snap("bbbbbbbb", "2026-11-30T23:59:59.5+00:00")]
    assert pick_snapshot(taken, HUB, None).short_id == "bbbbbbbb"
    assert pick_snapshot(taken, HUB, "bbbbbbbb").short_id == "bbbbbbbb"  # an id
    for day in ("2026-11-30", "20261130"):  # a date alone: up to the end of that day
        assert pick_snapshot(taken, HUB, day).short_id == "bbbbbbbb"
    assert pick_snapshot(taken, HUB, "2026-11-30T00:30+01:00").short_id == "aaaaaaaa"
    with pytest.raises(UserError, match="has no backup from 2026-11-29T21:00 or earlier; its oldest is from"):
        pick_snapshot(taken, HUB, "2026-11-29T21:00")
    with pytest.raises(UserError, match="is neither a time"):
        pick_snapshot(taken, HUB, "yesterday")
