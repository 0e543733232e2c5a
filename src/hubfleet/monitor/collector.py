"""The usage collector: a task of the `hubfleet up` daemon that asks every running hub for its users, with
their servers, every `monitoring.collect_interval` seconds and stores:

- `UserDay(hub, username, day)`: the user was active on the hub that UTC day. `identity` is the person:
  `<auth type>:<asserted id>` once the hub recorded who signed in (OAuth hubs, hubfleet.monitor.identities),
  else `<auth type>:<username>`, so the same login on two hubs of one auth type is one person fleet-wide;
- `HubUserIdentity`: who signed in as which username, from the hub's /hub/api/hubfleet/identities;
- `ServerSession`: a server from the first collection that saw it running to the one that saw it gone, with
  the environment and resource requests it started with (hubfleet.monitor.resources) and, on local hubs run
  as root, the CPU time and peak memory its control group measured, updated at every collection;
- `HubUserGroup`: each counted user's JupyterHub groups; a membership no longer seen is end-dated (its
  `last_seen` stops at the last collection that saw it; rows are kept for the months it counted in);
- `HubSample`: the hub's running servers and user count, its own `jupyterhub_active_users` gauges and
  spawn counters from `/hub/metrics`.

The check user, readiness tests' simulated attendees (`hubfleet-test-*`), the fleet's staff (with
`monitoring.exclude_staff`) and `monitoring.exclude_users` are left out of UserDay and ServerSession
(HubSample counts what the hub runs, everyone included). What is stored is read back by the queries of
hubfleet.monitor.usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as time_
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from hubfleet.backends.local import hub_endpoint
from hubfleet.checks.synthetic import is_test_user
from hubfleet.clock import parse_time, utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.models_auth import OAUTH_TYPES
from hubfleet.monitor.identities import (
    SignIn,
    fetch_identities,
    known_identities,
    newest_signin,
    record_sign_ins,
    sign_ins,
)
from hubfleet.monitor.resources import Measured, Request, ServerMeter, fleet_meter, server_request
from hubfleet.monitor.usage import auth_type, identity
from hubfleet.render.common import staff_username_key
from hubfleet.render.local import CHECK_USERNAME
from hubfleet.settings import seconds_from_env
from hubfleet.store.api import Store
from hubfleet.store.models import HubSample, HubUserGroup, ServerSession, UserDay
from hubfleet.store.usage_rollups import refresh as refresh_rollups

log = logging.getLogger(__name__)

INTERVAL_ENV = "HUBFLEET_COLLECT_INTERVAL"
PAGE_LIMIT = 200
"""Users per page of /hub/api/users (JupyterHub's default api_page_max_limit)."""
LOOKBACK = timedelta(minutes=15)
"""Activity is taken from this long before the previous collection: JupyterHub writes a user's
last_activity from the proxy every 5 minutes, so a timestamp can arrive after a collection has passed it.
Recording a day twice is harmless (UserDay is keyed by day)."""
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}
REFRESH_EVERY = 100
"""Hubs collected between two refreshes of the day roll-ups."""
COLLECT_CONCURRENCY = 20
"""Hubs collected at once: enough to keep loopback and cluster round trips overlapped, few enough that a
hub's requests never wait behind a thousand others (the store writes run on the event loop)."""


def excluded_usernames(fleet: FleetConfig, hub: Hub) -> frozenset[str]:
    """Who is never counted on `hub`: the check user, staff (operators' usernames under the hub's key: its
    auth type or `auth.staff_username_key`, when `monitoring.exclude_staff`) and
    `monitoring.exclude_users`."""
    monitoring = fleet.settings.monitoring
    names = {CHECK_USERNAME, *monitoring.exclude_users}
    if monitoring.exclude_staff:
        key = staff_username_key(hub) if hub.auth is not None else auth_type(hub)
        names.update(op.usernames[key] for op in fleet.settings.operators if key in op.usernames)
    return frozenset(names)


def collect_interval(fleet: FleetConfig) -> float:
    """`HUBFLEET_COLLECT_INTERVAL` (seconds, for tests) over fleet.yaml `monitoring.collect_interval`."""
    return seconds_from_env(INTERVAL_ENV, fleet.settings.monitoring.collect_interval, minimum=0.5)


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
    spawn_histogram: dict[str, Any] | None = None
    """The spawn-duration histogram per status (and failure reason), cumulative: see HubSample."""


