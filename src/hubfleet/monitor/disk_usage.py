"""Disk use of each local hub's users, and `home_quota` warnings: a task of the `hubfleet up` daemon.

Every `monitoring.disk_interval` seconds (first run shortly after start) the daemon measures, in a thread,
each local hub's homes (`<data>/homes/<hub>/<home dir>`) and its data directory (database, config), and
stores `HomeUsage` rows: one per user plus the hub's total (username ""). The newest `KEEP_COLLECTIONS`
collections of each hub are kept (what the console and `hubfleet disk` show is the newest) and, for
`KEEP_DAYS` days, the last collection of each UTC day: a price sheet's GiB-months of a past month can be
allocated again. A year keeps about 365 x (users + 1) rows per hub.

Sizes are allocated bytes (st_blocks * 512, as `du` counts them: a sparse file costs what it holds, a hard
link is counted once per home). The walk runs as root over directories users own, so it works relative to
open directory fds, never follows a symlink (a link to / costs its own few bytes) and stays on the home's
filesystem.

With a hub's `home_quota`, a user over one of its `warn_at` percentages is warned: the operators through a
`quota` incident (rule `warn-<percent>:<user>`, alerted like every incident, resolved when the user drops
below) and the user through `QUOTA-WARNING.txt` in their home (visible in JupyterLab's file browser),
rewritten at each collection and removed once they are below every threshold.

Where the homes are on btrfs with qgroups on, the limit is also enforced: each home the broker created as a
subvolume gets `home_quota.limit` as its qgroup limit (hubfleet.isolation.quotas, which also says why other
filesystems are not enforced; `hubfleet disk` and the console's hub page show that line).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from sqlalchemy import delete, func, select

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.models_backup import HomeQuota
from hubfleet.isolation.accounts import AccountError, home_dirname
from hubfleet.isolation.quotas import is_subvolume, quota_support, set_home_limit
from hubfleet.monitor.incidents import IncidentRecord, open_incident, open_keys, resolve_incident
from hubfleet.runtime.layout import LAYOUT_FILE, Layout, layout
from hubfleet.settings import seconds_from_env
from hubfleet.store.api import Store
from hubfleet.store.models import HomeUsage
from hubfleet.units import human_bytes

log = logging.getLogger("hubfleet.disk")

INTERVAL_ENV = "HUBFLEET_DISK_INTERVAL"
FIRST_DELAY = 30.0
"""Seconds after start before the first measurement (at most one interval): hubs start first."""
KEEP_COLLECTIONS = 3
KEEP_DAYS = 400
"""Besides the newest collections, the last of each UTC day is kept this long: a past month's storage can be
allocated again (costs.allocation averages a month's samples)."""
NOTICE_FILE = "QUOTA-WARNING.txt"
NOTICE_HEADER = "hubfleet: your home is close to its quota"
RULE_MAX = 50  # Incident.rule's column width
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def disk_interval(fleet: FleetConfig) -> float:
    """`HUBFLEET_DISK_INTERVAL` (seconds, for tests) over fleet.yaml `monitoring.disk_interval`."""
    return seconds_from_env(INTERVAL_ENV, fleet.settings.monitoring.disk_interval, minimum=0.5)


# --------------------------------------------------------------------------- measuring


def home_username(dirname: str) -> str | None:
    """The hub username whose home is `dirname` (home_dirname inverted); None for a name home_dirname never
    makes. A very long username's home ends in a hash ('~...'): its name cannot be recovered, and the
    directory name stands for it."""
    if "~" in dirname:
        return dirname if len(dirname) <= 255 else None
    try:
        username = unquote(dirname, errors="strict")
        return username if home_dirname(username) == dirname else None
    except (UnicodeDecodeError, AccountError):
        return None


def allocated_bytes(top: int) -> int:
    """Allocated bytes of everything below the directory open as `top`, itself included.

    Never follows a symlink (directories are opened with O_NOFOLLOW relative to their parent's fd, so one
    swapped for a link mid-walk is skipped), never leaves top's filesystem, counts a hard-linked file once.
    Open fds: one per level of depth."""
    root = os.fstat(top)
    total = root.st_blocks * 512
    seen: set[int] = set()

    def scan(fd: int) -> list[str]:
        nonlocal total
        subdirs = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:  # gone meanwhile
                    continue
                if stat.S_ISDIR(info.st_mode):
                    subdirs.append(entry.name)  # counted once open: its device is checked then
                    continue
                if info.st_nlink > 1:
                    if info.st_ino in seen:
                        continue
                    seen.add(info.st_ino)
                total += info.st_blocks * 512
        return subdirs

    stack = [(top, scan(top))]
    try:
        while stack:
            fd, names = stack[-1]
            if not names:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            name = names.pop()
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:  # a symlink now (ELOOP), gone, or not readable
                continue
            try:
                info = os.fstat(child)
                if info.st_dev != root.st_dev:  # a mount point: another filesystem's business
                    os.close(child)
                    continue
                total += info.st_blocks * 512
                stack.append((child, scan(child)))
            except OSError:
                os.close(child)
    finally:
        for fd, _ in stack:
            if fd != top:
                os.close(fd)
    return total


def tree_bytes(path: Path) -> int:
    """allocated_bytes of a directory by path (0 when it is missing); its last component is not followed."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return 0
    try:
        return allocated_bytes(fd)
    finally:
        os.close(fd)


@dataclass
class HubDisk:
    """One measurement of a hub: bytes per user (by hub username) and in total (homes + data directory)."""

    hub: str
    at: datetime
    users: dict[str, int] = field(default_factory=dict)
    data_bytes: int = 0
    homes: dict[str, str] = field(default_factory=dict)
    """username -> its home's directory name."""

    @property
    def total(self) -> int:
        return sum(self.users.values()) + self.data_bytes


def measure_hub(
    layout: Layout, hub: str, now: datetime | None = None, stopping: Callable[[], bool] = lambda: False
) -> HubDisk:
    """Measure every home of `hub` and its data directory (blocking: run it in a thread). `stopping()`
    true ends it early (the daemon is shutting down and waits for this thread)."""
    disk = HubDisk(hub=hub, at=now or utcnow())
    try:
        homes = os.open(layout.homes(hub), _DIR_FLAGS)
    except OSError:
        homes = -1  # no user has started a server yet
    if homes >= 0:
        try:
            with os.scandir(homes) as entries:
                names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
            for name in names:
                if stopping():
                    break
                username = home_username(name)
                if username is None:
                    continue
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=homes)
                except OSError:
                    continue
                try:
                    disk.users[username] = allocated_bytes(fd)
                    disk.homes[username] = name
                finally:
                    os.close(fd)
        finally:
            os.close(homes)
    disk.data_bytes = tree_bytes(layout.hub_data(hub))
    return disk


