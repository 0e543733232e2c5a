"""Support mail through real SMTP: hubfleet's own listener (hubfleet.support.mail_in, on loopback) receives
mail sent with smtplib, and the outbox sender (hubfleet.daemon.support_mail) delivers to a real SMTP server
(aiosmtpd) through the fleet's alerts email channel. The store is a real SQLite store; no hub runs (the
hubs' known users are rows in the usage tables, as the collector writes them), so nothing is mocked.

Covered: a mail becomes an unverified ticket and its confirmation mail threads (headers, no token left in
the store once sent); a reply by In-Reply-To and by `[#N]` lands on the same ticket; confirmation verifies;
the hub is attached for a known user of exactly one hub; wrong recipient 550, oversize 552, rate limit 451;
HTML-only mail as text; a .exe dropped with a note; auto-replies, bounces and loops ignored; a reply to a
closed ticket opens a follow-up; the outbox retries after the SMTP server was down.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import smtplib
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from alert_receivers import SMTPReceiver, _Handler, smtp_server, wait_for
from fleet_helpers import copy_demo_fleet, drop_section
from hubfleet.config.fleet import FleetConfig, FleetInvalid
from hubfleet.config.validate import load_fleet
from hubfleet.daemon.support_mail import MAX_ATTEMPTS, SupportMail, send_pending
from hubfleet.monitor.alerts import Alerter
from hubfleet.ports import free_port
from hubfleet.store.api import Store, open_store
from hubfleet.store.identities import HubUserIdentity
from hubfleet.store.models import UserDay
from hubfleet.store.tickets import Ticket, TicketMail, TicketMessage
from hubfleet.support import tickets
from hubfleet.support.mail_in import MAX_NEW_PER_SENDER_HOUR, start_listener
from hubfleet.support.mail_text import html_to_text, trim_quoted

DESK = "help@hubfleet.example"
SENDER = "hubfleet@hubfleet.example"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TOKEN_LINK = re.compile(r"/help/(confirm|survey)/([A-Za-z0-9_\-]+)")


def write_fleet(root: Path, smtp_port: int, listen_port: int, extra: str = "") -> FleetConfig:
    """The demo fleet (four hubs, none started) with a mail channel and the support address."""
    copy_demo_fleet(root)
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(
        drop_section(fleet_yaml.read_text(), "support")
        + "monitoring:\n  alerts:\n    retry_attempts: 1\n    email:\n"
        + f"      - name: desk\n        smtp_host: 127.0.0.1\n        smtp_port: {smtp_port}\n"
        + f"        security: none\n        sender: {SENDER}\n"
        + f"support:\n  address: {DESK}\n  public_url: http://127.0.0.1:9\n"
        + f"  listen:\n    host: 127.0.0.1\n    port: {listen_port}\n    max_message_bytes: 65536\n"
        + extra
    )
    return load_fleet(root)


class LoopThread:
    """An event loop in a thread of its own: the listener serves while the test talks smtplib."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Desk:
    fleet: FleetConfig
    store: Store
    port: int
    outbox: SMTPReceiver
    loop: LoopThread

    def send(self, mail: EmailMessage, *, to: str = DESK, envelope_from: str | None = None) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            smtp.send_message(mail, from_addr=envelope_from, to_addrs=[to])

    def flush(self) -> None:
        """The daemon's outbox pass, once."""
        self.loop.run(send_pending(self.fleet, self.store, Alerter(self.fleet, self.store)))

    def ticket(self, **where: Any) -> Ticket | None:
        with self.store.session() as session:
            query = select(Ticket)
            for key, value in where.items():
                query = query.where(getattr(Ticket, key) == value)
            return session.scalars(query.order_by(Ticket.id.desc())).first()

    def messages(self, ticket_id: int) -> list[TicketMessage]:
        with self.store.session() as session:
            return list(
                session.scalars(
                    select(TicketMessage)
                    .where(TicketMessage.ticket_id == ticket_id)
                    .order_by(TicketMessage.id)
                )
            )

    def sent_to(self, address: str, kind: str) -> list[Any]:
        return [m for m in self.outbox.to(address) if f"{kind}:" in m.subject]


