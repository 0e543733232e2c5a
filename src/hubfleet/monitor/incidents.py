"""Incidents: open, resolve and list them, and the state machine that turns probe results into them.

An incident is a hub down (kind `down`), a TLS certificate close to expiry (`certificate`) or abnormal
activity (`anomaly`, with the `rule` that fired). A `cost` incident (hubfleet.daemon.cost_watch) may belong
to a community rather than a hub: its `hub` is empty and `community` names it. At most one incident per
hub + community + kind + rule is open at a time: `open_incident` returns the open one instead of adding a
second, also when two processes (the daemon and `hubfleet probe`) race, so callers alert only when `opened`
is true.

`IncidentTracker` is the state machine the prober feeds: a `down` incident opens after
`failures_to_open` consecutive failed probes and resolves on the first success; a `certificate` incident
opens when the certificate expires within `certificate_warning_days` and resolves when a renewed one is
seen. Each open and each resolve is handed once to the alerter (hubfleet.monitor.alerts.Alerter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, delete, select, update

from hubfleet.clock import require_aware, utcnow
from hubfleet.monitor.uptime import ProbeResult, trailing_failures
from hubfleet.store.api import Store
from hubfleet.store.models import Incident

log = logging.getLogger("hubfleet.incidents")

KINDS = ("down", "certificate", "anomaly", "quota", "backup", "event", "cost")
"""quota: hubfleet.monitor.disk_usage; backup (rules `failed`, `late`): hubfleet.daemon.backup_schedule;
event (rule `readiness`): hubfleet.daemon.event_schedule; cost (budget rules, `anomaly`):
hubfleet.daemon.cost_watch."""


@dataclass(frozen=True)
class IncidentRecord:
    id: int
    hub: str
    kind: str
    rule: str | None
    started_at: datetime
    resolved_at: datetime | None
    cause: str
    community: str | None = None
    """Set on cost incidents: the community the budget (or the hub) belongs to."""

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def duration_seconds(self, now: datetime | None = None) -> float:
        """Seconds from start to resolution (to `now` while open)."""
        end = self.resolved_at or now or utcnow()
        return max(0.0, (end - self.started_at).total_seconds())

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "hub": self.hub,
            "kind": self.kind,
            "rule": self.rule,
            "started_at": self.started_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "duration_seconds": round(self.duration_seconds(now), 3),
            "cause": self.cause,
            "community": self.community,
        }


def incident_record(row: Incident) -> IncidentRecord:
    return IncidentRecord(
        row.id, row.hub, row.kind, row.rule, row.started_at, row.resolved_at, row.cause, row.community
    )


def _same(hub: str, kind: str, rule: str | None, community: str | None = None) -> ColumnElement[bool]:
    rule_match = Incident.rule.is_(None) if rule is None else Incident.rule == rule
    owner = Incident.community.is_(None) if community is None else Incident.community == community
    return and_(Incident.hub == hub, owner, Incident.kind == kind, rule_match, Incident.resolved_at.is_(None))


def open_incident(
    store: Store,
    hub: str,
    kind: str,
    cause: str,
    rule: str | None = None,
    *,
    at: datetime | None = None,
    community: str | None = None,
) -> tuple[IncidentRecord, bool]:
    """Open an incident unless one is already open for hub + community + kind (+ rule). A community's
    incident has `hub` "" and its `community`.

    Returns (the open incident, True when this call opened it). Alert only when the second item is true.
    """
    if kind not in KINDS:
        raise ValueError(f"incident kind must be one of {', '.join(KINDS)}, not {kind!r}")
    first_open = select(Incident).where(_same(hub, kind, rule, community)).order_by(Incident.id).limit(1)
    with store.session() as session, session.begin():
        existing = session.scalars(first_open).first()
        if existing is not None:
            return incident_record(existing), False
        started = require_aware(at, "incident timestamps")
        row = Incident(
            hub=hub,
            community=community,
            kind=kind,
            rule=rule,
            started_at=started,
            resolved_at=None,
            cause=cause,
        )
        session.add(row)
    # Another process may have inserted at the same moment: the lowest id wins, the others withdraw.
    with store.session() as session, session.begin():
        winner = session.scalars(first_open).first()
        if winner is not None and winner.id != row.id:
            session.execute(delete(Incident).where(Incident.id == row.id))
            return incident_record(winner), False
    return incident_record(row), True


def resolve_incident(
    store: Store,
    hub: str,
    kind: str,
    rule: str | None = None,
    *,
    at: datetime | None = None,
    community: str | None = None,
) -> IncidentRecord | None:
    """Resolve the open incident of hub + community + kind (+ rule); the record when this call resolved it,
    else None."""
    when = require_aware(at, "incident timestamps")
    resolved: IncidentRecord | None = None
    same = _same(hub, kind, rule, community)
    with store.session() as session, session.begin():
        for row in session.scalars(select(Incident).where(same).order_by(Incident.id)):
            changed = session.execute(
                update(Incident)
                .where(Incident.id == row.id, Incident.resolved_at.is_(None))
                .values(resolved_at=when)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount == 1 and resolved is None:  # type: ignore[attr-defined]
                resolved = IncidentRecord(
                    row.id, row.hub, row.kind, row.rule, row.started_at, when, row.cause, row.community
                )
    return resolved


def list_incidents(
    store: Store,
    *,
    hub: str | None = None,
    kind: str | None = None,
    open_only: bool = False,
    limit: int | None = None,
    community: str | None = None,
) -> list[IncidentRecord]:
    """Incidents newest first; `community`: those belonging to it (cost incidents)."""
    query = select(Incident)
    if hub is not None:
        query = query.where(Incident.hub == hub)
    if community is not None:
        query = query.where(Incident.community == community)
    if kind is not None:
        query = query.where(Incident.kind == kind)
    if open_only:
        query = query.where(Incident.resolved_at.is_(None))
    query = query.order_by(Incident.started_at.desc(), Incident.id.desc())
    if limit is not None:
        query = query.limit(limit)
    with store.session() as session:
        return [incident_record(row) for row in session.scalars(query)]


def open_keys(store: Store) -> set[tuple[str, str, str | None]]:
    """(hub, kind, rule) of every open incident, in one query."""
    query = select(Incident.hub, Incident.kind, Incident.rule).where(Incident.resolved_at.is_(None))
    with store.session() as session:
        return {(hub, kind, rule) for hub, kind, rule in session.execute(query)}


def open_of_kind(store: Store, kind: str) -> list[IncidentRecord]:
    """Every open incident of `kind` (community ones included), oldest first, in one query."""
    query = (
        select(Incident).where(Incident.kind == kind, Incident.resolved_at.is_(None)).order_by(Incident.id)
    )
    with store.session() as session:
        return [incident_record(row) for row in session.scalars(query)]


# --------------------------------------------------------------------------- state machine


class IncidentAlerter(Protocol):
    """Where each open and each resolve goes: hubfleet.monitor.alerts.Alerter (a recording stand-in in tests).
    It returns at once and delivers in the background until drained."""

    async def incident_opened(self, incident: IncidentRecord, *, wait: bool = False) -> None: ...

    async def incident_resolved(self, incident: IncidentRecord, *, wait: bool = False) -> None: ...

    async def drain(self, timeout: float | None = None) -> None: ...


class IncidentTracker:
    """Turns probe results into incidents and alerts: one message per open, one per resolve."""

    def __init__(
        self,
        store: Store,
        *,
        failures_to_open: int = 2,
        certificate_warning_days: int = 21,
        alerter: IncidentAlerter | None = None,
    ) -> None:
        self.store = store
        self.failures_to_open = failures_to_open
        self.certificate_warning = timedelta(days=certificate_warning_days)
        self.alerter = alerter
        self._failures: dict[str, int] = {}
        self._alerts: set[asyncio.Task[None]] = set()
        self.last_changes: list[tuple[str, IncidentRecord]] = []

    def observe(self, results: Iterable[ProbeResult]) -> list[tuple[str, IncidentRecord]]:
        """Feed the results of one pass (already recorded as samples); returns ("opened"|"resolved", incident)
        for each change, and schedules their alerts on the running loop."""
        changes: list[tuple[str, IncidentRecord]] = []
        open_now = open_keys(self.store)
        for result in results:
            changes += self._observe_one(result, open_now)
        for event, incident in changes:
            self._alert(event, incident)
        self.last_changes = changes
        return changes

    def _observe_one(
        self, result: ProbeResult, open_now: set[tuple[str, str, str | None]]
    ) -> list[tuple[str, IncidentRecord]]:
        changes: list[tuple[str, IncidentRecord]] = []
        hub = result.hub
        if result.ok:
            self._failures[hub] = 0
            if (hub, "down", None) in open_now and (
                done := resolve_incident(self.store, hub, "down", at=result.at)
            ):
                changes.append(("resolved", done))
        else:
            if hub not in self._failures:  # first sight (a fresh daemon or `hubfleet probe`): ask the store
                self._failures[hub] = trailing_failures(self.store, hub, self.failures_to_open)
            else:
                self._failures[hub] += 1
            if self._failures[hub] >= self.failures_to_open and (hub, "down", None) not in open_now:
                cause = result.error or "probe failed"
                incident, opened = open_incident(self.store, hub, "down", cause, at=result.at)
                if opened:
                    changes.append(("opened", incident))
        if result.cert_expires_at is not None:
            left = result.cert_expires_at - result.at
            if left <= self.certificate_warning:
                if (hub, "certificate", None) not in open_now:
                    days = left.total_seconds() / 86400
                    when = "expired" if days < 0 else f"expires in {days:.1f} days"
                    cause = f"TLS certificate of {result.url} {when} ({result.cert_expires_at.isoformat()})"
                    incident, opened = open_incident(self.store, hub, "certificate", cause, at=result.at)
                    if opened:
                        changes.append(("opened", incident))
            elif (hub, "certificate", None) in open_now and (
                done := resolve_incident(self.store, hub, "certificate", at=result.at)
            ):
                changes.append(("resolved", done))
        return changes

    def _alert(self, event: str, incident: IncidentRecord) -> None:
        log.info(
            "incident %s: %s %s of hub %s: %s",
            event,
            incident.kind,
            incident.id,
            incident.hub,
            incident.cause,
        )
        if self.alerter is None:
            return
        method = self.alerter.incident_opened if event == "opened" else self.alerter.incident_resolved
        try:
            task = asyncio.get_running_loop().create_task(self._deliver(method, incident))
        except RuntimeError:  # no running loop: deliver on a private one, and wait (it closes after)
            asyncio.run(self._deliver(method, incident, wait=True))
            return
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    @staticmethod
    async def _deliver(
        method: Callable[..., Awaitable[None]], incident: IncidentRecord, wait: bool = False
    ) -> None:
        try:
            await (method(incident, wait=True) if wait else method(incident))
        except Exception:  # the Alerter never raises; a bug in it must not stop the prober
            log.exception("alerting about incident %s failed", incident.id)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for pending alert deliveries (the one-pass CLI waits before exiting)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._alerts:
            await asyncio.wait(set(self._alerts), timeout=timeout)
        if self.alerter is not None:  # the alerter delivers in background tasks of its own
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await self.alerter.drain(left)
            except Exception:
                log.exception("waiting for alert deliveries failed")
