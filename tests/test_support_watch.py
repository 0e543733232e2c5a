"""The support desk's watch (hubfleet.daemon.support_watch) on a real SQLite store with the demo fleet's
config: response-time warnings and misses raised once each through a real webhook receiver and a real SMTP
server (Alerter.notify) and queued to the assignee, resolved tickets closed after auto_close_days, real
incidents (hubfleet.monitor.incidents) linked to tickets and their resolution noted, support hours per
community with their burn-down and their 90 % / 100 % warnings, and the daemon task on its interval."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from alert_receivers import SMTPReceiver, WebhookReceiver, smtp_server, wait_for, webhook_receiver
from fleet_helpers import copy_demo_fleet, drop_section
from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.daemon.support_watch import INTERVAL_ENV, SupportWatch, start_support_watch
from hubfleet.monitor.alerts import Alerter
from hubfleet.monitor.incidents import open_incident, resolve_incident
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.store.models import AlertDelivery
from hubfleet.store.tickets import TicketAlert, TicketMail
from hubfleet.support import tickets as t
from hubfleet.support.hours import budget_status, minutes_by_community, period_bounds

MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
OPS = "ops@hubfleet.example"
ADA = "ada@ops.example"
PAT = "pat@uni-a.example"


@dataclass
class Desk:
    fleet: FleetConfig
    hook: WebhookReceiver
    smtp: SMTPReceiver


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """The demo fleet's config with the desk set up: ada on first line (with an email), alerts to a webhook
    and to ops by mail, Pat of uni-a a contact who opted in to alerts, hackweek's hours per quarter."""
    root = copy_demo_fleet(tmp_path_factory.mktemp("watch") / "fleet")
    with webhook_receiver() as hook, smtp_server() as smtp:
        fleet_yaml = root / "fleet.yaml"
        fleet_yaml.write_text(
            drop_section(fleet_yaml.read_text(), "support")
            + "console:\n  accounts:\n    - username: ada\n      role: operator\n"
            + f"      email: {ADA}\n    - username: lin\n      role: operator\n"
            + "monitoring:\n  alerts:\n    retry_attempts: 2\n    community_contacts: true\n"
            + f"    webhooks:\n      - name: ops-chat\n        url: {hook.url}\n"
            + "    email:\n      - name: ops-mail\n        smtp_host: 127.0.0.1\n"
            + f"        smtp_port: {smtp.port}\n        security: none\n"
            + f"        sender: hubfleet@hubfleet.example\n        to: [{OPS}]\n"
            + "support:\n  address: support@hubfleet.example\n  warn_at_percent: 75\n"
            + "  auto_close_days: 3\n  rota:\n    first_line: [ada]\n"
        )
        community = root / "communities/uni-a/community.yaml"
        community.write_text(  # the events (the file's last section) go: the contacts end the file
            drop_section(community.read_text(), "events")
            + f"  - name: Pat Leader\n    email: {PAT}\n    role: PI\n    alerts: true\n"
        )
        yield Desk(load_fleet(root), hook, smtp)


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path)


def _open(
    store: Store, fleet: FleetConfig, when: datetime, urgency: str = "urgent", hub: str = "uni-a"
) -> int:
    new = t.NewTicket(
        source="hub",
        category="server-start",
        urgency=urgency,
        subject="My server won't start <!channel>",
        description="It says 'spawn failed'.",
        hub=hub,
        username="alice",
        verified=True,
    )
    return t.open_ticket(store, fleet, new, now=when)


def _send(desk: Desk, store: Store, watch: SupportWatch, notices: list) -> None:
    """Hand the notices to a real Alerter and wait for its deliveries."""

    async def go() -> None:
        alerter = Alerter(desk.fleet, store, backoff_base=0.01, timeout=5)
        watch.alerter = alerter
        await watch.send(notices)
        await alerter.drain(timeout=20)

    asyncio.run(go())


def _mails(store: Store, ticket: int, kind: str) -> list[TicketMail]:
    with store.session() as session:
        query = select(TicketMail).where(TicketMail.ticket_id == ticket, TicketMail.kind == kind)
        return list(session.scalars(query))


def _texts(hook: WebhookReceiver, needle: str, since: int = 0) -> list[str]:
    """Texts of the webhook's requests from the `since`-th on (the receiver serves the whole module, and
    ticket ids start at 1 in each test's store)."""
    return [text for text in hook.texts[since:] if needle in text]


# --------------------------------------------------------------------------- response-time targets


