"""The support desk's mail in the `hubfleet up` daemon: the SMTP listener (hubfleet.support.mail_in) and
the sender of the outbox (TicketMail rows that the ticket functions queue).

Sending goes through the SMTP server of the monitoring.alerts.email channel named by support.send_through
(default: the first), with monitor.alerts' SMTP code (Alerter.send_message), not a second SMTP client.
From is support.address (else the channel's sender); when they differ, the channel's sender is the
`Sender` and so the envelope sender, which the relay accepts and where bounces go (not the listener).
Message-ID is the row's mail_id and In-Reply-To/References its in_reply_to, so a reply threads.

A failed attempt is kept on the row (attempts, error without secrets, next_attempt_at) and tried again with
doubling back-off up to MAX_ATTEMPTS; a refused recipient is not tried again. Once a mail with a
confirmation or survey link has been sent (or given up), the link in the stored body becomes "[link sent]"
("[link not sent]"): no token stays in the store, only its hash on the ticket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from hubfleet.clock import as_utc, require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import EmailChannel
from hubfleet.monitor.alerts import Alerter, DeliveryError
from hubfleet.settings import UserError, seconds_from_env
from hubfleet.store.api import Store
from hubfleet.store.tickets import TicketMail
from hubfleet.support.mail_in import start_listener

log = logging.getLogger("hubfleet.support.mail")

INTERVAL_ENV = "HUBFLEET_SUPPORT_MAIL_INTERVAL"
INTERVAL = 10.0
"""Seconds between looks at the outbox (a console reply is mailed within this)."""
MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(minutes=1)
"""Before the 2nd attempt; doubled for each further one (1, 2, 4 .. 64 minutes: about two hours in all)."""
BACKOFF_MAX = timedelta(hours=2)
BATCH = 50
TOKEN_LINK = re.compile(r"\S+/help/(?:confirm|survey)/[A-Za-z0-9_\-]+")
AUTO_KINDS = {
    "received": "auto-replied",
    "confirm": "auto-replied",
    "resolved": "auto-generated",
    "assigned": "auto-generated",
    "sla": "auto-generated",
}
"""RFC 3834: mail no person wrote says so, and auto-responders (vacation replies) do not answer it (a
vacation reply to "resolved" would open the ticket again). A staff reply is a person's mail: not marked."""


def channel_of(fleet: FleetConfig) -> EmailChannel | None:
    """The alerts email channel that sends the desk's mail: support.send_through (validate checks that it
    exists), else the first."""
    channels = fleet.settings.monitoring.alerts.email
    name = fleet.settings.support.send_through
    return next((c for c in channels if name in (None, c.name)), None)


NO_CHANNEL = (
    "no email channel to send through: add one to fleet.yaml monitoring.alerts.email (smtp_host, sender)"
)


def compose(fleet: FleetConfig, channel: EmailChannel, row: TicketMail) -> EmailMessage:
    """The mail of one outbox row."""
    mail = EmailMessage()
    sender = fleet.settings.support.address or channel.sender
    mail["From"] = Address(f"{fleet.settings.display_name or fleet.settings.name} support", addr_spec=sender)
    if sender.lower() != channel.sender.lower():
        mail["Sender"] = channel.sender
    mail["Reply-To"] = sender
    mail["To"] = row.recipient
    mail["Subject"] = " ".join(row.subject.split())
    mail["Date"] = format_datetime(as_utc(row.created_at))
    mail["Message-ID"] = row.mail_id
    if row.in_reply_to:
        mail["In-Reply-To"] = row.in_reply_to
        mail["References"] = row.in_reply_to
    if row.kind in AUTO_KINDS:
        mail["Auto-Submitted"] = AUTO_KINDS[row.kind]
    mail.set_content(row.body)
    return mail


def scrub_links(body: str, sent: bool) -> str:
    """The body without its confirmation/survey token links."""
    return TOKEN_LINK.sub("[link sent]" if sent else "[link not sent]", body)


def _backoff(attempts: int) -> timedelta:
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class Sent:
    sent: int
    failed: int