# --------------------------------------------------------------------------- the store


def kept_collections(
    times: Iterable[datetime], keep: int = KEEP_COLLECTIONS, days: int = KEEP_DAYS
) -> set[datetime]:
    """Which of a hub's collection times to keep: the `keep` newest, and the last of each UTC day of the
    `days` days before the newest (a price sheet's GiB-months of a past month are averaged over them)."""
    ordered = sorted(set(times), key=_utc, reverse=True)
    if not ordered:
        return set()
    kept = set(ordered[:keep])
    oldest = _utc(ordered[0]) - timedelta(days=days)
    seen_days: set[date] = set()
    for at in ordered:  # newest first: the first seen of a day is its last
        when = _utc(at)
        if when < oldest:
            break
        if when.date() not in seen_days:
            seen_days.add(when.date())
            kept.add(at)
    return kept


def _utc(at: datetime) -> datetime:
    """The store's SQLite gives naive UTC datetimes back."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def record_disk(store: Store, disk: HubDisk, keep: int = KEEP_COLLECTIONS) -> None:
    """Store one measurement and delete the hub's rows of collections kept_collections does not keep."""
    with store.session() as session, session.begin():
        session.add(HomeUsage(hub=disk.hub, username="", at=disk.at, bytes=disk.total))
        for username, size in disk.users.items():
            session.add(HomeUsage(hub=disk.hub, username=username, at=disk.at, bytes=size))
        session.flush()
        times = session.scalars(
            select(HomeUsage.at).where(HomeUsage.hub == disk.hub, HomeUsage.username == "")
        ).all()
        kept = kept_collections(times, keep)
        gone = [at for at in times if at not in kept]
        for start in range(0, len(gone), 500):  # SQLite's bound parameters
            session.execute(
                delete(HomeUsage).where(
                    HomeUsage.hub == disk.hub, HomeUsage.at.in_(gone[start : start + 500])
                )
            )


