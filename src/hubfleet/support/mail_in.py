"""Mail in: the SMTP listener that receives the fleet's support address, and what a received mail becomes.

Why a listener and not fetching from a mailbox (IMAP): hubfleet keeps no mailbox password, a mail becomes a
ticket the moment it arrives (no polling), and a failure is the SMTP reply the sending server sees (it
keeps the mail and tries again on a 4xx) rather than a mail left unread. The domain's MX, or a forwarding
rule of an existing mailbox, delivers to it; by default it listens on loopback behind the site's relay.

A received mail
- is ignored when it is an auto-reply (`Auto-Submitted` other than `no`, `Precedence: bulk|junk|auto_reply`,
  `X-Autoreply`), a bounce (empty envelope sender, MAILER-DAEMON, a delivery report), hubfleet's own mail
  coming back, or a copy of a mail already received (same Message-ID);
- threads onto a ticket when its In-Reply-To/References name the ticket's thread, one of its messages or a
  mail hubfleet sent about it; else when its subject carries `[#N]` and the sender is ticket N's requester.
  It is a requester message, verified only when the ticket is and the sender is its requester. A reply to a
  closed ticket opens a new ticket that refers to it;
- else opens a ticket (source email, unverified: mail is not proof of identity, so the core mails the sender
  a confirmation link). The hub is attached when the sender is a known user of exactly one hub (an email
  address the hub's sign-in asserted, or a username that is the address); else first line picks it.
Plain text is preferred over HTML; HTML is turned into text, never rendered; the quoted earlier mail is cut
off (mail_text). Screenshots and PDFs are kept; other attachments are dropped with a note on the ticket.
New tickets per sender are limited (MAX_NEW_PER_SENDER_HOUR, and MAX_NEW_PER_HOUR for all senders): more
are answered 451, so the sending server keeps the mail and tries again later; nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select

from hubfleet.clock import require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.settings import UserError
from hubfleet.store.api import Store
from hubfleet.store.identities import HubUserIdentity
from hubfleet.store.models import UserDay
from hubfleet.store.tickets import Ticket, TicketMail, TicketMessage
from hubfleet.support import tickets
from hubfleet.support.mail_text import html_to_text, trim_quoted
from hubfleet.support.tickets import Attachment, NewTicket, TicketError

log = logging.getLogger("hubfleet.support.mail")

MAX_NEW_PER_SENDER_HOUR = 5
"""New tickets one address may open by mail in an hour (a constant: a person with more to say replies)."""
MAX_NEW_PER_HOUR = 100
"""New tickets all senders may open by mail in an hour (forged senders are free to make up)."""
MAX_ATTACHMENTS = 10
_MSGID = re.compile(r"<[^<>\s]{1,398}>")
_TAG = re.compile(r"\[#(\d{1,9})\]")

Action = Literal["opened", "replied", "ignored", "deferred", "rejected"]


@dataclass(frozen=True)
class Outcome:
    """What became of a mail; `reply` is the SMTP answer to the server that delivered it."""

    action: Action
    ticket_id: int | None = None
    reason: str = ""

    @property
    def reply(self) -> str:
        if self.action == "deferred":
            return _smtp_line(f"451 4.7.1 {self.reason}")
        if self.action == "rejected":
            return _smtp_line(self.reason)
        return "250 2.0.0 OK"


def _smtp_line(text: str) -> str:
    """One line of printable ASCII: an SMTP reply cannot carry more."""
    line = " ".join(text.split()).encode("ascii", "replace").decode()
    return line[:500]


@dataclass
class ParsedMail:
    sender: str | None
    """The From address, lower case (None when there is none to answer)."""
    sender_name: str
    subject: str
    message_id: str | None
    references: list[str]
    """In-Reply-To, then References from the newest: the closest earlier mail first."""
    text: str
    attachments: list[Attachment] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Why each attachment that is not kept was dropped."""
    auto: str | None = None
    """Why this is no person's mail (an auto-reply, a bounce), if it is not."""


