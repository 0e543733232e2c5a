"""A month's costs allocated (migration 0016): per billing account the billed total, and what each hub, user
and group carries of it, by line (direct, shared, idle, unallocated) and per day.

Written only by hubfleet.costs.allocation (a month's rows are replaced in one transaction) and read by
hubfleet.costs.queries. Amounts are integer micros (exact sums) and integer cents rounded by largest
remainder at each level, so that the cents add up too: lines to the account's billed cents, users and groups
to their hub's cents.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.store.models import Base

LINES = ("direct", "shared", "idle", "unallocated")
"""direct: the hub's own (tagged rows; on a price sheet its usage); shared: its part of the cluster's shared
cost; idle: its part of idle capacity (hub "" when the operator keeps it); unallocated: rows that map to no
cluster (hub "")."""


class CostAllocationAccount(Base):
    """One billing account (or price-sheet cluster, account `price-sheet:<cluster>`) in one month."""

    __tablename__ = "cost_allocation_accounts"
    __table_args__ = (UniqueConstraint("month", "account", name="uq_cost_allocation_accounts_month_account"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7))
    account: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    source: Mapped[str] = mapped_column(String(20))
    """import (a billing export) or price-sheet."""
    cluster: Mapped[str] = mapped_column(String(200), default="")
    """The price sheet's cluster ("" for imports)."""
    import_id: Mapped[int | None] = mapped_column(Integer)
    billed_micros: Mapped[int] = mapped_column(BigInteger)
    billed_cents: Mapped[int] = mapped_column(BigInteger)
    allocated_micros: Mapped[int] = mapped_column(BigInteger)
    allocated_at: Mapped[datetime]
    usage_until: Mapped[datetime]
    """Usage was counted up to here (the month's end, or the time of allocation in the current month)."""


class CostAllocationLine(Base):
    """What one hub (or, with hub "", the account itself) carries of one account's month, by line."""

    __tablename__ = "cost_allocation_lines"
    __table_args__ = (Index("ix_cost_allocation_lines_month_hub", "month", "hub"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7))
    account: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    cluster: Mapped[str] = mapped_column(String(200), default="")
    hub: Mapped[str] = mapped_column(String(200), default="")
    line: Mapped[str] = mapped_column(String(20))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class CostAllocationDay(Base):
    """The same per UTC day (micros only: for charts, run rates and anomalies)."""

    __tablename__ = "cost_allocation_days"
    __table_args__ = (
        Index("ix_cost_allocation_days_day", "day"),
        Index("ix_cost_allocation_days_month", "month"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7))
    account: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    hub: Mapped[str] = mapped_column(String(200), default="")
    line: Mapped[str] = mapped_column(String(20))
    day: Mapped[date] = mapped_column(Date)
    amount_micros: Mapped[int] = mapped_column(BigInteger)


class CostAllocationMember(Base):
    """What one user (kind "user"; "" is the hub's own overhead) or group (kind "group"; "(no group)" for
    users in none) of a hub carries of one account's month."""

    __tablename__ = "cost_allocation_members"
    __table_args__ = (Index("ix_cost_allocation_members_month_hub", "month", "hub"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7))
    account: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    hub: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(255))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
