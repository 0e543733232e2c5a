"""Retiring a hub: stopped for good, a final backup, one archive per user and a manifest for the community's
contacts, the data kept for `backups.retired_retention_days`, then purged (the modelled service's Right to
Replicate: the community takes its hub and its users' work home).

    <state>/retired/<hub>/
        README.md, manifest.json      for the community's contacts: users, sizes, sha256, purge date
        users/<home>.tar.gz           one user's home (<home> is their username, escaped when not plain)
        database/jupyterhub.sqlite    a consistent copy of the hub's database
        user-databases/*.pgdump       each user's own database (hubs with `user_database`), as pg_dump -Fc
        bundle/                       `hubfleet export`'s standalone bundle of the hub (config, README)

Everything there is root's alone (directories 0700, files 0600): the operator hands it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

from hubfleet.backends.hub_data import purge_hub
from hubfleet.backup.dumps import HUB_DATABASE, copy_sqlite
from hubfleet.backup.hub_backup import DUMP_DIR, RESTORE_PREFIX, back_up_hub, backup_setup, fleet_lock
from hubfleet.backup.user_dbs import hub_user_dumps, remove_hub_databases
from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.models_backup import HubBackup
from hubfleet.isolation.accounts import AccountError, check_username, home_dirname
from hubfleet.render.common import CHECK_USERNAME
from hubfleet.runtime.layout import Layout, layout
from hubfleet.settings import UserError
from hubfleet.store import Store
from hubfleet.store.retirements import (
    RetirementRecord,
    due_for_purge,
    mark_purged,
    record_retirement,
    retirement,
)

log = logging.getLogger("hubfleet.retire")

RETIRED_DIR = "retired"
DEFAULT_RETENTION_DAYS = 90
PURGE_EVERY = 24 * 3600.0


@dataclass(frozen=True)
class UserArchive:
    username: str
    archive: str | None
    """Relative to the retirement's directory: users/<home>.tar.gz; None for a user without a home."""
    files: int
    bytes: int
    sha256: str | None


@dataclass(frozen=True)
class Retired:
    record: RetirementRecord
    archives: list[UserArchive]
    backup: str
    """What became of the final backup, in one line."""


@dataclass(frozen=True)
class RemovedHub:
    """A hub whose file is gone while its data is still here (`plan` says so): it is retired all the same,
    named as its last deployment names it, backed up with the fleet's policy, without a bundle."""

    name: str
    community: str
    display_name: str = ""
    backup: HubBackup = field(default_factory=HubBackup)


def retired_dir(state_dir: Path, hub: str) -> Path:
    return state_dir / RETIRED_DIR / hub


def retention_days(config: FleetConfig) -> int:
    backups = config.settings.backups
    return backups.retired_retention_days if backups is not None else DEFAULT_RETENTION_DAYS


def refuse_if_retired(store: Store, hub: str) -> None:
    found = retirement(store, hub)
    if found is not None:
        raise UserError(f"hub {hub} is retired already: {found.describe()}")


def retire_hub(
    config: FleetConfig,
    state_dir: Path,
    store: Store,
    hub: Hub | RemovedHub,
    *,
    hold: Callable[[], object] | None = None,
    bundle: Callable[[Path], object] | None = None,
) -> Retired:
    """Retire `hub`: `hold` stops it (through the daemon when it runs it), then a final backup when the fleet
    has backups, the archives and manifest, and the retirement recorded. `bundle(dir)` writes the hub's
    standalone bundle into the archive. Nothing is recorded when a step fails (the archive is removed)."""
    refuse_if_retired(store, hub.name)
    where = layout(state_dir)
    if hold is not None:
        hold()
    snapshot_id, backup = _final_backup(config, state_dir, store, hub)
    now = utcnow()
    purge_after = now + timedelta(days=retention_days(config))
    target = retired_dir(state_dir, hub.name)
    if target.exists():  # left by a retirement that failed half-way
        shutil.rmtree(target)
    try:
        archives = write_archives(where, hub.name, target)
        if bundle is not None:
            bundle(target / "bundle")
            _make_private(target / "bundle")
        write_manifest(config, hub, target, archives, now, purge_after, snapshot_id, backup)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    record = record_retirement(
        store,
        hub.name,
        hub.community,
        retired_at=now,
        purge_after=purge_after,
        archive_dir=str(target),
        snapshot_id=snapshot_id,
    )
    return Retired(record=record, archives=archives, backup=backup)


def _final_backup(
    config: FleetConfig, state_dir: Path, store: Store, hub: Hub | RemovedHub
) -> tuple[str | None, str]:
    if config.settings.backups is None:
        return None, "this fleet has no backups: no final snapshot was taken; the archives are the only copy"
    # back_up_hub reads a hub's name and its backup settings, which a RemovedHub has too
    summary = back_up_hub(backup_setup(config, state_dir), store, hub, "retire")  # type: ignore[arg-type]
    return summary.snapshot_id, f"final backup: snapshot {summary.snapshot_id[:8]}, {summary.files} files"


