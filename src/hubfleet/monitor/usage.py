"""Usage: who was active on which hub and when, and how long their servers ran.

The collector (a task of the `hubfleet up` daemon) asks every running hub for its users, with their
servers, every `monitoring.collect_interval` seconds and stores:

- `UserDay(hub, username, day)`: the user was active on the hub that UTC day. `identity` is
  `<auth type>:<username>`, so the same login on two hubs of one auth type is one person fleet-wide;
- `ServerSession`: a server from the first collection that saw it running to the one that saw it gone;
- `HubSample`: the hub's running servers and user count, its own `jupyterhub_active_users` gauges and
  spawn counters from `/hub/metrics`.

The check user, the fleet's staff (with `monitoring.exclude_staff`) and `monitoring.exclude_users` are
left out of UserDay and ServerSession (HubSample counts what the hub runs, everyone included).

The queries below are plain functions over the store: DAU/WAU/MAU exactly for any day and window,
per hub and fleet-wide, server-hours and peak concurrent servers, and `usage_report` behind
`hubfleet usage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time as time_
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.render.local import CHECK_USERNAME
from hubfleet.store.api import Store
from hubfleet.store.models import HubSample, ServerSession, UserDay

log = logging.getLogger(__name__)

INTERVAL_ENV = "HUBFLEET_COLLECT_INTERVAL"
PAGE_LIMIT = 200
"""Users per page of /hub/api/users (JupyterHub's default api_page_max_limit)."""
LOOKBACK = timedelta(minutes=15)
"""Activity is taken from this long before the previous collection: JupyterHub writes a user's
last_activity from the proxy every 5 minutes, so a timestamp can arrive after a collection has passed it.
Recording a day twice is harmless (UserDay is keyed by day)."""
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}
WINDOWS = {"dau": 1, "wau": 7, "mau": 30}


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: Any) -> datetime | None:
    """A JupyterHub timestamp ('2024-05-01T10:00:00.123456Z') as an aware UTC datetime."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def identity(auth_type: str, username: str) -> str:
    """The person behind a hub login, fleet-wide: `<auth type>:<username>`."""
    return f"{auth_type}:{username}"


def auth_type(hub: Hub) -> str:
    return hub.auth.type if hub.auth is not None else "none"


def excluded_usernames(fleet: FleetConfig, hub: Hub) -> frozenset[str]:
    """Who is never counted on `hub`: the check user, staff (operators' usernames for the hub's auth
    type, when `monitoring.exclude_staff`) and `monitoring.exclude_users`."""
    monitoring = fleet.settings.monitoring
    names = {CHECK_USERNAME, *monitoring.exclude_users}
    if monitoring.exclude_staff:
        kind = auth_type(hub)
        names.update(op.usernames[kind] for op in fleet.settings.operators if kind in op.usernames)  # type: ignore[index]
    return frozenset(names)


def collect_interval(fleet: FleetConfig) -> float:
    """`HUBFLEET_COLLECT_INTERVAL` (seconds, for tests) over fleet.yaml `monitoring.collect_interval`."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if raw:
        try:
            return max(0.5, float(raw))
        except ValueError:
            log.warning("ignoring %s=%r: not a number of seconds", INTERVAL_ENV, raw)
    return fleet.settings.monitoring.collect_interval


# --------------------------------------------------------------------------- /hub/metrics


@dataclass(frozen=True)
class HubMetrics:
    """What a hub's /hub/metrics says about usage (None where the hub does not expose it)."""

    active_24h: int | None = None
    active_7d: int | None = None
    active_30d: int | None = None
    running_servers: int | None = None
    total_users: int | None = None
    spawn_success_total: float | None = None
    spawn_failure_total: float | None = None
    spawn_seconds_total: float | None = None
    """Seconds spent in successful spawns (the histogram's `_sum`): mean spawn time from two samples."""


