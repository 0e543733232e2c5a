"""Response-time warnings and misses: what the daemon's support watch (hubfleet.daemon.support_watch) raises
for active tickets.

For each target of a ticket (first_response while nobody has answered, resolution while it is active) a
`warning` is raised when support.warn_at_percent of the target's working time is used, and `missed` when all
of it is. Each is raised once per ticket, target and level (store: ticket_alerts), also across daemon
restarts and when two processes check at once; a ticket found already past its target (the daemon was down)
gets the miss alone. Raising one adds a line to the ticket's history, returns a Notice for the alert channels
and queues a mail to the assignee.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hubfleet.clock import require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.store.api import Store
from hubfleet.store.tickets import ACTIVE_STATES, Ticket, TicketAlert, TicketEvent
from hubfleet.support.tickets import console_link, mail_assignee, targets_status

TARGETS = {"first_response": "first response", "resolution": "resolution"}
LEVELS = ("warning", "missed")


@dataclass(frozen=True)
class Notice:
    """A message for the alert channels (hubfleet.monitor.alerts.Alerter.notify)."""

    subject: str
    body: str
    community: str | None = None
    """Set when the community's opted-in contacts should hear of it too (their support-hours budget)."""


def plain(text: str | None, limit: int = 120) -> str:
    """User-written text (a ticket's subject) fit for a one-line alert: whitespace folded, no angle brackets
    (a Slack webhook would turn `<!channel>` into a mention of everyone), shortened."""
    folded = " ".join((text or "").replace("<", "(").replace(">", ")").split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


def reached(fleet: FleetConfig, status: dict[str, Any]) -> list[tuple[str, str]]:
    """(target, level) pairs a ticket's targets_status has reached: a target met (or paused under its
    limit) reaches nothing; a missed one reaches both levels."""
    warn = fleet.settings.support.warn_at_percent
    out: list[tuple[str, str]] = []
    for target in TARGETS:
        state = status[target]
        if state["status"] == "missed":
            out += [(target, "warning"), (target, "missed")]
        elif state["status"] in ("running", "paused") and state["percent"] >= warn:
            out.append((target, "warning"))
    return out


def raise_once(store: Store, ticket_id: int, target: str, levels: list[str], now: datetime) -> bool:
    """Record `levels` of `target` as raised, with a line in the ticket's history; False when another
    process raised them first (nothing recorded)."""
    try:
        with store.session() as session, session.begin():
            for level in levels:
                session.add(TicketAlert(ticket_id=ticket_id, target=target, level=level, at=now))
            session.add(
                TicketEvent(
                    ticket_id=ticket_id,
                    at=now,
                    actor="hubfleet",
                    action="sla",
                    detail={"target": target, "level": levels[-1]},
                )
            )
    except IntegrityError:
        return False
    return True


def _when(value: str | None) -> str:
    if not value:
        return "- (the clock stands still)"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def message(fleet: FleetConfig, ticket: Ticket, target: str, level: str, state: dict[str, Any]) -> Notice:
    """The alert of one raised level: a subject line and a few body lines."""
    what = TARGETS[target]
    hours = state["target_hours"]
    if level == "missed":
        subject = f"SUPPORT: ticket #{ticket.id} missed its {what} target ({ticket.priority}, {hours:g} h)"
    else:
        subject = (
            f"SUPPORT: ticket #{ticket.id} {what} due {_when(state['due'])} "
            f"({state['percent']:.0f} % of {hours:g} h used)"
        )
    body = "\n".join(
        [
            f"Ticket: #{ticket.id} {plain(ticket.subject)}",
            f"Hub: {ticket.hub or '-'}",
            f"Community: {ticket.community or '-'}",
            f"Priority: {ticket.priority}",
            f"State: {ticket.state} ({ticket.line} line)",
            f"Assignee: {ticket.assignee or 'nobody'}",
            f"Target: {what} within {hours:g} working hours",
            f"Used: {state['used_hours']:.2f} working hours ({state['percent']:.0f} %)",
            f"Due: {_when(state['due'])}",
            f"URL: {console_link(fleet, ticket.id)}",
        ]
    )
    return Notice(subject, body + "\n")


def _exhausted(ticket: Ticket, done: set[tuple[int, str, str]]) -> bool:
    answered = ticket.first_response_at is not None
    return all(
        (ticket.id, target, level) in done or (target == "first_response" and answered)
        for target in TARGETS
        for level in LEVELS
    )


def digest(notices: list[Notice], limit: int) -> list[Notice]:
    """The notices as they are, or, when there are more than `limit` (a first pass over a backlog), one
    message listing their subjects: a chat channel is not flooded."""
    if len(notices) <= limit:
        return notices
    lines = [n.subject.removeprefix("SUPPORT: ") for n in notices]
    shown = lines[:200] + ([f"... and {len(lines) - 200} more"] if len(lines) > 200 else [])
    subject = f"SUPPORT: {len(notices)} response-time warnings and misses"
    return [Notice(subject, "\n".join(shown) + "\n")]


def check_targets(store: Store, fleet: FleetConfig, *, now: datetime | None = None) -> list[Notice]:
    """Raise what the active tickets' targets reached and was not raised yet; returns the notices (sending
    them is the caller's: the daemon hands them to the alerter). The assignee's mail is queued here."""
    now = require_aware(now)
    active = select(Ticket.id).where(Ticket.state.in_(ACTIVE_STATES))
    with store.session() as session:
        tickets = list(session.scalars(select(Ticket).where(Ticket.state.in_(ACTIVE_STATES))))
        done = {
            (ticket_id, target, level)
            for ticket_id, target, level in session.execute(
                select(TicketAlert.ticket_id, TicketAlert.target, TicketAlert.level).where(
                    TicketAlert.ticket_id.in_(active)
                )
            )
        }
        session.expunge_all()
    notices: list[Notice] = []
    for ticket in tickets:
        if _exhausted(ticket, done):  # nothing left to raise: spare the calendar walk
            continue
        status = targets_status(fleet, ticket, now)
        new: dict[str, list[str]] = {}
        for target, level in reached(fleet, status):
            if (ticket.id, target, level) not in done:
                new.setdefault(target, []).append(level)
        for target, levels in new.items():
            if not raise_once(store, ticket.id, target, levels, now):
                continue
            notice = message(fleet, ticket, target, levels[-1], status[target])
            notices.append(notice)
            mail_assignee(
                store, fleet, ticket.id, notice.subject.removeprefix("SUPPORT: "), notice.body, now=now
            )
    return notices
