"""Usage figures of a hub over an event's window, from what the usage collector stores: who was active
(UserDay), servers from start to stop (ServerSession), the hub's own count of running servers (HubSample).

UserDay and ServerSession leave out the check user, staff and `monitoring.exclude_users` (the collector
does); HubSample's running servers count everything the hub runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from hubfleet.clock import as_utc
from hubfleet.store.models import HubSample, ServerSession, UserDay


def users_active(store: Any, hub: str, since: datetime, until: datetime | None = None) -> list[str]:
    """Users of the hub with activity at or after `since` (and a day that began by `until`), by name.

    UserDay keeps each day's first and last activity, so a user active before and after a window but not
    in it would count: a window is hours long and days are the store's grain."""
    query = select(UserDay.username).where(UserDay.hub == hub, UserDay.last_seen >= since)
    if until is not None:
        query = query.where(UserDay.first_seen <= until)
    with store.session() as session:
        return sorted(set(session.scalars(query)))


@dataclass(frozen=True)
class Stretch:
    """A server's time inside a window."""

    username: str
    server_name: str
    start: datetime
    end: datetime
    open: bool
    """Still running when the window closed (or now)."""


def server_stretches(store: Any, hub: str, start: datetime, end: datetime) -> list[Stretch]:
    """Every server session overlapping [start, end], clipped to it (a running one ends at `end`)."""
    query = select(ServerSession).where(
        ServerSession.hub == hub,
        ServerSession.started_at <= end,
        (ServerSession.stopped_at.is_(None)) | (ServerSession.stopped_at >= start),
    )
    with store.session() as session:
        rows = list(session.scalars(query))
    found = []
    for row in rows:
        began = max(as_utc(row.started_at), start)
        stopped = as_utc(row.stopped_at) if row.stopped_at else None
        finish = min(stopped or end, end)
        if finish >= began:
            found.append(Stretch(row.username, row.server_name, began, finish, stopped is None))
    return found


def server_hours(stretches: list[Stretch]) -> float:
    return sum((s.end - s.start).total_seconds() for s in stretches) / 3600


def peaks(stretches: list[Stretch]) -> tuple[int, int]:
    """(peak concurrent users, peak concurrent servers) by a sweep over the stretches: a stop and a start
    at the same instant do not overlap."""
    points = sorted(
        [(s.start, 1, s.username) for s in stretches] + [(s.end, -1, s.username) for s in stretches],
        key=lambda p: (p[0], p[1]),
    )
    per_user: dict[str, int] = {}
    servers = users = peak_servers = peak_users = 0
    for _, step, username in points:
        servers += step
        before = per_user.get(username, 0)
        per_user[username] = before + step
        if before == 0 and step > 0:
            users += 1
        elif before == 1 and step < 0:
            users -= 1
        peak_servers, peak_users = max(peak_servers, servers), max(peak_users, users)
    return peak_users, peak_servers


def sampled_running_peak(store: Any, hub: str, start: datetime, end: datetime) -> int | None:
    """The most running servers the hub itself reported at one collection in the window."""
    with store.session() as session:
        return session.scalar(
            select(func.max(HubSample.running_servers)).where(
                HubSample.hub == hub, HubSample.at >= start, HubSample.at <= end
            )
        )


def latest_sample(store: Any, hub: str) -> tuple[datetime, int] | None:
    """(when, running servers) of the hub's newest sample."""
    with store.session() as session:
        row = session.execute(
            select(HubSample.at, HubSample.running_servers)
            .where(HubSample.hub == hub)
            .order_by(HubSample.at.desc(), HubSample.id.desc())
            .limit(1)
        ).first()
    return (as_utc(row[0]), int(row[1])) if row else None
