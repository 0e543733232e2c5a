"""Backing up a hub, listing its snapshots and restoring from them.

One restic repository per fleet; snapshots are grouped by the fleet's name as restic's host (stable when the
fleet moves to another machine) and tagged `hub:<name>`. restic runs in the data directory with relative
paths, so a snapshot's tree is the same wherever the fleet lives:

    /homes/<hub>/<home>/...            the users' files
    /backup/<hub>/jupyterhub.sqlite    a consistent copy of the hub's database (dumps.py)

Every command that writes to the repository or into a home holds the fleet's backup lock, so a scheduled
backup, a manual one and a restore never interleave.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from hubfleet.backup import records
from hubfleet.backup.dumps import HUB_DATABASE, hub_dumps
from hubfleet.backup.restic import BackupSummary, Repository, ResticError, Snapshot
from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.isolation.accounts import AccountError, check_username, home_dirname
from hubfleet.runtime.layout import Layout, layout
from hubfleet.secrets.store import SecretResolver
from hubfleet.settings import UserError
from hubfleet.store import Store

DUMP_DIR = "backup"
"""`<data>/backup/<hub>/`: the databases' consistent copies, root's alone (0700)."""
TAG = "hubfleet"
RESTORE_PREFIX = ".hubfleet-restore-"
PRUNE_MARK = "backup-pruned"
"""`<state>/backup-pruned`: its modification time is when the repository was last pruned."""
PRUNE_EVERY = 24 * 3600


@dataclass(frozen=True)
class BackupSetup:
    """What every backup operation of a fleet needs."""

    config: FleetConfig
    layout: Layout
    repository: Repository
    state_dir: Path
    on_wait: Callable[[], None] | None = None
    """Called when another backup or restore holds the fleet's lock and this one waits (the CLI says so)."""

    @property
    def host(self) -> str:
        return self.config.settings.name

    def hub_tag(self, hub: str) -> str:
        return f"hub:{hub}"


def backup_setup(config: FleetConfig, state_dir: Path, resolver: SecretResolver | None = None) -> BackupSetup:
    """The fleet's repository with its password and credentials decrypted; UserError without `backups`."""
    settings = config.settings.backups
    if settings is None:
        raise UserError(
            "this fleet has no backups: add a `backups:` block to fleet.yaml (repository and password; "
            "see docs/operator-guide.md, 'Backups')"
        )
    resolver = resolver or SecretResolver(config)
    location = settings.repository
    if not location.startswith("s3:"):
        location = str(config.file(location).resolve())
    password = resolver.resolve_fleet(settings.password) or ""
    s3 = settings.s3
    repository = Repository(
        location=location,
        password=password,
        cache_dir=state_dir / "restic-cache",
        s3_key_id=resolver.resolve_fleet(s3.access_key_id) if s3 else None,
        s3_secret=resolver.resolve_fleet(s3.secret_access_key) if s3 else None,
        s3_region=s3.region if s3 else "",
    )
    return BackupSetup(config=config, layout=layout(state_dir), repository=repository, state_dir=state_dir)


