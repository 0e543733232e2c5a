"""Support hours per community: the time logged on its tickets (TicketTime) against its budget
(community.yaml `support: {budget: {hours, period}}`), per month, quarter or year in the support calendar's
time zone, with a burn-down series for the console, and the warnings at 90 % and 100 % of the budget (each
once per community and period; store: budget_alerts, rules support-90 and support-100, the period as its
month: 2026-12, 2026-Q4 or 2026).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from hubfleet.clock import require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.store.api import Store
from hubfleet.store.cost_alerts import raised, record_raised
from hubfleet.store.tickets import TicketTime
from hubfleet.support.sla import Notice

THRESHOLDS = (90, 100)
"""Percent of the budget at which the alert channels (and the community's opted-in contacts) hear of it."""


def period_bounds(period: str, day: date) -> tuple[date, date]:
    """The first and the last day of the month, quarter or year that holds `day`."""
    if period == "year":
        return date(day.year, 1, 1), date(day.year, 12, 31)
    first_month = day.month if period == "month" else 3 * ((day.month - 1) // 3) + 1
    start = date(day.year, first_month, 1)
    months = 1 if period == "month" else 3
    year, month = divmod(first_month - 1 + months, 12)
    return start, date(day.year + year, month + 1, 1) - timedelta(days=1)


def period_key(period: str, start: date) -> str:
    """2026-12, 2026-Q4 or 2026: how the period is named in alerts and in the store."""
    if period == "year":
        return str(start.year)
    if period == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return f"{start.year}-{start.month:02d}"


def _moment(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return require_aware(value)
    return datetime.combine(value, time(0), UTC)


def minutes_by_community(store: Store, start: date | datetime, end: date | datetime) -> dict[str, int]:
    """Minutes logged in [start, end) per community (aware datetimes; a date is midnight UTC). Time on
    tickets that name no hub (so no community) is left out."""
    query = (
        select(TicketTime.community, func.sum(TicketTime.minutes))
        .where(
            TicketTime.community.is_not(None),
            TicketTime.at >= _moment(start),
            TicketTime.at < _moment(end),
        )
        .group_by(TicketTime.community)
    )
    with store.session() as session:
        return {community: int(minutes) for community, minutes in session.execute(query)}


def budget_status(
    store: Store, fleet: FleetConfig, community: str, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """The community's support hours in the period that holds `now`; None when it has no budget (or is not
    in the fleet). `burn`: hours used up to the end of each day so far; `ideal`: the hours that would be left
    at the end of each day of the period if they were used evenly."""
    now = require_aware(now)
    found = fleet.communities.get(community)
    budget = found.support.budget if found is not None else None
    if budget is None:
        return None
    zone = ZoneInfo(fleet.settings.support.calendar.time_zone)
    today = now.astimezone(zone).date()
    start, end = period_bounds(budget.period, today)
    begin = datetime.combine(start, time(0), zone).astimezone(UTC)
    finish = datetime.combine(end + timedelta(days=1), time(0), zone).astimezone(UTC)
    query = select(TicketTime.at, TicketTime.minutes).where(
        TicketTime.community == community, TicketTime.at >= begin, TicketTime.at < finish
    )
    per_day: dict[date, int] = {}
    with store.session() as session:
        for at, minutes in session.execute(query):
            day = require_aware(at).astimezone(zone).date()
            per_day[day] = per_day.get(day, 0) + minutes
    days = (end - start).days + 1
    burn: list[dict[str, Any]] = []
    total = 0
    for offset in range((min(today, end) - start).days + 1):
        day = start + timedelta(days=offset)
        total += per_day.get(day, 0)
        burn.append({"day": day, "used_hours": round(total / 60, 2)})
    total = sum(per_day.values())  # time logged ahead of today (a clock set wrong) still counts
    ideal = [
        {"day": start + timedelta(days=i), "hours_left": round(budget.hours * (1 - (i + 1) / days), 2)}
        for i in range(days)
    ]
    used = total / 60
    return {
        "community": community,
        "period": budget.period,
        "period_key": period_key(budget.period, start),
        "start": start,
        "end": end,
        "budget_hours": budget.hours,
        "used_hours": round(used, 2),
        "used_minutes": total,
        "remaining_hours": round(budget.hours - used, 2),
        "percent": round(100 * used / budget.hours, 1),
        "burn": burn,
        "ideal": ideal,
        "over": used > budget.hours,
    }


def _notice(status: dict[str, Any], threshold: int) -> Notice:
    community, key = status["community"], status["period_key"]
    used, budget = status["used_hours"], status["budget_hours"]
    subject = (
        f"SUPPORT HOURS: community {community} used {used:g} of its {budget:g} support hours for {key} "
        f"({status['percent']:.0f} %)"
    )
    body = "\n".join(
        [
            f"Community: {community}",
            f"Period: {key} ({status['start']} to {status['end']})",
            f"Budget: {budget:g} hours",
            f"Used: {used:g} hours ({status['percent']:.0f} %; alert at {threshold} %)",
            f"Remaining: {status['remaining_hours']:g} hours",
        ]
    )
    return Notice(subject, body + "\n", community=community)


def check_budgets(store: Store, fleet: FleetConfig, *, now: datetime | None = None) -> list[Notice]:
    """A notice for each community whose used hours reached 90 % or 100 % of its budget for the first time
    this period (the higher one alone when both were reached since the last check)."""
    now = require_aware(now)
    notices: list[Notice] = []
    seen: dict[str, set[tuple[str, str, str]]] = {}
    for community in sorted(fleet.communities):
        status = budget_status(store, fleet, community, now=now)
        if status is None:
            continue
        key = status["period_key"]
        done = seen.setdefault(key, raised(store, key))
        new = [
            threshold
            for threshold in THRESHOLDS
            if status["used_minutes"] * 100 >= threshold * status["budget_hours"] * 60
            and (community, "", f"support-{threshold}") not in done
            and record_raised(store, community, "", key, f"support-{threshold}", at=now)
        ]
        if new:
            notices.append(_notice(status, new[-1]))
    return notices
