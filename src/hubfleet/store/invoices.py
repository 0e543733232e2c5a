"""Invoices and credit notes in the store (migration 0017), numbered from a gap-free sequence.

The stored document (lines, addresses, totals, notes as JSON) is the truth: the PDF, CSV and JSON files are
written from it and can be written again identically. An issued invoice is never changed.

Gap-free numbering: the sequence is advanced by the first statement of the transaction that records the
invoice (an upsert, which takes SQLite's write lock, or PostgreSQL's row lock, at once), so two processes
issuing at the same time wait for each other, and anything that fails before the commit rolls the number
back with the invoice. Functions take anything with `session()` (like store/events.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import JSON, BigInteger, Date, Index, Integer, String, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from hubfleet.clock import utcnow
from hubfleet.store.models import Base

MICROS = Decimal(1_000_000)


def to_micros(amount: Decimal) -> int:
    return int((amount * MICROS).to_integral_value())


def from_micros(micros: int) -> Decimal:
    return Decimal(micros) / MICROS


class _HasSession(Protocol):
    def session(self) -> Session: ...


class InvoiceSequence(Base):
    """The last number used per prefix and year."""

    __tablename__ = "invoice_sequences"

    prefix: Mapped[str] = mapped_column(String(20), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class Invoice(Base):
    """An issued invoice or credit note."""

    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_community_month", "community", "month"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    """invoice or credit_note."""
    community: Mapped[str] = mapped_column(String(200))
    month: Mapped[str] = mapped_column(String(7))
    once: Mapped[str | None] = mapped_column(String(220), unique=True)
    """`community/month` for invoices (one per community and month), unset for credit notes."""
    refers_to: Mapped[str | None] = mapped_column(String(40))
    """A credit note's invoice number."""
    issued_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    total_micros: Mapped[int] = mapped_column(BigInteger)
    """Credit notes: negative."""
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200), default="")


@dataclass(frozen=True)
class InvoiceRecord:
    number: str
    kind: str
    community: str
    month: str
    refers_to: str | None
    issued_on: date
    due_on: date
    currency: str
    total: Decimal
    document: dict[str, Any]

    @property
    def year(self) -> int:
        return self.issued_on.year

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "kind": self.kind,
            "community": self.community,
            "month": self.month,
            "refers_to": self.refers_to,
            "issued_on": self.issued_on.isoformat(),
            "due_on": self.due_on.isoformat(),
            "currency": self.currency,
            "total": str(self.total),
        }


@dataclass(frozen=True)
class Issued:
    """What `issue` did: `created` False means an invoice for that community and month existed already."""

    record: InvoiceRecord
    created: bool


class Refused(ValueError):
    """A check inside the issuing transaction said no (a credit note larger than what is outstanding)."""


def _record(row: Invoice) -> InvoiceRecord:
    return InvoiceRecord(
        row.number,
        row.kind,
        row.community,
        row.month,
        row.refers_to,
        row.issued_on,
        row.due_on,
        row.currency,
        from_micros(row.total_micros).quantize(Decimal("0.01")),  # invoices are in cents
        row.document,
    )


def _next_number(session: Session, prefix: str, year: int) -> int:
    """Advance the (prefix, year) sequence and return its new value: one statement, a write first."""
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:  # another database: lock by updating first, then read
        row = session.get(InvoiceSequence, (prefix, year), with_for_update=True)
        if row is None:
            row = InvoiceSequence(prefix=prefix, year=year, last=0)
            session.add(row)
        row.last += 1
        session.flush()
        return row.last
    statement = insert(InvoiceSequence).values(prefix=prefix, year=year, last=1)
    statement = statement.on_conflict_do_update(
        index_elements=["prefix", "year"], set_={"last": InvoiceSequence.last + 1}
    ).returning(InvoiceSequence.last)
    return int(session.execute(statement).scalar_one())


def number_text(prefix: str, year: int, sequence: int) -> str:
    """PREFIX + year + 4-digit sequence: INV-2026-0001."""
    return f"{prefix}{year}-{sequence:04d}"


def issue(
    store: _HasSession,
    *,
    kind: str,
    community: str,
    month: str,
    document: dict[str, Any],
    prefix: str,
    issued_on: date,
    due_on: date,
    refers_to: str | None = None,
    check: Callable[[Session], None] | None = None,
    prepare: Callable[[dict[str, Any]], None] | None = None,
    actor: str = "",
) -> Issued:
    """Record `document` under the next number, all in one transaction. An invoice (`kind` invoice) for a
    community and month that has one already returns that one, unchanged, and uses no number. `check`
    runs inside the transaction after the lock (raise `Refused` to say no); `prepare` gets the numbered
    document before the commit (render the files there: a failure leaves neither invoice nor gap)."""
    once = f"{community}/{month}" if kind == "invoice" else None
    try:
        with store.session() as session, session.begin():
            sequence = _next_number(session, prefix, issued_on.year)
            if once is not None:
                existing = session.scalars(select(Invoice).where(Invoice.once == once)).first()
                if existing is not None:
                    raise _Exists(_record(existing))  # rolls the number back
            if check is not None:
                check(session)
            numbered = {**document, "number": number_text(prefix, issued_on.year, sequence)}
            if prepare is not None:
                prepare(numbered)
            row = Invoice(
                number=numbered["number"],
                kind=kind,
                community=community,
                month=month,
                once=once,
                refers_to=refers_to,
                issued_on=issued_on,
                due_on=due_on,
                currency=numbered["currency"],
                total_micros=to_micros(Decimal(numbered["total"])),
                document=numbered,
                created_at=utcnow(),
                actor=actor,
            )
            session.add(row)
            session.flush()
            record = _record(row)
    except _Exists as exists:
        return Issued(exists.record, created=False)
    return Issued(record, created=True)


class _Exists(Exception):
    def __init__(self, record: InvoiceRecord) -> None:
        self.record = record


def credited(session: Session, number: str) -> Decimal:
    """How much credit notes have taken off invoice `number` so far (a positive amount)."""
    total = session.scalar(
        select(func.coalesce(func.sum(Invoice.total_micros), 0)).where(
            Invoice.kind == "credit_note", Invoice.refers_to == number
        )
    )
    return -from_micros(int(total or 0))


def get_invoice(store: _HasSession, number: str) -> InvoiceRecord | None:
    with store.session() as session:
        row = session.scalars(select(Invoice).where(Invoice.number == number)).first()
        return _record(row) if row else None


def outstanding(store: _HasSession, number: str) -> Decimal:
    """What is left of invoice `number` after its credit notes."""
    with store.session() as session:
        row = session.scalars(select(Invoice).where(Invoice.number == number)).first()
        if row is None:
            raise KeyError(number)
        return from_micros(row.total_micros) - credited(session, number)


def find_invoice(store: _HasSession, community: str, month: str) -> InvoiceRecord | None:
    """The invoice of `community` for `month`, if issued."""
    with store.session() as session:
        row = session.scalars(select(Invoice).where(Invoice.once == f"{community}/{month}")).first()
        return _record(row) if row else None


def list_invoices(
    store: _HasSession, *, community: str | None = None, month: str | None = None
) -> list[InvoiceRecord]:
    """Invoices and credit notes, by number (which is issue order within a prefix and year)."""
    query = select(Invoice).order_by(Invoice.issued_on, Invoice.id)
    if community:
        query = query.where(Invoice.community == community)
    if month:
        query = query.where(Invoice.month == month)
    with store.session() as session:
        return [_record(row) for row in session.scalars(query)]


def numbers(store: _HasSession) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(Invoice.number).order_by(Invoice.id)))
