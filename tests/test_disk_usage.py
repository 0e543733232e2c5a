"""Disk use per user and per hub, and home_quota warnings (hubfleet.monitor.disk_usage).

The walk runs over real files: sparse files, hard links and a planted symlink to / (never followed, never
counted), checked against `du -sx`. The daemon test runs a real one-hub fleet (`hubfleet up --detach`) with
a small home_quota; the user's account and home are made the way the broker makes them (ensure_account,
ensure_home) instead of spawning a server, which would only add time: the daemon measures homes, not
servers. The operators' alerts go to a real webhook receiver on loopback. The btrfs test loop-mounts a real
btrfs image with qgroups on and runs one collection directly (skipped without root or btrfs-progs).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alert_receivers import WebhookReceiver, webhook_receiver
from console_helpers import write_accounts
from fleet_helpers import copy_demo_fleet, hubfleet, running_fleet, wait_for
from hubfleet.config.models_backup import HomeQuota
from hubfleet.config.validate import load_fleet
from hubfleet.isolation.accounts import comment_for, ensure_account, ensure_home, home_dirname, user_account
from hubfleet.isolation.quotas import make_home_volume, quota_support
from hubfleet.monitor.disk_usage import (
    NOTICE_FILE,
    DiskMonitor,
    allocated_bytes,
    disk_summary,
    home_username,
    quota_level,
    quota_rule,
    tree_bytes,
    update_notice,
)
from hubfleet.runtime.layout import Layout
from hubfleet.store import open_store

HUB = "uni-a-staging"
MIB = 1024 * 1024


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sx", "-B1", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def test_the_walk_counts_allocated_bytes_once_and_never_follows_links(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "deep" / "er").mkdir(parents=True)
    (home / "deep" / "er" / "data.bin").write_bytes(os.urandom(3 * MIB))
    os.link(home / "deep" / "er" / "data.bin", home / "same-data.bin")  # a hard link: counted once
    with (home / "sparse.img").open("wb") as f:  # 1 GiB apparent, one block written
        f.truncate(1024 * MIB)
        f.write(b"x")
    (home / "root").symlink_to("/")  # planted by a user: root must not follow it
    (home / "etc-passwd").symlink_to("/etc/passwd")
    measured = tree_bytes(home)
    assert measured == _du(home)
    assert 3 * MIB <= measured < 4 * MIB
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert allocated_bytes(fd) == measured
    finally:
        os.close(fd)
    assert tree_bytes(tmp_path / "missing") == 0
    assert tree_bytes(home / "root") == 0  # a link given as the top is not followed either


def test_home_names_quota_levels_and_rules() -> None:
    for username in ("alice", "Alice", "é", ".hidden", "a%b", "x" * 128):
        assert home_username(home_dirname(username)) == username
    assert home_username("%zz") is None
    quota = HomeQuota(limit="10M", warn_at=[95, 80])
    assert quota_level(7 * MIB, quota) is None
    assert quota_level(9 * MIB, quota) == 80
    assert quota_level(12 * MIB, quota) == 95
    assert quota_level(12 * MIB, None) is None
    assert quota_rule("alice", 80) == "warn-80:alice"
    assert len(quota_rule("y" * 128, 95)) == 50


def test_the_notice_replaces_a_planted_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    homes = tmp_path / "homes"
    home = homes / "bob"
    home.mkdir(parents=True)
    os.chown(home, 4321, 4321)
    target = tmp_path / "victim"
    target.write_text("root's\n")
    (home / NOTICE_FILE).symlink_to(target)
    (home / f".{NOTICE_FILE}.hubfleet").symlink_to(target)
    update_notice(homes, "bob", "over quota\n")
    notice = home / NOTICE_FILE
    assert not notice.is_symlink() and notice.read_text() == "over quota\n"
    assert (notice.stat().st_uid, notice.stat().st_gid) == (4321, 4321)
    assert target.read_text() == "root's\n"
    update_notice(homes, "bob", None)
    assert not notice.exists()
    assert sorted(p.name for p in home.iterdir()) == []


def _home(root: Path, username: str) -> Path:
    """The user's account and home, made as the broker makes them when it starts their server."""
    layout = json.loads((root / ".hubfleet" / "layout.json").read_text())
    instance, data = layout["instance"], Path(layout["data_dir"])
    homes = data / "homes" / HUB
    homes.mkdir(mode=0o711, parents=True, exist_ok=True)
    home = homes / home_dirname(username)
    account = ensure_account(
        user_account(instance, HUB, username), home=home, comment=comment_for(instance, HUB, "user")
    )
    ensure_home(home, account)
    return home


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="user accounts need root")
def test_the_daemon_measures_homes_and_warns_at_the_quota(tmp_path: Path, hook: WebhookReceiver) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    hub_file = root / "communities" / "uni-a" / "hubs" / "staging.yaml"
    hub_file.write_text(hub_file.read_text() + "home_quota:\n  limit: 4M\n  warn_at: [80, 95]\n")
    write_accounts(root, {"ops": "operator"})
    token = hubfleet("console-token", "create", "ops", fleet=root, check=True).stdout.strip()
    with (root / "fleet.yaml").open("a") as f:
        f.write(f"monitoring:\n  alerts:\n    webhooks:\n      - name: ops\n        url: {hook.url}\n")
    with running_fleet(root, env={"HUBFLEET_DISK_INTERVAL": "1"}):
        url = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)["console"]
        ops = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        carol, dave = _home(root, "carol"), _home(root, "dave")
        (dave / "small.txt").write_text("hello\n")
        (carol / "results.bin").write_bytes(os.urandom(int(3.5 * MIB)))  # 87.5 % of 4M
        os.chown(carol / "results.bin", carol.stat().st_uid, carol.stat().st_gid)
        (carol / "escape").symlink_to("/")

        def warned() -> list[dict]:
            found = ops.get("/api/incidents", params={"hub": HUB, "kind": "quota"}).json()["incidents"]
            return [i for i in found if i["open"]]

        (incident,) = wait_for(warned, timeout=60)
        assert incident["rule"] == "warn-80:carol" and "carol" in incident["cause"]
        notice = wait_for(lambda: (carol / NOTICE_FILE).exists() and carol / NOTICE_FILE)
        assert notice.stat().st_uid == carol.stat().st_uid != 0
        assert "past the 80% warning" in notice.read_text()
        assert not (dave / NOTICE_FILE).exists()

        disk = ops.get(f"/api/hubs/{HUB}").json()["disk"]
        assert [u["username"] for u in disk["users"]][:2] == ["carol", "dave"]
        measured = disk["users"][0]["bytes"]  # the notice itself counts from the next measurement on
        assert measured in (_du(carol), _du(carol) - notice.stat().st_blocks * 512)
        assert disk["users"][0]["warning"] == 80
        assert disk["total_bytes"] > disk["homes_bytes"] >= disk["users"][0]["bytes"]
        assert disk["quota"]["limit"] == "4M"
        assert disk["enforcement"].startswith("not enforced: ")
        (row,) = ops.get("/api/hubs").json()["hubs"]
        assert row["disk_bytes"] >= disk["homes_bytes"]
        page = ops.get(f"/hubs/{HUB}").text
        assert 'data-disk-user="carol"' in page and "Disk use" in page
        shown = json.loads(hubfleet("disk", HUB, "--json", fleet=root, check=True).stdout)[HUB]
        assert shown["users"][0]["username"] == "carol"
        assert "carol" in hubfleet("disk", fleet=root, check=True).stdout

        (carol / "results.bin").unlink()  # below every threshold: resolved, the notice gone
        wait_for(lambda: not warned(), timeout=60)
        wait_for(lambda: not (carol / NOTICE_FILE).exists())
        assert (carol / "escape").is_symlink()
        # the operators heard of both, through the fleet's alert webhook
        texts = wait_for(lambda: len(hook.requests) >= 2 and [json.dumps(r["body"]) for r in hook.requests])
        assert all("warn-80:carol" in text for text in texts), texts


