"""Tickets: opening one, the conversation, the states of first and second line, time logged, linked
incidents, the requester's confirmation and survey. Every function is one transaction; every change adds a
line to the ticket's history, and mail it causes goes to the outbox (TicketMail) in that same transaction.

States: new -> open (a first reply or a triage) -> waiting (for the requester: the response-time clocks
stop) -> open again when they answer; open/new -> escalated (second line, with a reason) -> resolved ->
closed (auto_close_days after resolving; a requester's message reopens a resolved ticket, not a closed one).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hubfleet.clock import require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_support import CATEGORIES, PRIORITIES, Support
from hubfleet.settings import UserError
from hubfleet.store.api import Store
from hubfleet.store.tickets import (
    ACTIVE_STATES,
    STATES,
    Ticket,
    TicketAttachment,
    TicketEvent,
    TicketIncident,
    TicketMail,
    TicketMessage,
    TicketTime,
)
from hubfleet.support import calendar as cal
from hubfleet.support.rota import on_duty

MAX_SUBJECT = 300
MAX_BODY = 50_000
"""Characters in one message: a pasted traceback fits, a pasted data file does not."""
ATTACHMENT_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "application/pdf": (b"%PDF-",),
}
"""What an attachment may be (a screenshot or a PDF), with the bytes each must start with: the type a client
claims is not trusted."""
SOURCES = ("hub", "email", "console", "cli")
PAUSED_STATES = ("waiting", "resolved", "closed")
"""The response-time clocks stand still: waiting for the requester, or resolved (a requester's answer that
opens a resolved ticket again starts them where they stopped, not counting the days it lay resolved)."""


class TicketError(UserError):
    """Bad input or a change the ticket's state does not allow; the message says what to do."""


class TicketNotFound(TicketError):
    pass


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes
    content_type: str = ""
    """As claimed; the bytes decide (attachment_type)."""


@dataclass
class NewTicket:
    source: str
    category: str
    urgency: str
    subject: str
    description: str
    hub: str | None = None
    username: str | None = None
    requester_name: str = ""
    requester_email: str | None = None
    verified: bool = False
    opened_by: str | None = None
    page_url: str | None = None
    environment: str | None = None
    context: dict[str, Any] | None = None
    intake_ref: str | None = None
    mail_id: str | None = None
    """Message-ID of the mail that opened it: the ticket's thread."""
    attachments: list[Attachment] = field(default_factory=list)


# --------------------------------------------------------------------------- checks


def attachment_type(attachment: Attachment, limit: int) -> str:
    """The attachment's content type, from its bytes; TicketError naming the file when it is too large, empty
    or not a screenshot or PDF."""
    name = attachment.filename or "the attachment"
    if not attachment.data:
        raise TicketError(f"{name} is empty; attach a screenshot (PNG, JPEG, GIF, WebP) or a PDF")
    if len(attachment.data) > limit:
        raise TicketError(
            f"{name} is {len(attachment.data) / 1_048_576:.1f} MiB; attachments may be up to "
            f"{limit / 1_048_576:.1f} MiB (crop the screenshot, or share a link to the file)"
        )
    for content_type, magics in ATTACHMENT_TYPES.items():
        if any(attachment.data.startswith(magic) for magic in magics):
            if content_type == "image/webp" and attachment.data[8:12] != b"WEBP":
                continue
            return content_type
    raise TicketError(f"{name} is not a screenshot (PNG, JPEG, GIF, WebP) or a PDF; attach one of those")


def clean_filename(name: str) -> str:
    """A file name safe to show and to offer as a download name."""
    base = re.sub(r"[^\w.\- ]+", "_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")
    return (base or "attachment")[:200]


def _text(value: str, what: str, limit: int, *, required: bool = True) -> str:
    text = (value or "").replace("\r\n", "\n").replace("\x00", "").strip()
    if required and not text:
        raise TicketError(f"the {what} is empty; write what happened and what you expected")
    if len(text) > limit:
        raise TicketError(
            f"the {what} has {len(text):,} characters; keep it under {limit:,} (attach the rest)"
        )
    return text


def _check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise TicketError(f"'{value}' is not a {what}; choose one of: {', '.join(allowed)}")
    return value


