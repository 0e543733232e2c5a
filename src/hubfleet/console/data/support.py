"""What the console's ticket pages and API show, over support.tickets: the queue's filters, a ticket as the
caller may see it (leaders: the public conversation only), the nav count, the support-hours burn-down, and
the context captured when the console opens a ticket.

The CONTEXT (support.context) and WATCH (support.hours) modules may be missing while the desk is being built:
their absence shows as "not available", never as an error page."""

from __future__ import annotations

import base64
import binascii
import importlib
import logging
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_support import CATEGORIES, PRIORITIES, URGENCY_HELP
from hubfleet.console.access import Principal
from hubfleet.store.api import Store
from hubfleet.store.tickets import ACTIVE_STATES, STATES, Ticket
from hubfleet.support import tickets as desk

log = logging.getLogger("hubfleet.console")

MAX_ATTACHMENTS = 5
"""Files in one request (the form sends one; the API a few)."""
CONTEXT_TIMEOUT = 20.0
"""Seconds the console waits for a hub's context before opening the ticket with what it has."""
STATE_CHOICES = ("active", "all", *STATES)
DUE_CHOICES = {
    "": "any time",
    "overdue": "overdue",
    "4": "within 4 h",
    "8": "within 8 h",
    "24": "within 24 h",
}


class BadFilter(ValueError):
    """A queue filter the caller cannot mean (the message names it and the choices)."""


def scope(principal: Principal) -> list[str] | None:
    """The communities whose tickets the caller sees: None for operators (every ticket, those without a
    community too), else the leader's communities."""
    return None if principal.is_operator else sorted(principal.communities)


def sees(principal: Principal, ticket_scope: tuple[str | None, str | None] | None) -> bool:
    """May the caller see a ticket of this (community, hub)? A ticket without a community is operators'."""
    if ticket_scope is None:
        return False
    community = ticket_scope[0]
    return principal.is_operator or (community is not None and community in principal.communities)


def body_limit(fleet: FleetConfig) -> int:
    """The largest request body a ticket route reads: MAX_ATTACHMENTS attachments as base64, plus text."""
    return MAX_ATTACHMENTS * base64_limit(desk.support_of(fleet).max_attachment_bytes) + 1_048_576


def base64_limit(size: int) -> int:
    return math.ceil(size / 3) * 4 + 4


