"""The console's event pages and their JSON: /events (the events of the hubs the caller may see),
/events/{hub}/{event} (live figures during the event, its report after), and the same under /api/events.

A community leader sees the events of their communities' hubs only; any other answers 404 like a name
that does not exist (access.hub_or_404). Handlers are plain functions: FastAPI runs their store reads in
its thread pool, off the daemon's event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response

from hubfleet.clock import utcnow
from hubfleet.config.models_events import Event
from hubfleet.console.access import Principal, hub_or_404
from hubfleet.console.api import BEARER, Caller
from hubfleet.console.api_models import errors
from hubfleet.console.web import console_state, page_principal, render
from hubfleet.events.catalog import EventRow, rows
from hubfleet.events.live import live_view

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["console"], dependencies=[Depends(BEARER)])
PagePrincipal = Annotated[Principal, Depends(page_principal)]
HubName = Annotated[str, Path(description="The event's hub.", max_length=200)]
EventName = Annotated[str, Path(description="The event's name.", max_length=200)]


def _visible_rows(request: Request, principal: Principal) -> list[EventRow]:
    source = console_state(request).source
    fleet = source.fleet
    return [
        row
        for row in rows(fleet, source.store, utcnow())
        if row.hub in fleet.hubs and principal.sees_hub(fleet.hubs[row.hub])
    ]


def _event(request: Request, principal: Principal, hub: str, name: str) -> tuple[str, Event]:
    """The event, or 404 (its hub not visible to the caller, or no such event on it)."""
    fleet = console_state(request).fleet
    found = hub_or_404(fleet, principal, hub)
    for event in fleet.events_of(found.name):
        if event.name == name:
            return found.name, event
    raise HTTPException(status_code=404, detail=f"no event '{name}' on hub {found.name}")


def _live(request: Request, principal: Principal, hub: str, name: str) -> dict[str, Any]:
    hub_name, event = _event(request, principal, hub, name)
    return live_view(console_state(request).store, event, hub_name, utcnow())


# --------------------------------------------------------------------------- pages


@pages.get("/events")
def events_page(request: Request, principal: PagePrincipal) -> Response:
    found = _visible_rows(request, principal)
    order = {"on": 0, "ready": 1, "upcoming": 2, "past": 3}
    shown = sorted(
        found,
        key=lambda r: (order[r.phase], r.event.start if r.phase != "past" else -r.event.start.timestamp()),
    )
    return render(request, "events.html", {"events": [r.to_json() for r in shown]})


@pages.get("/events/{hub}/{event}")
def event_page(request: Request, principal: PagePrincipal, hub: str, event: str) -> Response:
    view = _live(request, principal, hub, event)
    community = console_state(request).fleet.hubs[view["hub"]].community
    return render(request, "event.html", {"view": view, "community": community})


# --------------------------------------------------------------------------- API


@api.get("/events", responses=errors(401, 422), summary="Events of the hubs the caller may see")
def list_events(request: Request, principal: Caller) -> dict[str, Any]:
    """`{"events": [...]}` by start time: when, how many people, the phase (upcoming, ready, on, past),
    ready mode, the last readiness test and the report once made."""
    return {"events": [row.to_json() for row in _visible_rows(request, principal)]}


@api.get(
    "/events/{hub}/{event}",
    responses=errors(401, 404, 422),
    summary="One event: attendees, running servers, recent spawns and failures, ready mode, report",
)
def get_event(request: Request, hub: HubName, event: EventName, principal: Caller) -> dict[str, Any]:
    """The event's live figures from the store (as fresh as the last usage collection, `sampled_at`):
    attendees expected vs. signed in, running servers, spawn latency and failures over the last minutes and
    since the start (from the hub's own histogram), ready mode, the last readiness test, and the report."""
    return _live(request, principal, hub, event)


@api.get(
    "/events/{hub}/{event}/report",
    responses=errors(401, 404, 422),
    summary="An event's report (made once it is over)",
)
def get_event_report(request: Request, hub: HubName, event: EventName, principal: Caller) -> dict[str, Any]:
    """The stored report, with when it was made and to whom it was mailed; 404 before there is one."""
    view = _live(request, principal, hub, event)
    if view["report"] is None:
        raise HTTPException(
            status_code=404,
            detail=f"no report of {event} on {hub} yet: the daemon makes it once the event is over "
            f"(or run `hubfleet event report {hub} {event}`)",
        )
    return view["report"]  # type: ignore[no-any-return]