# --------------------------------------------------------------------------- archives


def write_archives(where: Layout, hub: str, target: Path) -> list[UserArchive]:
    """The database copy and one archive per user home into `target` (made here, root's alone)."""
    for directory in (target.parent, target, target / "users", target / "database"):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    database = where.hub_data(hub) / HUB_DATABASE
    users: list[str] = []
    if database.exists():
        copy = target / "database" / HUB_DATABASE
        copy_sqlite(database, copy)
        users = database_users(copy)
    homes = where.homes(hub)
    names = {home_dirname(user): user for user in users if _valid(user)}
    found = []
    if homes.is_dir():
        for home in sorted(homes.iterdir(), key=lambda p: p.name):
            if home.name.startswith(RESTORE_PREFIX) or home.is_symlink() or not home.is_dir():
                continue
            username = names.get(home.name, unquote(home.name))
            if username == CHECK_USERNAME:  # the control plane's synthetic check user, not the community's
                continue
            found.append(archive_home(home, username, target / "users" / f"{home.name}.tar.gz", target))
    for dump in hub_user_dumps(where, hub):  # each user's own database (user_database), as a pg_dump file
        (target / "user-databases").mkdir(mode=0o700, exist_ok=True)
        dump.write(target / "user-databases" / dump.name)
    archived = {a.username for a in found}
    for user in users:  # never signed in here, or their home was removed: listed, with nothing to archive
        if user not in archived and user != CHECK_USERNAME:
            found.append(UserArchive(username=user, archive=None, files=0, bytes=0, sha256=None))
    return found


def _valid(username: str) -> bool:
    try:
        check_username(username)
    except AccountError:
        return False
    return True