def test_a_warning_then_a_miss_each_once_through_every_channel_and_to_the_assignee(
    desk: Desk, store: Store
) -> None:
    ticket = _open(store, desk.fleet, MONDAY)  # urgent: 4 working hours to a first response
    watch = SupportWatch(desk.fleet, store)
    since, mails = len(desk.hook.texts), len(desk.smtp.messages)
    assert watch.check(MONDAY + timedelta(hours=2)) == []  # 50 %: nothing yet

    warning = watch.check(MONDAY + timedelta(hours=3, minutes=30))  # 87.5 %
    assert [n.subject for n in warning] == [
        f"SUPPORT: ticket #{ticket} first response due 2026-11-30 13:00 UTC (88 % of 4 h used)"
    ]
    _send(desk, store, watch, warning)
    needle = f"ticket #{ticket} first response due"
    (text,) = _texts(desk.hook, needle, since)
    assert text.startswith("[demo] SUPPORT: ") and "Assignee: ada" in text and "Hub: uni-a" in text
    assert "<!channel>" not in text and "(!channel)" in text  # the requester's subject cannot ping a channel
    assert wait_for(
        lambda: [m for m in desk.smtp.messages[mails:] if needle in m.subject and OPS in m.rcpt_tos]
    )
    assert not [
        m for m in desk.smtp.to(PAT) if "SUPPORT: ticket" in m.subject
    ]  # tickets are not the contacts' business
    (mail,) = _mails(store, ticket, "sla")
    assert (
        mail.recipient == ADA and "first response due" in mail.subject and f"/tickets/{ticket}" in mail.body
    )

    assert watch.check(MONDAY + timedelta(hours=3, minutes=50)) == []  # raised once
    missed = watch.check(MONDAY + timedelta(hours=4, minutes=1))
    assert [n.subject for n in missed] == [
        f"SUPPORT: ticket #{ticket} missed its first response target (urgent, 4 h)"
    ]
    _send(desk, store, watch, missed)
    assert len(_texts(desk.hook, f"ticket #{ticket} missed its first response", since)) == 1
    assert watch.check(MONDAY + timedelta(hours=6)) == []
    assert len(_mails(store, ticket, "sla")) == 2
    history = [e for e in t.get_ticket(store, desk.fleet, ticket)["history"] if e["action"] == "sla"]
    assert [e["detail"] for e in history] == [
        {"target": "first_response", "level": "warning"},
        {"target": "first_response", "level": "missed"},
    ]
    with store.session() as session:
        notices = session.scalars(select(AlertDelivery).where(AlertDelivery.event == "notice")).all()
        assert {(d.channel, d.ok) for d in notices} == {("webhook:ops-chat", True), ("email:ops-mail", True)}
        assert all(d.incident_id == 0 and "hook-token" not in d.recipient for d in notices)


def test_a_ticket_found_past_its_target_gets_the_miss_alone(desk: Desk, store: Store) -> None:
    ticket = _open(store, desk.fleet, MONDAY)
    # the daemon was down all day: both targets (4 h and 24 h) are past
    notices = SupportWatch(desk.fleet, store).check(MONDAY + timedelta(days=2))
    assert sorted(n.subject for n in notices) == [
        f"SUPPORT: ticket #{ticket} missed its first response target (urgent, 4 h)",
        f"SUPPORT: ticket #{ticket} missed its resolution target (urgent, 24 h)",
    ]
    with store.session() as session:
        raised = session.execute(select(TicketAlert.target, TicketAlert.level)).all()
    assert len(raised) == 4  # the warnings recorded too: they never come after the miss
    assert SupportWatch(desk.fleet, store).check(MONDAY + timedelta(days=3)) == []


def test_a_backlog_past_its_targets_goes_out_as_one_digest(desk: Desk, store: Store) -> None:
    tickets = [_open(store, desk.fleet, MONDAY) for _ in range(12)]
    watch = SupportWatch(desk.fleet, store)
    (digest,) = watch.check(MONDAY + timedelta(days=2))  # 12 tickets x 2 targets missed
    assert digest.subject == "SUPPORT: 24 response-time warnings and misses"
    assert f"ticket #{tickets[-1]} missed its resolution target (urgent, 24 h)" in digest.body
    assert len(watch.last["targets"]) == 24  # each raised and its assignee mailed all the same
    assert sum(len(_mails(store, ticket, "sla")) for ticket in tickets) == 24
    assert watch.check(MONDAY + timedelta(days=3)) == []


