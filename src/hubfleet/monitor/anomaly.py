"""Abnormal-activity rules: small functions over the store, evaluated every minute by the daemon.

Each rule looks at one hub with its effective `anomalies` settings (fleet defaults merged) and answers:
a cause (the rule fires), CLEAR (it does not) or None (not enough data to tell; nothing changes). A firing
rule opens an incident of kind `anomaly` with `rule` set (which alerts); it resolves when the rule clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Anomalies, Hub
from hubfleet.monitor.incidents import IncidentAlerter, IncidentRecord, open_incident, resolve_incident
from hubfleet.store.api import Store
from hubfleet.store.models import HubSample, Incident, Restart, ServerSession

log = logging.getLogger(__name__)

KIND = "anomaly"
CLEAR = ""
"""What a rule returns when its condition does not hold (None means: no data, leave things as they are)."""

BASELINE_WEEKS = 4
"""The usual level of an hour of the week is the median over this many past weeks..."""
BASELINE_MIN_WEEKS = 2
"""...of which at least this many must have samples; with fewer there is no baseline (and no alert)."""
SAMPLE_FRESH = timedelta(minutes=5)
"""A hub's newest HubSample older than this says nothing about now (the collector or the hub is down)."""
WINDOW = timedelta(hours=1)
"""The window of the spawn-failure and restart rules."""
EVALUATE_INTERVAL = 60.0


@dataclass(frozen=True)
class Context:
    """What a rule sees: one store session, the hub, its effective settings and the time of the pass."""

    session: Session
    hub: Hub
    settings: Anomalies
    now: datetime
    baseline_cache: dict[tuple[str, datetime], float | None] = field(default_factory=dict)


Rule = Callable[[Context], str | None]


# --------------------------------------------------------------------------- data helpers


def latest_sample(session: Session, hub: str, now: datetime) -> HubSample | None:
    """The hub's newest HubSample if it is fresh (at most SAMPLE_FRESH old), else None."""
    row = session.scalars(
        select(HubSample)
        .where(HubSample.hub == hub, HubSample.at <= now)
        .order_by(HubSample.at.desc(), HubSample.id.desc())
        .limit(1)
    ).first()
    return row if row is not None and now - row.at <= SAMPLE_FRESH else None


