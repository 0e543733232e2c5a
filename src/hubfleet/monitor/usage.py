"""Usage figures from what the collector (hubfleet.monitor.collector) stored: plain functions over the store.

DAU/WAU/MAU exactly for any day and window, per hub and fleet-wide, server-hours and peak concurrent
servers, and `usage_report` behind `hubfleet usage`.

DAU counts the distinct people active on day D, WAU over D-6..D, MAU over D-29..D (UTC days). Per hub a
person is a username; fleet-wide (or over any set of hubs) it is UserDay.identity: `<auth type>:<asserted
id>` where the hub's sign-in provider asserted one (hubfleet.monitor.identities), else `<auth
type>:<username>`. `people_in_month` counts a calendar month's people that way, for billing, and says which
accounts are one person and which username was used by several.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hubfleet.clock import utcnow
from hubfleet.config.models import Hub
from hubfleet.isolation.user_postgres import hub_users, size_bytes
from hubfleet.runtime.layout import layout
from hubfleet.store.api import Store
from hubfleet.store.identities import HubUserIdentity
from hubfleet.store.models import HubSample, ServerSession, UserDay
from hubfleet.store.usage_rollups import Members, accounts_by_hub, people_by_day, union

WINDOWS = {"dau": 1, "wau": 7, "mau": 30}


def identity(auth_type: str, username: str) -> str:
    """The person behind a hub login, fleet-wide: `<auth type>:<username>`."""
    return f"{auth_type}:{username}"


def auth_type(hub: Hub) -> str:
    return hub.auth.type if hub.auth is not None else "none"


def _days(window: int, day: date) -> tuple[date, date]:
    return day - timedelta(days=window - 1), day


def active_users(store: Store, day: date, window: int = 1, hubs: Sequence[str] | None = None) -> int:
    """Distinct people active in the `window` days ending on `day`, on `hubs` (default: every hub)."""
    first, last = _days(window, day)
    with store.session() as session:
        return union(people_by_day(session, first, last, hubs).values()).count()


def active_counts(store: Store, day: date, hubs: Sequence[str] | None = None) -> dict[str, int]:
    """{"dau", "wau", "mau"} of `day` over `hubs` (distinct people: a person on two hubs counts once)."""
    with store.session() as session:
        found = people_by_day(session, *_days(max(WINDOWS.values()), day), hubs)
    return {key: _count_window(found, day, window) for key, window in WINDOWS.items()}


def _count_window(found: dict[date, Members], day: date, window: int) -> int:
    return union(found[d] for d in (day - timedelta(days=i) for i in range(window)) if d in found).count()


def active_by_hub(
    store: Store, day: date, window: int = 1, hubs: Sequence[str] | None = None
) -> dict[str, int]:
    """Distinct users of each hub active in the `window` days ending on `day` (hubs without any: absent)."""
    first, last = _days(window, day)
    with store.session() as session:
        return {hub: members.count() for hub, members in accounts_by_hub(session, first, last, hubs).items()}


def active_series(
    store: Store, first: date, last: date, hubs: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """DAU, WAU and MAU of every day from `first` to `last`, exact, from the day roll-ups
    (hubfleet.store.usage_rollups): each window is the OR of ≤ 30 day bitmaps."""
    if last < first:
        return []
    longest = max(WINDOWS.values())
    start = first - timedelta(days=longest - 1)
    with store.session() as session:
        found = people_by_day(session, start, last, hubs)
    span = (last - start).days + 1
    bits = [0] * span  # plain ints and sets: a year of windows is ≈ 13,000 ORs, no objects per OR
    extra: list[set[str]] = [set() for _ in range(span)]
    for day, members in found.items():
        bits[(day - start).days] = members.bits
        extra[(day - start).days] = members.extra
    series: list[dict[str, Any]] = []
    for index in range(longest - 1, span):
        row: dict[str, Any] = {"day": (start + timedelta(days=index)).isoformat()}
        for key, window in WINDOWS.items():
            total, names = 0, set()
            for i in range(index - window + 1, index + 1):
                total |= bits[i]
                if extra[i]:
                    names |= extra[i]
            row[key] = total.bit_count() + len(names)
        series.append(row)
    return series


def _bounds(first: date, last: date) -> tuple[datetime, datetime]:
    return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(days=1), time(), UTC)


def _sessions(
    store: Store, start: datetime, end: datetime, hubs: Sequence[str] | None, now: datetime
) -> list[tuple[str, str, datetime, datetime]]:
    """(hub, username, from, to) of every session overlapping [start, end), clipped to it; open sessions
    run until `now`."""
    query = select(
        ServerSession.hub, ServerSession.username, ServerSession.started_at, ServerSession.stopped_at
    ).where(
        ServerSession.started_at < end,
        (ServerSession.stopped_at.is_(None)) | (ServerSession.stopped_at > start),
    )
    if hubs is not None:
        query = query.where(ServerSession.hub.in_(list(hubs)))
    clipped = []
    with store.session() as session:
        for hub, username, started, stopped in session.execute(query):
            begin, finish = max(started, start), min(stopped or now, end)
            if finish > begin:
                clipped.append((hub, username, begin, finish))
    return clipped


def server_hours(
    store: Store,
    start: datetime,
    end: datetime,
    hubs: Sequence[str] | None = None,
    *,
    by: str = "hub",
    now: datetime | None = None,
) -> dict[str | tuple[str, str] | None, float]:
    """Server-hours in [start, end) per hub (by="hub"), per (hub, username) (by="user") or in total
    (by="total", key None). Sessions are clipped to the window; open ones count up to `now`."""
    if by not in ("hub", "user", "total"):
        raise ValueError(f"by must be 'hub', 'user' or 'total', not {by!r}")
    totals: dict[str | tuple[str, str] | None, float] = defaultdict(float)
    for hub, username, begin, finish in _sessions(store, start, end, hubs, now or utcnow()):
        key = hub if by == "hub" else (hub, username) if by == "user" else None
        totals[key] += (finish - begin).total_seconds() / 3600
    return dict(totals)


def daily_servers(
    store: Store, first: date, last: date, hubs: Sequence[str] | None = None, now: datetime | None = None
) -> dict[date, dict[str, float | int]]:
    """Per day from `first` to `last`: server-hours and the peak number of servers running at once."""
    start, end = _bounds(first, last)
    return _daily(_sessions(store, start, end, hubs, now or utcnow()), first, last)


def _daily(
    sessions: Sequence[tuple[str, str, datetime, datetime]], first: date, last: date
) -> dict[date, dict[str, float | int]]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    hours = dict.fromkeys(days, 0.0)
    events: list[tuple[datetime, int]] = []
    for _, _, begin, finish in sessions:
        events += [(begin, 1), (finish, -1)]
        day = begin.date()
        while day <= finish.date() and day <= last:
            lo, hi = _bounds(day, day)
            overlap = (min(finish, hi) - max(begin, lo)).total_seconds()
            if overlap > 0:
                hours[day] += overlap / 3600
            day += timedelta(days=1)
    events.sort()  # at the same instant a stop (-1) comes before a start (+1)
    result: dict[date, dict[str, float | int]] = {}
    running = index = 0
    for day in days:
        lo, hi = _bounds(day, day)
        while index < len(events) and events[index][0] <= lo:
            running += events[index][1]
            index += 1
        peak = running
        while index < len(events) and events[index][0] < hi:
            running += events[index][1]
            index += 1
            peak = max(peak, running)
        result[day] = {"server_hours": round(hours[day], 3), "peak_servers": peak}
    return result


def hub_reported(store: Store, hubs: Sequence[str], at: datetime) -> dict[str, dict[str, int | str | None]]:
    """Each hub's own active-user gauges from its newest HubSample at or before `at`."""
    reported: dict[str, dict[str, int | str | None]] = {}
    with store.session() as session:
        for hub in hubs:
            sample = session.scalars(
                select(HubSample)
                .where(HubSample.hub == hub, HubSample.at <= at)
                .order_by(HubSample.at.desc(), HubSample.id.desc())
                .limit(1)
            ).first()
            reported[hub] = {
                "hub_reported_active_24h": sample.active_24h if sample else None,
                "hub_reported_active_7d": sample.active_7d if sample else None,
                "hub_reported_active_30d": sample.active_30d if sample else None,
                "hub_reported_at": sample.at.isoformat() if sample else None,
            }
    return reported


