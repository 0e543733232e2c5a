"""Retired hubs in the store: what the daemon (never start one), `plan`, `deploy` and the purge read.

Here, in the store's layer, because the daemon, the planner and the backup package all need it and none of
them may import another's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from hubfleet.clock import as_utc, utcnow
from hubfleet.store.api import Store
from hubfleet.store.models import Retirement


@dataclass(frozen=True)
class RetirementRecord:
    hub: str
    community: str
    retired_at: datetime
    purge_after: datetime
    archive_dir: str
    snapshot_id: str | None
    purged_at: datetime | None

    def describe(self) -> str:
        """One line for an operator: when it was retired and what happens to its data."""
        if self.purged_at is not None:
            return (
                f"retired on {self.retired_at:%Y-%m-%d}; its data, archives and snapshots were purged on "
                f"{self.purged_at:%Y-%m-%d}"
            )
        return (
            f"retired on {self.retired_at:%Y-%m-%d}, archives at {self.archive_dir}, its data is kept until "
            f"{self.purge_after:%Y-%m-%d} and purged after"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "hub": self.hub,
            "community": self.community,
            "retired_at": self.retired_at.isoformat(),
            "purge_after": self.purge_after.isoformat(),
            "archive_dir": self.archive_dir,
            "snapshot_id": self.snapshot_id,
            "purged_at": self.purged_at.isoformat() if self.purged_at else None,
        }


def _record(row: Retirement) -> RetirementRecord:
    return RetirementRecord(
        hub=row.hub,
        community=row.community,
        retired_at=as_utc(row.retired_at),
        purge_after=as_utc(row.purge_after),
        archive_dir=row.archive_dir,
        snapshot_id=row.snapshot_id,
        purged_at=as_utc(row.purged_at) if row.purged_at else None,
    )


def retirements(store: Store) -> dict[str, RetirementRecord]:
    """Every retired hub (purged or not), by name."""
    with store.session() as session:
        return {row.hub: _record(row) for row in session.scalars(select(Retirement)).all()}


def retirement(store: Store, hub: str) -> RetirementRecord | None:
    with store.session() as session:
        row = session.get(Retirement, hub)
        return _record(row) if row is not None else None


def record_retirement(
    store: Store,
    hub: str,
    community: str,
    *,
    retired_at: datetime,
    purge_after: datetime,
    archive_dir: str,
    snapshot_id: str | None,
) -> RetirementRecord:
    with store.session() as session, session.begin():
        row = Retirement(
            hub=hub,
            community=community,
            retired_at=retired_at,
            purge_after=purge_after,
            archive_dir=archive_dir,
            snapshot_id=snapshot_id,
            purged_at=None,
        )
        session.add(row)
        session.flush()
        return _record(row)


def due_for_purge(store: Store, now: datetime | None = None) -> list[RetirementRecord]:
    """Retirements whose retention is over and whose data is not purged yet."""
    now = now or utcnow()
    return [r for r in retirements(store).values() if r.purged_at is None and r.purge_after <= now]


def mark_purged(store: Store, hub: str, at: datetime | None = None) -> None:
    with store.session() as session, session.begin():
        row = session.get(Retirement, hub)
        if row is not None:
            row.purged_at = at or utcnow()
