"""Enforcing `home_quota`: which filesystem holds the homes, and btrfs qgroups where they can.

A size limit per home needs the filesystem's help. Three Linux routes exist:

- **XFS project quotas** (mounted with prjquota; `xfs_quota -x -c 'limit -p bhard=...'`) and **ext4 project
  quotas** (the `project` feature, mounted with prjquota; `setquota -P`): both need the kernel's quota
  support (CONFIG_XFS_QUOTA; CONFIG_QUOTA with CONFIG_QFMT_V2 for ext4). hubfleet does not set them: the
  machines it was built on have neither, so that code could not be run;
- **btrfs qgroups**: a home that is a subvolume gets a qgroup whose `max_rfer` limit the kernel enforces
  (writes fail with EDQUOT, "Disk quota exceeded"), root's included. hubfleet does this: with qgroups on
  (`btrfs quota enable MOUNT`, the operator's choice, as it costs some write performance), the broker
  creates each new home as a subvolume, and the disk monitor sets its limit from `home_quota` (and lifts
  it when the quota goes). A home made as a plain directory before stays unlimited (and is warned about).

Everything runs as root on directories users own: a home is checked through an fd opened with O_NOFOLLOW
before `btrfs` is given its path, and its parent (the hub's homes directory) is root's, so the path cannot
be swapped for a link in between.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("hubfleet.quotas")

SUBVOLUME_INODE = 256  # BTRFS_FIRST_FREE_OBJECTID: the root directory of every btrfs subvolume
_TOOL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class QuotaError(OSError):
    """The filesystem refused a quota operation; the message names it."""


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    options: frozenset[str]
    """Mount and superblock options together."""


def mount_of(path: Path) -> Mount | None:
    """The mount holding `path` (or its nearest existing parent), from /proc/self/mountinfo."""
    target = Path(os.path.realpath(path))
    best: Mount | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 6 or len(rest) < 3:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 for a space
        if target != Path(point) and Path(point) not in target.parents:
            continue
        if best is None or len(point) >= len(best.point):
            best = Mount(point, rest[0], frozenset(fields[5].split(",")) | frozenset(rest[2].split(",")))
    return best


def _btrfs(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("btrfs", path=_TOOL_ENV["PATH"])
    if tool is None:
        raise QuotaError("the btrfs command is missing: install btrfs-progs")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, env=_TOOL_ENV, stdin=subprocess.DEVNULL, timeout=60
    )


def qgroups_enabled(mount: Mount) -> bool:
    """Whether btrfs quotas (qgroups) are on for this btrfs filesystem."""
    if mount.fstype != "btrfs":
        return False
    try:
        return _btrfs("qgroup", "show", "-f", mount.point).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def is_subvolume(path: Path) -> bool:
    """`path` is a real directory (not a link) that is the root of a btrfs subvolume."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        return stat.S_ISDIR(info.st_mode) and info.st_ino == SUBVOLUME_INODE
    finally:
        os.close(fd)


def make_home_volume(home: Path) -> bool:
    """Create a new home as a btrfs subvolume when its filesystem has qgroups on (True when it did).

    Anything else (a home that exists, another filesystem, qgroups off) is left to ensure_home, which makes
    or adopts a plain directory: a home is never converted."""
    home = Path(home)
    if os.path.lexists(home):
        return False
    mount = mount_of(home.parent)
    if mount is None or not qgroups_enabled(mount):
        return False
    done = _btrfs("subvolume", "create", str(home))
    if done.returncode != 0:
        raise QuotaError(f"btrfs subvolume create {home} failed: {done.stderr.strip()}")
    os.chmod(home, 0o700)  # ensure_home hands it to the user's account
    return True


def set_home_limit(home: Path, limit_bytes: int | None) -> None:
    """Limit a subvolume home to `limit_bytes` (None: no limit). Refuses anything but a subvolume root, as
    a plain directory's qgroup is the whole filesystem's."""
    if not is_subvolume(home):
        raise QuotaError(f"{home} is not a btrfs subvolume: its size cannot be limited")
    value = "none" if limit_bytes is None else str(int(limit_bytes))
    done = _btrfs("qgroup", "limit", value, str(home))
    if done.returncode != 0:
        raise QuotaError(f"btrfs qgroup limit {value} {home} failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class QuotaSupport:
    """What the filesystem holding a hub's homes enforces, in one line for status and the console."""

    filesystem: str
    mount: str
    enforced: bool
    note: str


def quota_support(homes: Path) -> QuotaSupport:
    """Whether home_quota is enforced for homes under `homes`, and if not, why."""
    mount = mount_of(homes)
    if mount is None:
        return QuotaSupport("unknown", "", False, "not enforced: the filesystem of the homes is unknown")
    fs, point = mount.fstype, mount.point
    project = bool(mount.options & {"prjquota", "pquota", "pqnoenforce", "prjjquota"})
    if fs == "btrfs" and qgroups_enabled(mount):
        note = f"enforced: btrfs qgroups at {point} (homes made before qgroups were on: not limited)"
        return QuotaSupport(fs, point, True, note)
    if fs == "btrfs":
        note = f"not enforced: btrfs at {point} has quotas off (turn them on: btrfs quota enable {point})"
    elif fs in ("xfs", "ext4") and project:
        note = f"not enforced: {fs} at {point} has project quotas, but hubfleet sets only btrfs qgroups"
    elif fs == "xfs":
        note = f"not enforced: xfs at {point} is mounted without prjquota (no project quotas)"
    else:
        note = f"not enforced: {fs} at {point} has no project quotas"
    return QuotaSupport(fs, point, False, note)
