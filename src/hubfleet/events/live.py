"""An event while it runs, as its console page shows it: attendees expected vs. signed in, running servers,
spawn latency over the last minutes and failures (from the hub's own histogram), ready mode, the last
readiness test; and, once it is over, its stored report.

Everything comes from the store (the usage collector samples each hub every `monitoring.collect_interval`
seconds), so the page is as fresh as the last collection, whose time it shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hubfleet.config.models_events import Event
from hubfleet.events import figures, spawns
from hubfleet.events.catalog import phase
from hubfleet.store import events as stored

RECENT_MINUTES = 10
""""Spawn latency over the last minutes": this many."""


def test_json(record: stored.TestRecord | None) -> dict[str, Any] | None:
    """A readiness test as the page and the report show it: when, passed, and its report's figures."""
    if record is None:
        return None
    return {"at": record.at.isoformat(), "passed": record.passed, "report": record.report}


def counted_since(event: Event, window: stored.Window | None) -> datetime:
    """Attendees count from the start of ready mode for this event, else from the doors' opening."""
    return min(event.start, window.started_at) if window is not None else event.start


def live_view(
    store: Any, event: Event, hub: str, now: datetime, minutes: int = RECENT_MINUTES
) -> dict[str, Any]:
    """The event's page as JSON (see the module docstring)."""
    windows = stored.windows(store, hub, event.name, limit=20)
    current = next((w for w in windows if w.open), None)
    since = counted_since(event, windows[-1] if windows else None)
    until = min(now, event.end)
    signed_in = figures.users_active(store, hub, since, until) if now >= since else []
    stretches = figures.server_stretches(store, hub, since, until) if now >= since else []
    latest = figures.latest_sample(store, hub)
    tests = stored.tests(store, hub, event.name, limit=1)
    made = stored.report(store, hub, event.name)
    recent_from = now - timedelta(minutes=minutes)
    return {
        "hub": hub,
        "event": event.name,
        "display_name": event.display_name or event.name,
        "phase": phase(event, now),
        "start": event.start.isoformat(),
        "end": event.end.isoformat(),
        "ready_from": event.ready_from().isoformat(),
        "now": now.isoformat(),
        "attendees": {
            "expected": event.attendees,
            "signed_in": len(signed_in),
            "since": since.isoformat(),
        },
        "running_servers": {
            "now": latest[1] if latest else None,
            "sampled_at": latest[0].isoformat() if latest else None,
            "attendee_servers": sum(1 for s in stretches if s.open and now < event.end),
        },
        "spawns_recent": {
            "minutes": minutes,
            **spawns.spawns_between(store, hub, recent_from, now),
        },
        # from the doors' opening: the readiness test when ready mode began is not the attendees' wait
        "spawns_since_start": (
            {"since": event.start.isoformat(), **spawns.spawns_between(store, hub, event.start, until)}
            if now >= event.start
            else None
        ),
        "target_p95_seconds": event.spawn_p95_seconds,
        "ready_mode": {
            "on": current is not None and current.event == event.name,
            "current": current.to_json() if current else None,
            "windows": [w.to_json() for w in windows],
        },
        "last_test": test_json(tests[0] if tests else None),
        "report": (
            {
                "made_at": made.made_at.isoformat(),
                "sent_to": made.sent_to,
                "error": made.error,
                "report": made.report,
            }
            if made
            else None
        ),
    }