def usage_report(
    store: Store, hubs: Sequence[str], first: date, last: date, now: datetime | None = None
) -> dict[str, Any]:
    """What `hubfleet usage --json` prints for `hubs` and the days `first`..`last`.

    `fleet` and each of `hubs` hold the DAU/WAU/MAU of `last` (distinct people over the selected hubs
    for `fleet`), and the server-hours and peak concurrent servers over the whole window; `days` holds
    the same per day. Each hub also shows its own gauges (`hub_reported_active_*`, newest sample)."""
    now = now or utcnow()
    hubs = list(hubs)
    start, end = _bounds(first, last)
    per_day = daily_servers(store, first, last, hubs, now)
    series = active_series(store, first, last, hubs)
    days = [{**row, **per_day[date.fromisoformat(row["day"])]} for row in series]
    hours = server_hours(store, start, end, hubs, now=now)
    by_hub = {key: active_by_hub(store, last, window, hubs) for key, window in WINDOWS.items()}
    reported = hub_reported(store, hubs, min(now, end))
    hub_rows: dict[str, dict[str, Any]] = {}
    sessions_of: dict[str, list[tuple[str, str, datetime, datetime]]] = defaultdict(list)
    for clipped in _sessions(store, start, end, hubs, now):  # one read for every hub, not one per hub
        sessions_of[clipped[0]].append(clipped)
    for hub in hubs:
        peaks = _daily(sessions_of.get(hub, []), first, last)
        hub_rows[hub] = {
            **{key: by_hub[key].get(hub, 0) for key in WINDOWS},
            "server_hours": round(hours.get(hub, 0.0), 3),
            "peak_servers": max((p["peak_servers"] for p in peaks.values()), default=0),
            **reported[hub],
        }
    fleet = {
        **active_counts(store, last, hubs),
        "server_hours": round(sum(hours.values()), 3),
        "peak_servers": max((d["peak_servers"] for d in days), default=0),
    }
    return {
        "window": {"from": first.isoformat(), "to": last.isoformat(), "generated_at": now.isoformat()},
        "fleet": fleet,
        "hubs": hub_rows,
        "days": days,
    }


