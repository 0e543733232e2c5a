"""Spawn latency and failures over a window, from the hub's own histogram
(`jupyterhub_server_spawn_duration_seconds`, status × reason) as the collector stores it with every hub
sample (HubSample.spawn_histogram: cumulative since the hub process started).

A window's figures are the sum of the deltas between consecutive samples: a count that goes down means
the hub restarted (its counters began again at zero), and the later sample counts whole. Quantiles are
estimated from the bucket counts the way Prometheus' `histogram_quantile` does: find the bucket in which
the rank falls and interpolate linearly between its bounds (0 below the first). So they are only as fine
as the hub's buckets (JupyterHub's default: 0.5, 1, 2.5, 5, 10, 15, 30 s, ...): a p95 of "0.9 s" means
"between 0.5 and 1 s, nearer 1". A rank above the last finite bound is reported as that bound with
`above: true`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from hubfleet.clock import as_utc
from hubfleet.store.models import HubSample

SUCCESS = "success"
BASELINE_LOOKBACK = 30
"""Samples before a window searched for the baseline (one with a histogram)."""


@dataclass(frozen=True)
class Series:
    """One status/reason of the histogram: how many, their total seconds, cumulative bucket counts."""

    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Series:
        return cls(
            float(data.get("count") or 0),
            float(data.get("sum") or 0),
            {float(le): float(n) for le, n in data.get("buckets") or []},
        )

    def at(self, bound: float) -> float:
        """Cumulative count at `bound`: stored buckets stop at the first one holding every spawn, so a
        bound above them holds them all."""
        if bound in self.buckets:
            return self.buckets[bound]
        if not self.buckets or bound > max(self.buckets):
            return self.count
        below = [le for le in self.buckets if le < bound]
        return self.buckets[max(below)] if below else 0.0

    def minus(self, earlier: Series) -> Series:
        bounds = set(self.buckets) | set(earlier.buckets)
        return Series(
            self.count - earlier.count,
            self.total - earlier.total,
            {b: self.at(b) - earlier.at(b) for b in bounds},
        )

    def plus(self, other: Series) -> Series:
        bounds = set(self.buckets) | set(other.buckets)
        return Series(
            self.count + other.count, self.total + other.total, {b: self.at(b) + other.at(b) for b in bounds}
        )

    def quantile(self, q: float) -> tuple[float, bool] | None:
        """(seconds, above) estimated like Prometheus' histogram_quantile; None without spawns."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound in sorted(self.buckets):
            cumulative = self.at(bound)
            if cumulative >= rank:
                if cumulative == below:
                    return bound, False
                return lower + (bound - lower) * (rank - below) / (cumulative - below), False
            lower, below = bound, cumulative
        return lower, True


Histogram = dict[str, Series]


def parse(data: dict[str, Any] | None) -> Histogram:
    return {key: Series.from_json(value) for key, value in (data or {}).items()}


def _restarted(later: Histogram, earlier: Histogram) -> bool:
    return any(later.get(key, Series()).count < series.count for key, series in earlier.items())


def window_delta(histograms: Sequence[dict[str, Any] | None]) -> Histogram:
    """What happened between the first and the last of consecutive stored histograms (oldest first;
    None where a sample has none, skipped). The first is the baseline; a restart counts the later whole."""
    parsed = [parse(h) for h in histograms if h is not None]
    total: Histogram = {}
    for earlier, later in zip(parsed, parsed[1:], strict=False):
        restarted = _restarted(later, earlier)
        for key, series in later.items():
            step = series if restarted else series.minus(earlier.get(key, Series()))
            if step.count > 0:
                total[key] = total.get(key, Series()).plus(step)
    return total


def summary(delta: Histogram) -> dict[str, Any]:
    """Spawns, p50/p95 (estimated from buckets), mean, and failures by status/reason, as JSON."""
    ok = delta.get(SUCCESS, Series())
    quantiles: dict[str, Any] = {}
    for name, q in (("p50", 0.5), ("p95", 0.95)):
        found = ok.quantile(q)
        quantiles[f"{name}_seconds"] = round(found[0], 3) if found else None
        quantiles[f"{name}_above_last_bucket"] = bool(found and found[1])
    failures = {key: int(s.count) for key, s in sorted(delta.items()) if key != SUCCESS and s.count > 0}
    return {
        "spawns": int(ok.count),
        **quantiles,
        "mean_seconds": round(ok.total / ok.count, 3) if ok.count else None,
        "failures": failures,
        "failed": sum(failures.values()),
        "buckets": [[b, int(ok.at(b))] for b in sorted(ok.buckets)],
    }


@dataclass(frozen=True)
class Sample:
    at: datetime
    running_servers: int
    histogram: dict[str, Any] | None


def samples(store: Any, hub: str, start: datetime, end: datetime) -> list[Sample]:
    """The hub's samples in [start, end], with the last one before `start` (the baseline) and the first
    after `end` (spawns between the last sample inside and `end` are counted, with at most one collection
    interval after it). Three indexed reads of three columns (no ORM objects: a week-long event at one
    sample a minute is 10,000 rows)."""
    columns = select(HubSample.at, HubSample.running_servers, HubSample.spawn_histogram).where(
        HubSample.hub == hub
    )
    with store.session() as session:
        inside = session.execute(
            columns.where(HubSample.at >= start, HubSample.at <= end).order_by(HubSample.at, HubSample.id)
        ).all()
        earlier = session.execute(
            columns.where(HubSample.at < start, HubSample.at >= start - timedelta(days=2))
            .order_by(HubSample.at.desc(), HubSample.id.desc())
            .limit(BASELINE_LOOKBACK)
        ).all()
        after = session.execute(
            columns.where(HubSample.at > end, HubSample.at <= end + timedelta(hours=1))
            .order_by(HubSample.at, HubSample.id)
            .limit(1)
        ).all()
    # the baseline: the newest with a histogram (a failed /hub/metrics leaves a sample without one)
    before = next((row for row in earlier if row[2] is not None), None)
    rows = [*([before] if before else []), *inside, *after]
    return [Sample(as_utc(at), running, histogram) for at, running, histogram in rows]


def spawns_between(store: Any, hub: str, start: datetime, end: datetime) -> dict[str, Any]:
    """summary() of the hub's spawns in [start, end]; `samples` says how many hub samples it rests on.
    Without any sample in the two days before `start` the daemon was not collecting, and the hub was
    started (by `up`) inside the window: its first sample counts whole."""
    found = samples(store, hub, start, end)
    histograms: list[dict[str, Any] | None] = [s.histogram for s in found]
    if found and found[0].at >= start:
        histograms.insert(0, {})  # the hub's first sample at all: counted from zero
    return {**summary(window_delta(histograms)), "samples": len(found)}