@pytest.fixture
def btrfs_with_qgroups(tmp_path: Path):  # noqa: ANN201 - Iterator[Path]
    """A real btrfs filesystem (a loop-mounted image) with qgroups on; skipped where it cannot be made."""
    if os.geteuid() != 0 or not shutil.which("mkfs.btrfs"):
        pytest.skip("needs root and btrfs-progs")
    image, mount = tmp_path / "btrfs.img", tmp_path / "btrfs"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(160 * MIB)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot loop-mount btrfs here")
    try:
        subprocess.run(["btrfs", "quota", "enable", str(mount)], check=True, capture_output=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fill(path: Path, mib: int) -> None:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
            f.flush()
            os.fsync(f.fileno())


def test_btrfs_qgroups_enforce_the_quota_on_subvolume_homes(tmp_path: Path, btrfs_with_qgroups: Path) -> None:
    """The disk monitor's collection (run directly, as the daemon runs it in a thread) on homes the
    broker's make_home_volume created: the kernel refuses writes past the limit, and the limit goes with
    the quota. A home made as a plain directory is only warned about."""
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    hub_file = root / "communities" / "uni-a" / "hubs" / "staging.yaml"
    hub_file.write_text(hub_file.read_text() + "home_quota:\n  limit: 4M\n")
    fleet = load_fleet(root)
    layout = Layout(root / ".hubfleet", btrfs_with_qgroups, "t")
    homes = layout.homes(HUB)
    homes.mkdir(parents=True, mode=0o711)
    assert make_home_volume(homes / "erin") and not make_home_volume(homes / "erin")
    (homes / "frank").mkdir(mode=0o700)  # a home from before qgroups were on
    for name in ("erin", "frank"):
        os.chown(homes / name, 4321, 4321)
    assert quota_support(homes).enforced and not quota_support(tmp_path).enforced
    with open_store(layout.state_dir) as store:
        monitor = DiskMonitor(fleet, store, layout, lambda: [HUB])
        monitor.collect_once()
        with pytest.raises(OSError) as refused:
            _fill(homes / "erin" / "big.bin", 8)
        assert refused.value.errno == errno.EDQUOT
        _fill(homes / "frank" / "big.bin", 6)  # not limited, but warned
        (homes / "erin" / "big.bin").unlink()
        disk, changes = monitor.collect_once()
        assert [i.rule for event, i in changes if event == "opened"] == ["warn-95:frank"]
        summary = disk_summary(store, fleet.hubs.values(), layout.homes)[HUB]
        assert summary["enforcement"].startswith("enforced: btrfs qgroups")
        assert {u["username"]: u["limited"] for u in summary["users"]} == {"erin": True, "frank": False}

        fleet.hubs[HUB] = fleet.hubs[HUB].model_copy(update={"home_quota": None})
        monitor.collect_once()  # the quota is gone: so is the limit, and the warning
        _fill(homes / "erin" / "big.bin", 8)
        assert not (homes / "frank" / NOTICE_FILE).exists()