def parse_metrics(text: str, prefix: str = "jupyterhub") -> HubMetrics:
    """Parse the Prometheus text of JupyterHub 6's /hub/metrics.

    Spawn counters are the `_count` of `server_spawn_duration_seconds`: status `success`, and `failure`
    plus `error` (summed over every `reason`) for failures; `spawn_seconds_total` is the `_sum` of the
    successful ones."""
    active: dict[str, int] = {}
    values: dict[str, float] = {}
    spawns: dict[str, float] = defaultdict(float)
    spawn_seconds: float | None = None
    histogram: dict[str, dict[str, Any]] = {}
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
            if name.startswith(f"{prefix}_server_spawn_duration_seconds_"):
                _add_to_histogram(histogram, name.rsplit("_", 1)[1], labels, value)
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
        spawn_histogram=_compact_histogram(histogram) if histogram else None,
    )


def _add_to_histogram(
    histogram: dict[str, dict[str, Any]], part: str, labels: dict[str, str], value: float
) -> None:
    """One sample of the spawn histogram, keyed `success`, `error` or `failure/<reason>` (JupyterHub's
    ServerSpawnStatus and ServerSpawnFailureReason labels, jupyterhub/metrics.py)."""
    status, reason = labels.get("status", ""), labels.get("reason", "")
    entry = histogram.setdefault(f"{status}/{reason}" if reason else status, {"buckets": {}, "sum": 0.0})
    if part == "bucket":
        entry["buckets"][labels.get("le", "+Inf")] = value
    elif part == "sum":
        entry["sum"] += value