def parse_metrics(text: str, prefix: str = "jupyterhub") -> HubMetrics:
    """Parse the Prometheus text of JupyterHub 6's /hub/metrics.

    Spawn counters are the `_count` of `server_spawn_duration_seconds`: status `success`, and `failure`
    plus `error` (summed over every `reason`) for failures; `spawn_seconds_total` is the `_sum` of the
    successful ones."""
    active: dict[str, int] = {}
    values: dict[str, float] = {}
    spawns: dict[str, float] = defaultdict(float)
    spawn_seconds: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == f"{prefix}_active_users" and "period" in labels:
                active[labels["period"]] = int(value)
            elif name in (f"{prefix}_running_servers", f"{prefix}_total_users"):
                values[name] = value
            elif name == f"{prefix}_server_spawn_duration_seconds_count":
                status = labels.get("status", "")
                spawns["success" if status == "success" else "failure"] += value
            elif name == f"{prefix}_server_spawn_duration_seconds_sum" and labels.get("status") == "success":
                spawn_seconds = (spawn_seconds or 0.0) + value
    running = values.get(f"{prefix}_running_servers")
    users = values.get(f"{prefix}_total_users")
    has_spawns = bool(spawns)
    return HubMetrics(
        active_24h=active.get("24h"),
        active_7d=active.get("7d"),
        active_30d=active.get("30d"),
        running_servers=None if running is None else int(running),
        total_users=None if users is None else int(users),
        spawn_success_total=spawns["success"] if has_spawns else None,
        spawn_failure_total=spawns["failure"] if has_spawns else None,
        spawn_seconds_total=spawn_seconds,
    )


# --------------------------------------------------------------------------- recording one collection


@dataclass(frozen=True)
class CollectionResult:
    hub: str
    at: datetime
    users: int
    active_users: int
    """Counted users (not excluded) with activity since the previous collection."""
    running_servers: int
    sessions_opened: int
    sessions_closed: int


def _activity(user: dict[str, Any]) -> list[datetime]:
    """Every activity timestamp of a user model: the user's and each server's last_activity and start."""
    stamps = [parse_time(user.get("last_activity"))]
    for server in (user.get("servers") or {}).values():
        stamps.append(parse_time(server.get("last_activity")))
        stamps.append(parse_time(server.get("started")))
    return [s for s in stamps if s is not None]


def _running(server: dict[str, Any]) -> bool:
    return bool(server.get("ready")) and not server.get("stopped")


