"""A store that never silently loses: damage named in one line with the way back, rolling backups with
SQLite's online backup API, and restore from one of them.

A missing store file is a fresh store; an empty (0-byte) one where a store is expected, a file that is not a
SQLite database, or one SQLite reports as corrupt is an error (`StoreDamaged`) naming the file, what is wrong
and the newest backup to restore. Backups (SQLite only) are consistent copies made by
`sqlite3.Connection.backup`, never file copies, kept in `<state>/backups/` (0700, files 0600). Restore keeps
the file it replaces beside it (`hubfleet.sqlite.damaged-<time>` or `.replaced-<time>`, with its -wal and
-shm) and never deletes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from hubfleet.clock import utcnow
from hubfleet.settings import UserError
from hubfleet.store import db

log = logging.getLogger("hubfleet.store")

BACKUP_DIR = "backups"
BACKUP_PREFIX = "hubfleet-"
BACKUP_SUFFIX = ".sqlite"
KEEP_BACKUPS = 24
BACKUP_INTERVAL_S = 3600.0
SQLITE_HEADER = b"SQLite format 3\x00"
_DAMAGE_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_WAL_FILES = ("-wal", "-shm")


class StoreDamaged(UserError):
    """The store file exists but is not a usable store; the message names the file and the way back."""


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for other databases and for in-memory SQLite."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


# -- damage -------------------------------------------------------------------------------------------
def backups_dir(db_path: Path) -> Path:
    return db_path.parent / BACKUP_DIR


def list_backups(db_path: Path) -> list[Path]:
    """The rolling backups beside the store, newest first."""
    folder = backups_dir(db_path)
    try:
        found = [p for p in folder.iterdir() if _is_backup_name(p.name) and p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def _is_backup_name(name: str) -> bool:
    return name.startswith(BACKUP_PREFIX) and name.endswith(BACKUP_SUFFIX)


def way_back(db_path: Path) -> str:
    """What to do about a damaged store: the newest backup to restore, or how to go on without one."""
    backups = list_backups(db_path)
    if backups:
        return (
            f"with the fleet down, restore the newest backup: hubfleet store restore {backups[0]} "
            "(`hubfleet store backups` lists them all)"
        )
    return (
        f"no backup in {backups_dir(db_path)}: restore one you have with `hubfleet store restore BACKUP`, "
        "or move the file aside to start an empty store"
    )


def damaged(db_path: Path, what: str) -> StoreDamaged:
    return StoreDamaged(f"store {db_path} {what}; the file was left as it is; {way_back(db_path)}")


def file_problem(db_path: Path, *, header: bool = False) -> str | None:
    """What is wrong with the file at a glance (empty; with `header`, not SQLite); None if nothing.

    Only os.stat by default: opening and closing the file in a process that has a SQLite connection to it
    would drop that process's POSIX locks on it, and another process could then remove the live -wal file.
    `header` (which reads the file) is for files no connection of this process has open."""
    try:
        size = db_path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return (
            "is empty (0 bytes) where a store was expected: hubfleet will not start an empty store over it "
            "(its console accounts, API tokens and history would be gone without a word)"
        )
    if header:
        try:
            with db_path.open("rb") as f:
                start = f.read(len(SQLITE_HEADER))
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        if start != SQLITE_HEADER:
            return "is not a SQLite database (damaged or overwritten)"
    return None


def check_file(url: str) -> None:
    """Before opening: refuse an empty or non-SQLite file where a store is expected; a missing one is created
    (its header written at once, under the lock migrations take, so no other opener sees it empty)."""
    path = sqlite_path(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with db.file_lock(path):
        if problem := file_problem(path):
            raise damaged(path, problem)
        if not path.exists():
            conn = sqlite3.connect(path)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # writes the file's first page
            finally:
                conn.close()


def watch(engine: Engine) -> None:
    """Turn SQLite's 'corrupt' and 'not a database' errors on any statement into a StoreDamaged."""
    path = sqlite_path(engine.url)
    if path is None:
        return

    def on_error(context: Any) -> None:
        exc = context.original_exception
        if isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorname", "") in _DAMAGE_CODES:
            raise damaged(path, f"is damaged ({exc})") from exc

    event.listen(engine, "handle_error", on_error)