def _compact_histogram(histogram: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Only series with spawns, each `{"count", "sum", "buckets": [[le, cumulative], ...]}` cut after the
    first bucket holding them all (the rest repeat it): ≈ 100 bytes a sample instead of ≈ 1.3 kB."""
    out: dict[str, Any] = {}
    for key, entry in histogram.items():
        bounds = sorted(entry["buckets"].items(), key=lambda kv: float(kv[0]))
        count = entry["buckets"].get("+Inf", bounds[-1][1] if bounds else 0.0)
        if not count:
            continue
        kept: list[list[float]] = []
        for le, cumulative in bounds:
            if le == "+Inf":
                break
            kept.append([float(le), cumulative])
            if cumulative >= count:
                break
        out[key] = {"count": count, "sum": round(entry["sum"], 6), "buckets": kept}
    return out


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
    sign_ins: int = 0
    """New or newer sign-ins the hub recorded since the previous collection."""


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
    signed_in: Sequence[SignIn] = (),
    request_of: Callable[[dict[str, Any], dict[str, Any]], Request] | None = None,
    measured: dict[str, Measured] | None = None,
) -> CollectionResult:
    """Store what one collection of `hub` saw: `users` are /hub/api/users models (with servers,
    stopped ones included). Activity at or after `since` makes a UserDay; servers open and close sessions.
    `signed_in`: the hub's new sign-ins; `request_of(user, server)`: what a new server was started with;
    `measured`: each user's control group now. Runs inside the caller's transaction."""
    skip = frozenset(excluded)
    counted = [u for u in users if u.get("name") and u["name"] not in skip and not is_test_user(u["name"])]
    new_sign_ins = record_sign_ins(session, hub, [s for s in signed_in if s.username not in skip])
    record_groups(session, hub, counted, now)

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
        # Plain rows and two bulk statements, not ORM objects: a hub of 5,000 active users moves 5,000
        # last_seen values a minute, and loading and flushing each as an object was most of the cost.
        days = {day for _, day in seen}
        existing = {
            (username, day): (first, last)
            for username, day, first, last in session.execute(
                select(UserDay.username, UserDay.day, UserDay.first_seen, UserDay.last_seen).where(
                    UserDay.hub == hub, UserDay.day.in_(days)
                )
            ).all()
        }
        names = {username for username, _ in seen}
        people = known_identities(session, hub, names) if auth in OAUTH_TYPES else {}
        fresh: list[dict[str, Any]] = []
        moved: list[dict[str, Any]] = []
        for (username, day), (first, last) in seen.items():
            known = existing.get((username, day))
            if known is None:
                who = people.get(username) or identity(auth, username)
                fresh.append(
                    {"hub": hub, "username": username, "day": day, "identity": who}
                    | {"first_seen": first, "last_seen": last}
                )
            elif first < known[0] or last > known[1]:
                moved.append(
                    {"hub": hub, "username": username, "day": day}
                    | {"first_seen": min(known[0], first), "last_seen": max(known[1], last)}
                )
        if fresh:
            session.execute(insert(UserDay), fresh)
        if moved:
            session.execute(update(UserDay), moved)

    # --- server sessions
    open_rows = {
        (row.username, row.server_name): row
        for row in session.scalars(
            select(ServerSession).where(ServerSession.hub == hub, ServerSession.stopped_at.is_(None))
        )
    }
    stop_hints: dict[tuple[str, str], datetime] = {}
    opened = closed = 0
    measured = measured or {}
    for user in counted:
        # a user's servers share one control group: its figures go to the first running one
        running_names = sorted(n or "" for n, s in (user.get("servers") or {}).items() if _running(s))
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
                request = request_of(user, server) if request_of is not None else Request()
                row = ServerSession(
                    hub=hub,
                    username=key[0],
                    server_name=key[1],
                    started_at=min(started, now),
                    stopped_at=None,
                    last_activity=last_activity,
                    environment=request.environment,
                    cpu_request=request.cpu,
                    memory_request_bytes=request.memory_bytes,
                )
                session.add(row)
                opened += 1
            elif last_activity is not None and (
                row.last_activity is None or last_activity > row.last_activity
            ):
                row.last_activity = last_activity
            use = measured.get(key[0]) if running_names and key[1] == running_names[0] else None
            if use is not None:
                _add_measured(row, use)
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
            spawn_histogram=metrics.spawn_histogram,
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
        sign_ins=new_sign_ins,
    )


def _add_measured(row: ServerSession, use: Measured) -> None:
    """Counters only grow while the group lives; a lower reading (processes gone, on hosts measured from
    /proc) keeps the higher one."""
    if use.cpu_seconds is not None:
        row.cpu_seconds_used = max(row.cpu_seconds_used or 0.0, round(use.cpu_seconds, 3))
    if use.memory_peak_bytes is not None:
        row.memory_peak_bytes = max(row.memory_peak_bytes or 0, use.memory_peak_bytes)


def record_groups(session: Session, hub: str, users: Sequence[dict[str, Any]], now: datetime) -> None:
    """Each user's groups (from user models that carry `groups`): new memberships are added, seen ones get
    `last_seen = now`; memberships not seen keep their last `last_seen` (end-dated, never deleted here).

    The memberships current after the previous collection are exactly those whose last_seen is the hub's
    newest, so one UPDATE refreshes them all (minus the few that just ended): a minute's collection of a
    hub of thousands of members writes one statement, not thousands."""
    seen = {
        (str(user["name"]), str(group))
        for user in users
        if isinstance(user.get("groups"), list)
        for group in user["groups"]
    }
    rows = session.execute(
        select(HubUserGroup.username, HubUserGroup.group, HubUserGroup.last_seen).where(
            HubUserGroup.hub == hub
        )
    ).all()
    if not seen and not rows:
        return
    previous = max((last for _, _, last in rows), default=None)
    current = {(u, g) for u, g, last in rows if last == previous}
    existing = {(u, g) for u, g, _ in rows}
    ended = current - seen
    rejoined = (seen & existing) - current
    if current - ended:
        refresh = update(HubUserGroup).where(HubUserGroup.hub == hub, HubUserGroup.last_seen == previous)
        if ended:
            refresh = refresh.where(tuple_(HubUserGroup.username, HubUserGroup.group).not_in(sorted(ended)))
        session.execute(refresh.values(last_seen=now).execution_options(synchronize_session=False))
    if rejoined:
        again = [{"hub": hub, "username": u, "group": g, "last_seen": now} for u, g in sorted(rejoined)]
        session.execute(update(HubUserGroup), again)
    fresh = [
        {"hub": hub, "username": u, "group": g, "first_seen": now, "last_seen": now}
        for u, g in sorted(seen - existing)
    ]
    if fresh:
        session.execute(insert(HubUserGroup), fresh)


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
        on_users: Callable[[Hub, set[str]], object] | None = None,
        meter: ServerMeter | None = None,
        concurrency: int = COLLECT_CONCURRENCY,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.meter = meter
        """Reads local servers' control groups (root hubs); None: no measured use."""
        self.on_users = on_users
        """Told every user name a hub with `user_database` has (their databases outlive them only so long)."""
        self.fleet = fleet
        self.store = store
        self.targets = targets
        self.interval = interval if interval is not None else collect_interval(fleet)
        self.timeout = timeout
        self._previous: dict[str, datetime] = {}
        self._collected = 0
        """Hubs collected since the day roll-ups were last refreshed."""

    def _since(self, hub: str, now: datetime) -> datetime:
        previous = self._previous.get(hub) or _last_collection(self.store, hub)
        if previous is None:
            return datetime.combine(now.date(), time(), UTC)  # first collection ever: today
        return previous - LOOKBACK

    async def _sign_ins(self, client: httpx.AsyncClient, target: HubTarget, hub: Hub) -> list[SignIn]:
        """The hub's sign-ins since the newest one stored (OAuth hubs; [] for others or on failure)."""
        if auth_type(hub) not in OAUTH_TYPES:
            return []
        with self.store.session() as session:
            newest = newest_signin(session, target.name)
        try:
            items = await fetch_identities(client, target.url, target.token, newest)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("usage: %s: sign-ins not read: %s", target.name, exc)
            return []
        return sign_ins(auth_type(hub), items or [])

    def _measure(self, hub: Hub, users: Sequence[dict[str, Any]]) -> dict[str, Measured]:
        """Each user with a running server: their control group now (local hubs, with a meter)."""
        if self.meter is None or self.fleet.cluster_of(hub).kind != "local":
            return {}
        found = {}
        for user in users:
            if any(_running(s) for s in (user.get("servers") or {}).values()):
                use = self.meter.measure(hub.name, str(user["name"]))
                if use is not None:
                    found[str(user["name"])] = use
        return found

    async def collect_hub(self, client: httpx.AsyncClient, target: HubTarget) -> CollectionResult:
        hub = self.fleet.hubs[target.name]
        now = utcnow()
        users, metrics, signed_in = await asyncio.gather(
            fetch_users(client, target.url, target.token),
            fetch_metrics(client, target.url, target.token),
            self._sign_ins(client, target, hub),
        )
        measured = await asyncio.to_thread(self._measure, hub, users) if self.meter is not None else {}
        since = self._since(target.name, now)

        def request_of(user: dict[str, Any], server: dict[str, Any]) -> Request:
            return server_request(hub, server.get("user_options"), user.get("groups"))

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
                signed_in=signed_in,
                request_of=request_of,
                measured=measured,
            )
        self._previous[target.name] = now
        if self.on_users is not None and hub.user_database is not None:
            names = {str(u["name"]) for u in users if u.get("name")}
            try:
                await asyncio.to_thread(self.on_users, hub, names)
            except Exception:  # noqa: BLE001 - the usage figures are recorded; the sweep runs again next time
                log.exception("usage: %s: the databases of users who left were not swept", target.name)
        return result

    def refresh_rollups(self) -> None:
        """Roll up the user days written since the last refresh (hubfleet.store.usage_rollups): once per
        REFRESH_EVERY hubs, so a minute of 1,000 hubs costs ten refreshes of a hundred hubs' new days, not a
        thousand of one. Until then the queries read those days' raw rows: counts are exact meanwhile."""
        self._collected = 0
        try:
            with self.store.session() as session, session.begin():
                refresh_rollups(session)
        except Exception:  # noqa: BLE001 - the days stay marked; the next refresh takes them
            log.exception("usage: the day roll-ups were not refreshed")

    async def collect_once(self) -> list[CollectionResult]:
        """One pass over every target; a hub that fails is logged and skipped.

        At most `concurrency` hubs are collected at once, each with a client of its own (sharing one TLS
        context): with one client for every hub at once, 1,000 hubs queued for httpx's 100 pooled
        connections while the store writes of the first ones ran, and most timed out (PoolTimeout); with
        one shared client bounded, its pool still scanned every other hub's idle connection on each
        request (httpcore's `_assign_requests_to_connections`), most of the pass's CPU."""
        targets = [t for t in self.targets() if t.name in self.fleet.hubs]
        gate = asyncio.Semaphore(self.concurrency)
        tls = httpx.create_ssl_context()  # loading the CA bundle once, not per client (≈ 50 ms each)

        async def collect(target: HubTarget) -> CollectionResult:
            async with gate, httpx.AsyncClient(timeout=self.timeout, verify=tls) as client:
                result = await self.collect_hub(client, target)
            self._collected += 1
            if self._collected >= REFRESH_EVERY:
                self.refresh_rollups()
            return result

        results = await asyncio.gather(*(collect(t) for t in targets), return_exceptions=True)
        self.refresh_rollups()
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
    cutoff = (now or utcnow()) - keep
    with store.session() as session, session.begin():
        deleted = session.execute(delete(HubSample).where(HubSample.at < cutoff))
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]


def supervised_targets(
    running_urls: Callable[[], dict[str, str]], state_dir: Path
) -> Callable[[], list[HubTarget]]:
    """Targets for the daemon: the local hubs running now (`running_urls`: name -> URL, possibly empty
    while a hub starts), each with its control token."""

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
    on_users: Callable[[Hub, set[str]], object] | None = None,
) -> asyncio.Task[None]:
    """The daemon's usage task: first collection right away, then every collect_interval."""
    targets = supervised_targets(running_urls, state_dir)
    collector = UsageCollector(fleet, store, targets, on_users=on_users, meter=fleet_meter(state_dir))
    return asyncio.create_task(collector.run(stop), name="usage")