def record_collection(
    session: Session,
    hub: str,
    auth: str,
    users: Sequence[dict[str, Any]],
    *,
    now: datetime,
    since: datetime,
    excluded: Iterable[str] = (),
    metrics: HubMetrics | None = None,
) -> CollectionResult:
    """Store what one collection of `hub` saw: `users` are /hub/api/users models (with servers,
    stopped ones included). Activity at or after `since` makes a UserDay; servers open and close sessions.
    Runs inside the caller's transaction."""
    skip = frozenset(excluded)
    counted = [u for u in users if u.get("name") and u["name"] not in skip]

    # --- user days: each day on which a counted user had activity since `since`
    seen: dict[tuple[str, date], tuple[datetime, datetime]] = {}
    for user in counted:
        for stamp in _activity(user):
            if stamp < since:
                continue
            stamp = min(stamp, now)
            key = (user["name"], stamp.date())
            first, last = seen.get(key, (stamp, stamp))
            seen[key] = (min(first, stamp), max(last, stamp))
    if seen:
        days = {day for _, day in seen}
        existing = {
            (row.username, row.day): row
            for row in session.scalars(select(UserDay).where(UserDay.hub == hub, UserDay.day.in_(days)))
            if (row.username, row.day) in seen
        }
        for (username, day), (first, last) in seen.items():
            row = existing.get((username, day))
            if row is None:
                session.add(
                    UserDay(
                        hub=hub,
                        username=username,
                        day=day,
                        identity=identity(auth, username),
                        first_seen=first,
                        last_seen=last,
                    )
                )
            else:
                row.first_seen = min(row.first_seen, first)
                row.last_seen = max(row.last_seen, last)

    # --- server sessions
    open_rows = {
        (row.username, row.server_name): row
        for row in session.scalars(
            select(ServerSession).where(ServerSession.hub == hub, ServerSession.stopped_at.is_(None))
        )
    }
    stop_hints: dict[tuple[str, str], datetime] = {}
    opened = closed = 0
    for user in counted:
        for name, server in (user.get("servers") or {}).items():
            key = (user["name"], name or "")
            last_activity = parse_time(server.get("last_activity"))
            if server.get("stopped"):
                if last_activity is not None:  # JupyterHub sets it when the server stops
                    stop_hints[key] = last_activity
                continue
            if not _running(server):
                if server.get("pending") and key in open_rows:
                    open_rows.pop(key)  # stopping (or restarting): still open until it is gone
                continue
            started = parse_time(server.get("started")) or now
            row = open_rows.pop(key, None)
            if row is not None and started > row.started_at + timedelta(seconds=1):
                # The server stopped and started again between two collections.
                row.stopped_at = max(row.started_at, min(row.last_activity or started, started))
                closed += 1
                row = None
            if row is None:
                session.add(
                    ServerSession(
                        hub=hub,
                        username=key[0],
                        server_name=key[1],
                        started_at=min(started, now),
                        stopped_at=None,
                        last_activity=last_activity,
                    )
                )
                opened += 1
            elif last_activity is not None and (
                row.last_activity is None or last_activity > row.last_activity
            ):
                row.last_activity = last_activity
    for key, row in open_rows.items():
        # Seen running before, gone now: it stopped at its last activity (JupyterHub sets it on stop)
        # when that is known and plausible, else now.
        hint = stop_hints.get(key)
        row.stopped_at = hint if hint is not None and row.started_at <= hint <= now else now
        closed += 1

    running = sum(_running(s) for u in users for s in (u.get("servers") or {}).values())
    metrics = metrics or HubMetrics()
    session.add(
        HubSample(
            hub=hub,
            at=now,
            running_servers=running,
            users=len(users),
            active_24h=metrics.active_24h,
            active_7d=metrics.active_7d,
            active_30d=metrics.active_30d,
            spawn_success_total=metrics.spawn_success_total,
            spawn_failure_total=metrics.spawn_failure_total,
            spawn_seconds_total=metrics.spawn_seconds_total,
        )
    )
    return CollectionResult(
        hub=hub,
        at=now,
        users=len(users),
        active_users=len({username for username, _ in seen}),
        running_servers=running,
        sessions_opened=opened,
        sessions_closed=closed,
    )


# --------------------------------------------------------------------------- the collector


@dataclass(frozen=True)
class HubTarget:
    """A hub the collector asks: its API base URL and a token with list:users, read:users,
    read:servers and read:metrics (the control token)."""

    name: str
    url: str
    token: str


async def fetch_users(client: httpx.AsyncClient, url: str, token: str) -> list[dict[str, Any]]:
    """Every user of a hub with all their servers (stopped ones too, for their stop time), page by page."""
    headers = {"Authorization": f"token {token}", **PAGINATED}
    users: list[dict[str, Any]] = []
    offset = 0
    while True:
        params = {"offset": offset, "limit": PAGE_LIMIT, "include_stopped_servers": 1}
        response = await client.get(f"{url}/hub/api/users", params=params, headers=headers)
        response.raise_for_status()
        page = response.json()
        items = page["items"]
        users.extend(items)
        pagination = page.get("_pagination") or {}
        if not items or not pagination.get("next"):
            return users
        offset = int(pagination["next"].get("offset", offset + len(items)))


async def fetch_metrics(client: httpx.AsyncClient, url: str, token: str) -> HubMetrics | None:
    try:
        response = await client.get(f"{url}/hub/metrics", headers={"Authorization": f"token {token}"})
        response.raise_for_status()
        return parse_metrics(response.text)
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("usage: %s/hub/metrics: %s", url, exc)
        return None


def _last_collection(store: Store, hub: str) -> datetime | None:
    with store.session() as session:
        return session.scalar(select(func.max(HubSample.at)).where(HubSample.hub == hub))


