"""Read-only questions about allocated costs (what hubfleet.costs.allocation stored): per hub, community,
user, group and day, and whether each account's allocation adds up to its bill.

Month figures are the stored cents (rounded by largest remainder at each level, so they add up: a
community's total is the sum of its hubs', a hub's the sum of its users'); daily figures are exact micros as
Decimals (for charts, run rates and anomalies). Every amount is in its own currency: nothing is converted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hubfleet.config.fleet import FleetConfig
from hubfleet.costs.cents import as_amount, micros_to_cents
from hubfleet.costs.money import from_micros
from hubfleet.store.cost_allocations import (
    CostAllocationAccount,
    CostAllocationDay,
    CostAllocationLine,
    CostAllocationMember,
)
from hubfleet.store.costs import CostImport
from hubfleet.store.models import Retirement

MICRO = Decimal("0.000001")
Amounts = dict[str, dict[str, Decimal]]
"""name -> currency -> amount"""


class _HasSession(Protocol):
    def session(self) -> Session: ...


@dataclass(frozen=True)
class DailyCost:
    day: date
    hub: str
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class AccountCheck:
    """One billing account's month: billed, allocated (every line, the unallocated one included) and whether
    they match to the cent, and whether each hub's users and groups add up to the hub."""

    account: str
    currency: str
    billed: Decimal
    allocated: Decimal
    unallocated: Decimal
    ok: bool
    source: str = "import"
    idle_kept: Decimal = Decimal(0)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "currency": self.currency,
            "source": self.source,
            "billed": str(self.billed),
            "allocated": str(self.allocated),
            "unallocated": str(self.unallocated),
            "idle_kept": str(self.idle_kept),
            "ok": self.ok,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class HubLine:
    """What one hub (hub "": the account itself) carries of one account's month on one line, in cents."""

    account: str
    currency: str
    cluster: str
    hub: str
    line: str
    amount: Decimal


def _cents(value: int) -> Decimal:
    return as_amount(int(value))


def _nest(rows: Iterable[tuple[str, str, int]], *, cents: bool = True) -> Amounts:
    out: Amounts = defaultdict(dict)
    for name, currency, value in rows:
        amount = _cents(value) if cents else from_micros(value)
        out[name][currency] = out[name].get(currency, Decimal(0)) + amount
    return {name: dict(sorted(by.items())) for name, by in sorted(out.items())}


def hub_month_costs(store: _HasSession, month: str, hubs: Sequence[str] | None = None) -> Amounts:
    """hub -> currency -> what the hub carries in `month` (every line of every account)."""
    line = CostAllocationLine
    query = (
        select(line.hub, line.currency, func.sum(line.amount_cents))
        .where(line.month == month, line.hub != "")
        .group_by(line.hub, line.currency)
    )
    if hubs is not None:
        query = query.where(line.hub.in_(list(hubs)))
    with store.session() as session:
        return _nest(session.execute(query))


def community_of(store: _HasSession, fleet: FleetConfig) -> dict[str, str]:
    """hub -> community: the fleet's hubs, and retired hubs (which may still have costs) from the store."""
    with store.session() as session:
        found = {
            hub: community for hub, community in session.execute(select(Retirement.hub, Retirement.community))
        }
    found.update({name: hub.community for name, hub in fleet.hubs.items()})
    return found


def community_month_costs(store: _HasSession, fleet: FleetConfig, month: str) -> Amounts:
    """community -> currency -> the sum of its hubs' costs in `month` (hubs of no known community left
    out; they are still in hub_month_costs and in the accounts' totals)."""
    communities = community_of(store, fleet)
    rows = [
        (communities[hub], currency, int(amount * 100))
        for hub, by in hub_month_costs(store, month).items()
        if hub in communities
        for currency, amount in by.items()
    ]
    return _nest(rows)


def daily_hub_costs(
    store: _HasSession, first: date, last: date, hubs: Sequence[str] | None = None
) -> list[DailyCost]:
    """Each hub's cost per UTC day from `first` to `last` (inclusive), per currency, by day then hub; days
    without cost are absent."""
    d = CostAllocationDay
    query = (
        select(d.day, d.hub, d.currency, func.sum(d.amount_micros))
        .where(d.day >= first, d.day <= last, d.hub != "")
        .group_by(d.day, d.hub, d.currency)
        .order_by(d.day, d.hub, d.currency)
    )
    if hubs is not None:
        query = query.where(d.hub.in_(list(hubs)))
    with store.session() as session:
        return [
            DailyCost(day, hub, currency, from_micros(int(micros)))
            for day, hub, currency, micros in session.execute(query)
        ]


