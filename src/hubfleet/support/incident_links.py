"""Incidents on tickets: an incident of a ticket's hub that is open at some moment while the ticket is active
(opened after the ticket, or still open when it came in) is linked to it, and when the incident resolves an
internal note on the ticket says so, so first line can tell the requester. Budget (`cost`) incidents are not
a hub user's trouble and are left out.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select

from hubfleet.clock import as_utc, require_aware
from hubfleet.store.api import Store
from hubfleet.store.models import Incident
from hubfleet.store.tickets import ACTIVE_STATES, Ticket, TicketIncident
from hubfleet.support.tickets import link_incident, note_incident_resolved

LEFT_OUT = ("cost",)


def link_incidents(store: Store, *, now: datetime | None = None) -> list[tuple[int, int]]:
    """Link each active ticket to its hub's incidents of its time; returns the new (ticket, incident)."""
    now = require_aware(now)
    query = (
        select(Ticket.id, Incident.id)
        .join(
            Incident,
            and_(
                Incident.hub == Ticket.hub,
                Incident.started_at <= now,
                or_(Incident.resolved_at.is_(None), Incident.resolved_at >= Ticket.created_at),
            ),
        )
        .outerjoin(
            TicketIncident,
            and_(TicketIncident.ticket_id == Ticket.id, TicketIncident.incident_id == Incident.id),
        )
        .where(
            Ticket.state.in_(ACTIVE_STATES),
            Ticket.hub.is_not(None),
            Incident.kind.not_in(LEFT_OUT),
            TicketIncident.ticket_id.is_(None),
        )
        .order_by(Ticket.id, Incident.id)
    )
    with store.session() as session:
        pairs = [(ticket_id, incident_id) for ticket_id, incident_id in session.execute(query)]
    return [pair for pair in pairs if link_incident(store, *pair, now=now)]


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds)) // 60
    return (
        f"{minutes // 1440}d {minutes % 1440 // 60}h"
        if minutes >= 1440
        else f"{minutes // 60}h {minutes % 60:02d}m"
    )


def resolution_text(incident: Incident) -> str:
    rule = f" ({incident.rule})" if incident.rule else ""
    resolved = as_utc(incident.resolved_at) if incident.resolved_at else None
    lasted = _duration((resolved - as_utc(incident.started_at)).total_seconds()) if resolved else "?"
    when = f"{resolved:%Y-%m-%d %H:%M} UTC" if resolved else "?"
    return (
        f"Incident #{incident.id} on hub {incident.hub} ({incident.kind}{rule}) was resolved at {when}, "
        f"after {lasted}. Its cause: {' '.join(incident.cause.split()) or '-'}. "
        "If the requester's trouble came from it, tell them it is over."
    )


def note_resolutions(store: Store, *, now: datetime | None = None) -> list[tuple[int, int]]:
    """Note on each ticket (not closed) that a linked incident resolved, once; returns (ticket, incident)."""
    now = require_aware(now)
    query = (
        select(TicketIncident.ticket_id, Incident)
        .join(Incident, Incident.id == TicketIncident.incident_id)
        .join(Ticket, Ticket.id == TicketIncident.ticket_id)
        .where(
            TicketIncident.resolution_noted_at.is_(None),
            Incident.resolved_at.is_not(None),
            Ticket.state != "closed",
        )
        .order_by(TicketIncident.ticket_id, Incident.id)
    )
    with store.session() as session:
        found = [
            (ticket_id, incident.id, resolution_text(incident))
            for ticket_id, incident in session.execute(query)
        ]
    return [
        (ticket_id, incident_id)
        for ticket_id, incident_id, text in found
        if note_incident_resolved(store, ticket_id, incident_id, text, now=now)
    ]