def hour_of_week_start(moment: datetime) -> datetime:
    """The start of the (UTC) hour that `moment` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def running_baseline(session: Session, hub: str, now: datetime, weeks: int = BASELINE_WEEKS) -> float | None:
    """The usual number of running servers at this hour of the week: for each of the past `weeks` weeks the
    median of the samples in the same UTC hour, then the median of those weekly values. None when fewer than
    BASELINE_MIN_WEEKS weeks have samples in that hour."""
    hour = hour_of_week_start(now)
    weekly: list[float] = []
    for k in range(1, weeks + 1):
        start = hour - timedelta(weeks=k)
        values = session.scalars(
            select(HubSample.running_servers).where(
                HubSample.hub == hub, HubSample.at >= start, HubSample.at < start + timedelta(hours=1)
            )
        ).all()
        if values:
            weekly.append(statistics.median(values))
    return statistics.median(weekly) if len(weekly) >= BASELINE_MIN_WEEKS else None


def counter_increase(values: list[float]) -> float:
    """How much a counter grew over consecutive readings; a drop is a reset (the hub restarted)."""
    total = 0.0
    for previous, current in zip(values, values[1:], strict=False):
        total += current - previous if current >= previous else current
    return total


def spawn_counts(
    session: Session, hub: str, now: datetime, window: timedelta = WINDOW
) -> tuple[float, float]:
    """(successful, failed) spawns of `hub` in the window ending `now`, from HubSample counter deltas
    (starting from the last sample before the window, so no spawn between two samples is lost)."""
    start = now - window
    base = session.scalars(
        select(HubSample)
        .where(HubSample.hub == hub, HubSample.at <= start, HubSample.at >= start - SAMPLE_FRESH)
        .order_by(HubSample.at.desc(), HubSample.id.desc())
        .limit(1)
    ).all()
    rows = list(base) + list(
        session.scalars(
            select(HubSample)
            .where(HubSample.hub == hub, HubSample.at > start, HubSample.at <= now)
            .order_by(HubSample.at, HubSample.id)
        )
    )
    ok = [r.spawn_success_total for r in rows if r.spawn_success_total is not None]
    failed = [r.spawn_failure_total for r in rows if r.spawn_failure_total is not None]
    return counter_increase(ok), counter_increase(failed)


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


# --------------------------------------------------------------------------- rules


def rule_max_running_servers(ctx: Context) -> str | None:
    cap = ctx.settings.max_running_servers
    if cap is None:
        return CLEAR
    sample = latest_sample(ctx.session, ctx.hub.name, ctx.now)
    if sample is None:
        return None
    if sample.running_servers > cap:
        return f"{sample.running_servers} user servers running, above the cap of {cap}"
    return CLEAR


def rule_running_above_baseline(ctx: Context) -> str | None:
    sample = latest_sample(ctx.session, ctx.hub.name, ctx.now)
    if sample is None:
        return None
    key = (ctx.hub.name, hour_of_week_start(ctx.now))
    if key not in ctx.baseline_cache:
        ctx.baseline_cache[key] = running_baseline(ctx.session, ctx.hub.name, ctx.now)
    baseline = ctx.baseline_cache[key]
    if baseline is None:
        return CLEAR  # no history for this hour of the week yet
    current = sample.running_servers
    factor, excess = ctx.settings.baseline_factor, ctx.settings.baseline_min_excess
    if current > factor * baseline and current - baseline >= excess:
        return (
            f"{current} user servers running, usually {baseline:g} at this hour of the week "
            f"(median of past weeks; alert above {factor:g}x and at least {excess} more)"
        )
    return CLEAR


def rule_max_server_age(ctx: Context) -> str | None:
    hours = ctx.settings.max_server_age_hours
    if hours is None:
        return CLEAR
    limit = timedelta(hours=hours)
    old = ctx.session.scalars(
        select(ServerSession)
        .where(
            ServerSession.hub == ctx.hub.name,
            ServerSession.stopped_at.is_(None),
            ServerSession.started_at < ctx.now - limit,
        )
        .order_by(ServerSession.started_at)
    ).all()
    if not old:
        return CLEAR
    named = [
        f"{s.username}{'/' + s.server_name if s.server_name else ''} ({_hours(ctx.now - s.started_at)})"
        for s in old[:5]
    ]
    more = f" and {len(old) - 5} more" if len(old) > 5 else ""
    noun = "server of" if len(old) == 1 else "servers of"
    return f"{noun} {', '.join(named)}{more} running longer than {hours:g} h"


def rule_spawn_failure_rate(ctx: Context) -> str | None:
    threshold = ctx.settings.spawn_failure_rate
    if threshold is None:
        return CLEAR
    ok, failed = spawn_counts(ctx.session, ctx.hub.name, ctx.now)
    total = ok + failed
    if total < ctx.settings.min_spawns:
        return CLEAR
    rate = failed / total
    if rate > threshold:
        return (
            f"{failed:g} of {total:g} spawns failed in the last hour ({rate:.0%}; "
            f"alert above {threshold:.0%} with at least {ctx.settings.min_spawns} spawns)"
        )
    return CLEAR


def rule_restarts(ctx: Context) -> str | None:
    limit = ctx.settings.max_restarts_per_hour
    if limit is None:
        return CLEAR
    rows = ctx.session.scalars(
        select(Restart)
        .where(Restart.hub == ctx.hub.name, Restart.at > ctx.now - WINDOW, Restart.at <= ctx.now)
        .order_by(Restart.at.desc(), Restart.id.desc())
    ).all()
    if len(rows) <= limit:
        return CLEAR
    last = f"; last: {rows[0].reason}" if rows[0].reason else ""
    return f"hub restarted {len(rows)} times in the last hour (alert above {limit}){last}"


RULES: dict[str, Rule] = {
    "max_running_servers": rule_max_running_servers,
    "running_above_baseline": rule_running_above_baseline,
    "max_server_age": rule_max_server_age,
    "spawn_failure_rate": rule_spawn_failure_rate,
    "restarts": rule_restarts,
}
"""Rule name (stored as Incident.rule) -> rule function."""


# --------------------------------------------------------------------------- evaluation


@dataclass
class Verdicts:
    """One evaluation: (hub, rule) -> cause (fires), CLEAR or None (no data)."""

    at: datetime
    results: dict[tuple[str, str], str | None] = field(default_factory=dict)

    @property
    def firing(self) -> dict[tuple[str, str], str]:
        return {key: cause for key, cause in self.results.items() if cause}


def evaluate(
    store: Store,
    fleet: FleetConfig,
    now: datetime | None = None,
    baseline_cache: dict[tuple[str, datetime], float | None] | None = None,
) -> Verdicts:
    """Run every rule for every hub of the fleet (read-only: opens and resolves nothing)."""
    now = now or utcnow()
    cache = {} if baseline_cache is None else baseline_cache
    verdicts = Verdicts(at=now)
    with store.session() as session:
        for hub in fleet.hubs.values():
            ctx = Context(session, hub, hub.anomalies, now, cache)
            for name, rule in RULES.items():
                try:
                    verdicts.results[(hub.name, name)] = rule(ctx)
                except Exception:  # one broken rule must not hide the others
                    log.exception("anomaly rule %s failed for hub %s", name, hub.name)
                    verdicts.results[(hub.name, name)] = None
    return verdicts


def open_anomalies(store: Store) -> set[tuple[str, str]]:
    """(hub, rule) of every open anomaly incident."""
    with store.session() as session:
        rows = session.execute(
            select(Incident.hub, Incident.rule).where(Incident.kind == KIND, Incident.resolved_at.is_(None))
        ).all()
    return {(hub, rule or "") for hub, rule in rows}


@dataclass
class PassResult:
    opened: list[IncidentRecord] = field(default_factory=list)
    resolved: list[IncidentRecord] = field(default_factory=list)
    firing: dict[tuple[str, str], str] = field(default_factory=dict)


class AnomalyMonitor:
    """Evaluates the rules and keeps incidents in step: open on firing, resolve on clearing; each open and
    each resolve is handed once to `alerter` (hubfleet.monitor.alerts.Alerter, or None: record only).

    Open incidents are read from the store at each pass, so a daemon restart neither duplicates nor forgets
    them. The baseline of an hour of the week is computed once per hour and hub.
    """

    def __init__(self, store: Store, fleet: FleetConfig, *, alerter: IncidentAlerter | None = None):
        self.store = store
        self.fleet = fleet
        self.alerter = alerter
        self._baselines: dict[tuple[str, datetime], float | None] = {}
        self._alerts: set[asyncio.Task[None]] = set()

    def check(self, now: datetime | None = None) -> PassResult:
        """One pass: evaluate, open what fires, resolve what cleared; alerts are scheduled as tasks."""
        now = now or utcnow()
        current_hour = hour_of_week_start(now)
        for key in [k for k in self._baselines if k[1] != current_hour]:
            del self._baselines[key]
        verdicts = evaluate(self.store, self.fleet, now, self._baselines)
        already = open_anomalies(self.store)
        result = PassResult(firing=verdicts.firing)
        for (hub, rule), cause in verdicts.results.items():
            if cause and (hub, rule) not in already:
                record, opened = open_incident(self.store, hub, KIND, cause, rule=rule, at=now)
                if opened:
                    result.opened.append(record)
            elif (
                cause == CLEAR
                and (hub, rule) in already
                and (done := resolve_incident(self.store, hub, KIND, rule=rule, at=now))
            ):
                result.resolved.append(done)
        # Hubs removed from the fleet and rules that no longer exist: nothing else would ever clear them.
        for hub, rule in sorted(already):
            if (hub not in self.fleet.hubs or rule not in RULES) and (
                done := resolve_incident(self.store, hub, KIND, rule=rule or None, at=now)
            ):
                result.resolved.append(done)
        for record in result.opened:
            self._alert("opened", record)
        for record in result.resolved:
            self._alert("resolved", record)
        return result

    def _alert(self, event: str, incident: IncidentRecord) -> None:
        log.warning("anomaly %s on hub %s (%s): %s", event, incident.hub, incident.rule, incident.cause)
        if self.alerter is None:
            return
        method = self.alerter.incident_opened if event == "opened" else self.alerter.incident_resolved
        try:
            task = asyncio.get_running_loop().create_task(_deliver(method, incident))
        except RuntimeError:  # called outside a loop (a test, a one-off script): deliver now
            asyncio.run(_deliver(method, incident))
            return
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for pending alert deliveries."""
        if self._alerts:
            await asyncio.wait(set(self._alerts), timeout=timeout)

    async def run(self, stop: asyncio.Event, interval: float = EVALUATE_INTERVAL) -> None:
        """Check every `interval` seconds until `stop` is set; an error is logged, never raised."""
        while not stop.is_set():
            try:
                self.check()
            except Exception:
                log.exception("anomaly check failed; trying again in %.0f s", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


async def _deliver(method: Callable[[IncidentRecord], Awaitable[None]], incident: IncidentRecord) -> None:
    try:
        await method(incident)
    except Exception:  # the Alerter never raises; a bug in it must not stop the rules
        log.exception("alerting about anomaly incident %s failed", incident.id)
