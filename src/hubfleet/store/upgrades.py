"""Cluster upgrade runs and their steps in the store (migration 0010): what `hubfleet upgrade --resume`,
`hubfleet history` and the console's Clusters page read.

The tables are declared here rather than in models.py so that the store's API can list the steps in the
history without this module importing the API (functions take anything with `session()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import JSON, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hubfleet.clock import utcnow
from hubfleet.store.models import Base, ProbeSample

RUN_STATUSES = ("running", "failed", "done", "abandoned")
STEP_STATUSES = ("pending", "running", "ok", "failed")
OUTPUT_LIMIT = 2000
"""Characters of a step's command output kept (its end): enough to see the provider's error."""


class UpgradeRun(Base):
    """One `hubfleet upgrade CLUSTER --to VERSION`, resumed runs included (same row)."""

    __tablename__ = "upgrade_runs"
    __table_args__ = (Index("ix_upgrade_runs_cluster_started", "cluster", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(20))
    from_version: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # running | failed | done | abandoned
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    actor: Mapped[str] = mapped_column(String(200), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The plan as `upgrade-plan --json` shows it, when the run started."""


class UpgradeStep(Base):
    __tablename__ = "upgrade_steps"
    __table_args__ = (Index("ix_upgrade_steps_run_number", "run_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    cluster: Mapped[str] = mapped_column(String(200), index=True)
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))  # control_plane | node_pool
    pool: Mapped[str | None] = mapped_column(String(200))
    from_version: Mapped[str] = mapped_column(String(20))
    to_version: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(Text)
    commands: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20))  # pending | running | ok | failed
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    output: Mapped[str] = mapped_column(Text, default="")
    """The end of the commands' output (secrets redacted by the runner)."""
    checks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """[{hub, ok, detail}] of the hub checks after the step."""
    message: Mapped[str] = mapped_column(Text, default="")


class HasSession(Protocol):
    def session(self) -> Session: ...


@dataclass(frozen=True)
class StepRecord:
    id: int
    run_id: int
    cluster: str
    number: int
    kind: str
    pool: str | None
    from_version: str
    to_version: str
    description: str
    commands: list[list[str]]
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    output: str
    checks: list[dict[str, Any]]
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "kind": self.kind,
            "pool": self.pool,
            "from": self.from_version,
            "to": self.to_version,
            "description": self.description,
            "commands": self.commands,
            "status": self.status,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "output": self.output,
            "checks": self.checks,
            "message": self.message,
        }


@dataclass(frozen=True)
class RunRecord:
    id: int
    cluster: str
    target: str
    from_version: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    actor: str
    message: str
    plan: dict[str, Any]
    steps: list[StepRecord]

    @property
    def unfinished(self) -> bool:
        return self.status in ("running", "failed")

    def first_unfinished(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status != "ok"), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cluster": self.cluster,
            "target": self.target,
            "from": self.from_version,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "actor": self.actor,
            "message": self.message,
            "steps": [s.to_json() for s in self.steps],
        }


def _step(row: UpgradeStep) -> StepRecord:
    return StepRecord(
        row.id, row.run_id, row.cluster, row.number, row.kind, row.pool, row.from_version, row.to_version,
        row.description, list(row.commands or []), row.status, row.started_at, row.finished_at, row.output,
        list(row.checks or []), row.message,
    )  # fmt: skip


def _run(session: Session, row: UpgradeRun) -> RunRecord:
    steps = session.scalars(
        select(UpgradeStep).where(UpgradeStep.run_id == row.id).order_by(UpgradeStep.number)
    ).all()
    return RunRecord(
        row.id, row.cluster, row.target, row.from_version, row.status, row.started_at, row.finished_at,
        row.actor, row.message, dict(row.plan or {}), [_step(s) for s in steps],
    )  # fmt: skip


