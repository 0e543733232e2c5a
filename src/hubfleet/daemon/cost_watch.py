"""Budgets and cost surprises: a task of the `hubfleet up` daemon, and the `cost` incidents it keeps.

Every `HUBFLEET_COST_INTERVAL` seconds (an hour by default) it re-allocates the current month
(hubfleet.costs.allocation: a price sheet turns each day's usage into cost, so the month grows while it runs),
then reads every community's budget status (hubfleet.costs.budgets) and every hub's newest daily cost
(hubfleet.costs.cost_anomaly) and keeps incidents of kind `cost` in step, each open and resolve handed to the
alerter like every incident:

    budget-50, budget-90, budget-100   a community's month cost reached that fraction of its budget
                                       (fleet.yaml `costs.budget_alerts`); hub "" and the community set
    forecast                           the month's forecast passes the community's budget
    hub-budget-50, ..., hub-budget-forecast   the same for a hub's own budget (`billing.budget.hubs`)
    anomaly                            a hub's newest daily cost jumped (on that hub, its community set)

A budget rule is raised once per community (or hub) and month (store: budget_alerts), and its incident
stays open until the month ends: the first check of a new month resolves it, and the month starts fresh. A
community that left the fleet or lost its budget has its open budget incidents resolved. An anomaly resolves
when the hub's newest day is ordinary again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hubfleet.clock import as_utc, utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.costs.budgets import BudgetStatus, CostSource, budget_statuses, month_bounds, month_of
from hubfleet.costs.cost_anomaly import CLEAR, DayVerdict, cost_anomalies
from hubfleet.costs.cost_anomaly import RULE as ANOMALY
from hubfleet.daemon.incident_alerts import IncidentAlerts
from hubfleet.monitor.incidents import (
    IncidentAlerter,
    IncidentRecord,
    open_incident,
    open_of_kind,
    resolve_incident,
)
from hubfleet.settings import seconds_from_env
from hubfleet.store.api import Store
from hubfleet.store.cost_alerts import link_incident, raised, record_raised

log = logging.getLogger("hubfleet.costs")

KIND = "cost"
INTERVAL_ENV = "HUBFLEET_COST_INTERVAL"
INTERVAL = 3600.0

Changes = list[tuple[str, IncidentRecord]]


def interval() -> float:
    return seconds_from_env(INTERVAL_ENV, INTERVAL, minimum=1.0)


# --------------------------------------------------------------------------- incidents


def close_past_months(store: Store, month: str, now: datetime) -> Changes:
    """Resolve the budget incidents opened before `month` began: a new month starts fresh."""
    start = month_bounds(month)[0]
    changes: Changes = []
    for incident in open_of_kind(store, KIND):
        if incident.rule == ANOMALY or as_utc(incident.started_at).date() >= start:
            continue
        done = resolve_incident(
            store, incident.hub, KIND, incident.rule, at=now, community=incident.community
        )
        if done is not None:
            changes.append(("resolved", done))
    return changes


def budget_changes(store: Store, statuses: Sequence[BudgetStatus], now: datetime) -> Changes:
    """Open an incident for each budget rule that fires and was not raised this month yet; resolve the
    open budget incidents of communities (and hubs) that no longer have a budget here."""
    changes: Changes = []
    by_month: dict[str, set[tuple[str, str, str]]] = {}
    for status in statuses:
        done = by_month.setdefault(status.month, raised(store, status.month))
        hub = status.hub or ""
        for rule, cause in status.rules().items():
            if (status.community, hub, rule) in done:
                continue
            if not record_raised(store, status.community, hub, status.month, rule, at=now):
                continue  # another process raised it a moment ago
            done.add((status.community, hub, rule))
            incident, opened = open_incident(
                store, hub, KIND, cause, rule=rule, at=now, community=status.community
            )
            link_incident(store, status.community, hub, status.month, rule, incident.id)
            if opened:
                changes.append(("opened", incident))
    budgeted = {(s.community, s.hub or "") for s in statuses if s.budget is not None}
    looked_at = {s.community for s in statuses}
    for incident in open_of_kind(store, KIND):
        if incident.rule == ANOMALY or incident.community not in looked_at:
            continue
        if (incident.community, incident.hub) not in budgeted and (
            done_incident := resolve_incident(
                store, incident.hub, KIND, incident.rule, at=now, community=incident.community
            )
        ):
            changes.append(("resolved", done_incident))
    return changes


def budget_gone(store: Store, fleet: FleetConfig, now: datetime) -> Changes:
    """Resolve the budget incidents of communities no longer in the fleet."""
    changes: Changes = []
    for incident in open_of_kind(store, KIND):
        if incident.rule == ANOMALY or incident.community in fleet.communities:
            continue
        if done := resolve_incident(
            store, incident.hub, KIND, incident.rule, at=now, community=incident.community
        ):
            changes.append(("resolved", done))
    return changes


def anomaly_changes(
    store: Store, fleet: FleetConfig, verdicts: dict[str, DayVerdict], now: datetime
) -> Changes:
    """Open `anomaly` on hubs whose newest day jumped, resolve it where the newest day is ordinary again
    (or the hub left the fleet)."""
    changes: Changes = []
    already = {i.hub: i for i in open_of_kind(store, KIND) if i.rule == ANOMALY}
    for hub, verdict in sorted(verdicts.items()):
        if verdict.cause and hub not in already:
            community = fleet.hubs[hub].community if hub in fleet.hubs else None
            incident, opened = open_incident(
                store, hub, KIND, verdict.cause, rule=ANOMALY, at=now, community=community
            )
            if opened:
                changes.append(("opened", incident))
        elif verdict.cause == CLEAR and hub in already:
            done = resolve_incident(store, hub, KIND, ANOMALY, at=now, community=already[hub].community)
            if done is not None:
                changes.append(("resolved", done))
    for hub, incident in sorted(already.items()):
        if hub not in fleet.hubs and (
            done := resolve_incident(store, hub, KIND, ANOMALY, at=now, community=incident.community)
        ):
            changes.append(("resolved", done))
    return changes


# --------------------------------------------------------------------------- the task


@dataclass
class CostWatch:
    """Re-allocates the current month and keeps the `cost` incidents; see the module docstring."""

    source: FleetConfig | Callable[[], FleetConfig]
    """The fleet, or a callable giving it as it is now (hubfleet.console.reload.FleetReloader)."""
    state_dir: Path | None
    store: Store
    alerter: IncidentAlerter | None = None
    costs: CostSource | None = None
    """Where costs are read (hubfleet.costs.queries unless a test says otherwise)."""
    _alerts: IncidentAlerts = field(init=False)
    _said: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._alerts = IncidentAlerts(self.alerter, log, "cost")

    @property
    def fleet(self) -> FleetConfig:
        return self.source if isinstance(self.source, FleetConfig) else self.source()

    def allocate(self, fleet: FleetConfig, month: str) -> None:
        """The month's allocation again, when a cluster has a price sheet (its cost grows with use)."""
        if not any(c.costs.price_sheet is not None for c in fleet.clusters.values()):
            return
        try:
            from hubfleet.costs.allocation import allocate_month
        except ImportError:  # the allocation is not installed in this build
            self._once("allocation", "cannot allocate costs: hubfleet.costs.allocation is missing")
            return
        allocate_month(self.store, fleet, month, state_dir=self.state_dir)

    def check(self, now: datetime | None = None) -> Changes:
        """One pass (blocking: the daemon runs it in a thread). Returns the changes; alerting is `run`'s."""
        now = now or utcnow()
        fleet = self.fleet
        month = month_of(now.date())
        self.allocate(fleet, month)
        changes = close_past_months(self.store, month, now)
        statuses = budget_statuses(self.store, fleet, month, today=now.date(), source=self.costs)
        for status in statuses:
            if status.missing_rates:
                self._once(
                    f"rate {status.community} {month}",
                    f"community {status.community}: costs left out of its budget for {month}, no exchange "
                    f"rate {', '.join(status.missing_rates)}: add it to fleet.yaml `costs.exchange_rates`",
                )
        changes += budget_changes(self.store, statuses, now)
        changes += budget_gone(self.store, fleet, now)
        verdicts = cost_anomalies(self.store, fleet, today=now.date(), source=self.costs)
        changes += anomaly_changes(self.store, fleet, verdicts, now)
        return changes

    def _once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning("%s", message)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set (or the task is cancelled); an error is logged and tried again next time."""
        every = interval()
        try:
            while not stop.is_set():
                try:
                    self._alerts.send_all(await asyncio.to_thread(self.check))
                except Exception:
                    log.exception("the cost watch failed; trying again in %.0f s", every)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=every)
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._alerts.drain(timeout=5)

    async def drain(self, timeout: float | None = None) -> None:
        await self._alerts.drain(timeout)


def start_cost_watch(
    fleet: FleetConfig | Callable[[], FleetConfig],
    state_dir: Path | None,
    store: Store,
    alerter: IncidentAlerter | None,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """The daemon's cost task (hubfleet.up)."""
    return asyncio.create_task(CostWatch(fleet, state_dir, store, alerter).run(stop), name="cost-watch")