def database_users(database: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return [row[0] for row in connection.execute("SELECT name FROM users ORDER BY name")]
    except sqlite3.Error:
        return []
    finally:
        connection.close()


def archive_home(home: Path, username: str, dest: Path, base: Path) -> UserArchive:
    """tar.gz of one home, entries under `<home name>/`. Read through descriptors of the home's own
    directories: a symlink is stored as a symlink and never followed, so nothing outside the home is read;
    sockets, pipes and devices are left out."""
    files = size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        top = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            tar.addfile(_info(home.name, os.fstat(top)))
        finally:
            os.close(top)
        for root, dirs, names, dir_fd in os.fwalk(home, follow_symlinks=False):
            prefix = home.name + "/" + os.path.relpath(root, home)
            prefix = prefix.removesuffix("/.")
            for name in sorted([*dirs, *names]):
                arcname = f"{prefix}/{name}"
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    info = _info(arcname, st, tarfile.SYMTYPE)
                    info.linkname = os.readlink(name, dir_fd=dir_fd)
                    tar.addfile(info)
                elif stat.S_ISDIR(st.st_mode):
                    tar.addfile(_info(arcname, st, tarfile.DIRTYPE))
                elif stat.S_ISREG(st.st_mode):
                    file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
                    with os.fdopen(file_fd, "rb") as f:
                        st = os.fstat(f.fileno())
                        info = _info(arcname, st, tarfile.REGTYPE)
                        info.size = st.st_size
                        tar.addfile(info, f)
                    files += 1
                    size += st.st_size
    return UserArchive(
        username=username,
        archive=str(dest.relative_to(base)),
        files=files,
        bytes=size,
        sha256=sha256_of(dest),
    )


def _info(name: str, st: os.stat_result, kind: bytes = tarfile.DIRTYPE) -> tarfile.TarInfo:
    """An entry owned by nobody in particular: the community unpacks it as whoever they are."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    return info


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_private(directory: Path) -> None:
    if not directory.exists():
        return
    for root, dirs, files in os.walk(directory):
        os.chmod(root, 0o700)
        for name in files:
            os.chmod(Path(root) / name, 0o600)
        del dirs


# --------------------------------------------------------------------------- manifest


def write_manifest(
    config: FleetConfig,
    hub: Hub | RemovedHub,
    target: Path,
    archives: list[UserArchive],
    retired_at: datetime,
    purge_after: datetime,
    snapshot_id: str | None,
    backup: str,
) -> None:
    community = config.communities.get(hub.community)
    contacts = (
        [c.model_dump(include={"name", "email", "role"}) for c in community.contacts] if community else []
    )
    database = target / "database" / HUB_DATABASE
    manifest = {
        "hub": hub.name,
        "display_name": hub.display_name,
        "community": hub.community,
        "community_display_name": community.display_name if community else "",
        "contacts": contacts,
        "fleet": config.settings.name,
        "retired_at": retired_at.isoformat(timespec="seconds"),
        "purge_after": purge_after.isoformat(timespec="seconds"),
        "final_snapshot": snapshot_id,
        "backup": backup,
        "database": {"path": f"database/{HUB_DATABASE}", "sha256": sha256_of(database)}
        if database.exists()
        else None,
        "users": [asdict(a) for a in archives],
        "bundle": "bundle/" if (target / "bundle").is_dir() else None,
    }
    _write_private(target / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    _write_private(target / "README.md", readme(manifest))


def readme(manifest: dict) -> str:
    contacts = "\n".join(
        f"- {c['name']} <{c['email']}>" + (f" ({c['role']})" if c.get("role") else "")
        for c in manifest["contacts"]
    )
    users = "\n".join(
        f"| {u['username']} | `{u['archive']}` | {u['files']} | {u['bytes']} | `{u['sha256']}` |"
        if u["archive"]
        else f"| {u['username']} | (no home) | 0 | 0 | |"
        for u in manifest["users"]
    )
    hub = manifest["hub"]
    bundle = (
        "`bundle/` is the hub's standalone bundle: its JupyterHub configuration, its database (bundle/data/, "
        "without the fleet's own tokens) and a README with the exact commands. To run the hub elsewhere with "
        "its users and their files, unpack the homes into it, then follow `bundle/README.md`:\n\n"
        "```\n"
        'for a in users/*.tar.gz; do tar -xzf "$a" -C bundle/homes; done\n'
        "```"
        if manifest["bundle"]
        else "No standalone bundle is here: the hub's file had left the fleet when it was retired. The "
        "database and the homes above are all of its data; any JupyterHub can use them."
    )
    database = (
        f"The hub's database (its users, groups and API tokens, hashed) is `database/{HUB_DATABASE}`, a "
        "consistent copy taken when the hub was stopped. Each user's own database (hubs with "
        "`user_database`) is in `user-databases/`, a `pg_dump -Fc` file that `pg_restore` loads into any "
        "PostgreSQL."
        if manifest["database"]
        else "The hub had no database (it never ran)."
    )
    when = {
        key: datetime.fromisoformat(manifest[key]).strftime("%Y-%m-%d %H:%M UTC")
        for key in ("retired_at", "purge_after")
    }
    backup = manifest["backup"][:1].upper() + manifest["backup"][1:]
    return f"""# Hub {hub} ({manifest["display_name"] or hub}): retired

Community: {manifest["community"]} ({manifest["community_display_name"]}), fleet {manifest["fleet"]}.
Retired on {when["retired_at"]}. **Everything here, the hub's data and its backups are purged after
{when["purge_after"]}.**

## Contacts

{contacts or "- (the community file names no contacts)"}

## Users

Each user's home is one archive (`tar -xzf ARCHIVE` unpacks it into a folder named after them); check it
with `sha256sum`. {backup}.

| user | archive | files | bytes | sha256 |
|---|---|---|---|---|
{users or "| (no user has a home) | | | | |"}

{database}

## Running the hub elsewhere

{bundle}
"""


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------- purge


def purge_retired(config: FleetConfig, state_dir: Path, store: Store, hub: str) -> list[str]:
    """Delete a retired hub's data, OS accounts, snapshots and archives; the retirement is marked purged.
    Returns what was purged, one phrase each."""
    found = retirement(store, hub)
    if found is None:
        raise UserError(f"hub {hub} is not retired; retire it first with `hubfleet retire {hub}`")
    if found.purged_at is not None:
        raise UserError(f"hub {hub} is purged already: {found.describe()}")
    where = layout(state_dir)
    done = []
    purge_hub(where, hub)
    remove_hub_databases(where, hub)
    shutil.rmtree(where.data_dir / DUMP_DIR / hub, ignore_errors=True)
    done.append("its data, homes and accounts")
    if config.settings.backups is not None:
        setup = backup_setup(config, state_dir)
        with fleet_lock(state_dir):
            if setup.repository.exists():
                setup.repository.forget(host=setup.host, tag=setup.hub_tag(hub), keep=None)
                done.append("its snapshots")
    shutil.rmtree(found.archive_dir, ignore_errors=True)
    done.append(f"its archives ({found.archive_dir})")
    mark_purged(store, hub)
    return done


async def run_purges(config: FleetConfig, state_dir: Path, store: Store, stop: asyncio.Event) -> None:
    """In the daemon: purge the retirements whose retention is over, at start and then daily."""
    while not stop.is_set():
        for due in due_for_purge(store):
            try:
                done = await asyncio.to_thread(purge_retired, config, state_dir, store, due.hub)
            except (UserError, OSError) as exc:
                log.error("purging retired hub %s failed: %s", due.hub, exc)
            else:
                log.info("retired hub %s purged: %s", due.hub, ", ".join(done))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=PURGE_EVERY)
