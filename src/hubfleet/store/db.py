"""Engine creation and programmatic Alembic migrations (no alembic.ini needed).

Alembic is imported only when a migration runs (or the version files are not one plain chain): importing it
costs ~0.25 s of CPU, which every CLI run and daemon paid to learn that the store was at head already."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DB_FILENAME = "hubfleet.sqlite"
BUSY_TIMEOUT_MS = 30_000


def store_url(state_dir_or_url: str | Path) -> str:
    """A SQLAlchemy URL as is; a directory becomes sqlite:///<dir>/hubfleet.sqlite (created if missing)."""
    text = str(state_dir_or_url)
    if "://" in text:
        return text
    state_dir = Path(text).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_dir / DB_FILENAME}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so the daemon and CLI can share the file."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


_REVISION = re.compile(r'^revision(?:: str)? = "([\w-]+)"$', re.M)
_DOWN_REVISION = re.compile(r'^down_revision(?:: [^=]+)? = (?:"([\w-]+)"|None)$', re.M)


@functools.cache
def head_revision() -> str | None:
    """The newest migration, from the version files' `revision` and `down_revision` lines when they form one
    plain chain (as they do); Alembic's answer otherwise."""
    down_of: dict[str, str | None] = {}
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text()
        revision, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1 or revision[0] in down_of:
            return _alembic_head()
        down_of[revision[0]] = down[0] or None
    successors = [down for down in down_of.values() if down is not None]
    heads = set(down_of) - set(successors)
    plain = len(set(successors)) == len(successors) == len(down_of) - 1 and set(successors) <= set(down_of)
    return heads.pop() if plain and len(heads) == 1 else _alembic_head()


def _alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(create_engine("sqlite://"))).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The store's revision (alembic_version's one row); Alembic reads it when the table holds several."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(rows) <= 1:
            return rows[0] if rows else None
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()  # raises: more than one head


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations between processes opening the same SQLite file at once (PostgreSQL: env.py)."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with file_lock(database):
        yield


@contextlib.contextmanager
def file_lock(database: str | Path) -> Iterator[None]:
    """The lock beside a SQLite file (<file>.migrate.lock) that migrations and the store's creation take."""
    with open(f"{database}.migrate.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision`; a no-op when it is already there."""
    if revision == "head" and current_revision(engine) == head_revision():
        return
    from alembic import command

    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)
