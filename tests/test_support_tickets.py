"""The ticket life cycle (hubfleet.support.tickets) on a real SQLite store with the demo fleet's hubs: states,
first and second line, the clocks' pauses, the mail it queues, the requester's links, attachments, scope."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fleet_helpers import copy_demo_fleet, drop_section
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_support import Rota, Support
from hubfleet.config.rules_support import support_warnings
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.store.tickets import Ticket, TicketMail, TicketMessage
from hubfleet.support import tickets as t

DEMO = Path(__file__).parent.parent / "examples" / "demo-fleet"
MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    fleet = load_fleet(DEMO)
    console = fleet.settings.console
    accounts = [a.model_copy(update={"email": f"{a.username}@hubfleet.example"}) for a in console.accounts]
    accounts.append(accounts[0].model_copy(update={"username": "grace", "email": "grace@hubfleet.example"}))
    support = Support(
        address="support@hubfleet.example",
        rota=Rota(first_line=["ada", "grace"], starting=MONDAY.date()),
        second_line=["grace"],
    )
    fleet.settings = fleet.settings.model_copy(
        update={"support": support, "console": console.model_copy(update={"accounts": accounts})}
    )
    return fleet


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path)


def _new(**changes: object) -> t.NewTicket:
    values: dict[str, object] = {
        "source": "hub",
        "category": "server-start",
        "urgency": "high",
        "subject": "My server won't start",
        "description": "It says 'spawn failed'.",
        "hub": "uni-a",
        "username": "alice",
        "requester_email": "alice@uni-a.example",
        "verified": True,
    }
    values.update(changes)
    return t.NewTicket(**values)  # type: ignore[arg-type]


def _mails(store: Store, ticket_id: int) -> list[TicketMail]:
    with store.session() as session:
        return list(session.scalars(select(TicketMail).where(TicketMail.ticket_id == ticket_id)))


def _token(mail: TicketMail, kind: str) -> str:
    match = re.search(rf"/help/{kind}/(\S+)", mail.body)
    assert match, mail.body
    return match[1]


def test_a_new_ticket_goes_to_first_line_on_duty_and_is_acknowledged(
    fleet: FleetConfig, store: Store
) -> None:
    first = t.open_ticket(store, fleet, _new(), now=MONDAY)
    second = t.open_ticket(store, fleet, _new(), now=MONDAY + timedelta(weeks=1))
    one, two = (t.get_ticket(store, fleet, i, now=MONDAY) for i in (first, second))
    assert (one["assignee"], two["assignee"]) == ("ada", "grace")  # the rota turns weekly
    assert one["state"] == "new" and one["community"] == "uni-a" and one["line"] == "first"
    # high: 8 working hours to a first response, on a 24-hour Monday-to-Friday calendar
    assert one["targets"]["first_response"]["due"] == (MONDAY + timedelta(hours=8)).isoformat()
    kinds = sorted((m.kind, m.recipient) for m in _mails(store, first))
    assert kinds == [("assigned", "ada@hubfleet.example"), ("received", "alice@uni-a.example")]
    assert all(m.subject.startswith(f"[#{first}] ") for m in _mails(store, first))
    assert [e["action"] for e in one["history"]] == ["opened"]


def test_reply_waits_for_the_requester_and_their_answer_restarts_the_clock(
    fleet: FleetConfig, store: Store
) -> None:
    ticket = t.open_ticket(store, fleet, _new(urgency="normal"), now=MONDAY)
    t.add_message(
        store,
        fleet,
        ticket,
        author="ada",
        author_kind="staff",
        body="Which environment?",
        now=MONDAY + timedelta(hours=1),
    )
    waiting = t.get_ticket(store, fleet, ticket, now=MONDAY + timedelta(hours=30))
    assert waiting["state"] == "waiting" and waiting["first_response_at"] is not None
    assert waiting["targets"]["first_response"]["status"] == "met"
    assert waiting["targets"]["resolution"]["status"] == "paused"
    assert waiting["targets"]["resolution"]["used_hours"] == 1.0  # the 29 hours waiting do not count
    assert [m.kind for m in _mails(store, ticket)].count("reply") == 1

    t.add_message(
        store,
        fleet,
        ticket,
        author="alice@uni-a.example",
        author_kind="requester",
        body="Python",
        via="email",
        now=MONDAY + timedelta(hours=30),
    )
    back = t.get_ticket(store, fleet, ticket, now=MONDAY + timedelta(hours=31))
    assert back["state"] == "open"
    assert back["targets"]["resolution"]["used_hours"] == 2.0
    # normal: 120 working hours, and the 29 paused: 149 from Monday 09:00 = 15 + 4 x 24 (to Saturday 00:00),
    # the weekend off, then 24 on Monday and 14 on Tuesday
    assert back["targets"]["resolution"]["due"] == "2026-12-08T14:00:00+00:00"


def test_an_internal_note_is_never_shown_or_mailed_to_the_requester(fleet: FleetConfig, store: Store) -> None:
    ticket = t.open_ticket(store, fleet, _new(), now=MONDAY)
    before = len(_mails(store, ticket))
    t.add_message(
        store,
        fleet,
        ticket,
        author="ada",
        author_kind="staff",
        body="known bug #12",
        public=False,
        now=MONDAY,
    )
    assert len(_mails(store, ticket)) == before
    public = t.get_ticket(store, fleet, ticket, public_only=True)
    assert "known bug #12" not in str(public) and "history" not in public
    assert "known bug #12" in str(t.get_ticket(store, fleet, ticket))
    assert t.get_ticket(store, fleet, ticket)["state"] == "new"  # a note changes nothing


def test_escalation_needs_a_reason_and_goes_to_second_line(fleet: FleetConfig, store: Store) -> None:
    ticket = t.open_ticket(store, fleet, _new(), now=MONDAY)
    with pytest.raises(t.TicketError, match="reason for escalating is empty"):
        t.escalate(store, fleet, ticket, reason="  ", actor="ada")
    with pytest.raises(t.TicketError, match="'uni-a-lead' is not an operator console account"):
        t.escalate(store, fleet, ticket, reason="needs root", actor="ada", to="uni-a-lead")
    t.escalate(store, fleet, ticket, reason="needs root on the node", actor="ada", now=MONDAY)
    detail = t.get_ticket(store, fleet, ticket)
    assert (detail["state"], detail["line"], detail["assignee"]) == ("escalated", "second", "grace")
    assert {"action": "escalated", "actor": "ada"}.items() <= detail["history"][1].items()
    assert detail["history"][1]["detail"]["reason"] == "needs root on the node"
    assert ("assigned", "grace@hubfleet.example") in [(m.kind, m.recipient) for m in _mails(store, ticket)]


def test_resolve_asks_one_question_and_closes_after_the_set_days(fleet: FleetConfig, store: Store) -> None:
    ticket = t.open_ticket(store, fleet, _new(), now=MONDAY)
    t.log_time(store, ticket, account="ada", minutes=25, note="read the log", now=MONDAY)
    t.resolve(
        store, fleet, ticket, actor="ada", summary="Restarted the node.", now=MONDAY + timedelta(hours=2)
    )
    with pytest.raises(t.TicketError, match="already resolved"):
        t.resolve(store, fleet, ticket, actor="ada")
    resolved = [m for m in _mails(store, ticket) if m.kind == "resolved"]
    assert len(resolved) == 1 and "Restarted the node." in resolved[0].body
    token = _token(resolved[0], "survey")
    assert t.record_survey(store, token, 5, "quick, thanks") == ticket
    assert t.record_survey(store, "not-a-token", 5) is None
    with pytest.raises(t.TicketError, match="from 1"):
        t.record_survey(store, token, 9)
    detail = t.get_ticket(store, fleet, ticket)
    assert detail["survey_score"] == 5 and detail["minutes_logged"] == 25
    assert detail["targets"]["resolution"]["status"] == "met"

    assert t.close_resolved(store, fleet, now=MONDAY + timedelta(days=3)) == []
    assert t.close_resolved(store, fleet, now=MONDAY + timedelta(days=8)) == [ticket]
    with pytest.raises(t.TicketError, match="closed; open a new ticket"):
        t.add_message(store, fleet, ticket, author="alice", author_kind="requester", body="again")


def test_a_requester_message_reopens_a_resolved_ticket(fleet: FleetConfig, store: Store) -> None:
    ticket = t.open_ticket(store, fleet, _new(), now=MONDAY)
    t.resolve(store, fleet, ticket, actor="ada", now=MONDAY + timedelta(hours=1))
    t.add_message(
        store,
        fleet,
        ticket,
        author="alice",
        author_kind="requester",
        body="still broken",
        now=MONDAY + timedelta(hours=2),
    )
    detail = t.get_ticket(store, fleet, ticket)
    assert detail["state"] == "open" and detail["resolved_at"] is None


def test_mail_from_an_unknown_sender_stays_unverified_until_confirmed(
    fleet: FleetConfig, store: Store
) -> None:
    ticket = t.open_ticket(
        store,
        fleet,
        _new(source="email", hub=None, username=None, verified=False, requester_email="x@y.example"),
        now=MONDAY,
    )
    assert t.get_ticket(store, fleet, ticket)["verified"] is False
    confirm = [m for m in _mails(store, ticket) if m.kind == "confirm"]
    assert len(confirm) == 1 and confirm[0].recipient == "x@y.example"
    token = _token(confirm[0], "confirm")
    assert t.confirm_requester(store, token) == ticket
    assert t.confirm_requester(store, token) is None  # once
    detail = t.get_ticket(store, fleet, ticket)
    assert detail["verified"] is True and all(m["verified"] for m in detail["messages"])
    with store.session() as session:
        assert session.scalar(select(Ticket.confirm_token_hash).where(Ticket.id == ticket)) is None


def test_bad_input_is_refused_whole_and_names_the_problem(fleet: FleetConfig, store: Store) -> None:
    cases = [
        (_new(category="lost"), "'lost' is not a category"),
        (_new(urgency="asap"), "'asap' is not a urgency"),
        (_new(description=" \n "), "description is empty"),
        (_new(description="x" * (t.MAX_BODY + 1)), "keep it under 50,000"),
        (_new(hub="nope"), "no hub 'nope'"),
        (
            _new(attachments=[t.Attachment("shot.png", b"MZ\x90\x00 not a png", "image/png")]),
            "not a screenshot",
        ),
        (_new(attachments=[t.Attachment("big.pdf", b"%PDF-" + b"0" * (6 * 1024 * 1024))]), "up to 5.0 MiB"),
        (_new(attachments=[t.Attachment("empty.png", b"")]), "empty"),
    ]
    for new, message in cases:
        with pytest.raises(t.TicketError, match=re.escape(message)):
            t.open_ticket(store, fleet, new, now=MONDAY)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0
        assert session.scalar(select(func.count()).select_from(TicketMessage)) == 0


def test_attachments_keep_their_bytes_and_html_is_stored_as_written(fleet: FleetConfig, store: Store) -> None:
    html = "<script>alert(1)</script> & <b>bold</b>"
    ticket = t.open_ticket(
        store,
        fleet,
        _new(description=html, attachments=[t.Attachment("../../etc/sc reen?.png", PNG, "text/html")]),
    )
    detail = t.get_ticket(store, fleet, ticket)
    assert detail["messages"][0]["body"] == html  # escaping is the renderer's job, never lossy storage
    (meta,) = detail["attachments"]
    assert meta["filename"] == "sc reen_.png" and meta["content_type"] == "image/png"  # the bytes decide
    stored = t.attachment(store, ticket, meta["id"])
    assert stored is not None and stored.data == PNG
    assert t.attachment(store, ticket + 1, meta["id"]) is None


def test_the_queue_respects_scope_and_sorts_by_due(fleet: FleetConfig, store: Store) -> None:
    low = t.open_ticket(store, fleet, _new(urgency="low"), now=MONDAY)
    urgent = t.open_ticket(store, fleet, _new(urgency="urgent", hub="hackweek"), now=MONDAY)
    orphan = t.open_ticket(store, fleet, _new(hub=None, source="email", verified=False), now=MONDAY)
    everything = [x["id"] for x in t.list_tickets(store, fleet, now=MONDAY)]
    assert everything[0] == urgent and set(everything) == {low, urgent, orphan}
    assert [x["id"] for x in t.list_tickets(store, fleet, communities=["uni-a"])] == [low]
    assert [x["id"] for x in t.list_tickets(store, fleet, communities=[])] == []
    assert [x["id"] for x in t.list_tickets(store, fleet, priority="urgent")] == [urgent]
    assert t.ticket_scope(store, urgent) == ("hackweek", "hackweek")
    assert t.ticket_scope(store, 999) is None
    with pytest.raises(t.TicketError, match="'later' is not a state"):
        t.list_tickets(store, fleet, states=["later"])

    t.attach_hub(
        store, fleet, orphan, "uni-a-staging", actor="ada", context={"hub": {"name": "uni-a-staging"}}
    )
    assert t.ticket_scope(store, orphan) == ("uni-a", "uni-a-staging")


def test_validate_names_support_accounts_and_channels_that_do_not_exist(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(
        drop_section(drop_section(fleet_yaml.read_text(), "support"), "console")
        + "console:\n  accounts:\n    - {username: ada, role: operator}\n"
        + "    - {username: uni-a-lead, role: community-leader, communities: [uni-a]}\n"
        + "support:\n  listen: {port: 2599}\n  send_through: mailer\n"
        + "  rota: {first_line: [ada, adda, uni-a-lead]}\n  second_line: [nobody]\n"
    )
    _, errors = validate_fleet(root)
    shown = "\n".join(str(e) for e in errors)
    assert "support.rota.first_line.1: there is no console account 'adda'; did you mean 'ada'?" in shown
    assert "support.rota.first_line.2: 'uni-a-lead' is a community-leader" in shown
    assert "support.second_line.0: there is no console account 'nobody'" in shown
    assert "support.listen: a mail listener needs the address it receives for; set `support.address`" in shown
    assert "support.send_through: no email channel 'mailer' in monitoring.alerts.email" in shown
    assert all(str(e).startswith("fleet.yaml:") for e in errors if "support." in str(e)), shown


def test_validate_warns_when_the_desks_mail_cannot_go_out_or_be_followed(tmp_path: Path) -> None:
    demo, _ = validate_fleet(DEMO)
    assert demo is not None
    (no_channel,) = [str(w) for w in support_warnings(demo)]  # the demo sends no mail; its front door serves
    assert "no monitoring.alerts.email channel sends the desk's replies" in no_channel

    copy, _ = validate_fleet(copy_demo_fleet(tmp_path / "fleet"))  # no front door, console or public_url
    assert copy is not None
    shown = "\n".join(str(w) for w in support_warnings(copy))
    assert "confirmation and survey links need an address they can open; set support.public_url" in shown
