"""Requests from a hub's "Get help" form become tickets: the control plane pulls the hub's support outbox.

The hub's `support` service (render/support_hub.py) keeps what people send in an outbox beside the hub's
database. `pull_hub` fetches it with the control plane's own service token for that hub
(GET /services/support/api/outbox), opens a ticket for each request with the hub's context captured now,
then acknowledges what it has (POST .../api/outbox/ack), which removes it from the hub. A request whose
ticket exists already (same hub and reference: the acknowledgement was lost) is acknowledged without a second
ticket. Why pull: the hub needs no route to or credential for the control plane (docs/support.md).

The hub is not trusted: everything it hands over is checked again here. What does not pass (an attachment too
large or of the wrong type, an over-long description, an unknown category) is dropped from the ticket and an
internal note says what was dropped: a request is never lost silently.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from hubfleet.backends import backends_for
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_support import CATEGORIES, PRIORITIES
from hubfleet.render.support_hook import OUTBOX_PATH
from hubfleet.store.api import Store
from hubfleet.store.tickets import Ticket
from hubfleet.support import tickets
from hubfleet.support.tickets import MAX_BODY, Attachment, NewTicket, TicketError

log = logging.getLogger("hubfleet.support")

PAGE = 10
"""Requests per fetch (each may carry an attachment of up to support.max_attachment_bytes)."""
MAX_PAGES = 20
TIMEOUT = 30.0
EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
USERNAME = re.compile(r"^[^\s<>\"']{1,255}$")


class IntakeError(Exception):
    """The hub's support service could not be read or did not answer as expected."""


def _endpoint(fleet: FleetConfig, hub: str, state_dir: Path) -> tuple[str, str]:
    cluster = fleet.clusters[fleet.hubs[hub].cluster]
    endpoint = backends_for(fleet, state_dir)[cluster.kind].endpoint(hub)
    return endpoint.url.rstrip("/") + OUTBOX_PATH, endpoint.token


def existing_ticket(store: Store, hub: str, ref: str) -> int | None:
    with store.session() as session:
        return session.scalar(select(Ticket.id).where(Ticket.hub == hub, Ticket.intake_ref == ref))


def checked_request(fleet: FleetConfig, hub: str, item: dict[str, Any]) -> tuple[NewTicket, bool, list[str]]:
    """A NewTicket from one outbox request, what did not pass the checks dropped (and named), and whether
    the start log was asked for."""
    dropped: list[str] = []
    support = fleet.settings.support
    ref = str(item.get("ref") or "")[:100]
    username = item.get("username")
    if username is not None and not (isinstance(username, str) and USERNAME.match(username)):
        dropped.append("the username the hub gave (not a username)")
        username = None
    verified = bool(item.get("verified")) and username is not None
    category = item.get("category")
    if category not in CATEGORIES:
        dropped.append(f"the category {str(category)[:40]!r} (not one of ours: filed as 'other')")
        category = "other"
    urgency = item.get("urgency")
    if urgency not in PRIORITIES:
        dropped.append(f"the urgency {str(urgency)[:40]!r} (not one of ours: filed as 'normal')")
        urgency = "normal"
    description = item.get("description") if isinstance(item.get("description"), str) else ""
    description = description.replace("\x00", "").strip()
    if len(description) > MAX_BODY:
        dropped.append(f"the description beyond {MAX_BODY:,} of its {len(description):,} characters")
        description = description[:MAX_BODY]
    if not description:
        dropped.append("the description (it was empty)")
        description = "(The request from the hub's help form had no description.)"
    email = item.get("email")
    if email is not None and not (isinstance(email, str) and EMAIL.match(email)):
        dropped.append("the email address (not an address)")
        email = None
    page = item.get("page") if isinstance(item.get("page"), str) else None
    attachments: list[Attachment] = []
    raw = item.get("attachment")
    if raw:
        name = tickets.clean_filename(str((raw or {}).get("filename") or "attachment"))
        try:
            data = base64.b64decode(str(raw.get("data") or ""), validate=True)
            attachment = Attachment(filename=name, data=data)
            tickets.attachment_type(attachment, support.max_attachment_bytes)
            attachments.append(attachment)
        except (binascii.Error, ValueError, AttributeError):
            dropped.append(f"the attachment {name} (not readable)")
        except TicketError as exc:
            dropped.append(f"the attachment: {exc}")
    new = NewTicket(
        source="hub",
        category=category,
        urgency=urgency,
        subject="",
        description=description,
        hub=hub,
        username=username,
        requester_name=username or "",
        requester_email=email,
        verified=verified,
        page_url=page,
        intake_ref=ref,
        attachments=attachments,
    )
    return new, bool(item.get("include_log")) and username is not None, dropped