def test_the_clock_stands_still_while_waiting_and_a_met_target_raises_nothing(
    desk: Desk, store: Store
) -> None:
    ticket = _open(store, desk.fleet, MONDAY, urgency="high")  # 8 h first response, 72 h resolution
    t.add_message(
        store,
        desk.fleet,
        ticket,
        author="ada",
        author_kind="staff",
        body="Which browser do you use?",
        now=MONDAY + timedelta(hours=1),
    )
    watch = SupportWatch(desk.fleet, store)
    assert watch.check(MONDAY + timedelta(days=20)) == []  # waiting: 1 of 72 hours used, for weeks
    t.add_message(
        store,
        desk.fleet,
        ticket,
        author="alice",
        author_kind="requester",
        body="Firefox",
        now=MONDAY + timedelta(days=21),  # a Monday
    )
    # 75 % of 72 h is 54 h: 1 before the wait, 53 after it
    assert watch.check(MONDAY + timedelta(days=21, hours=52)) == []
    (warning,) = watch.check(MONDAY + timedelta(days=21, hours=54))
    assert f"ticket #{ticket} resolution due" in warning.subject and "(76 % of 72 h used)" in warning.subject


def test_priority_raised_later_warns_at_once(desk: Desk, store: Store) -> None:
    ticket = _open(store, desk.fleet, MONDAY, urgency="low")  # 24 h to a first response
    watch = SupportWatch(desk.fleet, store)
    assert watch.check(MONDAY + timedelta(hours=3, minutes=30)) == []
    t.set_priority(
        store, desk.fleet, ticket, "urgent", actor="ada", now=MONDAY + timedelta(hours=3, minutes=30)
    )
    (warning,) = watch.check(MONDAY + timedelta(hours=3, minutes=31))
    assert f"ticket #{ticket} first response due 2026-11-30 13:00 UTC" in warning.subject


# --------------------------------------------------------------------------- auto-close


def test_resolved_tickets_close_after_auto_close_days(desk: Desk, store: Store) -> None:
    old = _open(store, desk.fleet, MONDAY, urgency="normal")
    recent = _open(store, desk.fleet, MONDAY, urgency="normal")
    t.resolve(store, desk.fleet, old, actor="ada", summary="Fixed.", now=MONDAY + timedelta(hours=1))
    t.resolve(store, desk.fleet, recent, actor="ada", summary="Fixed.", now=MONDAY + timedelta(days=2))
    watch = SupportWatch(desk.fleet, store)
    watch.check(MONDAY + timedelta(days=3, hours=2))  # auto_close_days: 3
    assert watch.last["closed"] == [old]
    assert t.get_ticket(store, desk.fleet, old)["state"] == "closed"
    assert t.get_ticket(store, desk.fleet, recent)["state"] == "resolved"
    history = t.get_ticket(store, desk.fleet, old)["history"]
    assert history[-1]["actor"] == "hubfleet" and history[-1]["detail"]["reason"] == "auto-close"
    with pytest.raises(t.TicketError, match="closed; open a new ticket"):
        t.add_message(store, desk.fleet, old, author="alice", author_kind="requester", body="again?")


# --------------------------------------------------------------------------- incidents


def test_incidents_of_the_hub_are_linked_and_their_resolution_noted(desk: Desk, store: Store) -> None:
    before, _ = open_incident(store, "uni-a", "down", "old outage", at=MONDAY - timedelta(hours=5))
    resolve_incident(store, "uni-a", "down", at=MONDAY - timedelta(hours=4))  # over before the ticket
    ticket = _open(store, desk.fleet, MONDAY, urgency="normal")
    other = _open(store, desk.fleet, MONDAY, urgency="normal", hub="hackweek")
    down, _ = open_incident(store, "uni-a", "down", "connection refused", at=MONDAY + timedelta(hours=1))
    open_incident(store, "uni-a", "cost", "a cost jump", rule="anomaly", at=MONDAY + timedelta(hours=1))
    watch = SupportWatch(desk.fleet, store)
    watch.check(MONDAY + timedelta(hours=1, minutes=1))
    assert watch.last["linked"] == [(ticket, down.id)]  # not the old one, not the cost one, not hackweek's
    assert watch.last["noted"] == []
    resolve_incident(store, "uni-a", "down", at=MONDAY + timedelta(hours=1, minutes=30))
    watch.check(MONDAY + timedelta(hours=2))
    assert watch.last["noted"] == [(ticket, down.id)]
    watch.check(MONDAY + timedelta(hours=3))
    assert watch.last["linked"] == [] and watch.last["noted"] == []  # once
    seen = t.get_ticket(store, desk.fleet, ticket)
    (link,) = seen["incidents"]
    assert link["incident_id"] == down.id and link["resolution_noted_at"] is not None
    (note,) = [m for m in seen["messages"] if m["author_kind"] == "system"]
    assert not note["public"] and f"Incident #{down.id} on hub uni-a (down)" in note["body"]
    assert "after 0h 30m" in note["body"] and "connection refused" in note["body"]
    public = t.get_ticket(store, desk.fleet, ticket, public_only=True)
    assert f"Incident #{down.id}" not in str(public["messages"])
    assert t.get_ticket(store, desk.fleet, other)["incidents"] == []
    assert before.id not in [i["incident_id"] for i in seen["incidents"]]