# --------------------------------------------------------------------------- parsing


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError):  # a malformed header the parser could not fold
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _sender(message: Message) -> tuple[str | None, str]:
    pairs = getaddresses([_header(message, "From")])
    for name, address in pairs:
        if re.fullmatch(r"[^@\s<>]{1,64}@[^@\s<>]{1,255}", address or ""):
            return address.lower(), name.strip()[:200]
    return None, ""


def _text_of(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        return content if isinstance(content, str) else content.decode("utf-8", "replace")
    except (LookupError, ValueError, AttributeError):  # an unknown charset: the bytes as well as they go
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _leaves(message: Message, parent: Message | None = None) -> list[tuple[Message, Message | None]]:
    """Every part that is not a container, with its container; a forwarded mail (message/rfc822) is one
    part, not opened."""
    if message.get_content_type() == "message/rfc822" or not message.is_multipart():
        return [(message, parent)]
    found: list[tuple[Message, Message | None]] = []
    for part in message.get_payload():  # type: ignore[union-attr]
        found.extend(_leaves(part, message))
    return found


def _as_text(part: Message) -> str:
    text = _text_of(part)
    return html_to_text(text) if part.get_content_type() == "text/html" else text


def _parts(message: EmailMessage, limit: int) -> tuple[str, list[Attachment], list[str]]:
    """The mail's new text (plain preferred, HTML as text, the quote cut off), the attachments to keep and
    why the others were dropped. Text parts beside the body (Apple Mail splits the text around an inline
    image) are added to it; the other versions of the body (HTML beside plain) are not."""
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except (KeyError, AttributeError):
        body = None
    leaves = _leaves(message)
    versions = {id(body)}
    for part, parent in leaves:
        if part is body and parent is not None and parent.get_content_type() == "multipart/alternative":
            versions = {  # every version of the body, nested ones (HTML with its images) too
                id(p)
                for p, _ in _leaves(parent)
                if not p.get_filename() and p.get_content_type() in ("text/plain", "text/html")
            }
    texts = [_as_text(body)] if body is not None else []
    kept: list[Attachment] = []
    dropped: list[str] = []
    for part, _ in leaves:
        if id(part) in versions:
            continue
        filename = part.get_filename() or ""
        content_type = part.get_content_type()
        if not filename and content_type in ("text/plain", "text/html"):
            texts.append(_as_text(part))
            continue
        name = tickets.clean_filename(filename or content_type.replace("/", "."))
        if content_type == "message/rfc822":
            dropped.append(f"{name}: a forwarded mail; paste its text into a reply instead")
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        attachment = Attachment(filename=name, data=data, content_type=content_type)
        if len(kept) >= MAX_ATTACHMENTS:
            dropped.append(f"{name}: more than {MAX_ATTACHMENTS} attachments in one mail")
            continue
        try:
            tickets.attachment_type(attachment, limit)
        except TicketError as exc:
            dropped.append(str(exc))
            continue
        kept.append(attachment)
    text = "\n\n".join(t.strip() for t in texts if t.strip())
    return trim_quoted(text), kept, dropped


def _references(message: Message) -> list[str]:
    found: list[str] = []
    for ref in [
        *_MSGID.findall(_header(message, "In-Reply-To")),
        *reversed(_MSGID.findall(_header(message, "References"))),
    ]:
        if ref not in found:
            found.append(ref)
    return found[:50]


def _auto(message: Message, sender: str | None) -> str | None:
    auto_submitted = _header(message, "Auto-Submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"an automatic mail (Auto-Submitted: {auto_submitted})"
    if _header(message, "Precedence").lower() in ("bulk", "junk", "auto_reply"):
        return "an automatic mail (Precedence)"
    if _header(message, "X-Autoreply") or _header(message, "X-Autorespond"):
        return "an automatic reply"
    if message.get_content_type() == "multipart/report":
        return "a delivery report (bounce)"
    if sender and sender.split("@")[0] == "mailer-daemon":
        return "a bounce (MAILER-DAEMON)"
    return None


def parse_mail(raw: bytes, max_attachment_bytes: int) -> ParsedMail:
    """A received mail's sender, threading headers, new text and attachments (email.parser with
    policy.default); never raises for a malformed mail (what cannot be read is left out)."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    sender, name = _sender(message)
    text, attachments, dropped = _parts(message, max_attachment_bytes)
    message_ids = _MSGID.findall(_header(message, "Message-ID"))
    return ParsedMail(
        sender=sender,
        sender_name=name,
        subject=_header(message, "Subject")[: tickets.MAX_SUBJECT],
        message_id=message_ids[0] if message_ids else None,
        references=_references(message),
        text=text,
        attachments=attachments,
        dropped=dropped,
        auto=_auto(message, sender),
    )


# --------------------------------------------------------------------------- who and which hub


def known_hubs(store: Store, fleet: FleetConfig, address: str) -> dict[str, str]:
    """hub -> username for the hubs where `address` is a known user: an email address the hub's sign-in
    asserted (hub_user_identities, claim email), or a username that is the address (identities, usage)."""
    address = address.lower()
    found: dict[str, str] = {}
    names = list({address, address.casefold()})
    with store.session() as session:
        for hub, username, identity in session.execute(
            select(HubUserIdentity.hub, HubUserIdentity.username, HubUserIdentity.identity).where(
                HubUserIdentity.claim == "email",
                func.lower(HubUserIdentity.identity).like(f"%{_like(address)}", escape="\\"),
            )
        ):
            if re.split(r"[:#]", identity.lower())[-1] == address:
                found.setdefault(hub, username)
        for hub in fleet.hubs:  # one lookup per hub: (hub, username) lead both tables' primary keys
            for table in (HubUserIdentity, UserDay):
                username = session.scalar(
                    select(table.username).where(table.hub == hub, table.username.in_(names)).limit(1)
                )
                if username is not None:
                    found.setdefault(hub, username)
    return {hub: user for hub, user in found.items() if hub in fleet.hubs}


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _own_senders(fleet: FleetConfig) -> set[str]:
    own = {c.sender.lower() for c in fleet.settings.monitoring.alerts.email}
    if fleet.settings.support.address:
        own.add(fleet.settings.support.address.lower())
    return own


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class _Route:
    kind: Literal["reply", "follow_up", "new", "ignored", "deferred"]
    ticket_id: int | None = None
    verified: bool = False
    hub: str | None = None
    username: str | None = None
    reason: str = ""


def _thread_ticket(session: Any, mail: ParsedMail) -> Ticket | None:
    """The ticket the mail answers: by its threading headers (the closest earlier mail first), else by a
    `[#N]` subject tag when the sender is ticket N's requester."""
    if mail.references:
        hits: dict[str, int] = {}
        for column, ticket_col in (
            (Ticket.mail_thread, Ticket.id),
            (TicketMessage.mail_id, TicketMessage.ticket_id),
            (TicketMail.mail_id, TicketMail.ticket_id),
        ):
            for ref, ticket_id in session.execute(
                select(column, ticket_col).where(column.in_(mail.references))
            ):
                if ticket_id is not None:
                    hits.setdefault(ref, ticket_id)
        for ref in mail.references:
            if ref in hits:
                return session.get(Ticket, hits[ref])
    for number in _TAG.findall(mail.subject):
        ticket = session.get(Ticket, int(number))
        if ticket is not None and (ticket.requester_email or "").lower() == mail.sender:
            return ticket
    return None


def _route(store: Store, fleet: FleetConfig, mail: ParsedMail, now: datetime) -> _Route:
    assert mail.sender is not None
    with store.session() as session:
        if mail.message_id is not None:
            if session.scalar(select(TicketMail.id).where(TicketMail.mail_id == mail.message_id).limit(1)):
                return _Route("ignored", reason="hubfleet's own mail came back")
            seen = session.scalar(
                select(TicketMessage.ticket_id).where(TicketMessage.mail_id == mail.message_id).limit(1)
            ) or session.scalar(select(Ticket.id).where(Ticket.mail_thread == mail.message_id).limit(1))
            if seen:
                return _Route("ignored", ticket_id=seen, reason="already received (the same Message-ID)")
        ticket = _thread_ticket(session, mail)
        is_requester = ticket is not None and (ticket.requester_email or "").lower() == mail.sender
        if ticket is not None and ticket.state != "closed":
            return _Route("reply", ticket.id, verified=bool(ticket.verified and is_requester))
        hour_ago = now - timedelta(hours=1)
        mine = session.scalar(
            select(func.count(Ticket.id)).where(
                Ticket.requester_email == mail.sender,
                Ticket.source == "email",
                Ticket.created_at >= hour_ago,
            )
        )
        if (mine or 0) >= MAX_NEW_PER_SENDER_HOUR:
            return _Route(
                "deferred",
                reason=f"{mail.sender} opened {mine} requests in the last hour; "
                "this mail is kept by your mail server and delivered later",
            )
        everyone = session.scalar(
            select(func.count(Ticket.id)).where(Ticket.source == "email", Ticket.created_at >= hour_ago)
        )
        if (everyone or 0) >= MAX_NEW_PER_HOUR:
            return _Route("deferred", reason="too many new requests by mail right now; try again later")
        if ticket is not None:  # closed: a new ticket that refers to it (its hub, if the requester wrote)
            hub, username = (ticket.hub, ticket.username) if is_requester else (None, None)
            return _Route("follow_up", ticket.id, hub=hub, username=username)
    return _Route("new")


async def _context(
    fleet: FleetConfig, store: Store, hub: str, username: str | None, state_dir: Path | None
) -> dict[str, Any] | None:
    """The hub's state for the ticket (hubfleet.support.context); None when it cannot be had."""
    try:
        from hubfleet.support.context import capture_context  # the CONTEXT part; absent in early builds
    except ImportError:
        return None
    try:
        return await capture_context(fleet, store, hub, username, state_dir=state_dir)
    except Exception:  # noqa: BLE001 - a ticket without context beats no ticket
        log.exception("support mail: the context of hub %s could not be captured", hub)
        return None


def _describe(mail: ParsedMail) -> str:
    if mail.text:
        return mail.text
    if mail.attachments:
        return "(no text; see the attachments)"
    return _TAG.sub("", mail.subject).strip()


async def receive(
    store: Store,
    fleet: FleetConfig,
    raw: bytes,
    *,
    envelope_from: str = "",
    state_dir: Path | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Turn one received mail into a ticket or a message on one (module docstring); never raises for what
    a sender wrote: a mail that cannot be taken is `rejected` with the SMTP reply that says why."""
    now = require_aware(now)
    support = fleet.settings.support
    mail = await asyncio.to_thread(parse_mail, raw, support.max_attachment_bytes)  # megabytes: off the loop
    bounce = envelope_from.strip("<> ") == "" or parseaddr(envelope_from)[1].lower().startswith(
        "mailer-daemon@"
    )
    why = mail.auto or ("a bounce (empty envelope sender)" if bounce else None)
    if why is None and mail.sender in _own_senders(fleet):
        why = "sent from hubfleet's own address (a mail loop)"
    if why is not None:
        log.info("support mail %s ignored: %s", mail.message_id or "(no Message-ID)", why)
        return Outcome("ignored", reason=why)
    if mail.sender is None:
        return Outcome(
            "rejected", reason="550 5.1.7 The mail has no From address to answer; write from yours"
        )
    description = _describe(mail)
    if not description:
        return Outcome(
            "rejected", reason="550 5.6.0 The mail is empty: write what happened and what you expected"
        )
    route = await asyncio.to_thread(_route, store, fleet, mail, now)
    if route.kind in ("ignored", "deferred"):
        log.info("support mail from %s %s: %s", mail.sender, route.kind, route.reason)
        return Outcome(route.kind, route.ticket_id, route.reason)
    try:
        if route.kind == "reply":
            assert route.ticket_id is not None
            await asyncio.to_thread(
                tickets.add_message,
                store,
                fleet,
                route.ticket_id,
                author=mail.sender,
                author_kind="requester",
                body=description,
                via="email",
                mail_id=mail.message_id,
                verified=route.verified,
                attachments=mail.attachments,
                now=now,
            )
            ticket_id = route.ticket_id
        else:
            ticket_id = await _open(store, fleet, mail, description, route, state_dir, now)
    except TicketError as exc:
        return Outcome("rejected", reason=f"552 5.3.4 {exc}")
    if mail.dropped:
        note = "Attachments not kept (only screenshots and PDFs are):\n" + "\n".join(
            f"- {d}" for d in mail.dropped
        )
        await asyncio.to_thread(
            tickets.add_message,
            store,
            fleet,
            ticket_id,
            author="hubfleet",
            author_kind="system",
            body=note,
            public=True,
            via="email",
            now=now,
        )
    action: Action = "replied" if route.kind == "reply" else "opened"
    log.info("support mail from %s: %s ticket #%d", mail.sender, action, ticket_id)
    return Outcome(action, ticket_id)


async def _open(
    store: Store,
    fleet: FleetConfig,
    mail: ParsedMail,
    description: str,
    route: _Route,
    state_dir: Path | None,
    now: datetime,
) -> int:
    assert mail.sender is not None
    hub, username = route.hub, route.username
    if hub is None:
        hubs = await asyncio.to_thread(known_hubs, store, fleet, mail.sender)
        if len(hubs) == 1:
            hub, username = next(iter(hubs.items()))
    if route.kind == "follow_up":
        description = f"(Follows up ticket #{route.ticket_id}, which is closed.)\n\n{description}"
    context = await _context(fleet, store, hub, username, state_dir) if hub else None
    new = NewTicket(
        source="email",
        category="other",
        urgency="normal",
        subject=_TAG.sub("", mail.subject).strip(),
        description=description,
        hub=hub,
        username=username,
        requester_name=mail.sender_name,
        requester_email=mail.sender,
        verified=False,
        mail_id=mail.message_id,
        context=context,
        attachments=mail.attachments,
    )
    return await asyncio.to_thread(tickets.open_ticket, store, fleet, new, now=now)


# --------------------------------------------------------------------------- the listener


class SupportMailHandler:
    """aiosmtpd handler: mail for support.address only (550 for anyone else), each mail to `receive`."""

    def __init__(self, fleet: Callable[[], FleetConfig], store: Store, state_dir: Path | None) -> None:
        self.fleet = fleet
        self.store = store
        self.state_dir = state_dir

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        ours = self.fleet().settings.support.address
        if ours is None or address.lower() != ours.lower():
            where = f"only mail for {ours}" if ours else "no mail (support.address is not set)"
            return _smtp_line(f"550 5.1.1 <{address}>: no such mailbox here; this server takes {where}")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:  # noqa: N802
        try:
            outcome = await receive(
                self.store,
                self.fleet(),
                envelope.original_content or envelope.content,
                envelope_from=envelope.mail_from or "",
                state_dir=self.state_dir,
            )
        except Exception:  # noqa: BLE001 - the sending server keeps the mail and tries again
            log.exception("support mail: a received mail could not be processed")
            return "451 4.3.0 The mail could not be processed now; it will be tried again later"
        return outcome.reply


async def start_listener(
    fleet: Callable[[], FleetConfig], store: Store, state_dir: Path | None
) -> asyncio.Server | None:
    """The SMTP listener on support.listen (None when unset or no support.address); UserError when the
    address cannot be bound."""
    current = fleet()
    listen, address = current.settings.support.listen, current.settings.support.address
    if listen is None or address is None:
        if listen is not None:
            log.warning("support mail: support.listen is set but support.address is not; no mail is received")
        return None
    handler = SupportMailHandler(fleet, store, state_dir)
    domain = Address(addr_spec=address).domain

    def protocol() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=listen.max_message_bytes,
            hostname=domain,
            ident="hubfleet support",
            enable_SMTPUTF8=True,
        )

    try:
        server = await asyncio.get_running_loop().create_server(protocol, listen.host, listen.port)
    except OSError as exc:
        raise UserError(
            f"the support mail listener cannot listen on {listen.host}:{listen.port}: "
            f"{exc.strerror or exc}; choose another support.listen.port in fleet.yaml"
        ) from None
    log.info("support mail: listening on %s:%d for %s", listen.host, listen.port, address)
    return server
