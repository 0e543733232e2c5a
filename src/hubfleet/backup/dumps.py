"""Consistent copies of the databases a hub's snapshot holds, written before restic reads anything.

A database file being written is never copied as a file: SQLite's online backup API copies a consistent
state under a read lock; each user's PostgreSQL database (a hub's `user_database`) is a `pg_dump` run as the
user's account (backup/user_dbs.py). Each database is one `Dump` in `hub_dumps`.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hubfleet.backup.user_dbs import hub_user_dumps
from hubfleet.runtime.layout import Layout

HUB_DATABASE = "jupyterhub.sqlite"


class Dump(Protocol):
    name: str
    """Its file in the snapshot's dump directory."""

    def write(self, dest: Path) -> bool:
        """Write the consistent copy to `dest`; False when there is nothing to copy."""
        ...


@dataclass(frozen=True)
class SqliteDump:
    name: str
    source: Path

    def write(self, dest: Path) -> bool:
        if not self.source.exists():
            return False
        copy_sqlite(self.source, dest)
        return True


def copy_sqlite(source: Path, dest: Path) -> None:
    """SQLite's online backup of `source` into `dest` (replaced), in one step: a consistent state even while
    the hub writes. Any journal file our read makes is handed back to the database's owner."""
    owner = source.stat()
    before = {
        suffix: (source.with_name(source.name + suffix)).exists() for suffix in ("-wal", "-shm", "-journal")
    }
    dest.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()
    os.chmod(dest, 0o600)
    for suffix, existed in before.items():
        extra = source.with_name(source.name + suffix)
        if not existed and extra.exists() and extra.stat().st_uid != owner.st_uid:
            os.chown(extra, owner.st_uid, owner.st_gid)


def hub_dumps(layout: Layout, hub: str) -> list[Dump]:
    """Every database of `hub` that its snapshot holds a copy of."""
    return [SqliteDump(HUB_DATABASE, layout.hub_data(hub) / HUB_DATABASE), *hub_user_dumps(layout, hub)]