def test_an_incident_open_when_the_ticket_came_in_is_linked_too(desk: Desk, store: Store) -> None:
    down, _ = open_incident(store, "uni-a-staging", "down", "502", at=MONDAY - timedelta(hours=1))
    ticket = _open(store, desk.fleet, MONDAY, urgency="normal", hub="uni-a-staging")
    watch = SupportWatch(desk.fleet, store)
    watch.check(MONDAY + timedelta(minutes=1))
    assert watch.last["linked"] == [(ticket, down.id)]


# --------------------------------------------------------------------------- support hours


def test_period_bounds() -> None:
    assert period_bounds("month", date(2026, 12, 15)) == (date(2026, 12, 1), date(2026, 12, 31))
    assert period_bounds("month", date(2028, 2, 10)) == (date(2028, 2, 1), date(2028, 2, 29))
    assert period_bounds("quarter", date(2026, 11, 30)) == (date(2026, 10, 1), date(2026, 12, 31))
    assert period_bounds("quarter", date(2026, 2, 1)) == (date(2026, 1, 1), date(2026, 3, 31))
    assert period_bounds("year", date(2026, 7, 4)) == (date(2026, 1, 1), date(2026, 12, 31))


def test_support_hours_burn_down_and_warnings_at_90_and_100_percent(desk: Desk, store: Store) -> None:
    fleet = desk.fleet  # uni-a: 20 hours a month; hackweek: 12 a quarter
    day = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    first = _open(store, fleet, day, urgency="low")
    second = _open(store, fleet, day, urgency="low", hub="uni-a-staging")
    t.log_time(store, first, account="ada", minutes=600, now=datetime(2026, 11, 30, 23, 0, tzinfo=UTC))
    t.log_time(store, first, account="ada", minutes=480, now=day)  # 8 h on the 1st
    t.log_time(store, second, account="lin", minutes=120, now=day + timedelta(days=2))  # 2 h on the 3rd
    status = budget_status(store, fleet, "uni-a", now=day + timedelta(days=3))
    assert status is not None
    assert {k: status[k] for k in ("period", "start", "end", "budget_hours", "used_hours", "over")} == {
        "period": "month",
        "start": date(2026, 12, 1),
        "end": date(2026, 12, 31),
        "budget_hours": 20,
        "used_hours": 10.0,  # November's 10 hours are November's
        "over": False,
    }
    assert status["remaining_hours"] == 10.0
    assert status["burn"] == [
        {"day": date(2026, 12, 1), "used_hours": 8.0},
        {"day": date(2026, 12, 2), "used_hours": 8.0},
        {"day": date(2026, 12, 3), "used_hours": 10.0},
        {"day": date(2026, 12, 4), "used_hours": 10.0},
    ]
    assert len(status["ideal"]) == 31 and status["ideal"][-1] == {"day": date(2026, 12, 31), "hours_left": 0}
    assert status["ideal"][0]["hours_left"] == pytest.approx(20 * 30 / 31, abs=0.01)
    assert minutes_by_community(store, date(2026, 12, 1), date(2027, 1, 1)) == {"uni-a": 600}
    assert minutes_by_community(store, date(2026, 11, 1), date(2027, 1, 1)) == {"uni-a": 1200}
    assert budget_status(store, fleet, "nowhere") is None

    watch = SupportWatch(fleet, store)
    since = len(desk.hook.texts)
    watch.check(day + timedelta(days=3))
    assert watch.last["hours"] == []
    t.log_time(store, second, account="lin", minutes=480, now=day + timedelta(days=3))  # 18 of 20: 90 %
    watch.check(day + timedelta(days=3, minutes=1))
    (ninety,) = watch.last["hours"]
    assert (
        ninety.subject == "SUPPORT HOURS: community uni-a used 18 of its 20 support hours for 2026-12 (90 %)"
    )
    watch.check(day + timedelta(days=3, minutes=2))
    assert watch.last["hours"] == []  # once per period
    _send(desk, store, watch, [ninety])
    assert wait_for(lambda: [m for m in desk.smtp.to(PAT) if "used 18 of its 20" in m.subject])
    assert _texts(desk.hook, "community uni-a used 18 of its 20 support hours", since)
    t.log_time(store, second, account="lin", minutes=180, now=day + timedelta(days=4))
    watch.check(day + timedelta(days=4, minutes=1))
    (hundred,) = watch.last["hours"]
    assert "used 21 of its 20 support hours for 2026-12 (105 %)" in hundred.subject
    assert budget_status(store, fleet, "uni-a", now=day + timedelta(days=4))["over"] is True  # type: ignore[index]
    watch.check(day + timedelta(days=5))
    assert watch.last["hours"] == []
    # January starts afresh
    january = datetime(2027, 1, 4, 10, 0, tzinfo=UTC)
    t.log_time(store, first, account="ada", minutes=19 * 60, now=january)
    watch.check(january + timedelta(minutes=1))
    (again,) = watch.last["hours"]
    assert "for 2027-01 (95 %)" in again.subject

    # hackweek: a quarter's 12 hours; both thresholds passed at once: one warning, the higher
    hack = _open(store, fleet, day, urgency="low", hub="hackweek")
    t.log_time(store, hack, account="ada", minutes=13 * 60, now=datetime(2026, 10, 2, 9, 0, tzinfo=UTC))
    watch.check(day)
    (over,) = watch.last["hours"]
    assert over.subject.startswith(
        "SUPPORT HOURS: community hackweek used 13 of its 12 support hours for 2026-Q4"
    )
    quarter = budget_status(store, fleet, "hackweek", now=day)
    assert quarter is not None and (quarter["start"], quarter["end"]) == (
        date(2026, 10, 1),
        date(2026, 12, 31),
    )
    assert len(quarter["burn"]) == 62 and quarter["burn"][1]["used_hours"] == 13.0  # Oct 1 .. Dec 1