def latest_disk(store: Store, hubs: Iterable[str]) -> dict[str, tuple[datetime, dict[str, int]]]:
    """The newest collection of each hub: (when, {username: bytes}) with "" the hub's total."""
    names = list(hubs)
    if not names:
        return {}
    with store.session() as session:
        newest = (
            select(HomeUsage.hub, func.max(HomeUsage.at).label("at"))
            .where(HomeUsage.hub.in_(names), HomeUsage.username == "")
            .group_by(HomeUsage.hub)
            .subquery()
        )
        rows = session.execute(
            select(HomeUsage.hub, HomeUsage.at, HomeUsage.username, HomeUsage.bytes).join(
                newest, (HomeUsage.hub == newest.c.hub) & (HomeUsage.at == newest.c.at)
            )
        ).all()
    found: dict[str, tuple[datetime, dict[str, int]]] = {}
    for hub, at, username, size in rows:
        found.setdefault(hub, (at, {}))[1][username] = int(size)
    return found


# --------------------------------------------------------------------------- home_quota


def quota_level(size: int, quota: HomeQuota | None) -> int | None:
    """The highest `warn_at` percentage `size` has reached, None below all (or without a quota)."""
    if quota is None:
        return None
    percent = 100 * size / quota.limit_bytes
    reached = [p for p in quota.warn_at if percent >= p]
    return reached[-1] if reached else None


def quota_rule(username: str, level: int) -> str:
    """The incident rule of a user at a level: `warn-80:alice` (a long username: cut, with a hash)."""
    rule = f"warn-{level}:{username}"
    if len(rule) <= RULE_MAX:
        return rule
    digest = hashlib.sha256(username.encode()).hexdigest()[:8]
    return f"{rule[: RULE_MAX - len(digest) - 1]}~{digest}"


def notice_text(username: str, size: int, quota: HomeQuota, level: int, at: datetime) -> str:
    percent = 100 * size / quota.limit_bytes
    return (
        f"{NOTICE_HEADER}\n\n"
        f"On {at:%Y-%m-%d %H:%M} UTC your home ({username}) held {human_bytes(size)}: {percent:.0f}% of its "
        f"quota of {quota.limit}, past the {level}% warning.\n"
        "Delete or move files you no longer need (large outputs, checkpoints, caches such as "
        "~/.cache), or ask your hub's administrators for more space.\n"
        "This file goes away by itself once your home is below the warning.\n"
    )


def update_notice(homes: Path, dirname: str, text: str | None) -> None:
    """Write (text) or remove (None) QUOTA-WARNING.txt in one home, as root, never following a user's link.

    The file is created fresh (O_CREAT | O_EXCL | O_NOFOLLOW, relative to the home's fd), given to the
    home's owner, then renamed over the old one: a symlink planted under either name is replaced or
    unlinked, never written through."""
    try:
        parent = os.open(homes, _DIR_FLAGS)
    except OSError:
        return
    try:
        home = os.open(dirname, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        os.close(parent)
        return
    os.close(parent)
    try:
        owner = os.fstat(home)
        if owner.st_uid == 0:  # not handed to its account yet: nobody to tell
            return
        if text is None:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(NOTICE_FILE, dir_fd=home)
            return
        temp = f".{NOTICE_FILE}.hubfleet"
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(temp, dir_fd=home)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o644, dir_fd=home)
        with os.fdopen(fd, "w") as out:
            os.fchown(fd, owner.st_uid, owner.st_gid)
            out.write(text)
        os.rename(temp, NOTICE_FILE, src_dir_fd=home, dst_dir_fd=home)
    except OSError as exc:  # e.g. a directory planted under the name, or a full disk
        log.warning("disk: cannot update %s in %s/%s: %s", NOTICE_FILE, homes, dirname, exc)
    finally:
        os.close(home)


# --------------------------------------------------------------------------- enforcement