def _quick_check(conn: sqlite3.Connection) -> str | None:
    """None when PRAGMA quick_check finds nothing wrong, else its first complaint."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    first = str(rows[0][0]) if rows else "no answer"
    return None if first == "ok" else first


def verify(engine: Engine) -> None:
    """PRAGMA quick_check of a SQLite store (the daemon at start): StoreDamaged when it finds damage."""
    path = sqlite_path(engine.url)
    if path is None or not path.exists():
        return
    conn = _connect(path, readonly=False)
    try:
        problem = _quick_check(conn)
    finally:
        conn.close()
    if problem:
        raise damaged(path, f"is damaged (integrity check: {problem})")


# -- backups ------------------------------------------------------------------------------------------
def _connect(path: Path, *, readonly: bool, untouched: bool = False) -> sqlite3.Connection:
    """A plain connection that never creates the file (mode=ro / rw); `untouched` reads the main file alone
    (immutable: no -wal replayed, checkpointed or removed, no -shm made)."""
    mode = "ro" if readonly or untouched else "rw"
    uri = f"file:{urllib.parse.quote(str(path))}?mode={mode}" + ("&immutable=1" if untouched else "")
    conn = sqlite3.connect(uri, uri=True, timeout=db.BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {db.BUSY_TIMEOUT_MS}")
    return conn


def _stamp(now: datetime | None = None) -> str:
    return (now or utcnow()).strftime("%Y%m%dT%H%M%SZ")


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def _copy(source: Path, dest: Path, *, source_readonly: bool) -> None:
    """A consistent copy of `source` into the new file `dest` (0600) with the online backup API, made
    self-contained (rollback journal, no -wal beside it)."""
    _private_file(dest)
    try:
        src = _connect(source, readonly=source_readonly)
        try:
            out = sqlite3.connect(dest)
            try:
                src.backup(out)
                out.execute("PRAGMA journal_mode = DELETE")
                out.commit()
            finally:
                out.close()
        finally:
            src.close()
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return str(row[0]) if row else None


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory  # only here: importing Alembic costs every process ~0.25 s

    script = ScriptDirectory.from_config(db.alembic_config(create_engine("sqlite://")))
    return {rev.revision for rev in script.walk_revisions()}


def _check_copy(path: Path, what: str) -> str:
    """The migration revision of the copy at `path`; UserError when it is damaged or not a hubfleet store."""
    conn = _connect(path, readonly=True)
    try:
        if problem := _quick_check(conn):
            raise UserError(f"{what} is damaged (integrity check: {problem})")
        revision = _revision(conn)
    finally:
        conn.close()
    if revision is None:
        raise UserError(f"{what} is not a hubfleet store (no migration revision in it)")
    if revision not in known_revisions():
        raise UserError(
            f"{what} is at migration revision {revision}, which this hubfleet does not know "
            f"(newest known: {db.head_revision()}); restore it with the hubfleet that made it"
        )
    return revision


def backup(db_path: Path, dest: Path) -> Path:
    """A consistent, verified copy of the store at `db_path` into the new file `dest` (mode 0600)."""
    if not db_path.exists():
        raise UserError(f"store {db_path} does not exist yet: nothing to back up")
    if problem := file_problem(db_path):
        raise damaged(db_path, problem)
    if dest.exists():
        raise UserError(f"{dest} already exists; choose another file (backups never overwrite)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        _copy(db_path, tmp, source_readonly=False)
    except sqlite3.DatabaseError as exc:
        raise damaged(db_path, f"is damaged ({exc})") from exc
    try:
        _check_copy(tmp, f"a backup of {db_path}")
    except UserError:
        tmp.unlink(missing_ok=True)
        # the copy is a faithful one: what is wrong with it is wrong with the store
        raise damaged(db_path, "is damaged (its backup copy fails the integrity check)") from None
    os.replace(tmp, dest)
    return dest


def take_backup(db_path: Path, keep: int = KEEP_BACKUPS) -> Path:
    """A backup into <state>/backups/hubfleet-<UTC time>.sqlite; only the newest `keep` are kept."""
    folder = backups_dir(db_path)
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = _stamp()
    dest = folder / f"{BACKUP_PREFIX}{stamp}{BACKUP_SUFFIX}"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"{BACKUP_PREFIX}{stamp}-{n}{BACKUP_SUFFIX}"
    backup(db_path, dest)
    for old in list_backups(db_path)[keep:]:
        old.unlink(missing_ok=True)
    return dest


async def run_backups(
    engine: Engine,
    stop: asyncio.Event,
    *,
    interval: float = BACKUP_INTERVAL_S,
    keep: int = KEEP_BACKUPS,
) -> None:
    """The daemon's rolling backups of a SQLite store: one now, then every `interval` s until `stop`."""
    path = sqlite_path(engine.url)
    if path is None:
        return
    while not stop.is_set():
        try:
            made = await asyncio.to_thread(take_backup, path, keep)
            log.info("store backed up to %s", made)
        except Exception as exc:  # a failed backup is logged and tried again; it never stops the daemon
            log.error("store backup failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


# -- restore ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Restored:
    store: Path
    source: Path
    revision: str
    set_aside: Path | None
    """Where the store that was replaced now is (None when there was none)."""


def diagnose(db_path: Path) -> str | None:
    """What is wrong with an existing store file (header, then quick_check); None when it looks sound."""
    if problem := file_problem(db_path):
        return problem
    try:
        conn = _connect(db_path, readonly=True, untouched=True)  # its -wal, if any, stays as it is
    except sqlite3.Error as exc:
        return str(exc)
    try:
        return _quick_check(conn)
    finally:
        conn.close()


def restore(db_path: Path, source: Path) -> Restored:
    """Put a verified copy of the backup `source` in place of the store; the old store is kept beside it.

    The caller makes sure no daemon runs on this store (the CLI holds the daemon lock)."""
    source = source.expanduser().resolve()
    if not source.is_file():
        raise UserError(f"{source}: no such backup file")
    if file_problem(source, header=True):
        what = "is empty" if source.stat().st_size == 0 else "is not a SQLite database"
        raise UserError(f"{source} {what}: not a backup hubfleet can restore")
    stamp = _stamp()
    tmp = db_path.with_name(f"{db_path.name}.restoring-{stamp}")
    tmp.unlink(missing_ok=True)
    try:
        _copy(source, tmp, source_readonly=True)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{source} cannot be read as a store ({exc})") from None
    try:
        revision = _check_copy(tmp, str(source))
    except UserError:
        tmp.unlink(missing_ok=True)
        raise
    set_aside = None
    if db_path.exists() or any(db_path.with_name(db_path.name + s).exists() for s in _WAL_FILES):
        kind = "damaged" if db_path.exists() and diagnose(db_path) else "replaced"
        set_aside = db_path.with_name(f"{db_path.name}.{kind}-{stamp}")
        if db_path.exists():
            os.rename(db_path, set_aside)
        for suffix in _WAL_FILES:  # a -wal left behind would be replayed into the restored file
            wal = db_path.with_name(db_path.name + suffix)
            if wal.exists():
                os.rename(wal, set_aside.with_name(set_aside.name + suffix))
    os.replace(tmp, db_path)
    _fsync_dir(db_path.parent)
    return Restored(db_path, source, revision, set_aside)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