def _console_account(fleet: FleetConfig, username: str, what: str) -> None:
    accounts = {a.username: a for a in fleet.settings.console.accounts}
    account = accounts.get(username)
    if account is None or account.role != "operator":
        raise TicketError(
            f"{what} '{username}' is not an operator console account; "
            f"choose one of: {', '.join(n for n, a in accounts.items() if a.role == 'operator') or 'none'}"
        )


# --------------------------------------------------------------------------- helpers


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def support_of(fleet: FleetConfig) -> Support:
    return fleet.settings.support


def public_url(fleet: FleetConfig) -> str:
    """Where requesters open /help/ links: support.public_url, console.public_url, the front door's."""
    url = support_of(fleet).public_url or fleet.console_url()
    if url is None:
        port = fleet.settings.monitoring.metrics_port
        url = f"http://127.0.0.1:{port}" if port else "http://127.0.0.1"
    return url.rstrip("/")


def console_link(fleet: FleetConfig, ticket_id: int) -> str:
    """The ticket's page in the console, for staff (requesters never get this link)."""
    base = fleet.console_url()
    if base is None:
        port = fleet.settings.monitoring.metrics_port
        base = f"http://127.0.0.1:{port}" if port else "http://127.0.0.1"
    return f"{base.rstrip('/')}/tickets/{ticket_id}"


def _pauses(ticket: Ticket) -> list[tuple[datetime, datetime | None]]:
    return [
        (datetime.fromisoformat(str(start)), datetime.fromisoformat(end) if end else None)
        for start, end in ticket.pauses or []
    ]


def _set_dues(fleet: FleetConfig, ticket: Ticket) -> None:
    support = support_of(fleet)
    target = support.targets[ticket.priority]  # type: ignore[index]
    pauses = _pauses(ticket)
    created = require_aware(ticket.created_at)
    active = ticket.state in ACTIVE_STATES
    ticket.due_first_response = (
        cal.due(support.calendar, created, target.first_response_hours, pauses)
        if active and ticket.first_response_at is None
        else None
    )
    ticket.due_resolution = (
        cal.due(support.calendar, created, target.resolution_hours, pauses) if active else None
    )


def _event(session: Session, ticket: Ticket, actor: str, action: str, now: datetime, **detail: Any) -> None:
    session.add(TicketEvent(ticket_id=ticket.id, at=now, actor=actor, action=action, detail=detail))
    ticket.updated_at = now


def _mail_domain(fleet: FleetConfig) -> str:
    address = support_of(fleet).address
    return address.rsplit("@", 1)[-1] if address else "hubfleet.invalid"


def _queue_mail(
    session: Session,
    fleet: FleetConfig,
    ticket: Ticket,
    kind: str,
    recipient: str,
    subject: str,
    body: str,
    now: datetime,
) -> None:
    mail_id = make_msgid(idstring=f"ticket-{ticket.id}", domain=_mail_domain(fleet))
    if ticket.mail_thread is None:
        ticket.mail_thread = mail_id
    session.add(
        TicketMail(
            ticket_id=ticket.id,
            kind=kind,
            recipient=recipient,
            subject=f"[#{ticket.id}] {subject}",
            body=body,
            mail_id=mail_id,
            in_reply_to=None if ticket.mail_thread == mail_id else ticket.mail_thread,
            created_at=now,
            attempts=0,
            next_attempt_at=now,
        )
    )


def _footer(fleet: FleetConfig) -> str:
    return (
        "\n\n--\nReply to this mail to add to your request (keep the [#N] in the subject).\n"
        f"{fleet.settings.display_name or fleet.settings.name} support"
    )


def _assignee_email(fleet: FleetConfig, assignee: str | None) -> str | None:
    for account in fleet.settings.console.accounts:
        if account.username == assignee:
            return account.email
    return None


def _tell_assignee(session: Session, fleet: FleetConfig, ticket: Ticket, now: datetime, why: str) -> None:
    address = _assignee_email(fleet, ticket.assignee)
    if address:
        body = (
            f"{why}\n\nTicket #{ticket.id}: {ticket.subject}\nHub: {ticket.hub or '(none yet)'}\n"
            f"Priority: {ticket.priority}\nState: {ticket.state}\n\n{console_link(fleet, ticket.id)}"
        )
        _queue_mail(
            session, fleet, ticket, "assigned", address, f"Assigned to you: {ticket.subject}", body, now
        )