def enforce_quota(
    homes: Path, disk: HubDisk, quota: HomeQuota | None, applied: dict[tuple[str, str], int | None]
) -> None:
    """Set each subvolume home's btrfs limit to the quota (lift it without one), where qgroups are on.
    `applied` remembers what was set ((hub, home dir) -> bytes), so a limit is set once, not at every
    collection; a fresh daemon sets each once again."""
    if not quota_support(homes).enforced:
        return
    limit = None if quota is None else quota.limit_bytes
    for dirname in disk.homes.values():
        key = (disk.hub, dirname)
        if key in applied and applied[key] == limit:
            continue
        home = homes / dirname
        if not is_subvolume(home):
            continue  # made before qgroups were on: only warned about
        try:
            set_home_limit(home, limit)
            applied[key] = limit
        except OSError as exc:
            log.warning("disk: %s", exc)


# --------------------------------------------------------------------------- console and CLI


def disk_summary(
    store: Store, hubs: Iterable[Hub], homes_of: Callable[[str], Path] | None = None
) -> dict[str, dict[str, Any]]:
    """Per hub: the newest collection (`at`, `total_bytes`, `users` largest first with their quota
    percentage), its `quota` and, when `homes_of` locates its homes, `enforcement` (a QuotaSupport note).
    A hub never measured has `at` None and no users."""
    chosen = list(hubs)
    latest = latest_disk(store, (h.name for h in chosen))
    supports = {h.name: quota_support(homes_of(h.name)) for h in chosen} if homes_of else {}
    summary: dict[str, dict[str, Any]] = {}
    for hub in chosen:
        at, sizes = latest.get(hub.name, (None, {}))
        quota = hub.home_quota
        users = [
            {
                "username": name,
                "bytes": size,
                "quota_percent": None if quota is None else round(100 * size / quota.limit_bytes, 1),
                "warning": quota_level(size, quota),
                "limited": is_subvolume(homes_of(hub.name) / _dirname(name))
                if homes_of and supports[hub.name].enforced
                else None,
            }
            for name, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
            if name
        ]
        summary[hub.name] = {
            "at": at.isoformat() if at else None,
            "total_bytes": sizes.get(""),
            "homes_bytes": sum(u["bytes"] for u in users),
            "users": users,
            "quota": None
            if quota is None
            else {"limit": quota.limit, "limit_bytes": quota.limit_bytes, "warn_at": quota.warn_at},
            "enforcement": supports[hub.name].note if homes_of else None,
        }
    return summary


def _dirname(username: str) -> str:
    """home_username inverted: a hashed home's name stands for its username ('~' is always escaped)."""
    return username if "~" in username else home_dirname(username)


def homes_locator(state_dir: Path | None) -> Callable[[str], Path] | None:
    """Where a hub's homes are, for a fleet whose layout is recorded (None: no state yet, nothing to say)."""
    if state_dir is None or not (state_dir / LAYOUT_FILE).is_file():
        return None
    try:
        return layout(state_dir).homes
    except OSError:
        return None


def hub_disk(fleet: FleetConfig, store: Store, hub: Hub, state_dir: Path | None) -> dict[str, Any] | None:
    """disk_summary of one hub for its console page; None for a hub on kubernetes (the cloud's volumes)."""
    if fleet.clusters[hub.cluster].kind != "local":
        return None
    return disk_summary(store, [hub], homes_locator(state_dir))[hub.name]


# --------------------------------------------------------------------------- the daemon's task


class Alerting(Protocol):
    async def incident_opened(self, incident: IncidentRecord, *, wait: bool = False) -> None: ...

    async def incident_resolved(self, incident: IncidentRecord, *, wait: bool = False) -> None: ...

    async def drain(self, timeout: float | None = None) -> None: ...