def start_run(
    store: HasSession,
    cluster: str,
    target: str,
    from_version: str,
    steps: list[dict[str, Any]],
    *,
    actor: str = "",
    plan: dict[str, Any] | None = None,
) -> RunRecord:
    """A new run with its steps pending; each step dict: kind, pool, from, to, description, commands."""
    with store.session() as session, session.begin():
        run = UpgradeRun(
            cluster=cluster, target=target, from_version=from_version, status="running",
            started_at=utcnow(), actor=actor, message="", plan=plan or {},
        )  # fmt: skip
        session.add(run)
        session.flush()
        for number, step in enumerate(steps, start=1):
            session.add(
                UpgradeStep(
                    run_id=run.id,
                    cluster=cluster,
                    number=number,
                    kind=step["kind"],
                    pool=step.get("pool"),
                    from_version=step["from"],
                    to_version=step["to"],
                    description=step["description"],
                    commands=step["commands"],
                    status="pending",
                    output="",
                    checks=[],
                    message="",
                )  # fmt: skip
            )
        session.flush()
        return _run(session, run)


def get_run(store: HasSession, run_id: int) -> RunRecord | None:
    with store.session() as session:
        row = session.get(UpgradeRun, run_id)
        return _run(session, row) if row is not None else None


def runs(store: HasSession, cluster: str | None = None, limit: int = 20) -> list[RunRecord]:
    """Runs newest first (of one cluster when given)."""
    query = select(UpgradeRun)
    if cluster is not None:
        query = query.where(UpgradeRun.cluster == cluster)
    query = query.order_by(UpgradeRun.started_at.desc(), UpgradeRun.id.desc()).limit(limit)
    with store.session() as session:
        return [_run(session, row) for row in session.scalars(query).all()]


def unfinished_run(store: HasSession, cluster: str) -> RunRecord | None:
    """The newest run of `cluster` that is running or stopped at a failure (what --resume continues)."""
    return next((r for r in runs(store, cluster, limit=50) if r.unfinished), None)


def update_step(store: HasSession, step_id: int, **changes: Any) -> None:
    if "output" in changes:
        changes["output"] = str(changes["output"])[-OUTPUT_LIMIT:]
    with store.session() as session, session.begin():
        row = session.get(UpgradeStep, step_id)
        if row is None:
            raise ValueError(f"no upgrade step {step_id}")
        for key, value in changes.items():
            setattr(row, key, value)


def finish_run(store: HasSession, run_id: int, status: str, message: str = "") -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    with store.session() as session, session.begin():
        row = session.get(UpgradeRun, run_id)
        if row is None:
            raise ValueError(f"no upgrade run {run_id}")
        row.status = status
        row.message = message
        row.finished_at = utcnow() if status in ("done", "failed", "abandoned") else None


def reopen_run(store: HasSession, run_id: int) -> None:
    with store.session() as session, session.begin():
        row = session.get(UpgradeRun, run_id)
        if row is not None:
            row.status, row.finished_at, row.message = "running", None, ""


def failed_probe_seconds(
    store: HasSession, hubs: list[str], start: datetime, end: datetime
) -> dict[str, float | None]:
    """Per hub, the seconds its probes failed between `start` and `end`: each failed probe counts until the
    next probe of that hub (or `end`). None: no probe of that hub in the window (no prober was running)."""
    result: dict[str, float | None] = {}
    with store.session() as session:
        for hub in hubs:
            rows = session.execute(
                select(ProbeSample.at, ProbeSample.ok)
                .where(ProbeSample.hub == hub, ProbeSample.at >= start, ProbeSample.at <= end)
                .order_by(ProbeSample.at)
            ).all()
            if not rows:
                result[hub] = None
                continue
            seconds = 0.0
            for (at, ok), following in zip(rows, [*rows[1:], None], strict=True):
                if not ok:
                    until = following[0] if following is not None else end
                    seconds += max(0.0, (until - at).total_seconds())
            result[hub] = round(seconds, 1)
    return result