async def send_pending(
    fleet: FleetConfig, store: Store, alerter: Alerter, *, now: datetime | None = None, limit: int = BATCH
) -> Sent:
    """Send the outbox rows that are due (oldest first); each row's result is written back at once."""
    now = require_aware(now)
    with store.session() as session:
        rows = session.scalars(
            select(TicketMail)
            .where(
                TicketMail.sent_at.is_(None),
                TicketMail.attempts < MAX_ATTEMPTS,
                or_(TicketMail.next_attempt_at.is_(None), TicketMail.next_attempt_at <= now),
            )
            .order_by(TicketMail.id)
            .limit(limit)
        ).all()
        session.expunge_all()
    if not rows:
        return Sent(0, 0)
    channel = channel_of(fleet)
    if channel is None:  # said once per row (on the row and in the log), not every pass
        if _note_error(store, [r.id for r in rows], NO_CHANNEL):
            log.warning("support mail: %d mail(s) waiting: %s", len(rows), NO_CHANNEL)
        return Sent(0, 0)
    sent = failed = 0
    for row in rows:
        try:
            mail = compose(fleet, channel, row)
        except (ValueError, TypeError) as exc:  # a header no SMTP server would take: never sendable
            failed += 1
            _failed(store, row, f"cannot make the mail: {exc}", now, final=True)
            continue
        try:
            await alerter.send_message(channel, mail)
        except DeliveryError as exc:
            failed += 1
            _failed(store, row, str(exc), now)
            continue
        sent += 1
        _sent(store, row, now)
    return Sent(sent, failed)


def _note_error(store: Store, ids: list[int], error: str) -> int:
    """Write `error` on the rows that do not say it yet; how many did not."""
    changed = 0
    with store.session() as session, session.begin():
        for row in session.scalars(select(TicketMail).where(TicketMail.id.in_(ids))):
            if row.error != error:
                row.error = error
                changed += 1
    return changed


def _sent(store: Store, row: TicketMail, now: datetime) -> None:
    with store.session() as session, session.begin():
        stored = session.get(TicketMail, row.id)
        if stored is None:  # its ticket was deleted meanwhile
            return
        stored.sent_at = now
        stored.attempts = row.attempts + 1
        stored.error = None
        stored.next_attempt_at = None
        stored.body = scrub_links(stored.body, sent=True)
    log.info("support mail %s (ticket #%s) sent to %s", row.kind, row.ticket_id, row.recipient)


def _failed(store: Store, row: TicketMail, error: str, now: datetime, *, final: bool = False) -> None:
    attempts = row.attempts + 1
    final = final or attempts >= MAX_ATTEMPTS or "recipient refused" in error
    with store.session() as session, session.begin():
        stored = session.get(TicketMail, row.id)
        if stored is None:
            return
        stored.attempts = MAX_ATTEMPTS if final else attempts
        stored.error = error[:2000]
        stored.next_attempt_at = None if final else now + _backoff(attempts)
        if final:
            stored.body = scrub_links(stored.body, sent=False)
    log.warning(
        "support mail %s (ticket #%s) to %s failed (attempt %d)%s: %s",
        row.kind, row.ticket_id, row.recipient, attempts, "; giving up" if final else "", error,
    )  # fmt: skip


class SupportMail:
    """The daemon task: the listener (when support.listen is set) and the outbox sender every `interval`."""

    def __init__(
        self,
        fleet: Callable[[], FleetConfig],
        state_dir: Path | None,
        store: Store,
        resolver: Any = None,
        interval: float | None = None,
    ) -> None:
        self.fleet = fleet
        self.state_dir = state_dir
        self.store = store
        self.resolver = resolver
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        try:
            server = await start_listener(self.fleet, self.store, self.state_dir)
        except UserError as exc:  # one line in daemon.log; the outbox is still sent
            log.error("%s", exc)
            server = None
        try:
            while not stop.is_set():
                fleet = self.fleet()
                try:
                    await send_pending(fleet, self.store, Alerter(fleet, self.store, self.resolver))
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the daemon outlives any mail error
                    log.exception("support mail: sending the outbox failed")
                interval = self.interval or seconds_from_env(INTERVAL_ENV, INTERVAL, minimum=0.2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            if server is not None:
                server.close()
                await server.wait_closed()


def start_support_mail(
    fleet: FleetConfig | Callable[[], FleetConfig],
    state_dir: Path | None,
    store: Store,
    resolver: Any,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """The daemon's support-mail task (hubfleet.up): listener and outbox."""
    current = (lambda: fleet) if isinstance(fleet, FleetConfig) else fleet
    return asyncio.create_task(
        SupportMail(current, state_dir, store, resolver).run(stop), name="support-mail"
    )