class UsageCollector:
    """Collects usage from every hub `targets()` names, every `interval` seconds."""

    def __init__(
        self,
        fleet: FleetConfig,
        store: Store,
        targets: Callable[[], Iterable[HubTarget]],
        interval: float | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.targets = targets
        self.interval = interval if interval is not None else collect_interval(fleet)
        self.timeout = timeout
        self._previous: dict[str, datetime] = {}

    def _since(self, hub: str, now: datetime) -> datetime:
        previous = self._previous.get(hub) or _last_collection(self.store, hub)
        if previous is None:
            return datetime.combine(now.date(), time(), UTC)  # first collection ever: today
        return previous - LOOKBACK

    async def collect_hub(self, client: httpx.AsyncClient, target: HubTarget) -> CollectionResult:
        hub = self.fleet.hubs[target.name]
        now = utcnow()
        users, metrics = await asyncio.gather(
            fetch_users(client, target.url, target.token), fetch_metrics(client, target.url, target.token)
        )
        since = self._since(target.name, now)
        with self.store.session() as session, session.begin():
            result = record_collection(
                session,
                target.name,
                auth_type(hub),
                users,
                now=now,
                since=since,
                excluded=excluded_usernames(self.fleet, hub),
                metrics=metrics,
            )
        self._previous[target.name] = now
        return result

    async def collect_once(self) -> list[CollectionResult]:
        """One pass over every target; a hub that fails is logged and skipped."""
        targets = [t for t in self.targets() if t.name in self.fleet.hubs]
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            results = await asyncio.gather(
                *(self.collect_hub(client, t) for t in targets), return_exceptions=True
            )
        done: list[CollectionResult] = []
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                log.warning("usage: collecting %s failed: %s: %s", target.name, type(result).__name__, result)
            else:
                done.append(result)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Collect now, then every interval until `stop` is set. Never raises (except cancellation)."""
        pruned = 0.0
        while not stop.is_set():
            try:
                await self.collect_once()
                if time_.monotonic() - pruned > 3600:
                    prune_hub_samples(self.store)
                    pruned = time_.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the daemon must outlive any collection error
                log.exception("usage: collection failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


HUB_SAMPLE_RETENTION = timedelta(days=35)
"""Per-minute hub samples feed the anomaly baseline (4 past weeks of the same hour); older ones go.
One year of them would be ≈ 2.5 GB for 50 hubs; 35 days are ≈ 240 MB."""


def prune_hub_samples(
    store: Store, now: datetime | None = None, keep: timedelta = HUB_SAMPLE_RETENTION
) -> int:
    """Delete hub samples older than `keep`; returns how many."""
    cutoff = (now or datetime.now(UTC)) - keep
    with store.session() as session, session.begin():
        deleted = session.execute(delete(HubSample).where(HubSample.at < cutoff))
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]


def supervised_targets(
    running_urls: Callable[[], dict[str, str]], state_dir: Path
) -> Callable[[], list[HubTarget]]:
    """Targets for the daemon: the local hubs running now (`running_urls`: name -> URL, possibly empty
    while a hub starts), each with its control token."""
    from hubfleet.backends.local import hub_endpoint

    def targets() -> list[HubTarget]:
        found = []
        for name, url in running_urls().items():
            try:
                endpoint = hub_endpoint(state_dir, name)
            except Exception as exc:  # noqa: BLE001 - a hub without tokens yet is skipped this round
                log.warning("usage: no endpoint for %s: %s", name, exc)
                continue
            found.append(HubTarget(name=name, url=url or endpoint.url, token=endpoint.token))
        return found

    return targets


def start_collector(
    fleet: FleetConfig,
    store: Store,
    running_urls: Callable[[], dict[str, str]],
    state_dir: Path,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """The daemon's usage task: first collection right away, then every collect_interval."""
    collector = UsageCollector(fleet, store, supervised_targets(running_urls, state_dir))
    return asyncio.create_task(collector.run(stop), name="usage")


# --------------------------------------------------------------------------- queries
#
# DAU counts the distinct people active on day D, WAU over D-6..D, MAU over D-29..D (UTC days). Per hub a
# person is a username; fleet-wide (or over any set of hubs) it is the identity `<auth type>:<username>`.


def _days(window: int, day: date) -> tuple[date, date]:
    return day - timedelta(days=window - 1), day


def active_users(store: Store, day: date, window: int = 1, hubs: Sequence[str] | None = None) -> int:
    """Distinct people active in the `window` days ending on `day`, on `hubs` (default: every hub)."""
    first, last = _days(window, day)
    query = select(func.count(UserDay.identity.distinct())).where(UserDay.day >= first, UserDay.day <= last)
    if hubs is not None:
        query = query.where(UserDay.hub.in_(list(hubs)))
    with store.session() as session:
        return int(session.scalar(query) or 0)


def active_counts(store: Store, day: date, hubs: Sequence[str] | None = None) -> dict[str, int]:
    """{"dau", "wau", "mau"} of `day` over `hubs` (distinct people: a person on two hubs counts once)."""
    return {key: active_users(store, day, window, hubs) for key, window in WINDOWS.items()}


def active_by_hub(
    store: Store, day: date, window: int = 1, hubs: Sequence[str] | None = None
) -> dict[str, int]:
    """Distinct users of each hub active in the `window` days ending on `day` (hubs without any: absent)."""
    first, last = _days(window, day)
    query = (
        select(UserDay.hub, func.count(UserDay.username.distinct()))
        .where(UserDay.day >= first, UserDay.day <= last)
        .group_by(UserDay.hub)
    )
    if hubs is not None:
        query = query.where(UserDay.hub.in_(list(hubs)))
    with store.session() as session:
        return {hub: int(count) for hub, count in session.execute(query)}


def active_series(
    store: Store, first: date, last: date, hubs: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """DAU, WAU and MAU of every day from `first` to `last`, exact, from one query.

    Each distinct (person, active day) covers the days up to its window's end or the person's next
    active day, whichever comes first; so the covers of one person never overlap and the count of a day
    is a running sum of +1/-1 marks."""
    if last < first:
        return []
    longest = max(WINDOWS.values())
    query = (
        select(UserDay.identity, UserDay.day)
        .distinct()
        .where(UserDay.day >= first - timedelta(days=longest - 1), UserDay.day <= last)
        .order_by(UserDay.identity, UserDay.day)
    )
    if hubs is not None:
        query = query.where(UserDay.hub.in_(list(hubs)))
    base = first.toordinal() - longest
    size = last.toordinal() - base + longest + 2
    marks = {key: [0] * size for key in WINDOWS}
    with store.session() as session:
        rows = [(who, day.toordinal() - base) for who, day in session.execute(query)]
    for i, (who, day) in enumerate(rows):
        following = rows[i + 1][1] if i + 1 < len(rows) and rows[i + 1][0] == who else size
        for key, window in WINDOWS.items():
            marks[key][day] += 1
            marks[key][min(following, day + window)] -= 1
    running = dict.fromkeys(WINDOWS, 0)
    series: list[dict[str, Any]] = []
    for index in range(size):
        for key in WINDOWS:
            running[key] += marks[key][index]
        day = date.fromordinal(base + index)
        if first <= day <= last:
            series.append({"day": day.isoformat(), **running})
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
) -> dict[Any, float]:
    """Server-hours in [start, end) per hub (by="hub"), per (hub, username) (by="user") or in total
    (by="total", key None). Sessions are clipped to the window; open ones count up to `now`."""
    if by not in ("hub", "user", "total"):
        raise ValueError(f"by must be 'hub', 'user' or 'total', not {by!r}")
    totals: dict[Any, float] = defaultdict(float)
    for hub, username, begin, finish in _sessions(store, start, end, hubs, now or utcnow()):
        key = hub if by == "hub" else (hub, username) if by == "user" else None
        totals[key] += (finish - begin).total_seconds() / 3600
    return dict(totals)


def daily_servers(
    store: Store, first: date, last: date, hubs: Sequence[str] | None = None, now: datetime | None = None
) -> dict[date, dict[str, float | int]]:
    """Per day from `first` to `last`: server-hours and the peak number of servers running at once."""
    start, end = _bounds(first, last)
    sessions = _sessions(store, start, end, hubs, now or utcnow())
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


def hub_reported(store: Store, hubs: Sequence[str], at: datetime) -> dict[str, dict[str, Any]]:
    """Each hub's own active-user gauges from its newest HubSample at or before `at`."""
    reported: dict[str, dict[str, Any]] = {}
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
    for hub in hubs:
        peaks = daily_servers(store, first, last, [hub], now)
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
