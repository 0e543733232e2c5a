"""Ready mode by the clock: which event each hub should be ready for at `now`, what has to change for it to
be so, and when to look again. Pure functions of the fleet's events and the store's ready-mode windows: the
daemon (local hubs, daemon/event_schedule.py) and `hubfleet events apply` (kubernetes hubs,
deploy/ready_apply.py) both act on what these say, so both follow one rule.

The rule, per hub:
- the schedule: an event's window is [start - ready_lead_minutes, end); when two windows meet (the next
  event's lead time reaches into one still running) the later event wins (`ready_event`);
- an operator's `on` (`hubfleet event ready HUB EVENT --on`) opens the event's window ahead of the schedule;
  it lasts until the event ends (or an `--off`);
- an operator's `off` inside an event's scheduled window holds for the rest of that window: the schedule never
  undoes it (an `--on` does). The store's window says who did what (`started_by`/`ended_by`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub, KubernetesCluster
from hubfleet.config.models_events import Event
from hubfleet.store.events import Window


@dataclass(frozen=True)
class ReadySeats:
    """A hub's ready mode as rendered: the event it is ready for and the user placeholders kept for it.
    `event` None: not in ready mode (the fixed `kubernetes.placeholders` only)."""

    event: str | None = None
    seats: int = 0
    until: datetime | None = None
    """The event's end (shown in the values' header; not a value)."""


NOT_READY = ReadySeats()


def ready_event(events: Sequence[Event], now: datetime) -> Event | None:
    """The event the schedule says a hub is ready for at `now`: of those whose ready window holds `now`, the
    one starting last (when the next event's lead time reaches into one still running, the coming rush is
    what warm seats are for). The daemon uses it for local hubs too."""
    found = [event for event in events if event.ready_at(now)]
    return max(found, key=lambda e: (e.start, e.name)) if found else None


def event_seats(fleet: FleetConfig, hub: Hub, event: Event) -> ReadySeats:
    """The user placeholders for `event` on the hub's cluster: Event.seats with the cluster's
    `node_startup_minutes` (10 when the cluster is not a kubernetes one, as in models built in code)."""
    cluster = fleet.clusters.get(hub.cluster)
    minutes = cluster.node_startup_minutes if isinstance(cluster, KubernetesCluster) else 10.0
    return ReadySeats(event.name, event.seats(minutes), event.end)


def scheduled_ready(fleet: FleetConfig, hub: Hub, now: datetime | None = None) -> ReadySeats:
    """What the schedule alone says at `now` (default: the clock); operators' overrides are
    `wanted`'s, whose answer callers pass to the renderer as `ready`."""
    event = ready_event(fleet.events_of(hub.name), now or utcnow())
    return event_seats(fleet, hub, event) if event is not None else NOT_READY


SCHEDULE = "schedule"
OPERATOR = "operator"
READY_MARK = "ready mode:"
"""Starts the kubernetes values' header line in ready mode (deploy/plan.py reads it for its reason)."""


def operator(actor: str) -> str:
    """How an operator's change is recorded in a window's started_by / ended_by."""
    return f"{OPERATOR} {actor}".strip()


def by_operator(by: str | None) -> bool:
    return bool(by) and (by == OPERATOR or str(by).startswith(OPERATOR + " "))


@dataclass(frozen=True)
class Wanted:
    """What a hub should be at `now`: ready for `event` (None: not in ready mode), and why."""

    hub: str
    event: Event | None
    why: Literal["schedule", "operator on", "operator off", "none"]


@dataclass(frozen=True)
class Transition:
    """One change to make: open the window of `event`, or close the hub's open window (of `event`)."""

    hub: str
    kind: Literal["start", "end"]
    event: str
    why: str

    def describe(self) -> str:
        verb = "enters ready mode for" if self.kind == "start" else "leaves ready mode of"
        return f"{self.hub} {verb} event {self.event} ({self.why})"


def wanted(hub: str, events: Sequence[Event], windows: Sequence[Window], now: datetime) -> Wanted:
    """The hub's ready mode at `now` from its events and its ready-mode windows (any order)."""
    by_name = {event.name: event for event in events}
    opened = [w for w in windows if w.open]
    current = max(opened, key=lambda w: w.started_at) if opened else None
    if current is not None and by_operator(current.started_by):
        event = by_name.get(current.event)
        if event is not None and now < event.end:
            return Wanted(hub, event, "operator on")
    scheduled = ready_event(events, now)
    if scheduled is None:
        return Wanted(hub, None, "none")
    if current is not None and current.event == scheduled.name:
        return Wanted(hub, scheduled, "schedule")  # open, by the schedule (or an operator's on)
    if switched_off(scheduled, windows):
        return Wanted(hub, None, "operator off")
    return Wanted(hub, scheduled, "schedule")


def switched_off(event: Event, windows: Iterable[Window]) -> bool:
    """Whether an operator ended a window of `event` within its scheduled window (it then stays off)."""
    return any(
        w.event == event.name
        and w.ended_at is not None
        and by_operator(w.ended_by)
        and event.ready_from() <= w.ended_at < event.end
        for w in windows
    )


def transitions(want: Wanted, windows: Sequence[Window]) -> list[Transition]:
    """What turns the hub's open window into `want`: end the open one that is not wanted, start the wanted
    one when it is not open."""
    opened = [w for w in windows if w.open]
    changes: list[Transition] = []
    keep = False
    for window in opened:
        if want.event is not None and window.event == want.event.name:
            keep = True
            continue
        why = "operator off" if want.why == "operator off" else "its window is over"
        if want.event is not None:
            why = f"event {want.event.name} is next"
        changes.append(Transition(want.hub, "end", window.event, why))
    if want.event is not None and not keep:
        changes.append(Transition(want.hub, "start", want.event.name, want.why))
    return changes


def next_change(events: Iterable[Event], now: datetime) -> datetime | None:
    """The first moment after `now` at which the schedule can change its answer (a window opens or ends)."""
    times = [t for event in events for t in (event.ready_from(), event.end) if t > now]
    return min(times) if times else None


def fleet_next_change(config: FleetConfig, hubs: Iterable[str], now: datetime) -> datetime | None:
    found = [t for hub in hubs if (t := next_change(config.events_of(hub), now)) is not None]
    return min(found) if found else None


def seats(config: FleetConfig, hub: str, want: Wanted) -> ReadySeats:
    """The kubernetes user placeholders `want` renders."""
    if want.event is None:
        return NOT_READY
    return event_seats(config, config.hubs[hub], want.event)


def upcoming(config: FleetConfig, now: datetime, days: float = 7) -> list[tuple[str, Event, int | None]]:
    """Ready-mode windows that are open or open within `days`: (hub, event, kubernetes seats or None for a
    local hub), by the window's start (`hubfleet plan` lists them)."""
    horizon = now + timedelta(days=days)
    found = []
    for event in config.events():
        hub = config.hubs.get(event.hub or "")
        if hub is None or event.end <= now or event.ready_from() > horizon:
            continue
        kind = config.clusters[hub.cluster].kind
        count = event_seats(config, hub, event).seats if kind == "kubernetes" else None
        found.append((hub.name, event, count))
    return sorted(found, key=lambda row: (row[1].ready_from(), row[0]))
