"""Each hub's backup state as `hubfleet status`, the console and the daemon's `late` check see it.

    off     the fleet has no `backups`, the hub's `backup.enabled` is false, or it is retired
    never   no good backup yet (and not late: the daemon has not been up `late_after_hours`)
    ok      the newest finished run was good and is younger than `late_after_hours`
    failed  the newest finished run failed (its error says why)
    late    the last good backup is older than `late_after_hours`, or there is none and the daemon has been
            up longer than that

A run still going is not "finished": the state stays what the previous run made it until it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from hubfleet.backup import records
from hubfleet.backup.records import BackupRunRecord
from hubfleet.clock import as_utc, require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_backup import BackupPolicy
from hubfleet.store import Store
from hubfleet.store.models import BackupRun
from hubfleet.store.retirements import retirements
from hubfleet.units import human_bytes

ERROR_MAX = 300
"""Characters of a failed run's error that a status line or an incident's cause keeps."""


def one_line(text: str, limit: int = ERROR_MAX) -> str:
    """`text` on one line, at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def is_late(
    policy: BackupPolicy, last_good: BackupRunRecord | None, now: datetime, up_since: datetime | None
) -> bool:
    """Whether the hub's last good backup is older than its policy allows; with none, whether the daemon
    has been up (since `up_since`; None: unknown, never late) longer than that."""
    limit = policy.late_after_hours * 3600
    if last_good is not None:
        return (now - as_utc(last_good.started_at)).total_seconds() > limit
    return up_since is not None and (now - as_utc(up_since)).total_seconds() > limit


@dataclass(frozen=True)
class HubBackupState:
    hub: str
    state: str
    """off | never | ok | failed | late"""
    policy: BackupPolicy | None
    last_good: BackupRunRecord | None
    last_failure: BackupRunRecord | None
    """The newest finished run when it failed (None when it was good)."""
    now: datetime

    @property
    def age_seconds(self) -> float | None:
        if self.last_good is None:
            return None
        return max(0.0, (self.now - as_utc(self.last_good.started_at)).total_seconds())

    def summary(self) -> str:
        """One line for a table: `2h 05m ago, 1.2 MiB`, `never`, `off`, `failed: ...`, `late: ...`."""
        last = ""
        if self.last_good is not None and self.age_seconds is not None:
            last = f"{age_text(self.age_seconds)} ago, {size_text(self.last_good.size_bytes)}"
        if self.state == "failed" and self.last_failure is not None:
            return f"failed: {one_line(self.last_failure.error, 120)}"
        if self.state == "late":
            return f"late: {last}" if last else "late: never backed up"
        return last or self.state

    def to_json(self) -> dict[str, object]:
        good = self.last_good
        failure = self.last_failure
        return {
            "state": self.state,
            "summary": self.summary(),
            "every_hours": self.policy.every_hours if self.policy else None,
            "late_after_hours": self.policy.late_after_hours if self.policy else None,
            "last": None
            if good is None
            else {
                "started_at": as_utc(good.started_at).isoformat(),
                "finished_at": as_utc(good.finished_at).isoformat() if good.finished_at else None,
                "age_seconds": round(self.age_seconds or 0.0, 1),
                "size_bytes": good.size_bytes,
                "added_bytes": good.added_bytes,
                "files": good.files,
                "snapshot_id": good.snapshot_id,
                "trigger": good.trigger,
            },
            "last_failure": None
            if failure is None
            else {
                "finished_at": as_utc(failure.finished_at).isoformat() if failure.finished_at else None,
                "error": one_line(failure.error),
                "trigger": failure.trigger,
            },
        }


def backup_states(
    fleet: FleetConfig,
    store: Store,
    hubs: list[str],
    *,
    now: datetime | None = None,
    up_since: datetime | None = None,
) -> dict[str, HubBackupState]:
    """The backup state of each of `hubs` (names in the fleet; others are left out), from two queries."""
    now = require_aware(now, "now")
    finished, good = newest_runs(store)
    retired = set(retirements(store))
    found: dict[str, HubBackupState] = {}
    for name in hubs:
        hub = fleet.hubs.get(name)
        if hub is None:
            continue
        policy = fleet.backup_policy(hub)
        newest = finished.get(name)
        failure = newest if newest is not None and newest.ok is False else None
        last_good = good.get(name)
        if policy is None or name in retired:
            state = "off"
        elif failure is not None:
            state = "failed"
        elif is_late(policy, last_good, now, up_since):
            state = "late"
        else:
            state = "ok" if last_good is not None else "never"
        found[name] = HubBackupState(name, state, policy, last_good, failure, now)
    return found


def newest_runs(store: Store) -> tuple[dict[str, BackupRunRecord], dict[str, BackupRunRecord]]:
    """Each hub's newest finished run and its newest good one (records.latest_runs and latest_good_runs) in
    one statement: the console's overview counts its queries."""
    finished = (
        select(func.max(BackupRun.id)).where(BackupRun.finished_at.is_not(None)).group_by(BackupRun.hub)
    )
    good = select(func.max(BackupRun.id)).where(BackupRun.ok.is_(True)).group_by(BackupRun.hub)
    with store.session() as session:
        rows = session.scalars(
            select(BackupRun)
            .where(BackupRun.id.in_(finished) | BackupRun.id.in_(good))
            .order_by(BackupRun.id)
        ).all()
        found = [records.record(row) for row in rows]
    newest = {run.hub: run for run in found if run.finished_at is not None}  # ascending ids: the last wins
    newest_good = {run.hub: run for run in found if run.ok}
    return newest, newest_good


def age_text(seconds: float) -> str:
    """`45s`, `3m`, `2h 05m`, `3d 4h`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def size_text(size: int | None) -> str:
    """1536 -> `1.5 KiB` (binary units, as restic and `du -h` print them)."""
    return "size unknown" if size is None else human_bytes(size)


def hub_backup_json(
    fleet: FleetConfig, store: Store, hub: str, now: datetime | None = None
) -> dict[str, object] | None:
    """A local hub's backup state as the console's hub page shows it; None for a kubernetes hub (hubfleet
    backs up local hubs only)."""
    found = fleet.hubs.get(hub)
    if found is None or fleet.clusters[found.cluster].kind != "local":
        return None
    state = backup_states(fleet, store, [hub], now=now).get(hub)
    return state.to_json() if state else None