def user_database_sizes(state_dir: Path, hubs: Sequence[Hub]) -> dict[str, dict[str, int]]:
    """Bytes on disk of each user's database of the local hubs with `user_database`, measured now (the
    directories are their users' own: complete as root, empty otherwise)."""
    if not any(hub.user_database is not None for hub in hubs) or not (state_dir / "layout.json").exists():
        return {}
    where = layout(state_dir)
    sizes: dict[str, dict[str, int]] = {}
    for hub in hubs:
        if hub.user_database is not None:
            found = hub_users(where.data_dir, where.state_dir, hub.name)
            sizes[hub.name] = {user: size_bytes(root) for user, root in sorted(found.items())}
    return sizes


# --------------------------------------------------------------------------- people in a month (billing)

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_days(month: str) -> tuple[date, date]:
    """First and last day of `YYYY-MM`; ValueError saying how to write it."""
    match = MONTH.match(month or "")
    if not match:
        raise ValueError(f"month {month!r}: write YYYY-MM, e.g. 2026-11")
    first = date(int(match.group(1)), int(match.group(2)), 1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following - timedelta(days=1)


Account = tuple[str, str]
"""(hub, username)"""


@dataclass(frozen=True)
class PeopleCount:
    """The distinct people active in a month, and how accounts map to them."""

    month: str
    people: int
    """Distinct persons (identities) active that calendar month."""
    accounts: int
    """Distinct (hub, username) active that month."""
    merged: list[tuple[str, list[Account], str]] = field(default_factory=list)
    """(person identity, their accounts, why they are one person) for persons with several accounts."""
    shared: list[tuple[Account, list[str], str]] = field(default_factory=list)
    """(account, the identities that used it, why) for usernames several people signed in as."""

    def as_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "people": self.people,
            "accounts": self.accounts,
            "merged": [
                {"identity": who, "accounts": [{"hub": h, "username": u} for h, u in accounts], "why": why}
                for who, accounts, why in self.merged
            ],
            "shared": [
                {"hub": hub, "username": username, "identities": people, "why": why}
                for (hub, username), people, why in self.shared
            ],
        }