def _members(store: _HasSession, month: str, hub: str, kind: str) -> Amounts:
    m = CostAllocationMember
    query = (
        select(m.name, m.currency, func.sum(m.amount_cents))
        .where(m.month == month, m.hub == hub, m.kind == kind)
        .group_by(m.name, m.currency)
    )
    with store.session() as session:
        return _nest(session.execute(query))


def user_month_costs(store: _HasSession, month: str, hub: str) -> Amounts:
    """username -> currency -> what the user carries of the hub's `month`; "" is the hub's own overhead
    (cost with no user's use behind it)."""
    return _members(store, month, hub, "user")


def group_month_costs(store: _HasSession, month: str, hub: str) -> Amounts:
    """group -> currency -> what the group's users carry (a user in several groups split evenly; users in
    none under "(no group)"; "" is the hub's own overhead)."""
    return _members(store, month, hub, "group")


def hub_lines(store: _HasSession, month: str) -> list[HubLine]:
    """Every stored line of `month`: (account, currency, cluster, hub, line, amount in cents)."""
    line = CostAllocationLine
    query = (
        select(line.account, line.currency, line.cluster, line.hub, line.line, line.amount_cents)
        .where(line.month == month)
        .order_by(line.account, line.hub, line.line, line.cluster)
    )
    with store.session() as session:
        return [HubLine(a, c, cl, h, ln, _cents(v)) for a, c, cl, h, ln, v in session.execute(query)]


def month_check(store: _HasSession, month: str) -> list[AccountCheck]:
    """Per billing account (and price-sheet cluster) of `month`: billed, allocated, unallocated and ok — the
    lines add up to the bill in micros and in cents, each hub's users and groups add up to the hub, and the
    allocation is of the import now stored (an import newer than it, or one never allocated, is not ok)."""
    a, line, m = CostAllocationAccount, CostAllocationLine, CostAllocationMember
    with store.session() as session:
        accounts = {row.account: row for row in session.execute(select(a).where(a.month == month)).scalars()}
        imports = {
            row.account: row
            for row in session.execute(select(CostImport).where(CostImport.month == month)).scalars()
        }
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        hub_cents: dict[tuple[str, str], int] = defaultdict(int)
        for account, hub, kind, micros, cents in session.execute(
            select(line.account, line.hub, line.line, line.amount_micros, line.amount_cents).where(
                line.month == month
            )
        ):
            total = sums[account]
            total[0] += micros
            total[1] += cents
            if kind == "unallocated":
                total[2] += cents
            if kind == "idle" and not hub:
                total[3] += cents
            if hub:
                hub_cents[(account, hub)] += cents
        member_cents: dict[tuple[str, str, str], int] = defaultdict(int)
        for account, hub, kind, cents in session.execute(
            select(m.account, m.hub, m.kind, func.sum(m.amount_cents))
            .where(m.month == month)
            .group_by(m.account, m.hub, m.kind)
        ):
            member_cents[(account, hub, kind)] = int(cents)
    checks: list[AccountCheck] = []
    for name in sorted(set(accounts) | set(imports)):
        row, imported = accounts.get(name), imports.get(name)
        problems: list[str] = []
        if row is None:
            assert imported is not None
            checks.append(
                AccountCheck(
                    name,
                    imported.currency,
                    _cents(micros_to_cents(imported.billed_micros)),
                    Decimal(0),
                    Decimal(0),
                    False,
                    problems=[
                        f"imported {imported.imported_at:%Y-%m-%d %H:%M} UTC but not allocated: "
                        f"run `hubfleet costs allocate --month {month}`"
                    ],
                )
            )
            continue
        micros, cents, unallocated, idle = sums[name]
        billed_micros = row.billed_micros
        if imported is not None and (
            imported.id != row.import_id or imported.billed_micros != row.billed_micros
        ):
            problems.append(
                f"re-imported after the allocation: run `hubfleet costs allocate --month {month}`"
            )
            billed_micros = imported.billed_micros
        if row.source == "import" and imported is None:
            problems.append(f"its import is gone: run `hubfleet costs allocate --month {month}`")
        if micros != billed_micros:
            problems.append(
                f"lines add up to {from_micros(micros)} but the bill is {from_micros(billed_micros)}"
            )
        if cents != micros_to_cents(billed_micros):
            problems.append(
                f"cents add up to {_cents(cents)} but the bill is {_cents(micros_to_cents(billed_micros))}"
            )
        for (account, hub), total in sorted(hub_cents.items()):
            if account != name:
                continue
            for kind in ("user", "group"):
                found = member_cents.get((account, hub, kind), 0)
                if found != total:
                    problems.append(
                        f"hub {hub}: its {kind}s add up to {_cents(found)}, the hub to {_cents(total)}"
                    )
        checks.append(
            AccountCheck(
                name,
                row.currency,
                _cents(micros_to_cents(billed_micros)),
                _cents(cents),
                _cents(unallocated),
                not problems,
                source=row.source,
                idle_kept=_cents(idle),
                problems=problems,
            )
        )
    return checks


