"""What the console's cost pages show: a month's cost per community and hub (per currency), the budget with
its forecast, the invoices, the billed-vs-allocated check, and the daily cost per hub for a chart.

Every figure comes from the costs package (hubfleet.costs.queries, .budgets, .invoices); this module only
arranges them for a page or the JSON API. Amounts leave here as strings rounded to the cent (money.cents),
always beside their currency: JSON numbers would turn exact decimals into floats.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hubfleet.clock import utcnow
from hubfleet.console.data.charts import Chart
from hubfleet.console.data.details import incidents
from hubfleet.console.data.source import ConsoleSource
from hubfleet.costs import budgets, queries
from hubfleet.costs.budgets import BudgetStatus, percent_text
from hubfleet.costs.invoices import FORMATS as INVOICE_FORMATS
from hubfleet.costs.invoices import invoice_dir
from hubfleet.costs.money import cents
from hubfleet.store import invoices as stored_invoices
from hubfleet.store.invoices import InvoiceRecord

MONTH_PATTERN = r"^[1-9]\d{3}-(0[1-9]|1[0-2])$"
"""YYYY-MM from year 1000 on (what `date` can hold, with room for a month's last day)."""
MONTH_CHOICES = 12
"""How many months back the month selector offers (any other month can still be typed in the URL)."""
DAILY_CHART = "daily-cost"
COST_KIND = "cost"
"""The incidents of budgets and cost anomalies (hubfleet.daemon.cost_watch)."""


class BadMonth(ValueError):
    """A `?month=` that is not YYYY-MM: the message says what to write."""


def this_month() -> str:
    return utcnow().strftime("%Y-%m")


def parse_month(value: str | None) -> str:
    """`value` as YYYY-MM (empty: this month, UTC); BadMonth otherwise."""
    if value is None or not value.strip():
        return this_month()
    value = value.strip()
    if not re.fullmatch(MONTH_PATTERN, value):
        raise BadMonth(f"month '{value}' is not a month: write YYYY-MM, for example {this_month()}")
    return value


def month_days(month: str) -> tuple[date, date]:
    """The first and last day of `month` (YYYY-MM)."""
    year, number = (int(part) for part in month.split("-"))
    return date(year, number, 1), date(year, number, calendar.monthrange(year, number)[1])


def month_choices(month: str, count: int = MONTH_CHOICES) -> list[str]:
    """This month and the `count` - 1 before it, plus `month` when it is outside them; newest first."""
    first, _ = month_days(this_month())
    months: list[str] = []
    for _ in range(count):
        months.append(first.strftime("%Y-%m"))
        first = (first - timedelta(days=1)).replace(day=1)
    if month not in months:
        months.append(month)
    return sorted(months, reverse=True)


def amount(value: Decimal, currency: str) -> dict[str, str]:
    """One amount for people and the API: to the cent, as a string, with its currency."""
    return {"amount": str(cents(Decimal(value))), "currency": currency}


def amounts(by_currency: Mapping[str, Decimal] | None) -> list[dict[str, str]]:
    """Amounts per currency, by currency code."""
    return [amount(value, currency) for currency, value in sorted((by_currency or {}).items())]


def _add(into: dict[str, Decimal], more: Mapping[str, Decimal]) -> None:
    for currency, value in more.items():
        into[currency] = into.get(currency, Decimal(0)) + value


# --------------------------------------------------------------------------- daily chart


def daily_chart(
    source: ConsoleSource, hubs: Sequence[str], month: str, currency: str | None = None
) -> tuple[Chart, list[str]]:
    """The month's cost per day and hub in one currency (`currency`, else the first one found), and every
    currency the hubs have costs in that month. One row per day of the month up to today; a hub column
    per hub with a cost, 0 on days without one."""
    first, last = month_days(month)
    today = utcnow().date()
    last = min(last, today) if first <= today else last
    found = queries.daily_hub_costs(source.store, first, last, list(hubs)) if hubs else []
    currencies = sorted({row.currency for row in found})
    chosen = currency if currency is not None else (currencies[0] if currencies else None)
    rows_of = [row for row in found if row.currency == chosen]
    columns = sorted({row.hub for row in rows_of})
    table: dict[date, dict[str, Decimal]] = {}
    for row in rows_of:
        day = table.setdefault(row.day, {})
        day[row.hub] = day.get(row.hub, Decimal(0)) + row.amount
    rows: list[list[Any]] = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        costs = table.get(day, {})
        rows.append([day.isoformat(), *(float(cents(costs.get(hub, Decimal(0)))) for hub in columns)])
    chart = Chart(
        name=DAILY_CHART,
        title=f"Daily cost per hub ({chosen})" if chosen else "Daily cost per hub",
        y_title=chosen or "cost",
        columns=["day", *columns],
        rows=rows if columns else [],
    )
    return chart, currencies


def chart_cards(base: str, month: str, currencies: Iterable[str]) -> list[dict[str, str]]:
    """Where a page's charts get their tables (JSON for static/costs.js, CSV for people): one per currency."""
    return [
        {
            "currency": currency,
            "title": f"Daily cost per hub, {month} ({currency})",
            "src": f"{base}/charts/{DAILY_CHART}?month={month}&currency={currency}",
            "csv": f"{base}/charts/{DAILY_CHART}.csv?month={month}&currency={currency}",
        }
        for currency in currencies
    ]


# --------------------------------------------------------------------------- the billed-vs-allocated check


def account_checks(source: ConsoleSource, month: str) -> list[dict[str, Any]]:
    """Per billing account and currency: billed, allocated and unallocated, and whether they add up to the
    cent (operators only: accounts span communities)."""
    return [
        {
            "account": check.account,
            "currency": check.currency,
            "billed": amount(check.billed, check.currency),
            "allocated": amount(check.allocated, check.currency),
            "unallocated": amount(check.unallocated, check.currency),
            "idle_kept": amount(check.idle_kept, check.currency),
            "source": check.source,
            "ok": bool(check.ok),
            "problems": list(check.problems),
        }
        for check in queries.month_check(source.store, month)
    ]


# --------------------------------------------------------------------------- per hub and line


def hub_rows(source: ConsoleSource, hubs: Sequence[str], month: str) -> list[dict[str, Any]]:
    """Per hub and currency: its direct, shared and idle lines (queries.hub_lines, in cents) and their
    total, by hub."""
    wanted = set(hubs)
    lines: dict[tuple[str, str], dict[str, Decimal]] = {}
    for line in queries.hub_lines(source.store, month):
        if line.hub in wanted:
            found = lines.setdefault((line.hub, line.currency), {})
            found[line.line] = found.get(line.line, Decimal(0)) + line.amount
    rows = []
    for (hub, currency), parts in sorted(lines.items()):
        rows.append(
            {
                "hub": hub,
                "currency": currency,
                **{
                    name: amount(parts.get(name, Decimal(0)), currency)
                    for name in ("direct", "shared", "idle")
                },
                "total": amount(sum(parts.values(), Decimal(0)), currency),
            }
        )
    return rows


def community_month_cost(source: ConsoleSource, community: str, month: str) -> list[dict[str, str]]:
    """The community's cost for `month`, per currency."""
    return amounts(queries.community_month_costs(source.store, source.fleet, month).get(community, {}))


# --------------------------------------------------------------------------- pages


def _hubs_of(source: ConsoleSource, community: str) -> list[str]:
    return sorted(hub.name for hub in source.fleet.hubs.values() if hub.community == community)


def costs_overview(
    source: ConsoleSource, communities: Sequence[str], month: str, *, operator: bool
) -> dict[str, Any]:
    """The /costs page and /api/costs: per community (of `communities`) the month's cost per currency, its
    budget and forecast, and the month's invoice; the fleet's totals over them; for operators the check
    that every billing account's allocations add up to its bill."""
    fleet = source.fleet
    by_community = queries.community_month_costs(source.store, fleet, month)
    statuses = budgets.budget_statuses(source.store, fleet, month, communities=communities)
    issued = {
        record.community: _invoice_dict(record)
        for record in stored_invoices.list_invoices(source.store, month=month)
        if record.kind == "invoice"
    }
    rows = []
    totals: dict[str, Decimal] = {}
    for name in communities:
        cost = by_community.get(name, {})
        _add(totals, cost)
        community = fleet.communities[name]
        rows.append(
            {
                "name": name,
                "display_name": community.display_name or name,
                "hubs": _hubs_of(source, name),
                "cost": amounts(cost),
                "budget": _community_budget([s for s in statuses if s.community == name]),
                "invoice": issued.get(name),
            }
        )
    hubs = [hub for name in communities for hub in _hubs_of(source, name)]
    open_now = incidents(source, hubs, kind=COST_KIND, state="open", communities=communities, limit=1000)
    for row in rows:
        row["open_incidents"] = sum(1 for i in open_now if i["community"] == row["name"])
    return {
        "month": month,
        "communities": rows,
        "total": amounts(totals),
        "currencies": sorted(totals),
        "checks": account_checks(source, month) if operator else None,
    }


def community_costs(source: ConsoleSource, community: str, month: str) -> dict[str, Any]:
    """A community's costs page and /api/communities/{c}/costs: per hub (with its direct, shared and idle
    lines), per user and per group of each hub, the budget with its forecast, the community's invoices and
    its cost incidents (budget alerts, anomalies)."""
    fleet = source.fleet
    hubs = _hubs_of(source, community)
    cost = queries.community_month_costs(source.store, fleet, month).get(community, {})
    return {
        "month": month,
        "name": community,
        "display_name": fleet.communities[community].display_name or community,
        "cost": amounts(cost),
        "hubs": hub_rows(source, hubs, month),
        "users": _per_hub(source, hubs, month, queries.user_month_costs, "username"),
        "groups": _per_hub(source, hubs, month, queries.group_month_costs, "group"),
        "budget": budget_of(source, community, month),
        "invoices": invoices_of(source, community),
        "incidents": incidents(source, hubs, kind=COST_KIND, communities=[community], limit=50),
        "currencies": sorted(cost),
    }


def _per_hub(
    source: ConsoleSource, hubs: Sequence[str], month: str, query: Any, key: str
) -> list[dict[str, Any]]:
    """Rows of `query(store, month, hub)` (name -> currency -> amount) for every hub: largest first."""
    rows = []
    for hub in hubs:
        for name, by_currency in query(source.store, month, hub).items():
            for currency, value in by_currency.items():
                rows.append({"hub": hub, key: name, "cost": amount(value, currency), "_sort": value})
    rows.sort(key=lambda row: (-row["_sort"], row["hub"], row[key]))
    for row in rows:
        del row["_sort"]
    return rows


# --------------------------------------------------------------------------- budgets


def _tone(status: BudgetStatus) -> str:
    """The badge colour of a budget status: bad once the budget is spent, warn for a threshold or a
    forecast over it, good when within, neutral without a budget."""
    if status.budget is None:
        return "neutral"
    if status.reached and status.reached[-1] >= 1:
        return "bad"
    return "warn" if status.reached or status.forecast_over else "good"


def _budget_dict(status: BudgetStatus) -> dict[str, Any]:
    currency = status.currency
    budget = status.budget
    reached = set(status.reached)
    forecast = status.forecast.amount
    return {
        "hub": status.hub,
        "currency": currency,
        "monthly": amount(budget, currency) if budget is not None else None,
        "basis": status.basis,
        "note": status.basis_note,
        "spent": amount(status.spent, currency),
        "forecast": amount(forecast, currency),
        "run_rate": amount(status.forecast.run_rate, currency),
        "run_rate_days": status.forecast.rate_days,
        "through": status.forecast.through.isoformat() if status.forecast.through else None,
        "days_left": status.forecast.days_left,
        "percent": float(round(status.spent / budget * 100, 1)) if budget else None,
        "forecast_percent": float(round(forecast / budget * 100, 1)) if budget else None,
        "status": status.status,
        "tone": _tone(status),
        "forecast_over": status.forecast_over,
        "alerts": [
            {"fraction": str(f), "label": f"{percent_text(f)} %", "reached": f in reached}
            for f in status.alerts
        ],
        "missing_rates": list(status.missing_rates),
    }


def budget_of(source: ConsoleSource, community: str, month: str) -> dict[str, Any]:
    """The community's budget for `month` (hubfleet.costs.budgets), with its hubs' own budgets in `hubs`."""
    return _community_budget(budgets.community_budget(source.store, source.fleet, community, month))


def _community_budget(found: Sequence[BudgetStatus]) -> dict[str, Any]:
    """The community's status (the one without a hub) with its hubs' in `hubs`."""
    own = next(status for status in found if status.hub is None)
    return {**_budget_dict(own), "hubs": [_budget_dict(s) for s in found if s.hub is not None]}


# --------------------------------------------------------------------------- invoices


def _invoice_dict(record: InvoiceRecord) -> dict[str, Any]:
    base = f"/api/communities/{record.community}/invoices/{record.number}"
    return {
        "number": record.number,
        "kind": record.kind,
        "month": record.month,
        "refers_to": record.refers_to,
        "issued_on": record.issued_on.isoformat(),
        "due_on": record.due_on.isoformat(),
        "total": amount(record.total, record.currency),
        "links": {fmt: f"{base}/{fmt}" for fmt in INVOICE_FORMATS},
    }


def invoices_of(source: ConsoleSource, community: str, month: str | None = None) -> list[dict[str, Any]]:
    """The community's invoices and credit notes (of `month` only, when given), newest first."""
    records = stored_invoices.list_invoices(source.store, community=community, month=month)
    return [_invoice_dict(record) for record in reversed(records)]


def invoice_file(source: ConsoleSource, community: str, number: str, fmt: str) -> Path | None:
    """The issued file of invoice `number` in format `fmt`, when the invoice is `community`'s and its file
    exists. The path is made from the stored record (its year and number), never from the request, and must
    lie under <state_dir>/invoices."""
    if fmt not in INVOICE_FORMATS or source.state_dir is None:
        return None
    record = stored_invoices.get_invoice(source.store, number)
    if record is None or record.community != community:
        return None
    root = (source.state_dir / "invoices").resolve()
    path = (invoice_dir(source.state_dir, record) / f"{record.number}.{fmt}").resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path
