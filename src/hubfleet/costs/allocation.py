"""A month's costs allocated to hubs, users and groups, exactly: for every billing account and month the
allocations add up to the billed total, in micros and in cents.

- Rows tagged with a hub are that hub's (`direct`).
- A cluster's shared rows (untagged compute, control plane, load balancers, storage, monitoring) are split
  each day over the cluster's hubs by what their servers used that day (`shared`): each server's cores and
  GiB of memory x hours, the larger of request and measured use. The weight of a hub (or user) is its share
  of the cluster's core-hours and its share of the GiB-hours, averaged, so neither resource's unit matters.
- With the cluster's `costs.capacity`, the part of its shared compute that capacity x hours minus use leaves
  idle is its own line (`idle`), carried per `costs.idle`: by the hubs in proportion to use, evenly, or by
  the operator (the account keeps it, hub "").
- Rows of no cluster (and of a cluster the fleet does not know or that has no hubs) stay an `unallocated`
  line of the account: never dropped.
- A cluster with `costs.price_sheet` gets an account `price-sheet:<cluster>`: each hub's core-hours, GiB-hours
  and home storage GiB-months at the sheet's prices (`direct`), and its `monthly_fixed` shared like shared
  cost (pro-rata in the current month).
- Within a hub the total goes down to users: what a user's own usage cost on a price sheet is theirs; the
  rest in proportion to the users' use in the month (none: it stays the hub's, user ""). Groups get their
  users' amounts, a user in several groups split evenly, users in none in "(no group)".

Every split is hubfleet.costs.money.split in micros (largest remainder), so sums are exact; cents are rounded
by largest remainder at each level (lines to the account's billed cents, users and groups to their hub's
cents), so the cents add up too. See docs/costs.md, "Allocation".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hubfleet.clock import require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_costs import ClusterCosts
from hubfleet.config.quantities import memory_bytes
from hubfleet.costs.cents import as_amount, micros_to_cents, round_cents
from hubfleet.costs.money import split, to_micros
from hubfleet.settings import UserError
from hubfleet.store.cost_allocations import (
    CostAllocationAccount,
    CostAllocationDay,
    CostAllocationLine,
    CostAllocationMember,
)
from hubfleet.store.costs import CostImport, CostLine
from hubfleet.store.identities import group_memberships
from hubfleet.store.models import HomeUsage, ServerSession

GIB = 1024**3
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_BYTES = GIB
"""A session whose request is unknown and whose hub configures no resources counts as 1 core and 1 GiB."""
PRICE_SHEET_PREFIX = "price-sheet:"
NO_GROUP = "(no group)"
COMPUTE_SERVICE = re.compile(r"compute|virtual machine", re.IGNORECASE)
"""Shared `Usage` rows of these services are the cluster's capacity (nodes) for the idle line: AWS "Amazon
Elastic Compute Cloud", GCP "Compute Engine", Azure "Virtual Machines"."""

K = TypeVar("K", bound=Hashable)


class _HasSession(Protocol):
    def session(self) -> Session: ...


@dataclass(frozen=True)
class AccountAllocation:
    """One billing account's (or price-sheet cluster's) month as allocated; amounts in cents."""

    account: str
    currency: str
    source: str
    cluster: str
    billed: Decimal
    allocated: Decimal
    unallocated: Decimal
    idle_kept: Decimal
    hubs: dict[str, Decimal]
    billed_micros: int
    allocated_micros: int

    @property
    def ok(self) -> bool:
        """The allocation adds up to the bill, in micros and in cents."""
        return self.billed_micros == self.allocated_micros and self.billed == self.allocated


@dataclass(frozen=True)
class Allocation:
    month: str
    usage_until: datetime
    accounts: list[AccountAllocation]
    sessions: int = 0
    """Server sessions of fleet hubs in the month whose use weighed in."""
    fallback_sessions: int = 0
    """...of them without a recorded request: counted with the configured resources (or 1 core, 1 GiB)."""


# --------------------------------------------------------------------------- months


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC; a UserError for anything not YYYY-MM."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month or ""):
        raise UserError(f"'{month}' is not a month; write YYYY-MM, for example 2026-11")
    year, number = int(month[:4]), int(month[5:])
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _day_seconds(start: datetime, until: datetime) -> dict[date, int]:
    """Seconds of each UTC day in [start, until)."""
    out: dict[date, int] = {}
    cursor = start
    while cursor < until:
        stop = min(_midnight(cursor.date()) + timedelta(days=1), until)
        out[cursor.date()] = int((stop - cursor).total_seconds())
        cursor = stop
    return out