@contextlib.contextmanager
def fleet_lock(state_dir: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """One backup operation of a fleet at a time (across processes: the daemon's schedule and commands);
    `on_wait` is called first when this one has to wait."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "backup.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_repository(setup: BackupSetup, store: Store, *, new: bool = False) -> None:
    """Make the repository on the fleet's first backup. Later, a missing one is an error, never silently
    made afresh: that would hide that every earlier backup is gone. Opening it also removes stale locks (a
    restic killed mid-backup leaves one; live locks stay): one restic run, not two, since each derives the
    key from the password anew."""
    try:
        setup.repository.unlock()
        return
    except ResticError as exc:
        if "no repository there" not in str(exc):
            raise
    if records.latest_good_runs(store) and not new:
        raise ResticError(
            f"backup repository {setup.repository.location}: no repository there, but this fleet has backed "
            "up to it before (it is missing or was moved); restore it, or run `hubfleet backup "
            "--new-repository` to start a new, empty one"
        )
    setup.repository.init()


def back_up_hub(
    setup: BackupSetup, store: Store, hub: Hub, trigger: str, *, new: bool = False
) -> BackupSummary:
    """Snapshot the hub's homes and databases, then forget what its retention no longer keeps. The run is
    recorded good or failed; a failure raises ResticError, UserError (a database that cannot be copied) or
    OSError after it is recorded."""
    run_id = records.start_run(store, hub.name, trigger)
    try:
        with fleet_lock(setup.state_dir, setup.on_wait):
            ensure_repository(setup, store, new=new)
            paths = write_dumps(setup.layout, hub.name)
            if setup.layout.homes(hub.name).is_dir():
                paths.insert(0, f"homes/{hub.name}")
            summary = setup.repository.backup(
                setup.layout.data_dir,
                [
                    *paths,
                    f"--exclude={_glob_escape(setup.layout.homes(hub.name).resolve())}/{RESTORE_PREFIX}*",
                ],
                host=setup.host,
                tags=[TAG, setup.hub_tag(hub.name)],
            )
            policy = setup.config.backup_policy(hub)
            if policy is not None:
                prune = prune_due(setup.state_dir)
                setup.repository.forget(
                    host=setup.host, tag=setup.hub_tag(hub.name), keep=policy.keep, prune=prune
                )
                if prune:
                    (setup.state_dir / PRUNE_MARK).touch()
    except (ResticError, OSError) as exc:
        records.finish_run(store, run_id, None, error=str(exc))
        raise
    except sqlite3.Error as exc:  # a damaged database, or one locked for a minute: no traceback, one line
        error = (
            f"the database {setup.layout.hub_data(hub.name) / HUB_DATABASE} could not be copied ({exc}); "
            "check it with sqlite3's `PRAGMA integrity_check`, or bring back a good one with "
            f"`hubfleet restore {hub.name} --database`"
        )
        records.finish_run(store, run_id, None, error=error)
        raise UserError(error) from None
    records.finish_run(store, run_id, summary)
    return summary


def prune_due(state_dir: Path) -> bool:
    """Whether the repository's unreferenced data is due to be freed: `restic prune` reads every index and
    may rewrite packs, so it runs at most once a day per fleet, while `forget` (cheap) runs after every
    backup. Forgotten snapshots are gone from the list at once; their space returns at the next prune."""
    try:
        return time.time() - (state_dir / PRUNE_MARK).stat().st_mtime > PRUNE_EVERY
    except FileNotFoundError:
        return True


def _glob_escape(path: Path) -> str:
    """`path` as a restic pattern matching itself only: restic matches excludes against the absolute path
    on disk (not the snapshot's relative one), component by component as filepath.Match does."""
    return re.sub(r"([*?\[\\])", r"\\\1", str(path))


def write_dumps(where: Layout, hub: str) -> list[str]:
    """Write the hub's database copies; the snapshot paths (relative to the data directory) holding them."""
    dump_dir = where.data_dir / DUMP_DIR / hub
    dump_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(where.data_dir / DUMP_DIR, 0o700)
    for dump in hub_dumps(where, hub):
        if not dump.write(dump_dir / dump.name):
            (dump_dir / dump.name).unlink(missing_ok=True)
    return [f"{DUMP_DIR}/{hub}"]


# --------------------------------------------------------------------------- listing


def hub_snapshots(setup: BackupSetup, hub: str) -> list[Snapshot]:
    """The hub's snapshots, oldest first; a clear error when there is no repository."""
    try:
        return setup.repository.snapshots(host=setup.host, tag=setup.hub_tag(hub))
    except ResticError as exc:
        if "no repository there" not in str(exc):
            raise
    raise ResticError(
        f"backup repository {setup.repository.location}: no repository there; before the first backup "
        "that is expected (run `hubfleet backup`), after one it is missing or was moved (restore it)"
    )


def pick_snapshot(snapshots: list[Snapshot], hub: str, at: str | None) -> Snapshot:
    """The newest snapshot, the newest taken at or before `at` (ISO date or time, UTC unless it says), or
    the one whose id starts with `at`."""
    if not snapshots:
        raise UserError(f"hub {hub} has no backups yet; take one with `hubfleet backup {hub}`")
    if at is None:
        return snapshots[-1]
    if re.fullmatch(r"[0-9a-f]{8,64}", at):
        match = [s for s in snapshots if s.id.startswith(at)]
        if match:
            return match[0]
    when = parse_time(at)
    earlier = [s for s in snapshots if s.time <= when]
    if not earlier:
        first = snapshots[0].time.strftime("%Y-%m-%d %H:%M UTC")
        raise UserError(f"hub {hub} has no backup from {at} or earlier; its oldest is from {first}")
    return earlier[-1]


def parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise UserError(
            f"--at {text!r} is neither a time (2026-11-30, 2026-11-30T14:00, 2026-11-30T14:00+01:00) nor "
            "a snapshot id from `hubfleet backups list`"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if re.fullmatch(r"\d{4}-?\d{2}-?\d{2}", text.strip()):  # a date alone: the end of that day
        when = when.replace(hour=23, minute=59, second=59, microsecond=999999)
    return when


# --------------------------------------------------------------------------- restoring a user's files


def relative_path(path: str | None) -> str:
    """A path inside a home, checked: relative, no `..`, no empty parts."""
    if not path:
        return ""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or str(pure) in ("", "."):
        raise UserError(
            f"--path {path!r}: give a path inside the user's home, such as work/analysis.ipynb (no '/' at "
            "the start, no '..')"
        )
    return str(pure)


def restore_user(
    setup: BackupSetup, hub: str, username: str, *, path: str | None = None, at: str | None = None
) -> tuple[Path, Snapshot]:
    """Restore a user's files (all, or `path`) as of a snapshot into a new folder in their home, owned by
    them; nothing in the home is overwritten and no other home is touched. Returns (folder, snapshot)."""
    try:
        home_name = home_dirname(check_username(username))
    except AccountError as exc:
        raise UserError(f"--user {username!r}: {exc}") from None
    inside = relative_path(path)
    homes = setup.layout.homes(hub)
    home = homes / home_name
    if not home.is_dir() or home.is_symlink():
        raise UserError(
            f"user {username} has no home on hub {hub} now (never signed in, or it was removed); "
            f"restore to a folder of your own instead with --to DIR"
        )
    snapshot = pick_snapshot(hub_snapshots(setup, hub), hub, at)
    with fleet_lock(setup.state_dir, setup.on_wait):
        staging = homes / f"{RESTORE_PREFIX}{secrets.token_hex(6)}"
        staging.mkdir(mode=0o700)
        try:
            restored = _restore_home_into(setup, snapshot, hub, home_name, inside, staging, username)
            folder = _move_into_home(restored, home, snapshot)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder, snapshot


def restore_user_to(
    setup: BackupSetup, hub: str, username: str, dest: Path, *, path: str | None = None, at: str | None = None
) -> tuple[Path, Snapshot]:
    """Restore a user's files into `dest` (a new directory of the operator's), for a home that is gone."""
    try:
        home_name = home_dirname(check_username(username))
    except AccountError as exc:
        raise UserError(f"--user {username!r}: {exc}") from None
    inside = relative_path(path)
    if dest.exists():
        raise UserError(f"--to {dest}: exists already; name a new directory (nothing is overwritten)")
    snapshot = pick_snapshot(hub_snapshots(setup, hub), hub, at)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f"{RESTORE_PREFIX}{secrets.token_hex(6)}"
    staging.mkdir(mode=0o700)
    try:
        restored = _restore_home_into(setup, snapshot, hub, home_name, inside, staging, username)
        restored.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest, snapshot


def _restore_home_into(
    setup: BackupSetup,
    snapshot: Snapshot,
    hub: str,
    home_name: str,
    inside: str,
    staging: Path,
    username: str,
) -> Path:
    """restic-restore one home (or one path in it) into `staging`; the restored home directory there."""
    wanted = f"homes/{hub}/{home_name}" + (f"/{inside}" if inside else "")
    # restic reads an include as a pattern: escaped, a[1].ipynb is that file, not a1.ipynb
    setup.repository.restore(snapshot.id, staging, [f"/{_glob_escape(Path(wanted))}"])
    restored = staging / "homes" / hub / home_name
    if not os.path.lexists(staging / wanted):  # a link restored is there, wherever it points
        taken = snapshot.time.strftime("%Y-%m-%d %H:%M UTC")
        what = f"{inside} of user {username} is not" if inside else f"no files of user {username} are"
        raise UserError(
            f"{what} in the backup of hub {hub} from {taken} ({snapshot.short_id}); "
            f"see `hubfleet backups list {hub}` for other times"
        )
    return restored


def _move_into_home(restored: Path, home: Path, snapshot: Snapshot) -> Path:
    """Give the restored tree to the home's owner and move it in under a new name, through a descriptor of
    the home so that no link the user planted is followed."""
    owner = home.lstat()
    for root, dirs, files in os.walk(restored):
        for name in [*dirs, *files]:
            os.lchown(Path(root) / name, owner.st_uid, owner.st_gid)
    os.lchown(restored, owner.st_uid, owner.st_gid)
    stamp = snapshot.time.astimezone(UTC).strftime("%Y-%m-%d-%H%M%S")
    home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for attempt in range(100):
            name = f"restored-{stamp}" + (f"-{attempt}" if attempt else "")
            try:
                os.lstat(name, dir_fd=home_fd)
                continue
            except FileNotFoundError:
                pass
            try:
                os.rename(restored, name, dst_dir_fd=home_fd)
            except OSError as exc:  # the user made that name since: rename replaces no link, no folder
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    continue
                if exc.errno == errno.EXDEV:  # the home is a filesystem of its own (btrfs subvolume, mount)
                    _copy_in_as_owner(restored, home, name, owner)
                    return home / name
                raise
            return home / name
        raise UserError(f"{home}: 100 restore folders of {stamp} exist already; remove some")
    finally:
        os.close(home_fd)


def _copy_in_as_owner(restored: Path, home: Path, name: str, owner: os.stat_result) -> None:
    """Copy the restored tree into the home as the home's owner (setpriv when root): a process that writes
    into a directory the user controls must not be root, or a link they plant there mid-copy could send its
    writes anywhere. The owner reaches the tree through staging directories made passable (0711)."""
    for parent in restored.parents:
        if parent == home.parent:
            break
        os.chmod(parent, 0o711)
    command = ["cp", "-a", "--no-preserve=ownership", "-T", str(restored), str(home / name)]
    if os.geteuid() == 0 and owner.st_uid != 0:
        command = [
            "setpriv",
            f"--reuid={owner.st_uid}",
            f"--regid={owner.st_gid}",
            "--clear-groups",
            "--",
            *command,
        ]
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise UserError(
            f"could not copy the restored files into {home / name}: {result.stderr.strip()[:300]}; the home "
            "is on a filesystem of its own and its owner could not write there (is it full?)"
        )


# --------------------------------------------------------------------------- restoring the hub's database


def restore_database(
    setup: BackupSetup,
    hub: str,
    *,
    at: str | None = None,
    hold: Callable[[], None] | None = None,
    release: Callable[[], None] | None = None,
) -> tuple[Path | None, Snapshot]:
    """Put the hub's database back as of a snapshot: checked first, the hub held while it is swapped in
    (`hold`/`release`: through the daemon when it runs the hub), the current file kept beside it.
    Returns (where the replaced database was kept, or None, snapshot)."""
    snapshot = pick_snapshot(hub_snapshots(setup, hub), hub, at)
    data = setup.layout.hub_data(hub)
    with fleet_lock(setup.state_dir, setup.on_wait):
        staging = setup.layout.data_dir / DUMP_DIR / f"{RESTORE_PREFIX}{secrets.token_hex(6)}"
        staging.mkdir(parents=True, mode=0o700)
        try:
            setup.repository.restore(snapshot.id, staging, [f"/{DUMP_DIR}/{hub}/{HUB_DATABASE}"])
            restored = staging / DUMP_DIR / hub / HUB_DATABASE
            if not restored.exists():
                raise UserError(
                    f"the backup of hub {hub} from {snapshot.time:%Y-%m-%d %H:%M} UTC holds no database"
                )
            _check_database(restored)
            if hold is not None:
                hold()
            try:
                kept = _swap_database(restored, data)
            finally:
                if release is not None:
                    release()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return kept, snapshot


def _check_database(path: Path) -> None:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = connection.execute("PRAGMA integrity_check").fetchone()[0]
        connection.execute("SELECT count(*) FROM users").fetchone()
    except sqlite3.Error as exc:
        raise UserError(
            f"the database in the backup does not open ({exc}); try an earlier one with --at"
        ) from None
    finally:
        connection.close()
    if result != "ok":
        raise UserError(f"the database in the backup is damaged ({result}); try an earlier one with --at")


def _swap_database(restored: Path, data: Path) -> Path | None:
    """Move the restored file into the hub's data directory as its database, owned like the directory;
    the database it replaces (and its journal files) kept under a dated name."""
    data.mkdir(parents=True, exist_ok=True)
    owner = data.stat()
    target = data / HUB_DATABASE
    kept = None
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm", "-journal"):
        current = data / (HUB_DATABASE + suffix)
        if current.exists():
            moved = data / f"{HUB_DATABASE}{suffix}.before-restore-{stamp}"
            current.rename(moved)
            kept = kept or moved
    tmp = data / f".{HUB_DATABASE}.restoring"
    shutil.copyfile(restored, tmp)
    os.chown(tmp, owner.st_uid, owner.st_gid)
    os.chmod(tmp, 0o600)
    tmp.rename(target)
    return kept
