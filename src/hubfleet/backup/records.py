"""Backup runs in the store: what the console, `status`, incidents and `backups list` read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from hubfleet.backup.restic import BackupSummary
from hubfleet.clock import utcnow
from hubfleet.store import Store
from hubfleet.store.models import BackupRun


@dataclass(frozen=True)
class BackupRunRecord:
    id: int
    hub: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    ok: bool | None
    snapshot_id: str | None
    size_bytes: int | None
    added_bytes: int | None
    files: int | None
    error: str

    def to_json(self) -> dict[str, object]:
        return {
            "hub": self.hub,
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "ok": self.ok,
            "snapshot_id": self.snapshot_id,
            "size_bytes": self.size_bytes,
            "added_bytes": self.added_bytes,
            "files": self.files,
            "error": self.error,
        }


def record(row: BackupRun) -> BackupRunRecord:
    """A store row as a record (what leaves this module)."""
    return BackupRunRecord(
        id=row.id,
        hub=row.hub,
        trigger=row.trigger,
        started_at=row.started_at,
        finished_at=row.finished_at,
        ok=row.ok,
        snapshot_id=row.snapshot_id,
        size_bytes=row.size_bytes,
        added_bytes=row.added_bytes,
        files=row.files,
        error=row.error or "",
    )


def start_run(store: Store, hub: str, trigger: str, at: datetime | None = None) -> int:
    row = BackupRun(hub=hub, trigger=trigger, started_at=at or utcnow(), error="")
    with store.session() as session, session.begin():
        session.add(row)
        session.flush()
        return row.id


def finish_run(store: Store, run_id: int, summary: BackupSummary | None, error: str = "") -> None:
    """Record how a run ended: a summary when it wrote a snapshot, else the error."""
    with store.session() as session, session.begin():
        row = session.get(BackupRun, run_id)
        if row is None:
            return
        row.finished_at = utcnow()
        row.ok = summary is not None
        row.error = error
        if summary is not None:
            row.snapshot_id = summary.snapshot_id
            row.size_bytes = summary.size_bytes
            row.added_bytes = summary.added_bytes
            row.files = summary.files


def latest_runs(store: Store) -> dict[str, BackupRunRecord]:
    """Each hub's newest finished run, good or failed."""
    return _newest(store, BackupRun.finished_at.is_not(None))


def latest_good_runs(store: Store) -> dict[str, BackupRunRecord]:
    """Each hub's newest good run: what 'last backup', its size and age show."""
    return _newest(store, BackupRun.ok.is_(True))


def _newest(store: Store, condition: object) -> dict[str, BackupRunRecord]:
    with store.session() as session:
        newest = (
            select(BackupRun.hub, func.max(BackupRun.id).label("id"))
            .where(condition)  # type: ignore[arg-type]
            .group_by(BackupRun.hub)
            .subquery()
        )
        rows = session.scalars(select(BackupRun).join(newest, BackupRun.id == newest.c.id)).all()
        return {row.hub: record(row) for row in rows}


def hub_runs(store: Store, hub: str, limit: int = 50) -> list[BackupRunRecord]:
    """The hub's runs, newest first."""
    with store.session() as session:
        rows = session.scalars(
            select(BackupRun).where(BackupRun.hub == hub).order_by(BackupRun.id.desc()).limit(limit)
        ).all()
        return [record(row) for row in rows]