def test_hours_follow_the_calendars_time_zone(desk: Desk, store: Store) -> None:
    fleet = load_fleet(desk.fleet.root)
    support = fleet.settings.support
    calendar = support.calendar.model_copy(update={"time_zone": "America/Chicago"})
    fleet.settings = fleet.settings.model_copy(
        update={"support": support.model_copy(update={"calendar": calendar})}
    )
    ticket = _open(store, fleet, MONDAY, urgency="low")
    # 2026-12-01 03:00 UTC is still November 30 in Chicago
    t.log_time(store, ticket, account="ada", minutes=60, now=datetime(2026, 12, 1, 3, 0, tzinfo=UTC))
    november = budget_status(store, fleet, "uni-a", now=datetime(2026, 12, 1, 4, 0, tzinfo=UTC))
    assert november is not None and november["period_key"] == "2026-11" and november["used_hours"] == 1.0
    december = budget_status(store, fleet, "uni-a", now=datetime(2026, 12, 1, 7, 0, tzinfo=UTC))
    assert december is not None and december["period_key"] == "2026-12" and december["used_hours"] == 0.0


# --------------------------------------------------------------------------- the daemon task


def test_the_daemon_task_alerts_on_its_interval(
    desk: Desk, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0.2")
    now = utcnow()
    ticket = _open(store, desk.fleet, now - timedelta(days=10))  # ten days hold at least six working days
    closing = _open(store, desk.fleet, now - timedelta(days=10), urgency="low")
    t.resolve(store, desk.fleet, closing, actor="ada", summary="done", now=now - timedelta(days=9))
    since = len(desk.hook.texts)

    async def go() -> None:
        stop = asyncio.Event()
        alerter = Alerter(desk.fleet, store, backoff_base=0.01, timeout=5)
        task = start_support_watch(desk.fleet, store, alerter, stop)
        needle = f"ticket #{ticket} missed its resolution target"
        deadline = asyncio.get_running_loop().time() + 30
        while not _texts(desk.hook, needle, since) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a few more passes: nothing raised twice
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(go())
    assert len(_texts(desk.hook, f"ticket #{ticket} missed its resolution target", since)) == 1
    assert len(_texts(desk.hook, f"ticket #{ticket} missed its first response target", since)) == 1
    assert t.get_ticket(store, desk.fleet, closing)["state"] == "closed"
    assert os.environ[INTERVAL_ENV] == "0.2"