@dataclass(frozen=True)
class MonthState:
    """What the store holds for a month: imports, allocated accounts, and whether the allocation is older
    than an import."""

    imports: int
    allocated: int
    stale: bool
    allocated_at: datetime | None


def month_state(store: _HasSession, month: str) -> MonthState:
    a = CostAllocationAccount
    with store.session() as session:
        imports = {
            row.account: (row.id, row.billed_micros)
            for row in session.execute(select(CostImport).where(CostImport.month == month)).scalars()
        }
        allocated = {
            row.account: (row.import_id, row.billed_micros, row.allocated_at)
            for row in session.execute(select(a).where(a.month == month)).scalars()
        }
    stale = any(
        name not in allocated or allocated[name][0] != import_id or allocated[name][1] != billed
        for name, (import_id, billed) in imports.items()
    ) or any(row[0] is not None and name not in imports for name, row in allocated.items())
    when = max((row[2] for row in allocated.values()), default=None)
    return MonthState(len(imports), len(allocated), stale, when)


def _text(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def month_report(
    store: _HasSession,
    fleet: FleetConfig,
    month: str,
    *,
    hubs: Sequence[str] | None = None,
    by: str | None = None,
    daily: bool = False,
) -> dict[str, Any]:
    """What `hubfleet costs` shows (and prints as JSON): the accounts' invariant, each hub's lines, each
    community's total, the account's own lines (unallocated, idle the operator keeps), totals per currency;
    with `by` each hub's users or groups, with `daily` each hub's days. Amounts are strings of the currency
    unit with 2 decimals; `hubs` limits the hubs shown (never the accounts: the invariant is theirs)."""
    from hubfleet.costs.allocation import month_bounds

    start, end = month_bounds(month)
    communities = community_of(store, fleet)
    wanted = None if hubs is None else set(hubs)
    per_hub: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    own: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in hub_lines(store, month):
        if not row.hub:
            if wanted is not None:
                continue
            own.append(
                {
                    "account": row.account,
                    "currency": row.currency,
                    "cluster": row.cluster,
                    "line": row.line,
                    "amount": _text(row.amount),
                }
            )
            totals[row.currency]["idle kept" if row.line == "idle" else row.line] += row.amount
            totals[row.currency]["total"] += row.amount
            continue
        if wanted is not None and row.hub not in wanted:
            continue
        cell = per_hub[(row.hub, row.currency)]
        cell[row.line] += row.amount
        cell["total"] += row.amount
        totals[row.currency]["hubs"] += row.amount
        totals[row.currency]["total"] += row.amount
    hub_rows = []
    community_totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (hub, currency), cell in sorted(per_hub.items()):
        community = communities.get(hub, "")
        hub_rows.append(
            {
                "community": community,
                "hub": hub,
                "cluster": fleet.hubs[hub].cluster if hub in fleet.hubs else "",
                "currency": currency,
                **{line: _text(cell.get(line, Decimal(0))) for line in ("direct", "shared", "idle")},
                "total": _text(cell["total"]),
            }
        )
        community_totals[(community, currency)] += cell["total"]
    hub_rows.sort(key=lambda r: (r["community"], r["hub"], r["currency"]))
    checks = month_check(store, month)
    report: dict[str, Any] = {
        "month": month,
        "accounts": [check.as_dict() for check in checks],
        "ok": all(check.ok for check in checks),
        "hubs": hub_rows,
        "communities": [
            {"community": c, "currency": cur, "total": _text(v)}
            for (c, cur), v in sorted(community_totals.items())
        ],
        "account_lines": own,
        "totals": [
            {
                "currency": currency,
                **{key: _text(values.get(key, Decimal(0))) for key in ("hubs", "unallocated", "idle kept")},
                "total": _text(values["total"]),
            }
            for currency, values in sorted(totals.items())
        ],
    }
    state = month_state(store, month)
    report["allocated_at"] = state.allocated_at.isoformat() if state.allocated_at else None
    shown = sorted({row["hub"] for row in hub_rows})
    if by in ("user", "group"):
        report[f"{by}s"] = [
            {"hub": hub, by: name, "currency": currency, "amount": _text(amount)}
            for hub in shown
            for name, by_currency in _members(store, month, hub, by).items()
            for currency, amount in by_currency.items()
        ]
    if daily:
        last = end.date() - timedelta(days=1)
        report["days"] = [
            {
                "day": c.day.isoformat(),
                "hub": c.hub,
                "currency": c.currency,
                "amount": str(c.amount.quantize(MICRO)),
            }
            for c in daily_hub_costs(store, start.date(), last, shown)
        ]
    return report
