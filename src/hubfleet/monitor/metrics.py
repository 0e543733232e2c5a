"""The daemon's /metrics: the store's view of every hub in Prometheus exposition format.

Everything is computed from the store at scrape time (a handful of grouped queries); the 24 h / 7 d / 30 d
uptime ratios and the running-server baselines change slowly and are cached for a minute and an hour.
Per-hub series carry the labels hub, community and stage. The anomaly thresholds of each hub are exported too
(`hubfleet_hub_anomaly_*`), so that the exported Prometheus alert rules compare against the same per-hub
settings as the built-in rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hubfleet.clock import as_utc, utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.monitor.anomaly import SAMPLE_FRESH, hour_of_week_start, running_baseline
from hubfleet.monitor.incidents import KINDS as INCIDENT_KINDS
from hubfleet.monitor.uptime import uptime_by_hub
from hubfleet.monitor.usage import active_by_hub, active_users
from hubfleet.store.api import Store
from hubfleet.store.models import HubSample, Incident, ProbeSample, Restart, ServerSession

HUB_LABELS = ("hub", "community", "stage")
ACTIVE_PERIODS: dict[str, int] = {"dau": 1, "wau": 7, "mau": 30}
"""period label -> days: DAU counts today (UTC), WAU the last 7 days including today, MAU the last 30."""
ANOMALY_SETTINGS: dict[str, tuple[str, str, float]] = {
    # metric suffix -> (Anomalies field, help, multiplier)
    "max_running_servers": ("max_running_servers", "Cap on running user servers.", 1),
    "baseline_factor": ("baseline_factor", "Alert above this many times the usual running servers.", 1),
    "baseline_min_excess": ("baseline_min_excess", "...and at least this many servers above usual.", 1),
    "max_server_age_seconds": ("max_server_age_hours", "Alert on a user server running longer.", 3600),
    "spawn_failure_rate": ("spawn_failure_rate", "Alert above this share of failed spawns in an hour.", 1),
    "min_spawns": ("min_spawns", "...counting hours with at least this many spawns.", 1),
    "max_restarts_per_hour": ("max_restarts_per_hour", "Alert above this many hub restarts in an hour.", 1),
}
METRIC_NAMES = (
    "hubfleet_hub_info",
    "hubfleet_hub_up",
    "hubfleet_hub_probe_latency_seconds",
    "hubfleet_hub_last_probe_timestamp_seconds",
    "hubfleet_hub_certificate_expiry_timestamp_seconds",
    "hubfleet_hub_uptime_ratio",
    "hubfleet_hub_active_users",
    "hubfleet_fleet_active_users",
    "hubfleet_hub_running_servers",
    "hubfleet_fleet_running_servers",
    "hubfleet_hub_running_servers_baseline",
    "hubfleet_hub_oldest_server_age_seconds",
    "hubfleet_hub_spawns_total",
    "hubfleet_hub_restarts_total",
    "hubfleet_hub_open_incidents",
    "hubfleet_fleet_open_incidents",
    *(f"hubfleet_hub_anomaly_{suffix}" for suffix in ANOMALY_SETTINGS),
)
"""Every metric family /metrics serves (counters are listed with their `_total` sample name)."""

UPTIME_CACHE_SECONDS = 60.0


def _labels(hub: Hub) -> list[str]:
    return [hub.name, hub.community, hub.stage]


def _ts(moment: datetime) -> float:
    return moment.timestamp()


# --------------------------------------------------------------------------- queries


def last_probes(session: Session) -> dict[str, ProbeSample]:
    newest = select(func.max(ProbeSample.id)).group_by(ProbeSample.hub)
    return {row.hub: row for row in session.scalars(select(ProbeSample).where(ProbeSample.id.in_(newest)))}


def last_hub_samples(session: Session) -> dict[str, HubSample]:
    newest = select(func.max(HubSample.id)).group_by(HubSample.hub)
    return {row.hub: row for row in session.scalars(select(HubSample).where(HubSample.id.in_(newest)))}


def last_spawn_counters(session: Session) -> dict[str, HubSample]:
    newest = (
        select(func.max(HubSample.id))
        .where(HubSample.spawn_success_total.is_not(None) | HubSample.spawn_failure_total.is_not(None))
        .group_by(HubSample.hub)
    )
    return {row.hub: row for row in session.scalars(select(HubSample).where(HubSample.id.in_(newest)))}


def oldest_servers(session: Session) -> dict[str, datetime]:
    rows = session.execute(
        select(ServerSession.hub, func.min(ServerSession.started_at))
        .where(ServerSession.stopped_at.is_(None))
        .group_by(ServerSession.hub)
    ).all()
    return {hub: _stored_time(started) for hub, started in rows if started is not None}


def _stored_time(value: datetime | str) -> datetime:
    """func.min() bypasses the column type, so SQLite hands back a naive (UTC) datetime or a string."""
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def restart_totals(session: Session) -> dict[str, int]:
    rows = session.execute(select(Restart.hub, func.count(Restart.id)).group_by(Restart.hub)).all()
    return {hub: int(n) for hub, n in rows}


def open_incident_counts(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(
        select(Incident.hub, Incident.kind, func.count(Incident.id))
        .where(Incident.resolved_at.is_(None))
        .group_by(Incident.hub, Incident.kind)
    ).all()
    return {(hub, kind): int(n) for hub, kind, n in rows}


# --------------------------------------------------------------------------- families


@dataclass
class MetricsSource:
    """Builds the metric families from the store; keeps the slow-changing parts cached."""

    store: Store
    fleet: FleetConfig
    _uptime: tuple[float, dict[str, dict[str, float | None]]] | None = None
    _baselines: dict[tuple[str, datetime], float | None] = field(default_factory=dict)

    def families(self, now: datetime | None = None) -> list[Metric]:
        now = now or utcnow()
        hubs = list(self.fleet.hubs.values())
        uptime = self._uptime_percent(now)
        today = now.date()
        users = {p: active_by_hub(self.store, today, days) for p, days in ACTIVE_PERIODS.items()}
        fleet_users = {p: active_users(self.store, today, days) for p, days in ACTIVE_PERIODS.items()}
        with self.store.session() as session:
            probes = last_probes(session)
            samples = last_hub_samples(session)
            spawns = last_spawn_counters(session)
            oldest = oldest_servers(session)
            restarts = restart_totals(session)
            incidents = open_incident_counts(session)
            baselines = self._running_baselines(session, hubs, now)

        def gauge(name: str, doc: str, extra: Iterable[str] = (), unit: str = "") -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*HUB_LABELS, *extra], unit=unit)

        info = gauge("hubfleet_hub_info", "A hub of the fleet (always 1).", ["cluster", "display_name"])
        up = gauge("hubfleet_hub_up", "1 if the last probe of /hub/health and /hub/api/ succeeded, else 0.")
        latency = gauge("hubfleet_hub_probe_latency_seconds", "Latency of the last probe.")
        probed_at = gauge("hubfleet_hub_last_probe_timestamp_seconds", "When the hub was last probed.")
        cert = gauge(
            "hubfleet_hub_certificate_expiry_timestamp_seconds", "When the hub's TLS certificate expires."
        )
        uptime_f = gauge(
            "hubfleet_hub_uptime_ratio",
            "Share of successful probes in the window (0-1; absent without probes).",
            ["window"],
        )
        active = gauge(
            "hubfleet_hub_active_users",
            "Distinct users active on the hub: dau today (UTC), wau the last 7 days, mau the last 30.",
            ["period"],
        )
        fleet_active = GaugeMetricFamily(
            "hubfleet_fleet_active_users",
            "Distinct people active on any hub of the fleet (one login on two hubs counts once).",
            labels=["period"],
        )
        running = gauge("hubfleet_hub_running_servers", "User servers running at the last usage collection.")
        fleet_running = GaugeMetricFamily(
            "hubfleet_fleet_running_servers", "User servers running on all hubs of the fleet."
        )
        baseline = gauge(
            "hubfleet_hub_running_servers_baseline",
            "Usual running servers at this hour of the week (median of past weeks); absent without history.",
        )
        oldest_f = gauge("hubfleet_hub_oldest_server_age_seconds", "Age of the oldest running user server.")
        spawns_f = CounterMetricFamily(
            "hubfleet_hub_spawns", "User-server spawns reported by the hub.", labels=[*HUB_LABELS, "result"]
        )
        restarts_f = CounterMetricFamily(
            "hubfleet_hub_restarts", "Restarts of the hub process by the supervisor.", labels=list(HUB_LABELS)
        )
        open_f = gauge("hubfleet_hub_open_incidents", "Open incidents of the hub by kind.", ["kind"])
        fleet_open = GaugeMetricFamily(
            "hubfleet_fleet_open_incidents", "Open incidents of the fleet by kind.", labels=["kind"]
        )
        limits = {
            suffix: gauge(f"hubfleet_hub_anomaly_{suffix}", f"Anomaly setting: {doc}")
            for suffix, (_, doc, _) in ANOMALY_SETTINGS.items()
        }

        total_running = 0
        fleet_incidents = dict.fromkeys(INCIDENT_KINDS, 0)
        for hub in hubs:
            labels = _labels(hub)
            info.add_metric([*labels, hub.cluster, hub.display_name or hub.name], 1)
            if probe := probes.get(hub.name):
                up.add_metric(labels, 1 if probe.ok else 0)
                probed_at.add_metric(labels, _ts(probe.at))
                if probe.latency_ms is not None:
                    latency.add_metric(labels, probe.latency_ms / 1000)
                if probe.cert_expires_at is not None:
                    cert.add_metric(labels, _ts(probe.cert_expires_at))
            for window, percent in uptime.get(hub.name, {}).items():
                if percent is not None:
                    uptime_f.add_metric([*labels, window], percent / 100)
            for period in ACTIVE_PERIODS:
                active.add_metric([*labels, period], users[period].get(hub.name, 0))
            sample = samples.get(hub.name)
            if sample is not None and now - sample.at <= SAMPLE_FRESH:
                running.add_metric(labels, sample.running_servers)
                total_running += sample.running_servers
            if (usual := baselines.get(hub.name)) is not None:
                baseline.add_metric(labels, usual)
            if (started := oldest.get(hub.name)) is not None:
                oldest_f.add_metric(labels, max(0.0, (now - started).total_seconds()))
            if (counters := spawns.get(hub.name)) is not None:
                spawns_f.add_metric([*labels, "success"], counters.spawn_success_total or 0.0)
                spawns_f.add_metric([*labels, "failure"], counters.spawn_failure_total or 0.0)
            restarts_f.add_metric(labels, restarts.get(hub.name, 0))
            kinds = dict.fromkeys(INCIDENT_KINDS, 0) | {
                kind: n for (name, kind), n in incidents.items() if name == hub.name
            }
            for kind, n in kinds.items():
                open_f.add_metric([*labels, kind], n)
                fleet_incidents[kind] = fleet_incidents.get(kind, 0) + n
            for suffix, (attr, _, scale) in ANOMALY_SETTINGS.items():
                value = getattr(hub.anomalies, attr)
                if value is not None:
                    limits[suffix].add_metric(labels, value * scale)
        for period in ACTIVE_PERIODS:
            fleet_active.add_metric([period], fleet_users[period])
        fleet_running.add_metric([], total_running)
        for kind, n in fleet_incidents.items():
            fleet_open.add_metric([kind], n)
        return [
            info, up, latency, probed_at, cert, uptime_f, active, fleet_active, running, fleet_running,
            baseline, oldest_f, spawns_f, restarts_f, open_f, fleet_open, *limits.values(),
        ]  # fmt: skip

    def _uptime_percent(self, now: datetime) -> dict[str, dict[str, float | None]]:
        clock = time.monotonic()
        if self._uptime is None or clock - self._uptime[0] > UPTIME_CACHE_SECONDS:
            self._uptime = (clock, uptime_by_hub(self.store, self.fleet.hubs, now))
        return self._uptime[1]

    def _running_baselines(self, session: Session, hubs: list[Hub], now: datetime) -> dict[str, float | None]:
        hour = hour_of_week_start(now)
        for key in [k for k in self._baselines if k[1] != hour]:
            del self._baselines[key]
        for hub in hubs:
            if (hub.name, hour) not in self._baselines:
                self._baselines[(hub.name, hour)] = running_baseline(session, hub.name, now)
        return {hub.name: self._baselines[(hub.name, hour)] for hub in hubs}


class MetricsEndpoint:
    """The /metrics body, recomputed at most every `cache_seconds` (scrapes by several Prometheus servers
    or a dashboard refresh storm cost one computation)."""

    def __init__(self, store: Store, fleet: FleetConfig, cache_seconds: float = 5.0):
        self.source = MetricsSource(store, fleet)
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, bytes] | None = None

    def render(self) -> bytes:
        clock = time.monotonic()
        if self._cached is None or clock - self._cached[0] > self.cache_seconds:
            self._cached = (clock, render_metrics(self.source))
        return self._cached[1]


def render_metrics(source: MetricsSource, now: datetime | None = None) -> bytes:
    """Prometheus text exposition of `source` at `now`."""
    registry = CollectorRegistry(auto_describe=False)

    class _Snapshot:
        def collect(self) -> Iterator[Metric]:
            yield from source.families(now)

    registry.register(_Snapshot())  # type: ignore[arg-type]
    return generate_latest(registry)