def check_quota(store: Store, hub: Hub, disk: HubDisk, homes: Path) -> list[tuple[str, IncidentRecord]]:
    """Open and resolve the hub's `quota` incidents and write or remove each user's notice (blocking)."""
    quota = hub.home_quota
    wanted: dict[str, tuple[str, int]] = {}
    for username, size in disk.users.items():
        level = quota_level(size, quota)
        text = None
        if level is not None and quota is not None:
            wanted[quota_rule(username, level)] = (username, level)
            text = notice_text(username, size, quota, level, disk.at)
        update_notice(homes, disk.homes[username], text)
    open_rules = {rule for h, kind, rule in open_keys(store) if h == hub.name and kind == "quota"}
    changes: list[tuple[str, IncidentRecord]] = []
    for rule in sorted(open_rules - set(wanted)):
        if done := resolve_incident(store, hub.name, "quota", rule, at=disk.at):
            changes.append(("resolved", done))
    for rule, (username, level) in sorted(wanted.items()):
        if rule in open_rules or quota is None:
            continue
        size = disk.users[username]
        cause = (
            f"user {username}'s home holds {human_bytes(size)}, "
            f"{100 * size / quota.limit_bytes:.0f}% of its quota of {quota.limit} (warning at {level}%)"
        )
        incident, opened = open_incident(store, hub.name, "quota", cause, rule, at=disk.at)
        if opened:
            changes.append(("opened", incident))
    return changes


class DiskMonitor:
    """Measures every local hub `hubs()` names, every `interval` seconds, and warns about home_quota."""

    def __init__(
        self,
        fleet: FleetConfig,
        store: Store,
        layout: Layout,
        hubs: Callable[[], Iterable[str]],
        alerter: Alerting | None = None,
        interval: float | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.layout = layout
        self.hubs = hubs
        self.alerter = alerter
        self.interval = interval if interval is not None else disk_interval(fleet)
        self._limits: dict[tuple[str, str], int | None] = {}

    def collect_once(
        self, stopping: Callable[[], bool] = lambda: False
    ) -> tuple[list[HubDisk], list[tuple[str, IncidentRecord]]]:
        """Measure, store and check every hub (blocking); a hub that fails is logged and skipped."""
        done: list[HubDisk] = []
        changes: list[tuple[str, IncidentRecord]] = []
        for name in self.hubs():
            hub = self.fleet.hubs.get(name)
            if hub is None:
                continue
            try:
                disk = measure_hub(self.layout, name, stopping=stopping)
                if stopping():  # a cut-short measurement is not stored
                    break
                record_disk(self.store, disk)
                changes += check_quota(self.store, hub, disk, self.layout.homes(name))
                enforce_quota(self.layout.homes(name), disk, hub.home_quota, self._limits)
                done.append(disk)
            except Exception:  # noqa: BLE001 - one hub's trouble must not stop the others
                log.exception("disk: measuring %s failed", name)
        return done, changes

    async def run(self, stop: asyncio.Event) -> None:
        """Measure shortly after start, then every interval until `stop` is set. Never raises."""
        delay = min(FIRST_DELAY, self.interval)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
                delay = self.interval
                try:
                    _, changes = await asyncio.to_thread(self.collect_once, stop.is_set)
                except Exception:  # noqa: BLE001 - the daemon must outlive any collection error
                    log.exception("disk: collection failed")
                    continue
                for event, incident in changes:
                    await self._alert(event, incident)
        finally:  # also when cancelled at shutdown: alerts already handed over still go out
            if self.alerter is not None:
                with contextlib.suppress(Exception):
                    await self.alerter.drain(5)

    async def _alert(self, event: str, incident: IncidentRecord) -> None:
        log.info("incident %s: quota %s of hub %s: %s", event, incident.id, incident.hub, incident.cause)
        if self.alerter is None:
            return
        deliver = self.alerter.incident_opened if event == "opened" else self.alerter.incident_resolved
        try:
            await deliver(incident)  # returns at once: delivery goes on in the background
        except Exception:  # noqa: BLE001 - the Alerter never raises; a bug in it must not stop us
            log.exception("alerting about incident %s failed", incident.id)


def local_hubs(fleet: FleetConfig) -> Callable[[], list[str]]:
    """The fleet's hubs on local clusters (kubernetes homes live on the cloud's volumes)."""
    return lambda: sorted(
        name for name, hub in fleet.hubs.items() if fleet.clusters[hub.cluster].kind == "local"
    )


def start_disk_monitor(
    fleet: FleetConfig, store: Store, layout: Layout, alerter: Alerting | None, stop: asyncio.Event
) -> asyncio.Task[None]:
    """The daemon's disk task: first measurement FIRST_DELAY s after start, then every disk_interval."""
    monitor = DiskMonitor(fleet, store, layout, local_hubs(fleet), alerter)
    return asyncio.create_task(monitor.run(stop), name="disk")
