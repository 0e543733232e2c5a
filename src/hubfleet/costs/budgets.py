"""Budgets: what each community (and hub) may spend in a month, what it has spent, and where the month's
forecast lands.

The budget of a community for a month is its `billing.budget.monthly` (in the budget's currency, else its
plan's, else the fleet's `costs.currency`); a community without one gets the default rule of fleet.yaml
`costs.default_budget`: the average of its cost in the last N full months (N = `months`, 3 by default; months
without any cost are not counted) plus `margin_percent` (20 %), and no budget at all when there is no history.
A hub's budget (`billing.budget.hubs`) is in the community budget's currency.

Spent is the month's cost so far (hubfleet.costs.queries: the month's allocation). The forecast is spent +
run rate x the days of the month after the last day with cost, where the run rate is the mean daily cost of
the last 7 days with cost this month (of all of them while there are fewer): billing exports arrive a day or
two late, so the days without data yet are forecast, not counted as zero. Costs in another currency are
converted with the fleet's exchange rates (hubfleet.costs.money.convert); a cost whose rate is missing is left
out and named in `missing_rates`, never guessed.

Everything here reads; opening incidents and alerting is hubfleet.daemon.cost_watch's.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from hubfleet.clock import utcnow
from hubfleet.config.models_costs import FleetCosts
from hubfleet.costs.money import MissingRate, cents, convert

if TYPE_CHECKING:
    from hubfleet.config.fleet import FleetConfig
    from hubfleet.config.models import Community

RUN_RATE_DAYS = 7
"""The run rate is the mean of this many last days with cost."""

Basis = Literal["set", "default", "none"]
"""Where a budget comes from: the community's file, the default rule, or nowhere (no budget)."""


# --------------------------------------------------------------------------- months


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_bounds(month: str) -> tuple[date, date]:
    """The first and last day of `month` (YYYY-MM)."""
    year, number = (int(part) for part in month.split("-"))
    return date(year, number, 1), date(year, number, calendar.monthrange(year, number)[1])


def months_before(month: str, count: int) -> list[str]:
    """The `count` full months before `month`, the nearest first."""
    first, _ = month_bounds(month)
    found: list[str] = []
    for _ in range(count):
        first = (first - timedelta(days=1)).replace(day=1)
        found.append(month_of(first))
    return found


# --------------------------------------------------------------------------- the arithmetic


def percent_text(fraction: Decimal) -> str:
    """0.5 -> `50`, 1 -> `100`, 0.125 -> `12.5`: the number in rule names and messages."""
    value = (fraction * 100).normalize()
    return f"{value:f}"


def threshold_rule(fraction: Decimal, *, hub: bool = False) -> str:
    """The incident rule of a threshold: `budget-50`, or `hub-budget-50` for a hub's budget."""
    return f"{'hub-' if hub else ''}budget-{percent_text(fraction)}"


def forecast_rule(*, hub: bool = False) -> str:
    return "hub-budget-forecast" if hub else "forecast"


def default_budget(history: Sequence[Decimal], margin_percent: Decimal) -> Decimal | None:
    """The average of `history` (the costs of the months that had any) plus `margin_percent`; None
    without history."""
    if not history:
        return None
    average = sum(history, Decimal(0)) / len(history)
    return average * (1 + margin_percent / 100)


@dataclass(frozen=True)
class Forecast:
    run_rate: Decimal
    """Mean daily cost of the last RUN_RATE_DAYS days with cost (fewer while the month has fewer)."""
    rate_days: int
    """How many days the run rate is the mean of (0: no cost yet this month)."""
    through: date | None
    """The last day with cost; None when the month has none yet."""
    days_left: int
    """Days of the month after `through` (after yesterday when there is no cost yet)."""
    amount: Decimal
    """spent + run_rate x days_left."""


def forecast(
    spent: Decimal, daily: Mapping[date, Decimal], month: str, today: date, rate_days: int = RUN_RATE_DAYS
) -> Forecast:
    """The month's forecast from `spent` so far and the daily costs of the month's days (days without any
    cost row are absent from `daily`). A month that is over forecasts what it spent."""
    first, last = month_bounds(month)
    days = sorted(day for day in daily if first <= day <= min(last, today))
    recent = days[-rate_days:]
    rate = sum((daily[day] for day in recent), Decimal(0)) / len(recent) if recent else Decimal(0)
    through = days[-1] if days else None
    start = through or min(last, today - timedelta(days=1))
    days_left = max(0, (last - start).days) if today <= last else 0
    if start < first - timedelta(days=1):  # a month that has not begun
        days_left = (last - first).days + 1
    return Forecast(rate, len(recent), through, days_left, spent + rate * days_left)


def reached(spent: Decimal, budget: Decimal, fractions: Iterable[Decimal]) -> list[Decimal]:
    """The alert fractions of `budget` that `spent` has reached (nothing is reached before any cost)."""
    if spent <= 0:
        return []
    return [f for f in sorted(fractions) if spent >= budget * f]


# --------------------------------------------------------------------------- statuses


