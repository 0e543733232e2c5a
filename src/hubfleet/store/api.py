"""The store's public API: open_store() and plain methods; callers never touch sessions or ORM objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.clock import require_aware, utcnow
from hubfleet.store import db, safety
from hubfleet.store.events import ReadyWindow
from hubfleet.store.models import Check, Deployment, LimitEvent, Maintenance, Restart
from hubfleet.store.upgrades import UpgradeStep, failed_probe_seconds

DeploymentResult = Literal["ok", "failed", "rolled_back", "skipped", "removed"]
DEPLOYMENT_RESULTS: tuple[str, ...] = ("ok", "failed", "rolled_back", "skipped", "removed")
MAINTENANCE_MAX = timedelta(hours=1)
LimitKind = Literal["memory", "pids"]
LIMIT_KINDS: tuple[str, ...] = ("memory", "pids")
"""memory: the kernel killed processes at a user server's memory limit; pids: it refused forks at its
process limit."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class DeploymentRecord:
    id: int
    hub: str
    config_hash: str
    started_at: datetime
    finished_at: datetime | None
    result: str
    message: str
    actor: str
    community: str | None = None
    stage: str | None = None
    rendered: str | None = None
    settings: dict[str, Any] | None = None
    reasons: list[str] | None = None
    commit: str | None = None


@dataclass(frozen=True)
class RestartRecord:
    id: int
    hub: str
    at: datetime
    reason: str
    exit_code: int | None
    attempt: int


@dataclass(frozen=True)
class LimitEventRecord:
    id: int
    hub: str
    username: str
    kind: str
    at: datetime
    count: int
    detail: str


@dataclass(frozen=True)
class CheckRecord:
    id: int
    hub: str
    at: datetime
    ok: bool
    failed_step: str | None
    total_seconds: float
    steps: list[dict[str, Any]]


@dataclass(frozen=True)
class Event:
    """One line of `hubfleet history`: kind is 'deployment', 'restart', 'check', 'upgrade' (a step of a
    cluster upgrade; `hub` is then the cluster's name) or 'ready' (ready mode for an event on or off)."""

    kind: str
    hub: str
    at: datetime
    summary: str
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = _iso(self.at)
        return data


class CheckLike(Protocol):
    ok: bool
    failed_step: str | None
    total_seconds: float

    @property
    def steps(self) -> Sequence[Any]: ...


def _step_dict(step: Any) -> dict[str, Any]:
    if isinstance(step, Mapping):
        data = dict(step)
    else:
        data = {k: getattr(step, k) for k in ("name", "ok", "seconds", "detail")}
    return {
        "name": str(data["name"]),
        "ok": bool(data["ok"]),
        "seconds": float(data.get("seconds") or 0.0),
        "detail": str(data.get("detail") or ""),
    }


_TIMES = "timestamps given to the store"
"""How the error names a naive datetime: the store takes timezone-aware ones only (clock.require_aware)."""