# --------------------------------------------------------------------------- usage


Cell = list[float]
"""[core-hours, GiB-hours]"""


@dataclass
class Usage:
    """Core-hours and GiB-hours per cluster, UTC day and (hub, user), and per cluster over the month."""

    days: dict[str, dict[date, dict[tuple[str, str], Cell]]] = field(default_factory=dict)
    month: dict[str, dict[tuple[str, str], Cell]] = field(default_factory=dict)
    sessions: int = 0
    fallback_sessions: int = 0


def _configured(fleet: FleetConfig, hub_name: str, environment: str | None) -> tuple[float, int]:
    """Cores and bytes a session started with when the store does not know: its environment's resources
    (guarantee, else limit), else the hub's, else 1 core and 1 GiB."""
    hub = fleet.hubs.get(hub_name)
    cpu: float | None = None
    memory: str | None = None
    if hub is not None:
        env = next((e for e in hub.environments if e.slug == environment), None) if environment else None
        if env is not None:
            cpu = env.resources.cpu_guarantee or env.resources.cpu_limit
            memory = env.resources.memory_guarantee or env.resources.memory_limit
        cpu = cpu or hub.resources.cpu_guarantee or hub.resources.cpu_limit
        memory = memory or hub.resources.memory_guarantee or hub.resources.memory_limit
    return (cpu or DEFAULT_CPU, memory_bytes(memory) if memory else DEFAULT_MEMORY_BYTES)


def _epoch(column: Any, dialect: str) -> Any:
    """Seconds since 1970 of a timestamp column, computed by the database (a Python datetime per row is
    most of the time of a month with a hundred thousand sessions). The store keeps UTC (naive on SQLite)."""
    if dialect == "sqlite":
        return (func.julianday(column) - 2440587.5) * 86400.0
    return func.extract("epoch", column)


