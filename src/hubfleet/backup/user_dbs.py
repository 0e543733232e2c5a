"""Each user's database of a local hub, for operators: dump, restore, reset, size, and what happens when its
user leaves the hub (kept `retention_days`, dumped, then removed). The server itself is
isolation/user_postgres.py; this module knows the fleet's layout and configuration."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.isolation import user_postgres
from hubfleet.isolation.accounts import AccountError, check_username, home_dirname
from hubfleet.isolation.user_postgres import UserDb, UserDbError
from hubfleet.runtime.layout import Layout, layout
from hubfleet.settings import UserError
from hubfleet.store import user_dbs as records
from hubfleet.store.api import Store

DUMP_PREFIX = "userdb-"
DUMP_SUFFIX = ".pgdump"
SNAPSHOT_DUMPS = "backup"
"""hub_backup.DUMP_DIR (not imported: hub_backup imports this module through dumps.py)."""
GONE_DIR = "userdb-gone"
"""In the state directory: the last dump of each database whose user left the hub."""


def dump_name(user: str) -> str:
    """The user's dump in the hub's snapshot (`backup/<hub>/userdb-<user>.pgdump`)."""
    return f"{DUMP_PREFIX}{home_dirname(user)}{DUMP_SUFFIX}"


def hub_with_database(config: FleetConfig, hub_name: str) -> Hub:
    hub = config.hubs.get(hub_name)
    if hub is None:
        raise UserError(f"no hub named {hub_name!r} in the fleet; `hubfleet status` lists them")
    if hub.user_database is None:
        raise UserError(
            f"hub {hub_name} has no `user_database`: its users have no database (add `user_database: "
            "{engine: postgres}` to its hub file; see docs/user-databases.md)"
        )
    if config.cluster_of(hub).kind != "local":
        raise UserError(
            f"hub {hub_name} runs on Kubernetes: its users' databases are sidecars with volumes there "
            "(docs/kubernetes.md); `hubfleet user-db` handles local hubs"
        )
    return hub


def user_db(where: Layout, hub: str, user: str) -> UserDb:
    try:
        check_username(user)
    except AccountError as exc:
        raise UserError(str(exc)) from None
    return UserDb.at(where.data_dir, where.state_dir, where.instance, hub, user)


def existing(config: FleetConfig, state_dir: Path, hub_name: str, user: str) -> UserDb:
    """The user's database, or a clear error when the hub or the database is not there."""
    if os.geteuid() != 0:
        raise UserError("per-user databases run as their users' accounts: run `hubfleet user-db` as root")
    hub_with_database(config, hub_name)
    db = user_db(layout(state_dir), hub_name, user)
    if not db.exists():
        raise UserError(
            f"user {user} of hub {hub_name} has no database yet: it is made when their server first starts"
        )
    return db


def _friendly(exc: UserDbError) -> UserError:
    return UserError(str(exc))


def backup(db: UserDb, out: Path) -> Path:
    try:
        user_postgres.dump(db, out)
    except UserDbError as exc:
        raise _friendly(exc) from None
    return out


def restore(db: UserDb, source: Path) -> None:
    if not source.is_file():
        raise UserError(f"{source}: no such file")
    try:
        user_postgres.restore(db, source)
    except UserDbError as exc:
        raise _friendly(exc) from None


def reset(db: UserDb) -> None:
    try:
        user_postgres.reset(db)
    except UserDbError as exc:
        raise _friendly(exc) from None


# --------------------------------------------------------------------------- backups of the hub


@dataclass(frozen=True)
class UserDbDump:
    """One user's database as a `Dump` of the hub's snapshot (backup/dumps.py)."""

    name: str
    db: UserDb

    def write(self, dest: Path) -> bool:
        if not self.db.exists():
            return False
        try:
            user_postgres.dump(self.db, dest)
        except UserDbError as exc:  # the backup run is recorded failed with this line
            raise OSError(str(exc)) from None
        return True


def hub_user_dumps(where: Layout, hub: str) -> list[UserDbDump]:
    """A dump for every database of the hub (also of users who left and whose database is still kept)."""
    if os.geteuid() != 0:
        return []
    found = user_postgres.hub_users(where.data_dir, where.state_dir, hub)
    return [UserDbDump(dump_name(user), user_db(where, hub, user)) for user in found]


def remove_hub_databases(where: Layout, hub: str) -> None:
    """Every database of a purged hub, with its locks and the dumps of users who left (its servers are
    stopped: a retired hub is held)."""
    for leftover in (
        where.data_dir / "userdbs" / hub,
        where.state_dir / "userdbs" / hub,
        where.state_dir / GONE_DIR / hub,
    ):
        shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------- sizes


def sizes(where: Layout, hub: str) -> dict[str, int]:
    """Bytes on disk of each user's database directory of the hub."""
    found = user_postgres.hub_users(where.data_dir, where.state_dir, hub)
    return {user: user_postgres.size_bytes(root) for user, root in found.items()}


# --------------------------------------------------------------------------- users who left


def sweep_departed(where: Layout, store: Store, hub: Hub, users: set[str]) -> list[str]:
    """Databases of users no longer on the hub: noted as gone the first time, dumped to the state directory
    and removed once `retention_days` have passed; a user who comes back is noted back. Returns what was
    done, one line each."""
    if hub.user_database is None or os.geteuid() != 0:
        return []
    done: list[str] = []
    now = utcnow()
    present = user_postgres.hub_users(where.data_dir, where.state_dir, hub.name)
    gone = {row.username: row for row in records.gone(store, hub.name)}
    for user in present:
        if user in users:
            if user in gone:
                records.mark_back(store, hub.name, user)
                done.append(f"{hub.name}: {user} is back; their database is kept")
            continue
        row = gone.get(user)
        if row is None:
            records.mark_gone(store, hub.name, user, now)
            done.append(
                f"{hub.name}: {user} left; their database is kept {hub.user_database.retention_days} days"
            )
            continue
        if now - row.gone_at < timedelta(days=hub.user_database.retention_days):
            continue
        db = user_db(where, hub.name, user)
        dest = where.state_dir / GONE_DIR / hub.name / dump_name(user)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if db.exists():
                user_postgres.dump(db, dest)
            user_postgres.remove(db)
            # its copy among the hub's dumps: later snapshots no longer hold it (earlier ones keep it)
            (where.data_dir / SNAPSHOT_DUMPS / hub.name / dump_name(user)).unlink(missing_ok=True)
        except (UserDbError, OSError) as exc:
            done.append(f"{hub.name}: {user}'s database not removed: {exc}")
            continue
        records.mark_removed(store, hub.name, user, now, str(dest))
        done.append(f"{hub.name}: {user}'s database removed; its last dump is {dest}")
    return done