async def _context(
    fleet: FleetConfig, store: Store, hub: str, username: str | None, state_dir: Path | None, log_asked: bool
) -> dict[str, Any]:
    """The hub's context (support.context); what cannot be read is said in `problems`, never raised."""
    context: dict[str, Any] = {"problems": []}
    try:
        from hubfleet.support.context import capture_context, start_log

        context = await capture_context(fleet, store, hub, username, state_dir=state_dir)
        if log_asked and username:
            context["start_log"] = start_log(fleet, hub, username, state_dir=state_dir)
    except Exception as exc:  # noqa: BLE001 - the ticket matters more than its context
        log.warning("support intake: context of hub %s not captured: %s", hub, exc)
        context.setdefault("problems", []).append(f"context not captured: {type(exc).__name__}")
    return context


async def _open(
    fleet: FleetConfig, store: Store, hub: str, item: dict[str, Any], state_dir: Path | None
) -> int:
    new, log_asked, dropped = checked_request(fleet, hub, item)
    context = await _context(fleet, store, hub, new.username, state_dir, log_asked)
    if dropped:
        context["intake_dropped"] = dropped
    new.context = context
    environment = context.get("environment")
    if isinstance(environment, str):
        new.environment = environment
    elif isinstance(environment, dict) and isinstance(environment.get("name"), str):
        new.environment = environment["name"]
    ticket_id = tickets.open_ticket(store, fleet, new, now=datetime.now(UTC))
    if dropped:
        note = "Dropped from the hub's request (the rest is this ticket):\n" + "\n".join(
            f"- {what}" for what in dropped
        )
        tickets.add_message(
            store,
            fleet,
            ticket_id,
            author="hubfleet",
            author_kind="system",
            body=note,
            public=False,
            via="hub",
        )
    return ticket_id


async def pull_hub(fleet: FleetConfig, store: Store, hub: str, *, state_dir: Path) -> list[int]:
    """Fetch hub `hub`'s support outbox, open a ticket for each new request, acknowledge them; returns the
    new tickets' ids. IntakeError when the hub's service cannot be read (nothing is acknowledged then)."""
    url, token = _endpoint(fleet, hub, state_dir)
    headers = {"Authorization": f"token {token}"}
    opened: list[int] = []
    async with httpx.AsyncClient(timeout=TIMEOUT, headers=headers) as client:
        for _ in range(MAX_PAGES):
            try:
                response = await client.get(url, params={"limit": PAGE})
            except httpx.HTTPError as exc:
                raise IntakeError(f"hub {hub}: the support service did not answer ({exc})") from None
            if response.status_code != 200:
                raise IntakeError(f"hub {hub}: the support outbox answered HTTP {response.status_code}")
            try:
                items = response.json()["requests"]
            except (ValueError, KeyError, TypeError):
                raise IntakeError(f"hub {hub}: the support outbox did not answer JSON") from None
            if not items:
                break
            done: list[str] = []
            for item in items:
                ref = str(item.get("ref") or "") if isinstance(item, dict) else ""
                if not ref:
                    continue
                if existing_ticket(store, hub, ref[:100]) is None:
                    opened.append(await _open(fleet, store, hub, item, state_dir))
                done.append(ref)
            ack = await client.post(url + "/ack", json={"refs": done})
            if ack.status_code != 200:
                raise IntakeError(f"hub {hub}: acknowledging the outbox answered HTTP {ack.status_code}")
            if len(items) < PAGE:
                break
    return opened
