"""The fleet's events as `hubfleet events`, `plan` and the console show them: where each stands by the clock,
and what the store knows of it (ready mode, the last readiness test, the report)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_events import Event
from hubfleet.store import events as stored

Phase = Literal["upcoming", "ready", "on", "past"]


def phase(event: Event, now: datetime) -> Phase:
    """upcoming (before ready mode), ready (ready mode before the start), on (running), past."""
    if now >= event.end:
        return "past"
    if now >= event.start:
        return "on"
    return "ready" if now >= event.ready_from() else "upcoming"


@dataclass(frozen=True)
class EventRow:
    event: Event
    hub: str
    phase: Phase
    ready: stored.Window | None
    """The hub's open ready-mode window for this event, if any."""
    last_test: stored.TestRecord | None
    report: stored.ReportRecord | None

    def to_json(self) -> dict[str, Any]:
        e = self.event
        rush = e.rush()
        return {
            "hub": self.hub,
            "name": e.name,
            "display_name": e.display_name or e.name,
            "start": e.start.isoformat(),
            "end": e.end.isoformat(),
            "timezone": e.timezone,
            "ready_from": e.ready_from().isoformat(),
            "attendees": e.attendees,
            "arrival": {"people": rush.people, "seconds": rush.seconds, "text": e.arrival},
            "environment": e.environment,
            "spawn_p95_seconds": e.spawn_p95_seconds,
            "phase": self.phase,
            "ready_mode": self.ready.to_json() if self.ready else None,
            "last_test": (
                {"at": self.last_test.at.isoformat(), "passed": self.last_test.passed}
                if self.last_test
                else None
            ),
            "report": self.report.report if self.report else None,
        }


def find_event(config: FleetConfig, hub: str, name: str) -> Event:
    """The hub's event called `name`; a UserError naming the hub's events when there is none."""
    from hubfleet.settings import UserError
    from hubfleet.suggest import suggestion

    config.require_hub(hub)
    events = config.events_of(hub)
    for event in events:
        if event.name == name:
            return event
    hint = suggestion(name, [e.name for e in events], "events", "the hub lists no `events`")
    raise UserError(f"no event '{name}' on hub {hub}; {hint}")


def rows(config: FleetConfig, store: Any | None, now: datetime) -> list[EventRow]:
    """Every event of the fleet by start time, with the store's view of it when a store is given."""
    found = []
    for event in config.events():
        hub = event.hub or ""
        window = last = made = None
        if store is not None:
            open_window = stored.open_window(store, hub)
            window = open_window if open_window and open_window.event == event.name else None
            tests = stored.tests(store, hub, event.name, limit=1)
            last = tests[0] if tests else None
            made = stored.report(store, hub, event.name)
        found.append(EventRow(event, hub, phase(event, now), window, last, made))
    return found
