"""The support desk's tables (migration 0019): tickets, their conversation, attachments, history, time log,
linked incidents, response-time alerts already raised, and the outbox of mail to send.

The logic lives in hubfleet.support; these are plain rows. Every change to a ticket adds a TicketEvent, so
a ticket's history is complete. Mail is written to TicketMail in the same transaction as the change it
tells of and sent by the daemon, so a console or CLI action never waits on (or fails over) an SMTP server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.store.models import Base

STATES = ("new", "open", "waiting", "escalated", "resolved", "closed")
"""waiting: for the requester (the response-time clocks stop)."""
ACTIVE_STATES = ("new", "open", "waiting", "escalated")


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_state", "state"),
        Index("ix_tickets_community", "community"),
        Index("ix_tickets_assignee", "assignee"),
        UniqueConstraint("hub", "intake_ref", name="uq_tickets_intake"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    """hub (the help button), email, console, cli."""
    hub: Mapped[str | None] = mapped_column(String(200), index=True)
    community: Mapped[str | None] = mapped_column(String(200))
    username: Mapped[str | None] = mapped_column(String(200))
    """The requester's username on `hub` (recognised through the hub's OAuth), if known."""
    requester_name: Mapped[str] = mapped_column(String(200), default="")
    requester_email: Mapped[str | None] = mapped_column(String(320), index=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    """The requester is who they say: signed in to the hub, a console account, or confirmed by mail link."""
    opened_by: Mapped[str | None] = mapped_column(String(200))
    """The console account that opened it on someone's behalf."""
    category: Mapped[str] = mapped_column(String(30))
    urgency: Mapped[str] = mapped_column(String(10))
    """What the requester chose; `priority` starts from it and first line may change it."""
    priority: Mapped[str] = mapped_column(String(10))
    subject: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(20), default="new")
    line: Mapped[str] = mapped_column(String(10), default="first")
    assignee: Mapped[str | None] = mapped_column(String(200))
    page_url: Mapped[str | None] = mapped_column(String(2000))
    environment: Mapped[str | None] = mapped_column(String(200))
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The hub's state at the moment the ticket was opened (hubfleet.support.context)."""
    intake_ref: Mapped[str | None] = mapped_column(String(100))
    """The hub support service's own id of the request (a re-fetched request is not a second ticket)."""
    mail_thread: Mapped[str | None] = mapped_column(String(400), index=True)
    """Message-ID of the ticket's first mail (received or sent): replies that reference it thread here."""
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    pauses: Mapped[list[list[str | None]]] = mapped_column(JSON, default=list)
    """[[start, end or null], ...] as ISO times: while waiting for the requester."""
    due_first_response: Mapped[datetime | None]
    due_resolution: Mapped[datetime | None]
    """When the targets fall due (None while paused, or once met): what the queue sorts and filters by."""
    confirm_token_hash: Mapped[str | None] = mapped_column(String(64))
    survey_token_hash: Mapped[str | None] = mapped_column(String(64))
    survey_score: Mapped[int | None] = mapped_column(Integer)
    survey_comment: Mapped[str | None] = mapped_column(Text)


class TicketMessage(Base):
    __tablename__ = "ticket_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    author: Mapped[str] = mapped_column(String(320))
    """A console account, the requester's name or address, or 'hubfleet'."""
    author_kind: Mapped[str] = mapped_column(String(20))
    """requester, staff, system."""
    public: Mapped[bool] = mapped_column(Boolean)
    """False: an internal note, never shown or mailed to the requester."""
    body: Mapped[str] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String(20))
    """hub, email, console, cli."""
    mail_id: Mapped[str | None] = mapped_column(String(400), index=True)
    """Message-ID of the mail that carried it (received or sent)."""
    verified: Mapped[bool] = mapped_column(Boolean, default=True)
    """False for mail that claims to be from the requester of a ticket not yet confirmed."""


class TicketAttachment(Base):
    __tablename__ = "ticket_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int | None] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime]


class TicketEvent(Base):
    """One line of a ticket's history."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(30))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TicketTime(Base):
    """Time someone spent on a ticket (counts against the community's support-hours budget)."""

    __tablename__ = "ticket_time"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    community: Mapped[str | None] = mapped_column(String(200), index=True)
    account: Mapped[str] = mapped_column(String(200))
    minutes: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(index=True)


class TicketIncident(Base):
    __tablename__ = "ticket_incidents"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    linked_at: Mapped[datetime]
    resolution_noted_at: Mapped[datetime | None]


class TicketAlert(Base):
    """A response-time warning or miss already raised (each once per ticket, target and level)."""

    __tablename__ = "ticket_alerts"
    __table_args__ = (UniqueConstraint("ticket_id", "target", "level", name="uq_ticket_alerts_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(20))
    """first_response, resolution."""
    level: Mapped[str] = mapped_column(String(10))
    """warning, missed."""
    at: Mapped[datetime]


class TicketMail(Base):
    """Mail to send (the outbox), and what became of it."""

    __tablename__ = "ticket_mail"
    __table_args__ = (Index("ix_ticket_mail_pending", "sent_at", "attempts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    """reply, resolved, assigned, confirm, received, sla."""
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(400))
    body: Mapped[str] = mapped_column(Text)
    mail_id: Mapped[str] = mapped_column(String(400))
    """Its Message-ID; In-Reply-To / References point at the ticket's thread."""
    in_reply_to: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
