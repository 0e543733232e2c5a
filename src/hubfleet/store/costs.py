"""Cloud costs in the store (migration 0014): each imported billing export (one per billing account and month)
and its rows summed per day, sub-account, cluster, hub, charge category and service.

The raw rows stay in the engine's own files under the state directory (hubfleet.costs.focus_import); the store
keeps what allocation needs. Amounts are integers of millionths of the currency unit (micros), so sums are
exact and a cent is 10,000 micros.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.store.models import Base


class CostImport(Base):
    """One billing export for one billing account and month; a re-import of the same account and month
    replaces it (and its lines) in one transaction."""

    __tablename__ = "cost_imports"
    __table_args__ = (UniqueConstraint("account", "month", name="uq_cost_imports_account_month"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(200))
    """FOCUS BillingAccountId."""
    month: Mapped[str] = mapped_column(String(7))
    """The billing period, YYYY-MM (BillingPeriodStart's month)."""
    currency: Mapped[str] = mapped_column(String(3))
    rows: Mapped[int] = mapped_column(Integer)
    billed_micros: Mapped[int] = mapped_column(BigInteger)
    """The sum of BilledCost over every row: what the invoice of the cloud says."""
    effective_micros: Mapped[int | None] = mapped_column(BigInteger)
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """[{"name", "sha256", "rows"}] of the files this import read."""
    raw_path: Mapped[str] = mapped_column(Text, default="")
    """Where the raw rows were kept (relative to the state directory)."""
    imported_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200), default="")


class CostLine(Base):
    """The rows of one import summed per day, sub-account, cluster, hub, charge category and service.

    `cluster` and `hub` unset: the row mapped to nothing (the unallocated line). `cluster` set and `hub`
    unset: a shared cost of that cluster."""

    __tablename__ = "cost_lines"
    __table_args__ = (
        Index("ix_cost_lines_import", "import_id"),
        Index("ix_cost_lines_month_cluster", "month", "cluster"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    import_id: Mapped[int] = mapped_column(Integer)
    account: Mapped[str] = mapped_column(String(200))
    sub_account: Mapped[str] = mapped_column(String(200), default="")
    month: Mapped[str] = mapped_column(String(7))
    day: Mapped[date] = mapped_column(Date)
    """ChargePeriodStart's UTC day."""
    cluster: Mapped[str | None] = mapped_column(String(200))
    hub: Mapped[str | None] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(40))
    """FOCUS ChargeCategory: Usage, Purchase, Tax, Credit, Adjustment."""
    service: Mapped[str] = mapped_column(String(200), default="")
    currency: Mapped[str] = mapped_column(String(3))
    billed_micros: Mapped[int] = mapped_column(BigInteger)
    effective_micros: Mapped[int | None] = mapped_column(BigInteger)
    list_micros: Mapped[int | None] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