def decode_attachment(filename: str, content_base64: str, limit: int) -> desk.Attachment:
    """An attachment sent as base64; its length is checked before it is decoded."""
    name = desk.clean_filename(filename or "attachment")
    if len(content_base64) > base64_limit(limit):
        raise desk.TicketError(
            f"{name} is about {len(content_base64) * 3 / 4 / 1_048_576:.1f} MiB; attachments may be up to "
            f"{limit / 1_048_576:.1f} MiB (crop the screenshot, or share a link to the file)"
        )
    try:
        data = base64.b64decode(content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise desk.TicketError(f"{name}: content_base64 is not base64; encode the file's bytes") from None
    attachment = desk.Attachment(filename=name, data=data)
    desk.attachment_type(attachment, limit)
    return attachment


# --------------------------------------------------------------------------- the queue


def parse_filters(
    principal: Principal,
    *,
    state: str = "",
    priority: str = "",
    community: str = "",
    assignee: str = "",
    hub: str = "",
    due: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The queue's filters as list_tickets takes them. `state`: active (default), all or one state;
    `assignee`: mine, unassigned or an account; `due`: overdue or a number of hours."""
    now = now or utcnow()
    state = state or "active"
    if state not in STATE_CHOICES:
        raise BadFilter(f"state '{state}' is not one of: {', '.join(STATE_CHOICES)}")
    if priority and priority not in PRIORITIES:
        raise BadFilter(f"priority '{priority}' is not one of: {', '.join(PRIORITIES)}")
    due_before: datetime | None = None
    if due == "overdue":
        due_before = now
    elif due:
        try:
            hours = float(due)
        except ValueError:
            hours = -1
        if not 0 < hours <= 24 * 365:
            raise BadFilter(f"due '{due}': write overdue, or a number of hours from 1 to 8760")
        due_before = now + timedelta(hours=hours)
    who = {"mine": principal.username, "unassigned": "none"}.get(assignee, assignee)
    return {
        "states": list(ACTIVE_STATES) if state == "active" else None if state == "all" else [state],
        "priority": priority or None,
        "community": community or None,
        "assignee": who or None,
        "hub": hub or None,
        "due_before": due_before,
    }


def queue(
    store: Store, fleet: FleetConfig, principal: Principal, filters: dict[str, Any], *, limit: int = 500
) -> list[dict[str, Any]]:
    """The tickets the caller may see, matching `filters` (parse_filters), most urgent first."""
    rows = desk.list_tickets(store, fleet, communities=scope(principal), limit=limit, **filters)
    for row in rows:
        row["clock"] = clock_of(row)
    return rows


def clock_of(ticket: dict[str, Any]) -> dict[str, Any]:
    """The target a queue row shows: the first response's until there is one, then the resolution's."""
    targets = ticket["targets"]
    if ticket["first_response_at"] is None:
        return {"name": "first response", **targets["first_response"]}
    return {"name": "resolution", **targets["resolution"]}


def nav_count(store: Store, principal: Principal) -> int | None:
    """Active tickets assigned to the caller, plus new ones they may see (the nav link's number); None when
    the count cannot be read (the page is shown without it)."""
    try:
        query = select(func.count(Ticket.id)).where(
            Ticket.state.in_(ACTIVE_STATES),
            or_(Ticket.assignee == principal.username, Ticket.state == "new"),
        )
        if not principal.is_operator:
            query = query.where(Ticket.community.in_(sorted(principal.communities)))
        with store.session() as session:
            return int(session.scalar(query) or 0)
    except Exception:  # the nav of every page must not fail over a count
        log.warning("the tickets count of the nav could not be read", exc_info=True)
        return None


# --------------------------------------------------------------------------- one ticket


def ticket_view(
    store: Store, fleet: FleetConfig, principal: Principal, ticket_id: int, now: datetime | None = None
) -> dict[str, Any]:
    """A ticket as the caller may see it: leaders get the public conversation only (no internal notes, no
    history or time log), operators everything."""
    ticket = desk.get_ticket(store, fleet, ticket_id, public_only=not principal.is_operator, now=now)
    for key in ("history", "time_log", "minutes_logged", "incidents"):
        ticket.setdefault(key, None)
    by_message: dict[int | None, list[dict[str, Any]]] = {}
    for item in ticket["attachments"]:
        by_message.setdefault(item["message_id"], []).append(item)
    for message in ticket["messages"]:
        message["attachments"] = by_message.get(message["id"], [])
    ticket["clock"] = clock_of(ticket)
    return ticket


def visible_attachment(
    store: Store, fleet: FleetConfig, principal: Principal, ticket_id: int, attachment_id: int
) -> Any:
    """The attachment (with bytes) if the caller may see it: a leader never gets an internal note's."""
    if not principal.is_operator:
        shown = desk.get_ticket(store, fleet, ticket_id, public_only=True)["attachments"]
        if attachment_id not in {a["id"] for a in shown}:
            return None
    return desk.attachment(store, ticket_id, attachment_id)


def operators(fleet: FleetConfig) -> list[str]:
    return [a.username for a in fleet.settings.console.accounts if a.role == "operator"]


def form_choices(fleet: FleetConfig, principal: Principal) -> dict[str, Any]:
    """What the forms offer: categories, urgencies with their help, priorities, operators, hubs."""
    hubs = sorted(
        (h for h in fleet.hubs.values() if principal.sees_hub(h)), key=lambda h: (h.community, h.name)
    )
    return {
        "categories": CATEGORIES,
        "urgencies": URGENCY_HELP,
        "priorities": PRIORITIES,
        "operators": operators(fleet),
        "hubs": [{"name": h.name, "community": h.community} for h in hubs],
    }


# --------------------------------------------------------------------------- context (CONTEXT helper)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


async def capture(
    fleet: FleetConfig,
    store: Store,
    hub: str,
    username: str | None,
    *,
    state_dir: Path | None,
    start_log: bool = False,
) -> dict[str, Any]:
    """The hub's context at this moment (support.context.capture_context), with the person's last server
    start log when asked for. Never raises: what could not be read is listed in `problems`."""
    import asyncio

    context_module = _optional("hubfleet.support.context")
    if context_module is None:
        return {"problems": ["the hub's context cannot be captured by this version of hubfleet"]}
    try:
        context: dict[str, Any] = await asyncio.wait_for(
            context_module.capture_context(fleet, store, hub, username, state_dir=state_dir),
            CONTEXT_TIMEOUT,
        )
    except Exception as exc:  # the ticket is opened anyway; the reason is kept on it
        log.warning("the context of hub %s could not be captured", hub, exc_info=True)
        context = {"problems": [f"the hub's context could not be captured: {type(exc).__name__}: {exc}"]}
    if start_log and username:
        try:
            context["start_log"] = await asyncio.to_thread(
                context_module.start_log, fleet, hub, username, state_dir=state_dir
            )
        except Exception as exc:
            context.setdefault("problems", []).append(f"the start log could not be read: {exc}")
    return context


# --------------------------------------------------------------------------- support hours (WATCH helper)


def hours_status(store: Store, fleet: FleetConfig, community: str) -> tuple[dict[str, Any] | None, str]:
    """(support.hours.budget_status, a note): the status None with the reason when there is none."""
    hours = _optional("hubfleet.support.hours")
    if hours is None:
        return None, "Support hours are not counted by this version of hubfleet."
    try:
        status: dict[str, Any] | None = hours.budget_status(store, fleet, community)
    except Exception as exc:
        log.warning("the support hours of %s could not be read", community, exc_info=True)
        return None, f"The support hours could not be read: {exc}"
    if status is None:
        return None, f"{community} has no support-hours budget (communities/{community}: support.budget)."
    return _plain(status), ""


def _plain(value: Any) -> Any:
    """Dates as ISO strings, all the way down (the API's shapes and the charts take strings)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def burn_chart(community: str, status: dict[str, Any] | None) -> dict[str, Any]:
    """The burn-down as the console's charts take it: per day, the hours left and the ideal line."""
    rows: dict[str, list[Any]] = {}
    if status is not None:
        budget = float(status["budget_hours"])
        for point in status.get("ideal", []):
            rows.setdefault(str(point["day"]), [None, None])[1] = round(float(point["hours_left"]), 2)
        for point in status.get("burn", []):
            left = round(budget - float(point["used_hours"]), 2)
            rows.setdefault(str(point["day"]), [None, None])[0] = left
    return {
        "name": "support-hours",
        "title": f"Support hours left, {community}",
        "y_title": "hours",
        "columns": ["day", "hours_left", "ideal"],
        "rows": [[day, *values] for day, values in sorted(rows.items())],
    }