def _asserted(identity: str) -> str:
    return identity.split(":", 1)[1] if ":" in identity else identity


def people_in_month(store: Store, month: str, hubs: Sequence[str] | None = None) -> PeopleCount:
    """Who was active in `month` (YYYY-MM) on `hubs` (default: every hub), counted as people.

    An account (hub, username) active that month is the people its sign-in provider asserted: the identity
    of its user days, and everyone else who signed in as that username during the month (a username two
    people share on one day has one user day but two people). Accounts of hubs without a provider, or with
    no sign-in recorded, are `<auth type>:<username>`, as the fleet MAU counts them."""
    first, last = month_days(month)
    start, end = _bounds(first, last)
    days = (
        select(UserDay.hub, UserDay.username, UserDay.identity)
        .distinct()
        .where(UserDay.day >= first, UserDay.day <= last)
    )
    recorded = select(
        HubUserIdentity.hub,
        HubUserIdentity.username,
        HubUserIdentity.identity,
        HubUserIdentity.claim,
        HubUserIdentity.first_signin,
        HubUserIdentity.last_signin,
    ).where(HubUserIdentity.first_signin < end)
    if hubs is not None:
        days = days.where(UserDay.hub.in_(list(hubs)))
        recorded = recorded.where(HubUserIdentity.hub.in_(list(hubs)))
    by_account: dict[Account, set[str]] = defaultdict(set)
    asserted: dict[Account, set[str]] = defaultdict(set)
    claims: dict[str, str] = {}
    with store.session() as session:
        for hub, username, who in session.execute(days):
            by_account[(hub, username)].add(who)
        for hub, username, who, claim, _, signed_last in session.execute(recorded):
            account = (hub, username)
            claims[who] = claim
            if account in by_account and (signed_last >= start or who in by_account[account]):
                asserted[account].add(who)
    for account, people in asserted.items():
        by_account[account] = people  # the provider's word replaces `<auth type>:<username>`
    by_person: dict[str, set[Account]] = defaultdict(set)
    for account, people in by_account.items():
        for who in people:
            by_person[who].add(account)
    several = [who for who, accounts in by_person.items() if len(accounts) > 1]
    merged = []
    for who in sorted(several):
        accounts = sorted(by_person[who])
        where = ", ".join(sorted({hub for hub, _ in accounts}))
        if who in claims:
            why = f"same {claims[who] or 'identity'} {_asserted(who)} on {where}"
        else:
            why = f"same username {_asserted(who)} on {where} (no sign-in provider asserts more)"
        merged.append((who, accounts, why))
    shared = [
        (account, sorted(people), f"username {username} on hub {hub} was used by {len(people)} people")
        for account, people in sorted(by_account.items())
        if len(people) > 1
        for hub, username in [account]
    ]
    return PeopleCount(
        month=month, people=len(by_person), accounts=len(by_account), merged=merged, shared=shared
    )
