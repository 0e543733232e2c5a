"""Per-user databases whose user left a hub: when they were seen gone (the retention runs from then), and
when the daemon removed them and where their last dump is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.clock import as_utc
from hubfleet.store.api import Store
from hubfleet.store.models import Base


class UserDatabaseGone(Base):
    __tablename__ = "user_databases_gone"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    gone_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]
    last_dump: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class GoneRecord:
    hub: str
    username: str
    gone_at: datetime
    removed_at: datetime | None
    last_dump: str | None


def _record(row: UserDatabaseGone) -> GoneRecord:
    return GoneRecord(
        hub=row.hub,
        username=row.username,
        gone_at=as_utc(row.gone_at),
        removed_at=as_utc(row.removed_at) if row.removed_at else None,
        last_dump=row.last_dump,
    )


def gone(store: Store, hub: str, *, removed: bool = False) -> list[GoneRecord]:
    """The hub's databases whose user left: still kept (default), or already removed."""
    with store.session() as session:
        rows = session.scalars(select(UserDatabaseGone).where(UserDatabaseGone.hub == hub)).all()
        return [_record(r) for r in rows if (r.removed_at is not None) == removed]


def mark_gone(store: Store, hub: str, username: str, at: datetime) -> None:
    with store.session() as session, session.begin():
        row = session.get(UserDatabaseGone, (hub, username))
        if row is None:
            session.add(UserDatabaseGone(hub=hub, username=username, gone_at=at))
        else:  # a name that comes back after its database was removed, and leaves again
            row.gone_at, row.removed_at, row.last_dump = at, None, None


def mark_back(store: Store, hub: str, username: str) -> None:
    with store.session() as session, session.begin():
        row = session.get(UserDatabaseGone, (hub, username))
        if row is not None:
            session.delete(row)


def mark_removed(store: Store, hub: str, username: str, at: datetime, last_dump: str) -> None:
    with store.session() as session, session.begin():
        row = session.get(UserDatabaseGone, (hub, username))
        if row is not None:
            row.removed_at, row.last_dump = at, last_dump