def new_mail(sender: str, subject: str, body: str, **headers: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = DESK
    mail["Subject"] = subject
    mail["Message-ID"] = make_msgid(domain="example.org")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(body)
    return mail


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    root = tmp_path_factory.mktemp("mail") / "demo"
    with smtp_server() as outbox:
        port = free_port()
        fleet = write_fleet(root, outbox.port, port)
        store = open_store(root / ".hubfleet")
        loop = LoopThread()
        server = loop.run(start_listener(lambda: fleet, store, None))
        assert server is not None
        try:
            yield Desk(fleet, store, port, outbox, loop)
        finally:
            server.close()
            loop.run(server.wait_closed())
            loop.close()
            store.close()


def test_mail_becomes_an_unverified_ticket_confirmed_by_link_and_replies_thread(desk: Desk) -> None:
    first = new_mail("Carol Chen <Carol@Example.org>", "My server won't start", "It spins forever.")
    desk.send(first)
    ticket = desk.ticket(requester_email="carol@example.org")
    assert ticket is not None and ticket.source == "email" and not ticket.verified
    assert ticket.mail_thread == first["Message-ID"] and ticket.requester_name == "Carol Chen"
    assert ticket.subject == "My server won't start" and ticket.hub is None  # carol is no hub's user

    desk.flush()
    [confirm] = desk.sent_to("carol@example.org", "Please confirm")
    message = confirm.message
    assert message["Subject"] == f"[#{ticket.id}] Please confirm: My server won't start"
    assert DESK in message["From"] and message["Reply-To"] == DESK and message["Sender"] == SENDER
    assert message["In-Reply-To"] == first["Message-ID"] == message["References"]
    assert message["Auto-Submitted"] == "auto-replied"
    with desk.store.session() as session:
        row = session.scalars(select(TicketMail).where(TicketMail.ticket_id == ticket.id)).one()
    assert row.sent_at is not None and row.mail_id == message["Message-ID"].strip() and row.attempts == 1
    assert "[link sent]" in row.body and not TOKEN_LINK.search(row.body)  # the token left the store
    token = TOKEN_LINK.search(confirm.body)[2]  # type: ignore[index]

    # a reply to the confirmation mail, before confirming: on the ticket, not verified, the quote cut off
    reply = new_mail(
        "carol@example.org",
        f"Re: {message['Subject']}",
        f"Still spinning.\n\nOn Tue, 1 Dec 2026, {DESK} wrote:\n> We received a request for help\n",
        In_Reply_To=message["Message-ID"],
        References=f"{first['Message-ID']} {message['Message-ID']}",
    )
    desk.send(reply)
    later = desk.messages(ticket.id)[-1]
    assert later.body == "Still spinning." and later.mail_id == reply["Message-ID"]
    assert later.author_kind == "requester" and later.via == "email" and not later.verified

    # a colleague writing into the thread adds a message that confirming does not verify
    desk.send(new_mail("colleague@example.org", "Re: it", "Same here.", In_Reply_To=first["Message-ID"]))
    assert desk.messages(ticket.id)[-1].author == "colleague@example.org"

    assert tickets.confirm_requester(desk.store, token) == ticket.id
    confirmed = desk.ticket(id=ticket.id)
    assert confirmed is not None and confirmed.verified
    verified = {m.body: m.verified for m in desk.messages(ticket.id)}
    assert verified == {"It spins forever.": True, "Still spinning.": True, "Same here.": False}

    # staff answer; the requester's answer to that mail threads by In-Reply-To and is verified now
    tickets.add_message(
        desk.store, desk.fleet, ticket.id, author="ada", author_kind="staff", body="Try again."
    )
    desk.flush()
    [answer] = desk.sent_to("carol@example.org", "Re")
    assert answer.message["In-Reply-To"] == first["Message-ID"] and "Auto-Submitted" not in answer.message
    desk.send(new_mail("carol@example.org", "Re: it", "Works now!", In_Reply_To=answer.message["Message-ID"]))
    last = desk.messages(ticket.id)[-1]
    assert last.body == "Works now!" and last.verified
    assert desk.ticket(id=ticket.id).state == "open"  # type: ignore[union-attr] # it was waiting for her

    # resolving mails a survey link; once sent, no token is in the stored bodies
    tickets.resolve(desk.store, desk.fleet, ticket.id, actor="ada", summary="Fixed the image.")
    desk.flush()
    [resolved] = desk.sent_to("carol@example.org", "Resolved")
    assert TOKEN_LINK.search(resolved.body)[1] == "survey"  # type: ignore[index]
    assert resolved.message["Auto-Submitted"] == "auto-generated"  # a vacation reply must not reopen it
    with desk.store.session() as session:
        bodies = session.scalars(select(TicketMail.body).where(TicketMail.ticket_id == ticket.id)).all()
    assert len(bodies) == 3 and not any(TOKEN_LINK.search(b) for b in bodies)


def test_subject_tag_threads_only_for_the_requester(desk: Desk) -> None:
    desk.send(new_mail("dave@example.org", "Package missing", "Please add xarray."))
    ticket = desk.ticket(requester_email="dave@example.org")
    assert ticket is not None
    desk.send(new_mail("dave@example.org", f"Re: [#{ticket.id}] Package missing", "And dask, please."))
    assert [m.body for m in desk.messages(ticket.id)] == ["Please add xarray.", "And dask, please."]
    # someone else naming the ticket opens their own (a tag is no proof of anything)
    desk.send(new_mail("eve@example.org", f"[#{ticket.id}] hello", "Let me in."))
    eves = desk.ticket(requester_email="eve@example.org")
    assert eves is not None and eves.id != ticket.id and eves.subject == "hello"
    assert len(desk.messages(ticket.id)) == 2


def test_a_known_user_of_one_hub_gets_that_hub_of_two_none(desk: Desk) -> None:
    now = datetime.now(UTC)
    with desk.store.session() as session, session.begin():
        session.add(
            UserDay(
                hub="uni-a-staging",
                username="frank@uni-a.example",
                day=now.date(),
                identity="dummy:frank@uni-a.example",
                first_seen=now,
                last_seen=now,
            )
        )
        for hub, user in (("uni-a", "heidi"), ("hackweek", "gina"), ("uni-a", "gina2")):
            session.add(
                HubUserIdentity(
                    hub=hub,
                    username=user,
                    identity=f"generic-oauth:https://login.example#{user.rstrip('2')}@example.net",
                    provider="https://login.example",
                    claim="email",
                    first_signin=now,
                    last_signin=now,
                )
            )
    desk.send(new_mail("frank@uni-a.example", "Slow", "The hub is slow today."))
    frank = desk.ticket(requester_email="frank@uni-a.example")
    assert frank is not None and (frank.hub, frank.username, frank.community) == (
        "uni-a-staging",
        "frank@uni-a.example",
        "uni-a",
    )
    if (
        importlib.util.find_spec("hubfleet.support.context") is not None
    ):  # the hub's state, as it could be read
        assert frank.context is not None and frank.context["hub"]["name"] == "uni-a-staging"
    desk.send(new_mail("Heidi@Example.net", "Quota", "My home is full."))
    heidi = desk.ticket(requester_email="heidi@example.net")
    assert heidi is not None and (heidi.hub, heidi.username) == ("uni-a", "heidi")
    assert not heidi.verified  # a known address is still no proof
    desk.send(new_mail("gina@example.net", "Which hub?", "I use two hubs."))
    gina = desk.ticket(requester_email="gina@example.net")
    assert gina is not None and gina.hub is None and gina.community is None  # first line picks it


def test_the_listener_refuses_other_recipients_oversize_and_floods(desk: Desk) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        desk.send(new_mail("mallory@example.org", "hi", "relay me"), to="someone@elsewhere.example")
    code, reply = refused.value.recipients["someone@elsewhere.example"]
    assert code == 550 and DESK.encode() in reply

    big = new_mail("ivan@example.org", "Huge", "x" * 70_000)
    with pytest.raises(smtplib.SMTPException) as oversize:
        desk.send(big)
    assert getattr(oversize.value, "smtp_code", None) == 552
    assert desk.ticket(requester_email="ivan@example.org") is None
    with pytest.raises(smtplib.SMTPDataError) as too_long:  # within the bytes, beyond a message's text
        desk.send(new_mail("ivan@example.org", "Long", "y" * 55_000))
    assert too_long.value.smtp_code == 552 and b"50,000" in too_long.value.smtp_error

    for n in range(MAX_NEW_PER_SENDER_HOUR):
        desk.send(new_mail("judy@example.org", f"Request {n}", "Help."))
    with pytest.raises(smtplib.SMTPDataError) as flood:
        desk.send(new_mail("judy@example.org", "One more", "Help!"))
    assert flood.value.smtp_code == 451 and b"later" in flood.value.smtp_error
    with desk.store.session() as session:
        count = session.scalars(select(Ticket.id).where(Ticket.requester_email == "judy@example.org")).all()
    assert len(count) == MAX_NEW_PER_SENDER_HOUR


def test_html_only_mail_becomes_text(desk: Desk) -> None:
    mail = new_mail("kim@example.org", "HTML", "")
    mail.set_content(
        "<html><head><style>p{color:red}</style></head><body><p>My <b>notebook</b> &amp; kernel "
        "<a href='https://hub.example/user/kim'>die</a>.</p><script>alert('x')</script>"
        "<blockquote>an older mail</blockquote></body></html>",
        subtype="html",
    )
    desk.send(mail)
    ticket = desk.ticket(requester_email="kim@example.org")
    assert ticket is not None
    [message] = desk.messages(ticket.id)
    assert message.body == "My notebook & kernel die (https://hub.example/user/kim)."


def test_an_exe_is_dropped_with_a_note_a_screenshot_kept(desk: Desk) -> None:
    mail = new_mail("lee@example.org", "Error", "See the screenshot.")
    mail.add_attachment(PNG, maintype="image", subtype="png", filename="error.png")
    mail.add_attachment(
        b"MZ\x90\x00" * 20, maintype="application", subtype="octet-stream", filename="fix.exe"
    )
    after = EmailMessage()  # Apple Mail's text after an inline image: a text part of its own
    after.set_content("And after it, more.")
    mail.attach(after)
    desk.send(mail)
    ticket = desk.ticket(requester_email="lee@example.org")
    assert ticket is not None
    shown = tickets.get_ticket(desk.store, desk.fleet, ticket.id)
    assert [(a["filename"], a["content_type"]) for a in shown["attachments"]] == [("error.png", "image/png")]
    first, note = shown["messages"]
    assert first["body"] == "See the screenshot.\n\nAnd after it, more."
    assert note["author_kind"] == "system" and "fix.exe" in note["body"] and "PDF" in note["body"]


def test_auto_replies_bounces_and_loops_are_ignored(desk: Desk) -> None:
    with desk.store.session() as session:
        before = session.scalars(select(Ticket.id)).all()
    desk.send(new_mail("mia@example.org", "Out of office", "Back Monday.", Auto_Submitted="auto-replied"))
    desk.send(new_mail("mia@example.org", "Away", "Back Monday.", Precedence="auto_reply"))
    desk.send(new_mail("MAILER-DAEMON@mx.example.org", "Undelivered", "Returned mail."))
    desk.send(new_mail("mia@example.org", "Delivery failure", "Returned."), envelope_from="<>")
    desk.send(new_mail(DESK, "Loop", "Our own address."))
    # a copy of a mail already received is no second ticket
    again = new_mail("olga@example.org", "Twice", "Sent twice.")
    desk.send(again)
    desk.send(again)
    # one of hubfleet's own mails coming back (its Message-ID)
    olga = desk.ticket(requester_email="olga@example.org")
    assert olga is not None
    with desk.store.session() as session:
        own = session.scalars(select(TicketMail.mail_id).where(TicketMail.ticket_id == olga.id)).first()
    assert own is not None
    desk.send(_with_id(own))
    with desk.store.session() as session:
        after = session.scalars(select(Ticket.id)).all()
    assert len(after) == len(before) + 1
    assert len(desk.messages(olga.id)) == 1
    desk.send(new_mail("mia@example.org", "Real", "A real question.", Auto_Submitted="no"))
    assert desk.ticket(requester_email="mia@example.org") is not None


def _with_id(message_id: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "nia@example.org"
    mail["To"] = DESK
    mail["Subject"] = "Echo"
    mail["Message-ID"] = message_id
    mail.set_content("Echo.")
    return mail


def test_a_reply_to_a_closed_ticket_opens_a_follow_up(desk: Desk) -> None:
    first = new_mail("pat@example.org", "Sign-in", "I cannot sign in.")
    desk.send(first)
    ticket = desk.ticket(requester_email="pat@example.org")
    assert ticket is not None
    tickets.resolve(desk.store, desk.fleet, ticket.id, actor="ada", summary="Reset.")
    later = datetime.now(UTC) + timedelta(days=30)
    assert ticket.id in tickets.close_resolved(desk.store, desk.fleet, now=later)
    desk.send(new_mail("pat@example.org", "Re: Sign-in", "It broke again.", In_Reply_To=first["Message-ID"]))
    follow = desk.ticket(requester_email="pat@example.org")
    assert follow is not None and follow.id != ticket.id and follow.state == "new"
    [message] = desk.messages(follow.id)
    assert f"#{ticket.id}" in message.body and "It broke again." in message.body
    assert len(desk.messages(ticket.id)) == 2  # the closed one keeps what it had (question, summary)


def test_the_outbox_retries_after_the_smtp_server_was_down(tmp_path: Path) -> None:
    port = free_port()
    fleet = write_fleet(tmp_path / "demo", port, free_port())
    store = open_store(tmp_path / "demo" / ".hubfleet")
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    ticket_id = tickets.open_ticket(
        store,
        fleet,
        tickets.NewTicket(
            source="email",
            category="other",
            urgency="normal",
            subject="Down",
            description="Is it down?",
            requester_email="quinn@example.org",
        ),
        now=t0,
    )
    alerter = Alerter(fleet, store, timeout=5)
    result = asyncio.run(send_pending(fleet, store, alerter, now=t0))
    assert (result.sent, result.failed) == (0, 1)
    with store.session() as session:
        row = session.scalars(select(TicketMail).where(TicketMail.ticket_id == ticket_id)).one()
    assert row.sent_at is None and row.attempts == 1 and row.attempts < MAX_ATTEMPTS
    assert row.error and "refused" in row.error.lower() and TOKEN_LINK.search(row.body)
    assert row.next_attempt_at is not None and row.next_attempt_at > t0
    assert asyncio.run(send_pending(fleet, store, alerter, now=t0)).failed == 0  # not due yet

    receiver = SMTPReceiver("127.0.0.1", port)
    controller = Controller(_Handler(receiver), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        result = asyncio.run(send_pending(fleet, store, alerter, now=row.next_attempt_at))
    finally:
        controller.stop()
    assert (result.sent, result.failed) == (1, 0)
    [mail] = receiver.to("quinn@example.org")
    assert TOKEN_LINK.search(mail.body) and mail.message["Message-ID"].strip() == row.mail_id
    with store.session() as session:
        row = session.scalars(select(TicketMail).where(TicketMail.ticket_id == ticket_id)).one()
    assert row.sent_at is not None and row.attempts == 2 and row.error is None
    assert not TOKEN_LINK.search(row.body)
    store.close()


def test_the_outbox_waits_when_no_channel_sends(tmp_path: Path) -> None:
    with pytest.raises(FleetInvalid) as refused:  # a channel that does not exist never gets this far
        write_fleet(tmp_path / "bad", free_port(), free_port(), extra="  send_through: nope\n")
    assert "support.send_through: no email channel 'nope'" in " ".join(map(str, refused.value.errors))
    root = copy_demo_fleet(tmp_path / "demo")  # its desk, and no monitoring.alerts.email channel
    fleet = load_fleet(root)
    store = open_store(tmp_path / "demo" / ".hubfleet")
    new = tickets.NewTicket("email", "other", "low", "Hi", "Hello.", requester_email="sam@example.org")
    tickets.open_ticket(store, fleet, new)
    for _ in range(2):
        result = asyncio.run(send_pending(fleet, store, Alerter(fleet, store)))
        assert (result.sent, result.failed) == (0, 0)
    with store.session() as session:
        row = session.scalars(select(TicketMail)).one()
    assert row.attempts == 0 and row.sent_at is None
    assert row.error and "no email channel to send through" in row.error
    store.close()


def test_the_daemon_task_receives_and_sends(tmp_path: Path) -> None:
    """SupportMail.run, as `hubfleet up` starts it: the listener and the outbox in one task."""
    with smtp_server() as outbox:
        port = free_port()
        fleet = write_fleet(tmp_path / "demo", outbox.port, port)
        store = open_store(tmp_path / "demo" / ".hubfleet")
        loop = LoopThread()
        stop = asyncio.Event()
        task = asyncio.run_coroutine_threadsafe(
            SupportMail(lambda: fleet, None, store, interval=0.2).run(stop), loop.loop
        )
        try:
            desk = Desk(fleet, store, port, outbox, loop)
            assert wait_for(lambda: _listening(port))
            desk.send(new_mail("rose@example.org", "Hello", "Is anyone there?"))
            assert wait_for(lambda: bool(desk.sent_to("rose@example.org", "Please confirm")))
        finally:
            loop.loop.call_soon_threadsafe(stop.set)
            task.result(30)
            loop.close()
            store.close()
        assert not _listening(port)  # the listener closed with the task


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_text_helpers() -> None:
    assert trim_quoted("Thanks!\n\n-----Original Message-----\nFrom: x\n\nold") == "Thanks!"
    assert trim_quoted("> all quoted\n> here") == "> all quoted\n> here"  # nothing new: all kept
    assert trim_quoted("On Monday the hub wrote:\nError 500") == "On Monday the hub wrote:\nError 500"
    assert html_to_text("<ul><li>a</li><li>b &lt;c&gt;</li></ul>") == "- a\n\n- b <c>"