class Store:
    """Deployments, restarts, limit events and check results of a fleet. Safe to open from several
    processes at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self) -> Session:
        return self._sessions()

    def session(self) -> Session:
        """For modules with their own queries (monitor/*): `with store.session() as s, s.begin():`."""
        return self._sessions()

    # -- deployments -----------------------------------------------------------------------------
    def record_deployment(
        self,
        hub: str,
        config_hash: str,
        result: DeploymentResult,
        *,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        message: str = "",
        actor: str = "",
        community: str | None = None,
        stage: str | None = None,
        rendered: str | None = None,
        settings: dict[str, Any] | None = None,
        reasons: list[str] | None = None,
        commit: str | None = None,
    ) -> DeploymentRecord:
        if result not in DEPLOYMENT_RESULTS:
            allowed = ", ".join(DEPLOYMENT_RESULTS)
            raise ValueError(f"deployment result must be one of {allowed}, not {result!r}")
        now = utcnow()
        row = Deployment(
            hub=hub,
            config_hash=config_hash,
            started_at=require_aware(started_at or now, _TIMES),
            finished_at=require_aware(finished_at or now, _TIMES),
            result=result,
            message=message,
            actor=actor,
            community=community,
            stage=stage,
            rendered=rendered,
            settings=settings,
            reasons=reasons,
            commit=commit,
        )
        with self._session() as session, session.begin():
            session.add(row)
        return _deployment(row)

    def last_deployment(self, hub: str, *, result: DeploymentResult | None = None) -> DeploymentRecord | None:
        """The newest deployment of `hub` (only those with `result` when given)."""
        query = select(Deployment).where(Deployment.hub == hub)
        if result is not None:
            query = query.where(Deployment.result == result)
        query = query.order_by(Deployment.started_at.desc(), Deployment.id.desc()).limit(1)
        with self._session() as session:
            row = session.scalars(query).first()
            return _deployment(row) if row else None

    def deployed(self) -> dict[str, DeploymentRecord]:
        """What runs now, per hub: its newest `ok` deployment, unless a `removed` came after it."""
        newest = (
            select(func.max(Deployment.id))
            .where(Deployment.result.in_(("ok", "removed")))
            .group_by(Deployment.hub)
        )
        columns = [getattr(Deployment, field.name) for field in fields(DeploymentRecord)]
        with self._session() as session:  # plain rows, no ORM objects: a plan of 5,000 hubs reads them all
            rows = session.execute(select(*columns).where(Deployment.id.in_(newest)))
            return {row.hub: DeploymentRecord(*row) for row in rows if row.result == "ok"}

    def deployments(self, hub: str | None = None, limit: int = 100) -> list[DeploymentRecord]:
        query = select(Deployment)
        if hub is not None:
            query = query.where(Deployment.hub == hub)
        query = query.order_by(Deployment.started_at.desc(), Deployment.id.desc()).limit(limit)
        with self._session() as session:
            return [_deployment(row) for row in session.scalars(query)]

    # -- planned maintenance -----------------------------------------------------------------------
    def begin_maintenance(self, hub: str, *, reason: str = "", actor: str = "") -> int:
        """Open a window of planned maintenance (a deploy of `hub`); returns its id for end_maintenance."""
        row = Maintenance(hub=hub, started_at=utcnow(), reason=reason, actor=actor)
        with self._session() as session, session.begin():
            session.add(row)
        return row.id

    def end_maintenance(self, window: int) -> None:
        with self._session() as session, session.begin():
            row = session.get(Maintenance, window)
            if row is not None and row.finished_at is None:
                row.finished_at = utcnow()

    def in_maintenance(self, hubs: list[str] | None = None, now: datetime | None = None) -> set[str]:
        """The hubs with a window open now. A window left open (its deploy was killed) counts for at most
        MAINTENANCE_MAX, so a crash cannot hide an outage for good."""
        now = require_aware(now, _TIMES) if now else utcnow()
        query = select(Maintenance.hub).where(
            Maintenance.finished_at.is_(None), Maintenance.started_at >= now - MAINTENANCE_MAX
        )
        if hubs is not None:
            query = query.where(Maintenance.hub.in_(hubs))
        with self._session() as session:
            return set(session.scalars(query))

    # -- restarts --------------------------------------------------------------------------------
    def record_restart(
        self,
        hub: str,
        *,
        reason: str = "",
        exit_code: int | None = None,
        attempt: int = 1,
        at: datetime | None = None,
    ) -> RestartRecord:
        row = Restart(
            hub=hub, at=require_aware(at, _TIMES), reason=reason, exit_code=exit_code, attempt=attempt
        )
        with self._session() as session, session.begin():
            session.add(row)
        return _restart(row)

    def restarts(
        self, hub: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[RestartRecord]:
        """Restarts newest first, optionally of one hub, at or after `since`, at most `limit`."""
        query = select(Restart)
        if hub is not None:
            query = query.where(Restart.hub == hub)
        if since is not None:
            query = query.where(Restart.at >= require_aware(since, _TIMES))
        query = query.order_by(Restart.at.desc(), Restart.id.desc()).limit(limit)
        with self._session() as session:
            return [_restart(row) for row in session.scalars(query)]

    # -- limit events ----------------------------------------------------------------------------
    def record_limit_event(
        self,
        hub: str,
        *,
        username: str,
        kind: LimitKind,
        detail: str,
        count: int = 1,
        at: datetime | None = None,
    ) -> LimitEventRecord:
        """A user server of `hub` reached its memory or process limit `count` times (at: default now)."""
        if kind not in LIMIT_KINDS:
            raise ValueError(f"limit event kind must be one of {', '.join(LIMIT_KINDS)}, not {kind!r}")
        if count < 1:
            raise ValueError(f"limit event count must be at least 1, not {count}")
        row = LimitEvent(
            hub=hub,
            username=username,
            kind=kind,
            at=require_aware(at, _TIMES),
            count=count,
            detail=detail,
        )
        with self._session() as session, session.begin():
            session.add(row)
        return _limit_event(row)

    def limit_events(
        self, hub: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[LimitEventRecord]:
        """Limit events newest first, optionally of one hub, at or after `since`, at most `limit`."""
        query = select(LimitEvent)
        if hub is not None:
            query = query.where(LimitEvent.hub == hub)
        if since is not None:
            query = query.where(LimitEvent.at >= require_aware(since, _TIMES))
        query = query.order_by(LimitEvent.at.desc(), LimitEvent.id.desc()).limit(limit)
        with self._session() as session:
            return [_limit_event(row) for row in session.scalars(query)]

    # -- checks ----------------------------------------------------------------------------------
    def record_check(
        self, result: CheckLike | Mapping[str, Any], *, hub: str | None = None, at: datetime | None = None
    ) -> CheckRecord:
        """Store a check result (a CheckResult or its to_json() dict); hub defaults to result.hub."""
        keys = ("hub", "at", "ok", "failed_step", "total_seconds", "steps")
        data: Mapping[str, Any] = (
            result if isinstance(result, Mapping) else {k: getattr(result, k, None) for k in keys}
        )
        hub_name = hub or data.get("hub")
        if not hub_name:
            raise ValueError("record_check needs a hub name (pass hub= or set result.hub)")
        when = at or data.get("at") or utcnow()
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        row = Check(
            hub=str(hub_name),
            at=require_aware(when, _TIMES),
            ok=bool(data["ok"]),
            failed_step=data.get("failed_step"),
            total_seconds=float(data.get("total_seconds") or 0.0),
            steps=[_step_dict(step) for step in data.get("steps") or []],
        )
        with self._session() as session, session.begin():
            session.add(row)
        return _check(row)

    def checks(self, hub: str | None = None, limit: int = 100) -> list[CheckRecord]:
        query = select(Check)
        if hub is not None:
            query = query.where(Check.hub == hub)
        query = query.order_by(Check.at.desc(), Check.id.desc()).limit(limit)
        with self._session() as session:
            return [_check(row) for row in session.scalars(query)]

    # -- history ---------------------------------------------------------------------------------
    def history(self, hub: str | None = None, limit: int = 50) -> list[Event]:
        """Deployments, restarts, checks and cluster upgrade steps as one list of events, newest first
        (`hub`: a hub's events, or a cluster's upgrade steps)."""
        events: list[tuple[datetime, int, Event]] = []
        with self._session() as session:
            sources = ((Deployment, Deployment.started_at), (Restart, Restart.at), (Check, Check.at))
            for model, time_col in sources:
                query = select(model)
                if hub is not None:
                    query = query.where(model.hub == hub)
                query = query.order_by(time_col.desc(), model.id.desc()).limit(limit)
                for row in session.scalars(query):
                    event = _event(row)
                    events.append((event.at, row.id, event))
            steps = select(UpgradeStep).where(UpgradeStep.started_at.is_not(None))
            if hub is not None:
                steps = steps.where(UpgradeStep.cluster == hub)
            steps = steps.order_by(UpgradeStep.started_at.desc(), UpgradeStep.id.desc()).limit(limit)
            upgrade_rows = list(session.scalars(steps))
            ready = select(ReadyWindow)
            if hub is not None:
                ready = ready.where(ReadyWindow.hub == hub)
            ready = ready.order_by(ReadyWindow.started_at.desc(), ReadyWindow.id.desc()).limit(limit)
            for window in session.scalars(ready):
                for event in _ready_events(window):
                    events.append((event.at, window.id, event))
        for step in upgrade_rows:
            event = _upgrade_event(self, step)
            events.append((event.at, step.id, event))
        events.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [event for _, _, event in events[:limit]]


def open_store(state_dir_or_url: str | Path, *, migrate: bool = True, check: bool = False) -> Store:
    """Open the store in `state_dir` (sqlite:///<dir>/hubfleet.sqlite) or at any SQLAlchemy URL.

    Migrations run on open (a no-op when the schema is current), so every caller sees the same schema.
    A damaged SQLite store raises `StoreDamaged` (one line: the file, what is wrong, the way back) on open or
    on any later statement; an empty file is damage, not a new store. `check` also runs SQLite's
    `PRAGMA quick_check` (the daemon at start).
    """
    url = db.store_url(state_dir_or_url)
    safety.check_file(url)
    engine = db.make_engine(url)
    safety.watch(engine)
    try:
        if check:
            safety.verify(engine)
        if migrate:
            db.upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def _deployment(row: Deployment) -> DeploymentRecord:
    return DeploymentRecord(
        row.id,
        row.hub,
        row.config_hash,
        row.started_at,
        row.finished_at,
        row.result,
        row.message,
        row.actor,
        row.community,
        row.stage,
        row.rendered,
        row.settings,
        row.reasons,
        row.commit,
    )


def _restart(row: Restart) -> RestartRecord:
    return RestartRecord(row.id, row.hub, row.at, row.reason, row.exit_code, row.attempt)


def _limit_event(row: LimitEvent) -> LimitEventRecord:
    return LimitEventRecord(row.id, row.hub, row.username, row.kind, row.at, row.count, row.detail)


def _check(row: Check) -> CheckRecord:
    return CheckRecord(row.id, row.hub, row.at, row.ok, row.failed_step, row.total_seconds, list(row.steps))


def _upgrade_event(store: Store, row: UpgradeStep) -> Event:
    """A cluster upgrade step, with each checked hub's failed-probe seconds during the step."""
    assert row.started_at is not None
    hubs = [str(c.get("hub")) for c in row.checks or [] if c.get("hub")]
    down = failed_probe_seconds(store, hubs, row.started_at, row.finished_at or utcnow()) if hubs else {}
    summary = f"upgrade step {row.number} (run {row.run_id}): {row.description}: {row.status}"
    outage = ", ".join(f"{h} {s:g}s" for h, s in down.items() if s)
    if outage:
        summary += f"; probes failed: {outage}"
    if row.message:
        summary += f" — {row.message[:200]}"
    details = {
        "run_id": row.run_id,
        "number": row.number,
        "status": row.status,
        "commands": row.commands,
        "finished_at": _iso(row.finished_at),
        "checks": row.checks,
        "interruption_seconds": down,
        "message": row.message,
    }
    return Event("upgrade", row.cluster, row.started_at, summary, row.status == "ok", details)


def _ready_events(row: ReadyWindow) -> list[Event]:
    """A ready-mode window as history lines: its start, and its end once it ended."""
    details = {"event": row.event, **(row.details or {})}
    lines = [
        Event(
            "ready",
            row.hub,
            row.started_at,
            f"ready mode on for event {row.event} by {row.started_by}",
            True,
            details,
        )
    ]
    if row.ended_at is not None:
        lines.append(
            Event(
                "ready",
                row.hub,
                row.ended_at,
                f"ready mode off after event {row.event} by {row.ended_by}",
                True,
                details,
            )
        )
    return lines


def _event(row: Deployment | Restart | Check) -> Event:
    if isinstance(row, Deployment):
        summary = f"deploy {row.config_hash[:12]}: {row.result}"
        if row.actor:
            summary += f" by {row.actor}"
        if row.commit:
            summary += f" at {row.commit[:12]}"
        if row.reasons:
            summary += f" ({'; '.join(row.reasons)})"
        if row.message:
            summary += f" — {row.message}"
        details = {
            "config_hash": row.config_hash,
            "result": row.result,
            "actor": row.actor,
            "commit": row.commit,
            "reasons": row.reasons or [],
            "finished_at": _iso(row.finished_at),
            "message": row.message,
        }
        return Event("deployment", row.hub, row.started_at, summary, row.result == "ok", details)
    if isinstance(row, Restart):
        code = "?" if row.exit_code is None else str(row.exit_code)
        summary = f"restart #{row.attempt} (exit {code})" + (f": {row.reason}" if row.reason else "")
        details = {"reason": row.reason, "exit_code": row.exit_code, "attempt": row.attempt}
        return Event("restart", row.hub, row.at, summary, False, details)
    if row.ok:
        summary = f"check ok in {row.total_seconds:.1f}s"
    else:
        failed = next((s for s in row.steps if s.get("name") == row.failed_step), {})
        detail = str(failed.get("detail") or "")
        summary = f"check failed at {row.failed_step}" + (f": {detail[:120]}" if detail else "")
    details = {"failed_step": row.failed_step, "total_seconds": row.total_seconds, "steps": list(row.steps)}
    return Event("check", row.hub, row.at, summary, row.ok, details)
