"""A sudden jump in one hub's daily cost: like the usage anomalies (hubfleet.monitor.anomaly), a rule that
fires, clears or has no data, turned into incidents (kind `cost`, rule `anomaly`) by
hubfleet.daemon.cost_watch.

The day looked at is the hub's newest day with cost (billing exports arrive late, so "yesterday" may not be
in yet). It is an anomaly when its cost is more than `costs.anomaly_factor` times the hub's median daily
cost of the 14 days before it, and more than `costs.anomaly_min_amount` above that median (both in the
fleet's currency): the factor catches the jump, the amount keeps cents-per-day hubs quiet. Days without a
cost row count as zero in the median, but a hub needs cost on at least MIN_BASELINE_DAYS of the 14 to have
a baseline at all (a new hub's first days are no anomaly).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hubfleet.clock import utcnow
from hubfleet.costs.budgets import CostSource, default_source, month_of
from hubfleet.costs.money import MissingRate, cents, convert

if TYPE_CHECKING:
    from hubfleet.config.fleet import FleetConfig

RULE = "anomaly"
BASELINE_DAYS = 14
MIN_BASELINE_DAYS = 7
LOOKBACK_DAYS = 7
"""How far back the newest day with cost may be; older data is no news."""
CLEAR = ""
"""A verdict: looked, nothing abnormal (None: no data to look at)."""


@dataclass(frozen=True)
class DayVerdict:
    hub: str
    day: date | None
    amount: Decimal
    median: Decimal | None
    cause: str | None
    """A cause when it fires, CLEAR when not, None when there is nothing to judge."""


def judge(
    hub: str,
    daily: Mapping[date, Decimal],
    factor: float,
    min_amount: Decimal,
    currency: str,
    *,
    today: date,
) -> DayVerdict:
    """The verdict on `hub`'s newest day with cost (at most LOOKBACK_DAYS before `today`)."""
    days = [d for d in daily if today - timedelta(days=LOOKBACK_DAYS) <= d <= today]
    if not days:
        return DayVerdict(hub, None, Decimal(0), None, None)
    day = max(days)
    amount = daily[day]
    window = [day - timedelta(days=k) for k in range(1, BASELINE_DAYS + 1)]
    if sum(1 for d in window if d in daily) < MIN_BASELINE_DAYS:
        return DayVerdict(hub, day, amount, None, None)
    median = Decimal(statistics.median([daily.get(d, Decimal(0)) for d in window]))
    if amount > median * Decimal(str(factor)) and amount - median > min_amount:
        cause = (
            f"hub {hub} cost {cents(amount)} {currency} on {day}, {factor:g}x above usual: its median of the "
            f"{BASELINE_DAYS} days before is {cents(median)} {currency} (alert above {factor:g}x and more "
            f"than {cents(min_amount)} {currency} above it)"
        )
        return DayVerdict(hub, day, amount, median, cause)
    return DayVerdict(hub, day, amount, median, CLEAR)


def cost_anomalies(
    store: Any,
    fleet: FleetConfig,
    *,
    today: date | None = None,
    hubs: Sequence[str] | None = None,
    source: CostSource | None = None,
) -> dict[str, DayVerdict]:
    """hub -> verdict for every hub of the fleet (or `hubs`), costs in the fleet's currency. A cost whose
    exchange rate is missing is left out of its day (the budgets name the missing rate)."""
    source = source or default_source()
    today = today or utcnow().date()
    costs = fleet.settings.costs
    names = sorted(fleet.hubs if hubs is None else hubs)
    if not names:
        return {}
    first = today - timedelta(days=LOOKBACK_DAYS + BASELINE_DAYS)
    daily: dict[str, dict[date, Decimal]] = {name: {} for name in names}
    for row in source.daily_hub_costs(store, first, today, names):
        if row.hub not in daily:
            continue
        try:
            amount = convert(
                row.amount, row.currency, costs.currency, month_of(row.day), costs.exchange_rates
            )
        except MissingRate:
            continue
        daily[row.hub][row.day] = daily[row.hub].get(row.day, Decimal(0)) + amount
    return {
        name: judge(
            name, daily[name], costs.anomaly_factor, costs.anomaly_min_amount, costs.currency, today=today
        )
        for name in names
    }