@dataclass
class BudgetStatus:
    """A community's (or, with `hub`, one hub's) budget for a month: what was spent and where it heads."""

    community: str
    hub: str | None
    month: str
    currency: str
    budget: Decimal | None
    basis: Basis
    spent: Decimal
    forecast: Forecast
    alerts: list[Decimal]
    """fleet.yaml `costs.budget_alerts`."""
    basis_note: str = ""
    """How a default budget was found ("average of 2026-08..2026-10 + 20 %")."""
    missing_rates: list[str] = field(default_factory=list)

    @property
    def used(self) -> Decimal | None:
        """spent / budget (1 = all of it); None without a (positive) budget."""
        if not self.budget:
            return None
        return self.spent / self.budget

    @property
    def reached(self) -> list[Decimal]:
        return reached(self.spent, self.budget, self.alerts) if self.budget is not None else []

    @property
    def forecast_over(self) -> bool:
        return self.budget is not None and self.forecast.amount > self.budget and self.forecast.amount > 0

    @property
    def status(self) -> str:
        """`ok`, `over 50 %`, `over 90 %`, `over 100 %`, `forecast over` (or `over 50 %, forecast over`),
        `no budget`; `... (rate missing)` when some cost could not be converted."""
        if self.budget is None:
            text = "no budget"
        else:
            parts = []
            if self.reached:
                parts.append(f"over {percent_text(self.reached[-1])} %")
            if self.forecast_over and not (self.reached and self.reached[-1] >= 1):
                parts.append("forecast over")
            text = ", ".join(parts) or "ok"
        return text + (" (rate missing)" if self.missing_rates else "")

    def rules(self) -> dict[str, str]:
        """The incident rules this status fires (rule -> cause): each reached threshold, and `forecast`
        while the forecast passes the budget."""
        if self.budget is None:
            return {}
        hub = self.hub is not None
        who = f"hub {self.hub} ({self.community})" if hub else f"community {self.community}"
        kind = "default budget" if self.basis == "default" else "budget"
        rule_text = f" ({self.basis_note})" if self.basis_note else ""
        budget = f"{cents(self.budget)} {self.currency}"
        spent = f"{cents(self.spent)} {self.currency}"
        fired: dict[str, str] = {}
        for fraction in self.reached:
            used = f"{self.used * 100:.0f} %" if self.used is not None else "a budget of nothing"
            fired[threshold_rule(fraction, hub=hub)] = (
                f"{who} has spent {spent} of its {kind} of {budget}{rule_text} for {self.month} ({used}; "
                f"alert at {percent_text(fraction)} %)"
            )
        if self.forecast_over:
            f = self.forecast
            fired[forecast_rule(hub=hub)] = (
                f"{who} is forecast to spend {cents(f.amount)} {self.currency} in {self.month}, over its "
                f"{kind} of {budget}{rule_text}: {spent} spent through {f.through or '-'}, "
                f"{cents(f.run_rate)} {self.currency} a day (mean of the last {f.rate_days} days with cost) "
                f"x {f.days_left} days left"
            )
        return fired

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, amounts as strings to the cent."""
        used = self.used
        return {
            "community": self.community,
            "hub": self.hub,
            "month": self.month,
            "currency": self.currency,
            "budget": str(cents(self.budget)) if self.budget is not None else None,
            "basis": self.basis,
            "basis_note": self.basis_note,
            "spent": str(cents(self.spent)),
            "forecast": str(cents(self.forecast.amount)),
            "run_rate": str(cents(self.forecast.run_rate)),
            "run_rate_days": self.forecast.rate_days,
            "through": self.forecast.through.isoformat() if self.forecast.through else None,
            "days_left": self.forecast.days_left,
            "used_percent": float(round(used * 100, 1)) if used is not None else None,
            "reached": [percent_text(f) for f in self.reached],
            "forecast_over": self.forecast_over,
            "status": self.status,
            "missing_rates": list(self.missing_rates),
        }


# --------------------------------------------------------------------------- reading the store


class CostSource(Protocol):
    """hubfleet.costs.queries (the default), or anything answering the same three questions."""

    def community_month_costs(
        self, store: Any, fleet: FleetConfig, month: str
    ) -> dict[str, dict[str, Decimal]]: ...

    def hub_month_costs(
        self, store: Any, month: str, hubs: Sequence[str] | None = None
    ) -> dict[str, dict[str, Decimal]]: ...

    def daily_hub_costs(
        self, store: Any, first: date, last: date, hubs: Sequence[str] | None = None
    ) -> list[Any]: ...


def default_source() -> CostSource:
    """hubfleet.costs.queries, imported when first needed."""
    from hubfleet.costs import queries

    return queries  # type: ignore[return-value]


class _Converter:
    """Sums amounts of several currencies in one, collecting the rates that are missing."""

    def __init__(self, costs: FleetCosts, target: str) -> None:
        self.costs, self.target = costs, target
        self.missing: list[str] = []

    def total(self, amounts: Mapping[str, Decimal], month: str) -> Decimal:
        total = Decimal(0)
        for currency, amount in sorted(amounts.items()):
            try:
                total += convert(amount, currency, self.target, month, self.costs.exchange_rates)
            except MissingRate:
                text = f"{currency}->{self.target} for {month}"
                if text not in self.missing:
                    self.missing.append(text)
        return total


def budget_currency(fleet: FleetConfig, community: Community) -> str:
    """The budget's currency, else the community's plan's, else the fleet's."""
    costs = fleet.settings.costs
    billing = community.billing
    if billing.budget is not None and billing.budget.currency:
        return billing.budget.currency
    plan = costs.plans.get(billing.plan) if billing.plan else None
    return plan.currency if plan is not None else costs.currency


def budget_statuses(
    store: Any,
    fleet: FleetConfig,
    month: str,
    *,
    today: date | None = None,
    communities: Iterable[str] | None = None,
    source: CostSource | None = None,
) -> list[BudgetStatus]:
    """Every community's budget status for `month` (sorted by name), each followed by its hubs' budgets.
    `today` (UTC, default now) bounds the forecast; `communities` limits which are read."""
    source = source or default_source()
    today = today or utcnow().date()
    costs = fleet.settings.costs
    wanted = sorted(fleet.communities if communities is None else communities)
    first, last = month_bounds(month)
    month_costs = source.community_month_costs(store, fleet, month)
    hubs_of = {name: sorted(h.name for h in fleet.hubs.values() if h.community == name) for name in wanted}
    every_hub = sorted({hub for names in hubs_of.values() for hub in names})
    daily_rows = source.daily_hub_costs(store, first, min(last, today), every_hub) if every_hub else []
    budgeted_hubs = sorted(
        {
            hub
            for name in wanted
            if (budget := fleet.communities[name].billing.budget) is not None
            for hub in budget.hubs
        }
    )
    hub_costs = source.hub_month_costs(store, month, budgeted_hubs) if budgeted_hubs else {}
    history: dict[str, dict[str, dict[str, Decimal]]] = {}
    if costs.default_budget is not None and any(
        fleet.communities[name].billing.budget is None for name in wanted
    ):
        for earlier in months_before(month, costs.default_budget.months):
            history[earlier] = source.community_month_costs(store, fleet, earlier)

    found: list[BudgetStatus] = []
    for name in wanted:
        community = fleet.communities[name]
        currency = budget_currency(fleet, community)
        money = _Converter(costs, currency)
        days: dict[date, Decimal] = {}
        hub_days: dict[str, dict[date, Decimal]] = {}
        for row in daily_rows:
            if row.hub in hubs_of[name]:
                amount = money.total({row.currency: row.amount}, month)
                days[row.day] = days.get(row.day, Decimal(0)) + amount
                per_hub = hub_days.setdefault(row.hub, {})
                per_hub[row.day] = per_hub.get(row.day, Decimal(0)) + amount
        spent = money.total(month_costs.get(name, {}), month)
        budget, basis, note = _budget_of(community, costs, history, money)
        found.append(
            BudgetStatus(
                name,
                None,
                month,
                currency,
                budget,
                basis,
                spent,
                forecast(spent, days, month, today),
                list(costs.budget_alerts),
                note,
                money.missing,
            )
        )
        if community.billing.budget is None:
            continue
        for hub, amount in sorted(community.billing.budget.hubs.items()):
            hub_money = _Converter(costs, currency)
            hub_spent = hub_money.total(hub_costs.get(hub, {}), month)
            found.append(
                BudgetStatus(
                    name,
                    hub,
                    month,
                    currency,
                    amount,
                    "set",
                    hub_spent,
                    forecast(hub_spent, hub_days.get(hub, {}), month, today),
                    list(costs.budget_alerts),
                    "",
                    hub_money.missing + [m for m in money.missing if m not in hub_money.missing],
                )
            )
    return found


def _budget_of(
    community: Community,
    costs: FleetCosts,
    history: Mapping[str, Mapping[str, Mapping[str, Decimal]]],
    money: _Converter,
) -> tuple[Decimal | None, Basis, str]:
    if community.billing.budget is not None:
        return community.billing.budget.monthly, "set", ""
    rule = costs.default_budget
    if rule is None:
        return None, "none", "no budget set, and fleet.yaml `costs.default_budget` is null"
    months = [m for m, per in history.items() if community.name in per]
    totals = [money.total(history[m][community.name], m) for m in months]
    amount = default_budget(totals, rule.margin_percent)
    if amount is None or amount <= 0:  # no history, or credits outweighed the costs: nothing to go by
        return None, "none", f"no budget set and no cost in the last {rule.months} months for the default"
    span = f"{months[-1]}..{months[0]}" if len(months) > 1 else months[0]
    return amount, "default", f"default: average of {span} + {percent_text(rule.margin_percent / 100)} %"


def community_budget(
    store: Any,
    fleet: FleetConfig,
    community: str,
    month: str,
    *,
    today: date | None = None,
    source: CostSource | None = None,
) -> list[BudgetStatus]:
    """One community's budget status for `month` (first), then its hubs' (the console's community page)."""
    return budget_statuses(store, fleet, month, today=today, communities=[community], source=source)
