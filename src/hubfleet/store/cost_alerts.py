"""Budget alerts already raised (migration 0018): each threshold of a community's (or a hub's) budget alerts
once per month, also across daemon restarts and after an operator resolved the incident by hand.

Incidents themselves (hubfleet.monitor.incidents) say what is open now; this table says what was raised this
month, so a cost that dips under a threshold (a corrected bill) and climbs back does not alert twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import Integer, String, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from hubfleet.store.models import Base


class BudgetAlert(Base):
    """One budget rule raised for a community (and hub, for a hub's own budget) in one month."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("community", "hub", "month", "rule", name="uq_budget_alerts_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community: Mapped[str] = mapped_column(String(200))
    hub: Mapped[str] = mapped_column(String(200), default="")
    """Empty for the community's budget."""
    month: Mapped[str] = mapped_column(String(7))
    rule: Mapped[str] = mapped_column(String(50))
    """budget-50, budget-90, budget-100, forecast; hub-budget-... for a hub's budget."""
    incident_id: Mapped[int | None] = mapped_column(Integer)
    raised_at: Mapped[datetime]


class _HasSession(Protocol):
    def session(self) -> Session: ...


def raised(store: _HasSession, month: str) -> set[tuple[str, str, str]]:
    """(community, hub, rule) of every budget alert raised in `month` (hub "" for a community's budget)."""
    query = select(BudgetAlert.community, BudgetAlert.hub, BudgetAlert.rule).where(BudgetAlert.month == month)
    with store.session() as session:
        return {(community, hub, rule) for community, hub, rule in session.execute(query)}


def record_raised(
    store: _HasSession,
    community: str,
    hub: str,
    month: str,
    rule: str,
    *,
    at: datetime,
    incident_id: int | None = None,
) -> bool:
    """Record that `rule` was raised for `month`; False when it already was (another process was first)."""
    row = BudgetAlert(
        community=community, hub=hub, month=month, rule=rule, incident_id=incident_id, raised_at=at
    )
    try:
        with store.session() as session, session.begin():
            session.add(row)
    except IntegrityError:
        return False
    return True


def link_incident(
    store: _HasSession, community: str, hub: str, month: str, rule: str, incident_id: int
) -> None:
    """Note which incident a raised alert opened."""
    with store.session() as session, session.begin():
        session.execute(
            update(BudgetAlert)
            .where(
                BudgetAlert.community == community,
                BudgetAlert.hub == hub,
                BudgetAlert.month == month,
                BudgetAlert.rule == rule,
            )
            .values(incident_id=incident_id)
        )