def mail_assignee(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    subject: str,
    body: str,
    *,
    kind: str = "sla",
    now: datetime | None = None,
) -> str | None:
    """Queue a mail to the ticket's assignee (an account with an `email`), e.g. a response-time warning;
    returns the address, or None when the ticket has no assignee with one (nothing is queued)."""
    now = require_aware(now)
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        address = _assignee_email(fleet, ticket.assignee)
        if address:
            _queue_mail(session, fleet, ticket, kind, address, subject, body, now)
        return address


def _load(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise TicketNotFound(f"there is no ticket #{ticket_id}; `hubfleet tickets list` shows them")
    return ticket


def _store_attachments(
    session: Session,
    fleet: FleetConfig,
    ticket: Ticket,
    message_id: int,
    attachments: Sequence[Attachment],
    now: datetime,
) -> None:
    limit = support_of(fleet).max_attachment_bytes
    for attachment in attachments:
        content_type = attachment_type(attachment, limit)
        session.add(
            TicketAttachment(
                ticket_id=ticket.id,
                message_id=message_id,
                filename=clean_filename(attachment.filename),
                content_type=content_type,
                size=len(attachment.data),
                sha256=hashlib.sha256(attachment.data).hexdigest(),
                data=attachment.data,
                at=now,
            )
        )


# --------------------------------------------------------------------------- opening


def open_ticket(store: Store, fleet: FleetConfig, new: NewTicket, *, now: datetime | None = None) -> int:
    """Record a new ticket, give it to the first-line account on duty, acknowledge it to the requester (and
    ask an unverified mail sender to confirm); returns its id. All checks run before anything is written."""
    now = require_aware(now)
    _check_choice(new.source, SOURCES, "ticket source")
    _check_choice(new.category, list(CATEGORIES), "category")
    _check_choice(new.urgency, PRIORITIES, "urgency")
    subject = _text(new.subject, "subject", MAX_SUBJECT, required=False)
    description = _text(new.description, "description", MAX_BODY)
    subject = subject or description.splitlines()[0][:120]
    if new.hub is not None and new.hub not in fleet.hubs:
        raise TicketError(f"there is no hub '{new.hub}' in this fleet; choose one of `hubfleet status`")
    limit = support_of(fleet).max_attachment_bytes
    for attachment in new.attachments:
        attachment_type(attachment, limit)
    community = fleet.hubs[new.hub].community if new.hub else None
    assignee = on_duty(support_of(fleet), now)
    confirm_token = None
    with store.session() as session, session.begin():
        ticket = Ticket(
            source=new.source,
            hub=new.hub,
            community=community,
            username=new.username,
            requester_name=new.requester_name[:200],
            requester_email=new.requester_email,
            verified=new.verified,
            opened_by=new.opened_by,
            category=new.category,
            urgency=new.urgency,
            priority=new.urgency,
            subject=subject,
            state="new",
            line="first",
            assignee=assignee,
            page_url=(new.page_url or None) and new.page_url[:2000],
            environment=new.environment,
            context=new.context,
            intake_ref=new.intake_ref,
            mail_thread=new.mail_id,
            created_at=now,
            updated_at=now,
            pauses=[],
        )
        if not new.verified and new.requester_email:
            confirm_token = secrets.token_urlsafe(24)
            ticket.confirm_token_hash = hash_token(confirm_token)
        session.add(ticket)
        session.flush()
        _set_dues(fleet, ticket)
        message = TicketMessage(
            ticket_id=ticket.id,
            at=now,
            author=new.requester_email or new.username or new.requester_name or "?",
            author_kind="requester",
            public=True,
            body=description,
            via=new.source,
            mail_id=new.mail_id,
            verified=new.verified,
        )
        session.add(message)
        session.flush()
        _store_attachments(session, fleet, ticket, message.id, new.attachments, now)
        _event(
            session,
            ticket,
            new.opened_by or new.username or new.requester_email or "requester",
            "opened",
            now,
            source=new.source,
            hub=new.hub,
            assignee=assignee,
            priority=ticket.priority,
            verified=new.verified,
        )
        if new.requester_email:
            if confirm_token is not None:
                body = (
                    f"We received a request for help from this address:\n\n  {subject}\n\n"
                    "Mail is not proof of who sent it, so please confirm it was you by opening this link:\n\n"
                    f"  {public_url(fleet)}/help/confirm/{confirm_token}\n\n"
                    "If you did not write to us, ignore this mail." + _footer(fleet)
                )
                _queue_mail(
                    session,
                    fleet,
                    ticket,
                    "confirm",
                    new.requester_email,
                    f"Please confirm: {subject}",
                    body,
                    now,
                )
            else:
                body = (
                    f"We received your request and will answer within our response time.\n\n  {subject}"
                    + _footer(fleet)
                )
                _queue_mail(
                    session, fleet, ticket, "received", new.requester_email, f"Received: {subject}", body, now
                )
        _tell_assignee(session, fleet, ticket, now, "A new ticket is yours to triage (first line on duty).")
        return ticket.id


# --------------------------------------------------------------------------- the conversation


def add_message(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    *,
    author: str,
    author_kind: str,
    body: str,
    public: bool = True,
    via: str = "console",
    mail_id: str | None = None,
    verified: bool = True,
    attachments: Sequence[Attachment] = (),
    state: str | None = None,
    now: datetime | None = None,
) -> int:
    """Add a reply or note; returns the message's id.

    staff, public: the first such reply is the first response; the ticket then waits for the requester
    (unless `state` says otherwise) and the requester is mailed. staff, not public: an internal note.
    requester: a waiting or resolved ticket opens again (its clocks run); a closed one is an error (open a
    follow-up ticket instead)."""
    now = require_aware(now)
    _check_choice(author_kind, ("requester", "staff", "system"), "author kind")
    text = _text(body, "message", MAX_BODY)
    if state is not None:
        _check_choice(state, ("open", "waiting", "escalated"), "state after a reply")
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        if ticket.state == "closed":
            raise TicketError(f"ticket #{ticket.id} is closed; open a new ticket that refers to it")
        if author_kind == "requester" and not public:
            raise TicketError("a requester's message is always public")
        message = TicketMessage(
            ticket_id=ticket.id,
            at=now,
            author=author,
            author_kind=author_kind,
            public=public,
            body=text,
            via=via,
            mail_id=mail_id,
            verified=verified,
        )
        session.add(message)
        session.flush()
        _store_attachments(session, fleet, ticket, message.id, attachments, now)
        if author_kind == "requester":
            _event(session, ticket, author, "requester_reply", now, message=message.id, verified=verified)
            if ticket.state in ("waiting", "resolved"):
                _change_state(session, fleet, ticket, "open", author, now)
        elif author_kind == "staff" and public:
            _event(session, ticket, author, "reply", now, message=message.id)
            if ticket.first_response_at is None:
                ticket.first_response_at = now
            target = state or "waiting"
            if ticket.state != target:
                _change_state(session, fleet, ticket, target, author, now)
            if ticket.requester_email:
                _queue_mail(
                    session,
                    fleet,
                    ticket,
                    "reply",
                    ticket.requester_email,
                    f"Re: {ticket.subject}",
                    text + _footer(fleet),
                    now,
                )
        else:
            _event(session, ticket, author, "note", now, message=message.id)
            if state is not None and ticket.state != state:
                _change_state(session, fleet, ticket, state, author, now)
        _set_dues(fleet, ticket)
        return message.id


def _change_state(
    session: Session, fleet: FleetConfig, ticket: Ticket, state: str, actor: str, now: datetime, **detail: Any
) -> None:
    before = ticket.state
    pauses = [list(p) for p in ticket.pauses or []]
    paused_before, paused_after = before in PAUSED_STATES, state in PAUSED_STATES
    if paused_before and not paused_after and pauses and pauses[-1][1] is None:
        pauses[-1][1] = now.isoformat()
    if paused_after and not paused_before:
        pauses.append([now.isoformat(), None])
    ticket.pauses = pauses
    ticket.state = state
    if state == "resolved":
        ticket.resolved_at = now
    elif state == "closed":
        ticket.closed_at = now
    elif before == "resolved":
        ticket.resolved_at = None
    _event(session, ticket, actor, "state", now, before=before, after=state, **detail)
    _set_dues(fleet, ticket)


def set_state(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    state: str,
    *,
    actor: str,
    reason: str = "",
    now: datetime | None = None,
) -> None:
    """Move a ticket to `state` by hand (open, waiting; resolve, escalate and close have their own)."""
    now = require_aware(now)
    _check_choice(state, ("open", "waiting"), "state to set by hand (resolve and escalate have their own)")
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        if ticket.state == "closed":
            raise TicketError(f"ticket #{ticket.id} is closed; open a new ticket that refers to it")
        if ticket.state != state:
            _change_state(session, fleet, ticket, state, actor, now, reason=reason)


def assign(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    assignee: str | None,
    *,
    actor: str,
    now: datetime | None = None,
) -> None:
    """Give the ticket to an operator console account (None: nobody)."""
    now = require_aware(now)
    if assignee is not None:
        _console_account(fleet, assignee, "assignee")
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        if ticket.assignee == assignee:
            return
        _event(session, ticket, actor, "assigned", now, before=ticket.assignee, after=assignee)
        ticket.assignee = assignee
        if assignee != actor:
            _tell_assignee(session, fleet, ticket, now, f"{actor} gave you this ticket.")


def escalate(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    *,
    reason: str,
    actor: str,
    to: str | None = None,
    now: datetime | None = None,
) -> None:
    """Hand the ticket to second line with a reason (required): to `to`, else the first of
    support.second_line, else nobody (the escalated queue)."""
    now = require_aware(now)
    why = _text(reason, "reason for escalating", 2000)
    target = to or next(iter(support_of(fleet).second_line), None)
    if target is not None:
        _console_account(fleet, target, "second-line account")
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        if ticket.state in ("resolved", "closed"):
            raise TicketError(f"ticket #{ticket.id} is {ticket.state}; reopen it before escalating")
        ticket.line = "second"
        _event(session, ticket, actor, "escalated", now, reason=why, to=target)
        if ticket.state != "escalated":
            _change_state(session, fleet, ticket, "escalated", actor, now)
        if ticket.assignee != target:
            _event(session, ticket, actor, "assigned", now, before=ticket.assignee, after=target)
            ticket.assignee = target
            _tell_assignee(session, fleet, ticket, now, f"{actor} escalated this ticket to you: {why}")


def set_priority(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    priority: str,
    *,
    actor: str,
    now: datetime | None = None,
) -> None:
    now = require_aware(now)
    _check_choice(priority, PRIORITIES, "priority")
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        if ticket.priority != priority:
            _event(session, ticket, actor, "priority", now, before=ticket.priority, after=priority)
            ticket.priority = priority
            _set_dues(fleet, ticket)


def resolve(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    *,
    actor: str,
    summary: str = "",
    now: datetime | None = None,
) -> None:
    """Resolve: the requester is told (with `summary`, if given, as a public reply) and asked one question
    about how it went."""
    now = require_aware(now)
    text = _text(summary, "summary", MAX_BODY, required=False)
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        if ticket.state in ("resolved", "closed"):
            raise TicketError(f"ticket #{ticket.id} is already {ticket.state}")
        if text:
            session.add(
                TicketMessage(
                    ticket_id=ticket.id,
                    at=now,
                    author=actor,
                    author_kind="staff",
                    public=True,
                    body=text,
                    via="console",
                    verified=True,
                )
            )
            if ticket.first_response_at is None:
                ticket.first_response_at = now
        _change_state(session, fleet, ticket, "resolved", actor, now, summary=text)
        if ticket.requester_email:
            token = secrets.token_urlsafe(24)
            ticket.survey_token_hash = hash_token(token)
            survey = f"{public_url(fleet)}/help/survey/{token}"
            body = (
                (text + "\n\n" if text else "")
                + "We consider your request resolved. If it is not, reply to this mail to open it again.\n\n"
                f"One question: how satisfied are you with the help you got? {survey}" + _footer(fleet)
            )
            _queue_mail(
                session,
                fleet,
                ticket,
                "resolved",
                ticket.requester_email,
                f"Resolved: {ticket.subject}",
                body,
                now,
            )


def close_resolved(store: Store, fleet: FleetConfig, *, now: datetime | None = None) -> list[int]:
    """Close tickets resolved more than support.auto_close_days ago; returns their ids."""
    now = require_aware(now)
    cutoff = now - timedelta(days=support_of(fleet).auto_close_days)
    closed: list[int] = []
    with store.session() as session, session.begin():
        for ticket in session.scalars(
            select(Ticket).where(Ticket.state == "resolved", Ticket.resolved_at <= cutoff)
        ):
            _change_state(session, fleet, ticket, "closed", "hubfleet", now, reason="auto-close")
            closed.append(ticket.id)
    return closed


def log_time(
    store: Store, ticket_id: int, *, account: str, minutes: int, note: str = "", now: datetime | None = None
) -> None:
    """Time spent on the ticket: it counts against the community's support-hours budget."""
    now = require_aware(now)
    if not 1 <= minutes <= 24 * 60:
        raise TicketError(f"{minutes} minutes: log between 1 and 1440 minutes at a time")
    text = _text(note, "note", 2000, required=False)
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        session.add(
            TicketTime(
                ticket_id=ticket.id,
                community=ticket.community,
                account=account,
                minutes=minutes,
                note=text,
                at=now,
            )
        )
        _event(session, ticket, account, "time", now, minutes=minutes, note=text)


def attach_hub(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    hub: str,
    *,
    actor: str,
    context: dict[str, Any] | None,
    now: datetime | None = None,
) -> None:
    """Name the hub of a ticket that came without one (mail from an address of several hubs' users)."""
    now = require_aware(now)
    if hub not in fleet.hubs:
        raise TicketError(f"there is no hub '{hub}' in this fleet")
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        _event(session, ticket, actor, "hub", now, before=ticket.hub, after=hub)
        ticket.hub = hub
        ticket.community = fleet.hubs[hub].community
        if context is not None:
            ticket.context = context
        session.execute(
            TicketTime.__table__.update()
            .where(TicketTime.ticket_id == ticket.id)
            .values(community=ticket.community)
        )


# --------------------------------------------------------------------------- incidents


def link_incident(store: Store, ticket_id: int, incident_id: int, *, now: datetime | None = None) -> bool:
    """Link an incident of the ticket's hub (once); True when newly linked."""
    now = require_aware(now)
    with store.session() as session, session.begin():
        ticket = _load(session, ticket_id)
        if session.get(TicketIncident, (ticket_id, incident_id)) is not None:
            return False
        session.add(TicketIncident(ticket_id=ticket_id, incident_id=incident_id, linked_at=now))
        _event(session, ticket, "hubfleet", "incident", now, incident=incident_id)
        return True


def note_incident_resolved(
    store: Store, ticket_id: int, incident_id: int, text: str, *, now: datetime | None = None
) -> bool:
    """Note on the ticket (internally) that a linked incident was resolved (once); True when noted now."""
    now = require_aware(now)
    with store.session() as session, session.begin():
        link = session.get(TicketIncident, (ticket_id, incident_id))
        if link is None or link.resolution_noted_at is not None:
            return False
        link.resolution_noted_at = now
        ticket = _load(session, ticket_id)
        session.add(
            TicketMessage(
                ticket_id=ticket_id,
                at=now,
                author="hubfleet",
                author_kind="system",
                public=False,
                body=text,
                via="hubfleet",
                verified=True,
            )
        )
        _event(session, ticket, "hubfleet", "incident_resolved", now, incident=incident_id)
        return True


# --------------------------------------------------------------------------- the requester's links


def confirm_requester(store: Store, token: str, *, now: datetime | None = None) -> int | None:
    """The mail sender opened their confirmation link: the ticket and its messages from them are verified.
    Returns the ticket's id, or None for an unknown (or used) token."""
    now = require_aware(now)
    with store.session() as session, session.begin():
        ticket = session.scalar(select(Ticket).where(Ticket.confirm_token_hash == hash_token(token)))
        if ticket is None:
            return None
        ticket.verified = True
        ticket.confirm_token_hash = None
        for message in session.scalars(
            select(TicketMessage).where(
                TicketMessage.ticket_id == ticket.id, TicketMessage.author_kind == "requester"
            )
        ):
            if message.author.lower() == (ticket.requester_email or "").lower():  # not others on the thread
                message.verified = True
        _event(session, ticket, ticket.requester_email or "requester", "verified", now)
        return ticket.id


def record_survey(
    store: Store, token: str, score: int, comment: str = "", *, now: datetime | None = None
) -> int | None:
    """The answer to the one question (1 = very unhappy .. 5 = very happy); the last answer counts. Returns
    the ticket's id, or None for an unknown token."""
    now = require_aware(now)
    if not 1 <= score <= 5:
        raise TicketError("choose a score from 1 (very unhappy) to 5 (very happy)")
    text = _text(comment, "comment", 5000, required=False)
    with store.session() as session, session.begin():
        ticket = session.scalar(select(Ticket).where(Ticket.survey_token_hash == hash_token(token)))
        if ticket is None:
            return None
        ticket.survey_score = score
        ticket.survey_comment = text or None
        _event(session, ticket, ticket.requester_email or "requester", "survey", now, score=score)
        return ticket.id


# --------------------------------------------------------------------------- reading


def targets_status(fleet: FleetConfig, ticket: Ticket, now: datetime | None = None) -> dict[str, Any]:
    """Per target (first_response, resolution): hours allowed, working hours used (paused time left out),
    when due, and met / missed / running / paused."""
    now = require_aware(now)
    support = support_of(fleet)
    target = support.targets[ticket.priority]  # type: ignore[index]
    pauses = _pauses(ticket)
    created = require_aware(ticket.created_at)
    out: dict[str, Any] = {}
    for name, hours, done_at, due_at in (
        ("first_response", target.first_response_hours, ticket.first_response_at, ticket.due_first_response),
        (
            "resolution",
            target.resolution_hours,
            ticket.resolved_at or ticket.closed_at,
            ticket.due_resolution,
        ),
    ):
        until = require_aware(done_at) if done_at else now
        used = cal.elapsed(support.calendar, created, until, pauses) / 3600
        if done_at is not None or ticket.state not in ACTIVE_STATES:
            status = "met" if used <= hours else "missed"
        elif ticket.state == "waiting":
            status = "paused" if used <= hours else "missed"
        else:
            status = "running" if used <= hours else "missed"
        out[name] = {
            "target_hours": hours,
            "used_hours": round(used, 3),
            "percent": round(100 * used / hours, 1),
            "due": due_at.isoformat() if due_at else None,
            "status": status,
        }
    return out


def ticket_summary(fleet: FleetConfig, ticket: Ticket, now: datetime | None = None) -> dict[str, Any]:
    """A ticket as the queue shows it (no conversation, no context)."""
    return {
        "id": ticket.id,
        "subject": ticket.subject,
        "state": ticket.state,
        "priority": ticket.priority,
        "urgency": ticket.urgency,
        "category": ticket.category,
        "line": ticket.line,
        "assignee": ticket.assignee,
        "hub": ticket.hub,
        "community": ticket.community,
        "username": ticket.username,
        "requester_name": ticket.requester_name,
        "requester_email": ticket.requester_email,
        "verified": ticket.verified,
        "source": ticket.source,
        "created_at": require_aware(ticket.created_at).isoformat(),
        "updated_at": require_aware(ticket.updated_at).isoformat(),
        "first_response_at": ticket.first_response_at.isoformat() if ticket.first_response_at else None,
        "resolved_at": ticket.resolved_at.isoformat() if ticket.resolved_at else None,
        "closed_at": ticket.closed_at.isoformat() if ticket.closed_at else None,
        "targets": targets_status(fleet, ticket, now),
        "survey_score": ticket.survey_score,
    }


def list_tickets(
    store: Store,
    fleet: FleetConfig,
    *,
    communities: Sequence[str] | None = None,
    states: Sequence[str] | None = None,
    priority: str | None = None,
    community: str | None = None,
    assignee: str | None = None,
    hub: str | None = None,
    due_before: datetime | None = None,
    limit: int = 200,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Tickets, most urgent first (by the earlier due moment, then age). `communities`: the caller's scope
    (None: every ticket, those without a community too); `assignee` "none" means unassigned."""
    for state in states or ():
        _check_choice(state, STATES, "state")
    if priority is not None:
        _check_choice(priority, PRIORITIES, "priority")
    query = select(Ticket)
    if communities is not None:
        query = query.where(Ticket.community.in_(list(communities)))
    if states:
        query = query.where(Ticket.state.in_(list(states)))
    if priority:
        query = query.where(Ticket.priority == priority)
    if community:
        query = query.where(Ticket.community == community)
    if hub:
        query = query.where(Ticket.hub == hub)
    if assignee == "none":
        query = query.where(Ticket.assignee.is_(None))
    elif assignee:
        query = query.where(Ticket.assignee == assignee)
    due = func.coalesce(Ticket.due_first_response, Ticket.due_resolution)
    if due_before is not None:
        query = query.where(due <= due_before)
    query = query.order_by(due.is_(None), due, Ticket.created_at).limit(max(1, min(limit, 5000)))
    with store.session() as session:
        return [ticket_summary(fleet, t, now) for t in session.scalars(query)]


def get_ticket(
    store: Store,
    fleet: FleetConfig,
    ticket_id: int,
    *,
    public_only: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A ticket with its conversation, attachments (without their bytes), context, history, time log and
    linked incidents. `public_only`: without internal notes (what a requester may see)."""
    with store.session() as session:
        ticket = _load(session, ticket_id)
        out = ticket_summary(fleet, ticket, now)
        messages = session.scalars(
            select(TicketMessage)
            .where(TicketMessage.ticket_id == ticket_id)
            .order_by(TicketMessage.at, TicketMessage.id)
        ).all()
        out["messages"] = [
            {
                "id": m.id,
                "at": m.at.isoformat(),
                "author": m.author,
                "author_kind": m.author_kind,
                "public": m.public,
                "body": m.body,
                "via": m.via,
                "verified": m.verified,
            }
            for m in messages
            if m.public or not public_only
        ]
        shown = {m.id for m in messages if m.public or not public_only}
        out["attachments"] = [
            {
                "id": a.id,
                "message_id": a.message_id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in session.scalars(
                select(TicketAttachment)
                .where(TicketAttachment.ticket_id == ticket_id)
                .order_by(TicketAttachment.id)
            )
            if a.message_id in shown or not public_only  # an internal note's attachment stays internal
        ]
        out["page_url"] = ticket.page_url
        out["environment"] = ticket.environment
        out["context"] = ticket.context or {}
        out["pauses"] = ticket.pauses or []
        if not public_only:
            out["history"] = [
                {"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "detail": e.detail}
                for e in session.scalars(
                    select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)
                )
            ]
            times = session.scalars(
                select(TicketTime).where(TicketTime.ticket_id == ticket_id).order_by(TicketTime.id)
            )
            out["time_log"] = [
                {"at": t.at.isoformat(), "account": t.account, "minutes": t.minutes, "note": t.note}
                for t in times
            ]
            out["minutes_logged"] = sum(t["minutes"] for t in out["time_log"])
            out["incidents"] = [
                {
                    "incident_id": link.incident_id,
                    "linked_at": link.linked_at.isoformat(),
                    "resolution_noted_at": link.resolution_noted_at.isoformat()
                    if link.resolution_noted_at
                    else None,
                }
                for link in session.scalars(
                    select(TicketIncident).where(TicketIncident.ticket_id == ticket_id)
                )
            ]
        return out


def attachment(store: Store, ticket_id: int, attachment_id: int) -> TicketAttachment | None:
    """One attachment (with its bytes), only if it belongs to `ticket_id`."""
    with store.session() as session:
        found = session.get(TicketAttachment, attachment_id)
        if found is None or found.ticket_id != ticket_id:
            return None
        session.expunge(found)
        return found


def ticket_scope(store: Store, ticket_id: int) -> tuple[str | None, str | None] | None:
    """(community, hub) of a ticket, for access checks; None when it does not exist."""
    with store.session() as session:
        row = session.execute(select(Ticket.community, Ticket.hub).where(Ticket.id == ticket_id)).first()
        return (row[0], row[1]) if row else None


def token_ticket(store: Store, token: str, kind: str) -> int | None:
    """The ticket whose `kind` ("confirm" or "survey") link carries `token`, without using it up (the
    /help/ pages show their form before anything changes); None for an unknown or used token."""
    column = {"confirm": Ticket.confirm_token_hash, "survey": Ticket.survey_token_hash}[kind]
    with store.session() as session:
        found: int | None = session.scalar(select(Ticket.id).where(column == hash_token(token)))
        return found