def session_usage(
    session: Session, fleet: FleetConfig, start: datetime, until: datetime, now: datetime
) -> Usage:
    """Each server session of a fleet hub clipped to [start, until) and cut at UTC midnights."""
    usage = Usage()
    cluster_of = {name: hub.cluster for name, hub in fleet.hubs.items()}
    fallback: dict[tuple[str, str | None], tuple[float, int]] = {}
    dialect = session.get_bind().dialect.name
    s = ServerSession
    rows = (
        session.connection()
        .execute(  # Core rows: no ORM per-row work
            select(
                s.hub,
                s.username,
                s.environment,
                _epoch(s.started_at, dialect),
                _epoch(s.stopped_at, dialect),
                s.cpu_request,
                s.memory_request_bytes,
                s.cpu_seconds_used,
                s.memory_peak_bytes,
            ).where(s.started_at < until, or_(s.stopped_at.is_(None), s.stopped_at > start))
        )
        .all()
    )
    start_s, until_s, now_s = start.timestamp(), until.timestamp(), now.timestamp()
    first_day = start.date()
    days = [first_day + timedelta(days=n) for n in range(int((until_s - start_s) // 86400) + 2)]
    for hub, user, env, started, stopped, cpu_req, mem_req, cpu_used, mem_peak in rows:
        cluster = cluster_of.get(hub)
        if cluster is None:
            continue
        begin = started if started > start_s else start_s
        end = until_s if stopped is None or stopped > until_s else stopped
        if end <= begin:
            continue
        usage.sessions += 1
        if cpu_req is None or mem_req is None:
            key = (hub, env)
            if key not in fallback:
                fallback[key] = _configured(fleet, hub, env)
            usage.fallback_sessions += 1
            cpu_req = cpu_req if cpu_req is not None else fallback[key][0]
            mem_req = mem_req if mem_req is not None else fallback[key][1]
        cores = float(cpu_req)
        if cpu_used is not None:
            lived = (now_s if stopped is None else stopped) - started
            if lived > 0 and cpu_used / lived > cores:
                cores = cpu_used / lived
        gib = (mem_peak if mem_peak is not None and mem_peak > mem_req else mem_req) / GIB
        by_day = usage.days.setdefault(cluster, {})
        who = (hub, user)
        cursor = begin
        while cursor < end:
            index = int((cursor - start_s) // 86400)
            stop = start_s + (index + 1) * 86400
            if stop > end:
                stop = end
            hours = (stop - cursor) / 3600
            day = days[index]
            cells = by_day.get(day)
            if cells is None:
                cells = by_day[day] = {}
            cell = cells.get(who)
            if cell is None:
                cells[who] = [cores * hours, gib * hours]
            else:
                cell[0] += cores * hours
                cell[1] += gib * hours
            cursor = stop
        hours = (end - begin) / 3600
        month = usage.month.setdefault(cluster, {})
        cell = month.get(who)
        if cell is None:
            month[who] = [cores * hours, gib * hours]
        else:
            cell[0] += cores * hours
            cell[1] += gib * hours
    return usage


def weights(cells: Mapping[K, Cell]) -> dict[K, float]:
    """Each key's share of the core-hours and its share of the GiB-hours, averaged (a resource nobody used
    is left out of the average)."""
    cpu_total = sum(c[0] for c in cells.values())
    mem_total = sum(c[1] for c in cells.values())
    kinds = (cpu_total > 0) + (mem_total > 0)
    if not kinds:
        return {}
    return {
        key: ((c[0] / cpu_total if cpu_total > 0 else 0.0) + (c[1] / mem_total if mem_total > 0 else 0.0))
        / kinds
        for key, c in cells.items()
    }


def _by_hub(cells: Mapping[tuple[str, str], Cell]) -> dict[str, Cell]:
    out: dict[str, Cell] = {}
    for (hub, _user), (cpu, mem) in cells.items():
        cell = out.get(hub)
        if cell is None:
            out[hub] = [cpu, mem]
        else:
            cell[0] += cpu
            cell[1] += mem
    return out


# --------------------------------------------------------------------------- one account


@dataclass
class _Account:
    account: str
    currency: str
    source: str
    cluster: str = ""
    import_id: int | None = None
    billed_micros: int = 0
    lines: dict[tuple[str, str, str], dict[date, int]] = field(default_factory=dict)
    """(cluster, hub, line) -> day -> micros; hub "" is the account's own."""
    own: dict[str, dict[str, int]] = field(default_factory=dict)
    """hub -> user -> micros that are that user's own (price-sheet usage and storage)."""

    def add(self, cluster: str, hub: str, line: str, day: date, micros: int) -> None:
        if not micros:
            return
        days = self.lines.setdefault((cluster, hub, line), {})
        days[day] = days.get(day, 0) + micros


@dataclass
class _Cluster:
    """What splitting a cluster's shared cost needs."""

    name: str
    costs: ClusterCosts | None
    hubs: list[str]
    usage: Usage
    day_hours: dict[date, float]

    _weights: dict[date | None, dict[str, float]] = field(default_factory=dict)

    def hub_weights(self, day: date) -> dict[str, float]:
        """The hubs' weights of the day's use; on a day nobody used the cluster, the month's."""
        if day not in self._weights:
            cells = self.usage.days.get(self.name, {}).get(day)
            self._weights[day] = (weights(_by_hub(cells)) if cells else {}) or self.month_weights()
        return self._weights[day]

    _users: dict[str, dict[str, Cell]] | None = None

    def user_cells(self, hub: str) -> dict[str, Cell]:
        """user -> the month's [core-hours, GiB-hours] on `hub`."""
        if self._users is None:
            self._users = defaultdict(dict)
            for (name, user), cell in self.usage.month.get(self.name, {}).items():
                self._users[name][user] = cell
        return self._users.get(hub, {})

    def month_weights(self) -> dict[str, float]:
        if None not in self._weights:
            self._weights[None] = weights(_by_hub(self.usage.month.get(self.name, {})))
        return self._weights[None]

    def idle_fraction(self, day: date) -> float:
        capacity = self.costs.capacity if self.costs else None
        hours = self.day_hours.get(day, 24.0)
        if capacity is None or hours <= 0:
            return 0.0
        cells = self.usage.days.get(self.name, {}).get(day, {})
        cpu = sum(c[0] for c in cells.values()) / (capacity.cpu * hours)
        mem = sum(c[1] for c in cells.values()) / (capacity.memory_gib * hours)
        return max(0.0, 1.0 - (min(cpu, 1.0) + min(mem, 1.0)) / 2)


def _share_shared(acc: _Account, cluster: _Cluster, day: date, compute: int, other: int) -> None:
    """A cluster's shared cost of one day over its hubs by use (idle capacity first taken out of the
    compute part when the cluster has a capacity)."""
    if not cluster.hubs:
        acc.add(cluster.name, "", "unallocated", day, compute + other)
        return
    fraction = cluster.idle_fraction(day) if compute else 0.0
    idle = int((Decimal(compute) * Decimal(repr(fraction))).to_integral_value(ROUND_HALF_EVEN))
    used = compute - idle + other
    hub_weights = cluster.hub_weights(day)
    even = dict.fromkeys(cluster.hubs, 1)
    if used:
        for hub, micros in split(used, hub_weights or even).items():
            acc.add(cluster.name, hub, "shared", day, micros)
    if idle:
        mode = cluster.costs.idle if cluster.costs else "proportional"
        if mode == "operator":
            acc.add(cluster.name, "", "idle", day, idle)
        else:
            for hub, micros in split(idle, even if mode == "even" else hub_weights or even).items():
                acc.add(cluster.name, hub, "idle", day, micros)


# --------------------------------------------------------------------------- billing exports


def _imported(
    session: Session, month: str, clusters: dict[str, _Cluster], cluster_of: dict[str, str]
) -> list[_Account]:
    accounts: dict[str, _Account] = {}
    for row in session.execute(select(CostImport).where(CostImport.month == month)).scalars():
        accounts[row.account] = _Account(
            row.account, row.currency, "import", import_id=row.id, billed_micros=row.billed_micros
        )
    shared: dict[tuple[str, str, date], list[int]] = defaultdict(lambda: [0, 0])
    lines = session.execute(
        select(
            CostLine.account,
            CostLine.day,
            CostLine.cluster,
            CostLine.hub,
            CostLine.category,
            CostLine.service,
            CostLine.billed_micros,
        ).where(CostLine.month == month)
    )
    for account, day, cluster, hub, category, service, micros in lines:
        acc = accounts.get(account)
        if acc is None:  # a line without its import: never expected (imports replace both at once)
            continue
        if hub:
            acc.add(cluster or cluster_of.get(hub, ""), hub, "direct", day, micros)
        elif cluster and cluster in clusters:
            compute = category == "Usage" and bool(COMPUTE_SERVICE.search(service or ""))
            shared[(account, cluster, day)][0 if compute else 1] += micros
        else:
            acc.add(cluster or "", "", "unallocated", day, micros)
    for (account, cluster, day), (compute, other) in sorted(shared.items()):
        _share_shared(accounts[account], clusters[cluster], day, compute, other)
    return list(accounts.values())


# --------------------------------------------------------------------------- price sheets


def _storage(
    session: Session, hubs: list[str], start: datetime, until: datetime
) -> dict[str, dict[str, float]]:
    """hub -> user -> average bytes of home over the days in [start, until) the hub was measured, each day
    by its last measurement (what monitor.disk_usage keeps of past days); a user without a home on a
    measured day counts 0 for it, so a home made late in the month pays for its part of the month. The
    hub's total beyond its users' homes (database, config) is the hub's own (user "")."""
    last: dict[tuple[str, str, date], tuple[datetime, int]] = {}
    rows = session.execute(
        select(HomeUsage.hub, HomeUsage.username, HomeUsage.at, HomeUsage.bytes).where(
            HomeUsage.hub.in_(hubs), HomeUsage.at >= start, HomeUsage.at < until
        )
    )
    for hub, user, when, size in rows:
        key = (hub, user, when.date())
        seen = last.get(key)
        if seen is None or when > seen[0]:
            last[key] = (when, size)
    days: dict[str, set[date]] = defaultdict(set)
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for (hub, user, day), (_, size) in last.items():
        days[hub].add(day)
        sums[(hub, user)] += size
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (hub, user), total in sums.items():
        if user:
            out[hub][user] = total / len(days[hub])
    for (hub, user), total in sums.items():
        if not user:
            rest = total / len(days[hub]) - sum(out[hub].values())
            if rest > 0:
                out[hub][""] = rest
    return out


def _price_sheet(
    session: Session,
    fleet: FleetConfig,
    cluster: _Cluster,
    start: datetime,
    end: datetime,
    until: datetime,
) -> _Account | None:
    assert cluster.costs and cluster.costs.price_sheet
    sheet = cluster.costs.price_sheet
    day_seconds = _day_seconds(start, until)
    if not day_seconds:
        return None
    acc = _Account(PRICE_SHEET_PREFIX + cluster.name, sheet.currency, "price-sheet", cluster=cluster.name)
    cpu_price, memory_price = float(sheet.cpu_hour) * 1e6, float(sheet.memory_gib_hour) * 1e6
    for day, cells in cluster.usage.days.get(cluster.name, {}).items():
        hub_day: dict[str, int] = defaultdict(int)
        for (hub, user), (cpu, mem) in cells.items():
            micros = round(cpu * cpu_price + mem * memory_price)  # exact enough: a micro of a day's use
            hub_day[hub] += micros
            own = acc.own.get(hub)
            if own is None:
                own = acc.own[hub] = {}
            own[user] = own.get(user, 0) + micros
        for hub, micros in hub_day.items():
            acc.add(cluster.name, hub, "direct", day, micros)
    fraction = Decimal(int((until - start).total_seconds())) / Decimal(int((end - start).total_seconds()))
    homes_of = _storage(session, cluster.hubs, start, until) if cluster.hubs else {}
    if until >= end and not cluster.usage.month.get(cluster.name) and not homes_of:
        return None  # a past month with no use at all: before the cluster's hubs ran (no bill either)
    if sheet.storage_gib_month:
        for hub, homes in homes_of.items():
            for user, size in homes.items():
                micros = to_micros(Decimal(repr(size)) / GIB * fraction * sheet.storage_gib_month)
                if not micros:
                    continue
                own = acc.own.setdefault(hub, {})
                own[user] = own.get(user, 0) + micros
                for day, part in split(micros, day_seconds).items():
                    acc.add(cluster.name, hub, "direct", day, part)
    fixed = to_micros(sheet.monthly_fixed * fraction)
    if fixed:
        for day, part in sorted(split(fixed, day_seconds).items()):
            _share_shared(acc, cluster, day, part, 0)
    acc.billed_micros = sum(sum(days.values()) for days in acc.lines.values())
    return acc


# --------------------------------------------------------------------------- users and groups


def _members(
    acc: _Account,
    hub_micros: dict[str, int],
    clusters: dict[str, _Cluster],
    cluster_of: dict[str, str],
    groups: dict[tuple[str, str], list[str]],
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """hub -> user -> micros and hub -> group -> micros of one account."""
    users: dict[str, dict[str, int]] = {}
    by_group: dict[str, dict[str, int]] = {}
    for hub, total in hub_micros.items():
        own = dict(acc.own.get(hub, {}))
        pooled = total - sum(own.values())
        cluster = clusters.get(cluster_of.get(hub, ""))
        user_weights = weights(cluster.user_cells(hub)) if cluster else {}
        if pooled:
            parts = split(pooled, user_weights) if user_weights else {"": pooled}
            for user, micros in parts.items():
                own[user] = own.get(user, 0) + micros
        users[hub] = own
        mine: dict[str, int] = {}
        for user, micros in own.items():
            names = groups.get((hub, user)) or ([NO_GROUP] if user else [""])
            parts = {names[0]: micros} if len(names) == 1 else split(micros, dict.fromkeys(names, 1))
            for name, part in parts.items():
                mine[name] = mine.get(name, 0) + part
        by_group[hub] = mine
    return users, by_group


# --------------------------------------------------------------------------- the month


def allocate_month(
    store: _HasSession,
    fleet: FleetConfig,
    month: str,
    *,
    state_dir: Path | None = None,
    now: datetime | None = None,
) -> Allocation:
    """Compute and store `month`'s allocation for every imported billing account and every price-sheet
    cluster, replacing the month's earlier allocation in one transaction. `state_dir` is accepted for the
    contract's sake: allocation needs only the store (the raw rows stay where the import put them)."""
    del state_dir
    now = require_aware(now)
    start, end = month_bounds(month)
    until = max(start, min(end, now))
    day_hours = {day: seconds / 3600 for day, seconds in _day_seconds(start, until).items()}
    hubs_of: dict[str, list[str]] = defaultdict(list)
    for name, hub in sorted(fleet.hubs.items()):
        hubs_of[hub.cluster].append(name)
    cluster_of = {name: hub.cluster for name, hub in fleet.hubs.items()}
    with store.session() as session:
        usage = session_usage(session, fleet, start, until, now)
        clusters = {
            name: _Cluster(name, cluster.costs, hubs_of.get(name, []), usage, day_hours)
            for name, cluster in fleet.clusters.items()
        }
        accounts = _imported(session, month, clusters, cluster_of)
        for cluster in clusters.values():
            if cluster.costs and cluster.costs.price_sheet:
                found = _price_sheet(session, fleet, cluster, start, end, until)
                if found is not None:
                    accounts.append(found)
        # the memberships of this month: a group a user left before it (or joined after) gets none of it
        groups: dict[tuple[str, str], list[str]] = defaultdict(list, group_memberships(session, start, end))
    rows: dict[str, list[dict[str, Any]]] = {"accounts": [], "lines": [], "days": [], "members": []}
    results = [_rows(acc, month, now, until, clusters, cluster_of, groups, rows) for acc in accounts]
    try:
        _replace(store, month, rows)
    except IntegrityError:  # another process (the daemon, a CLI) stored the month meanwhile: ours is as new
        _replace(store, month, rows)
    return Allocation(
        month, until, sorted(results, key=lambda a: a.account), usage.sessions, usage.fallback_sessions
    )


def _replace(store: _HasSession, month: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """The month's rows replaced in one transaction: readers see the old allocation or the new, never half."""
    with store.session() as session, session.begin():
        for model in (CostAllocationAccount, CostAllocationLine, CostAllocationDay, CostAllocationMember):
            session.execute(delete(model).where(model.month == month))
        for model, key in (
            (CostAllocationAccount, "accounts"),
            (CostAllocationLine, "lines"),
            (CostAllocationDay, "days"),
            (CostAllocationMember, "members"),
        ):
            if rows[key]:
                session.execute(insert(model.__table__), rows[key])


def _rows(
    acc: _Account,
    month: str,
    now: datetime,
    until: datetime,
    clusters: dict[str, _Cluster],
    cluster_of: dict[str, str],
    groups: dict[tuple[str, str], list[str]],
    rows: dict[str, list[dict[str, Any]]],
) -> AccountAllocation:
    """The store rows of one account (appended to `rows`) and its summary."""
    base = {"month": month, "account": acc.account, "currency": acc.currency}
    totals = {key: sum(days.values()) for key, days in acc.lines.items()}
    allocated = sum(totals.values())
    line_cents = round_cents(totals, micros_to_cents(allocated))
    hub_micros: dict[str, int] = defaultdict(int)
    hub_cents: dict[str, int] = defaultdict(int)
    for (cluster, hub, line), micros in totals.items():
        rows["lines"].append(
            base
            | {
                "cluster": cluster,
                "hub": hub,
                "line": line,
                "amount_micros": micros,
                "amount_cents": line_cents[(cluster, hub, line)],
            }
        )
        if hub:
            hub_micros[hub] += micros
            hub_cents[hub] += line_cents[(cluster, hub, line)]
    per_day: dict[tuple[str, str, date], int] = defaultdict(int)
    for (_cluster, hub, line), days in acc.lines.items():
        for day, micros in days.items():
            per_day[(hub, line, day)] += micros
    rows["days"].extend(
        base | {"hub": hub, "line": line, "day": day, "amount_micros": micros}
        for (hub, line, day), micros in per_day.items()
        if micros
    )
    users, by_group = _members(acc, hub_micros, clusters, cluster_of, groups)
    for kind, members in (("user", users), ("group", by_group)):
        for hub, amounts in members.items():
            cents = round_cents(amounts, hub_cents[hub])
            rows["members"].extend(
                base
                | {
                    "hub": hub,
                    "kind": kind,
                    "name": name,
                    "amount_micros": micros,
                    "amount_cents": cents[name],
                }
                for name, micros in amounts.items()
            )
    rows["accounts"].append(
        base
        | {
            "source": acc.source,
            "cluster": acc.cluster,
            "import_id": acc.import_id,
            "billed_micros": acc.billed_micros,
            "billed_cents": micros_to_cents(acc.billed_micros),
            "allocated_micros": allocated,
            "allocated_at": now,
            "usage_until": until,
        }
    )
    unallocated = sum(c for (_cl, hub, line), c in line_cents.items() if line == "unallocated")
    idle_kept = sum(c for (_cl, hub, line), c in line_cents.items() if line == "idle" and not hub)
    return AccountAllocation(
        account=acc.account,
        currency=acc.currency,
        source=acc.source,
        cluster=acc.cluster,
        billed=as_amount(micros_to_cents(acc.billed_micros)),
        allocated=as_amount(sum(line_cents.values())),
        unallocated=as_amount(unallocated),
        idle_kept=as_amount(idle_kept),
        hubs={hub: as_amount(c) for hub, c in sorted(hub_cents.items())},
        billed_micros=acc.billed_micros,
        allocated_micros=allocated,
    )
