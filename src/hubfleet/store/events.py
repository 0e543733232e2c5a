"""Events in the store (migration 0012): ready-mode windows (when a hub was made ready for an event, by whom,
and when that ended), readiness-test results, and after-event reports.

The tables are declared here (like upgrades.py) so that the store's API can list ready-mode windows in the
history without this module importing the API: functions take anything with `session()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hubfleet.clock import as_utc, utcnow
from hubfleet.store.models import Base


class _HasSession(Protocol):
    def session(self) -> Session: ...


class ReadyWindow(Base):
    """One stretch of ready mode on a hub for one event: opened by the schedule or by an operator."""

    __tablename__ = "event_ready_windows"
    __table_args__ = (Index("ix_event_ready_windows_hub_started", "hub", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime]
    started_by: Mapped[str] = mapped_column(String(200))  # "schedule" or "operator <name>"
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What ready mode did: seats warmed, accounts made ahead, the values' placeholders (kubernetes)."""


class ReadinessTest(Base):
    """One `hubfleet event test` (by hand, or when ready mode started)."""

    __tablename__ = "event_readiness_tests"
    __table_args__ = (Index("ix_event_readiness_tests_hub_at", "hub", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    event: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime]
    passed: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class EventReport(Base):
    """An event's report, made once it is over (made again on request)."""

    __tablename__ = "event_reports"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    event: Mapped[str] = mapped_column(String(200), primary_key=True)
    made_at: Mapped[datetime]
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    sent_to: Mapped[list[str] | None] = mapped_column(JSON)
    """Addresses the report was mailed to (contacts with `reports: true`); None: not sent."""
    error: Mapped[str | None] = mapped_column(Text)
    """Why sending failed, when it did."""


@dataclass(frozen=True)
class Window:
    id: int
    hub: str
    event: str
    started_at: datetime
    started_by: str
    ended_at: datetime | None
    ended_by: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "event": self.event,
            "started_at": self.started_at.isoformat(),
            "started_by": self.started_by,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "ended_by": self.ended_by,
            "details": self.details,
        }


def _window(row: ReadyWindow) -> Window:
    return Window(
        row.id,
        row.hub,
        row.event,
        as_utc(row.started_at),
        row.started_by,
        as_utc(row.ended_at) if row.ended_at else None,
        row.ended_by,
        row.details or {},
    )


def open_window(store: _HasSession, hub: str) -> Window | None:
    """The hub's ready-mode window still open, if any (at most one: events on a hub do not overlap)."""
    with store.session() as session:
        row = session.scalars(
            select(ReadyWindow)
            .where(ReadyWindow.hub == hub, ReadyWindow.ended_at.is_(None))
            .order_by(ReadyWindow.started_at.desc())
        ).first()
        return _window(row) if row else None


def start_window(
    store: _HasSession, hub: str, event: str, by: str, details: dict[str, Any] | None = None
) -> Window:
    """Open a window; one already open for this hub and event is returned as it is (idempotent)."""
    with store.session() as session, session.begin():
        row = session.scalars(
            select(ReadyWindow).where(
                ReadyWindow.hub == hub, ReadyWindow.event == event, ReadyWindow.ended_at.is_(None)
            )
        ).first()
        if row is None:
            row = ReadyWindow(hub=hub, event=event, started_at=utcnow(), started_by=by, details=details)
            session.add(row)
            session.flush()
        return _window(row)


def update_window(store: _HasSession, window_id: int, details: dict[str, Any]) -> None:
    with store.session() as session, session.begin():
        row = session.get(ReadyWindow, window_id)
        if row is not None:
            row.details = {**(row.details or {}), **details}


def end_window(store: _HasSession, hub: str, by: str, at: datetime | None = None) -> Window | None:
    """Close the hub's open window; None when there was none."""
    with store.session() as session, session.begin():
        row = session.scalars(
            select(ReadyWindow).where(ReadyWindow.hub == hub, ReadyWindow.ended_at.is_(None))
        ).first()
        if row is None:
            return None
        row.ended_at, row.ended_by = at or utcnow(), by
        return _window(row)


def windows(
    store: _HasSession, hub: str | None = None, event: str | None = None, limit: int = 200
) -> list[Window]:
    """Ready-mode windows, newest first."""
    query = select(ReadyWindow)
    if hub is not None:
        query = query.where(ReadyWindow.hub == hub)
    if event is not None:
        query = query.where(ReadyWindow.event == event)
    query = query.order_by(ReadyWindow.started_at.desc(), ReadyWindow.id.desc()).limit(limit)
    with store.session() as session:
        return [_window(row) for row in session.scalars(query)]


@dataclass(frozen=True)
class TestRecord:
    id: int
    hub: str
    event: str | None
    at: datetime
    passed: bool
    report: dict[str, Any]


def record_test(store: _HasSession, hub: str, event: str | None, passed: bool, report: dict[str, Any]) -> int:
    with store.session() as session, session.begin():
        row = ReadinessTest(hub=hub, event=event, at=utcnow(), passed=passed, report=report)
        session.add(row)
        session.flush()
        return row.id


def tests(store: _HasSession, hub: str, event: str | None = None, limit: int = 20) -> list[TestRecord]:
    """Readiness tests of a hub (of one event), newest first."""
    query = select(ReadinessTest).where(ReadinessTest.hub == hub)
    if event is not None:
        query = query.where(ReadinessTest.event == event)
    query = query.order_by(ReadinessTest.at.desc(), ReadinessTest.id.desc()).limit(limit)
    with store.session() as session:
        return [
            TestRecord(r.id, r.hub, r.event, as_utc(r.at), r.passed, r.report) for r in session.scalars(query)
        ]


@dataclass(frozen=True)
class ReportRecord:
    hub: str
    event: str
    made_at: datetime
    report: dict[str, Any]
    sent_to: list[str] | None
    error: str | None


def save_report(
    store: _HasSession,
    hub: str,
    event: str,
    report: dict[str, Any],
    *,
    sent_to: list[str] | None = None,
    error: str | None = None,
) -> None:
    with store.session() as session, session.begin():
        row = session.get(EventReport, (hub, event))
        if row is None:
            row = EventReport(hub=hub, event=event, made_at=utcnow(), report=report)
            session.add(row)
        row.made_at, row.report, row.sent_to, row.error = utcnow(), report, sent_to, error


def report(store: _HasSession, hub: str, event: str) -> ReportRecord | None:
    with store.session() as session:
        row = session.get(EventReport, (hub, event))
        if row is None:
            return None
        return ReportRecord(row.hub, row.event, as_utc(row.made_at), row.report, row.sent_to, row.error)
