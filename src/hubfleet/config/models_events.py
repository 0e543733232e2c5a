"""Events: a hackweek, a workshop, a class's first lab: an hour when many people start servers at once.

An event is listed in its hub's file (`events:`) or in its community's file (`events:` with `hub:`); it is
never inherited through `defaults` (an event belongs to one hub). Past events stay in the files: reports are
made from them. Times carry a time zone: an offset in the value, or `timezone:` (IANA name) for the event.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from hubfleet.config.fields import Name, PatternHint, Strict

_ARRIVAL = re.compile(
    r"^\s*(\d+)\s*(?:people\s*)?(?:in|within|per)\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)\s*$", re.I
)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600}
DEFAULT_LEAD_MINUTES = 30
DEFAULT_TEST_USERS = 10


@dataclass(frozen=True)
class Arrival:
    """`people` arrive within `seconds` (the event's expected rush)."""

    people: int
    seconds: float

    @property
    def per_minute(self) -> float:
        return self.people * 60 / self.seconds


def parse_arrival(text: str) -> Arrival:
    """'60 in 3m', '60 people within 3 min', '100 in 90s' -> Arrival; ValueError naming the form otherwise."""
    match = _ARRIVAL.match(text)
    if not match or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
        raise ValueError(
            f"'{text}' is not an arrival rate; write how many people arrive within how long, such as "
            "'60 in 3m', '100 in 90s' or '300 in 1h'"
        )
    return Arrival(int(match.group(1)), float(match.group(2)) * _UNIT_SECONDS[match.group(3).lower()])


def _arrival(value: str) -> str:
    parse_arrival(value)
    return value


ArrivalText = Annotated[str, AfterValidator(_arrival)]
EventName = Annotated[
    str,
    Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
    PatternHint("is not an event name; use lower-case letters, digits and '-', such as hackweek-2026-day1"),
]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"'{value}' is not a time zone name; use an IANA name such as Europe/Berlin or America/Denver"
        ) from None
    return value


class Event(Strict):
    """An event on one hub: when, how many people, how fast they arrive, and what they must not wait longer
    than. Before it starts (`ready_lead_minutes`) the hub goes into ready mode; it leaves it at `end`."""

    name: EventName = Field(description="Unique on its hub; used in `hubfleet events` and the console.")
    hub: Name | None = Field(
        default=None, description="The hub (required in a community file; in a hub file, that hub)."
    )
    display_name: str = Field(default="", description="Shown on the event's page, such as 'Hackweek day 1'.")
    start: datetime = Field(description="When the doors open, such as 2026-12-07T09:00 (with `timezone`).")
    end: datetime = Field(description="When the event is over; ready mode ends here.")
    timezone: Annotated[str, AfterValidator(_time_zone)] | None = Field(
        default=None,
        description="IANA time zone of `start` and `end` when they carry no offset, such as Europe/Berlin.",
    )
    attendees: int = Field(ge=1, le=100_000, description="How many people are expected.")
    arrival: ArrivalText | None = Field(
        default=None,
        description="How fast they arrive, such as '60 in 3m'; unset: all attendees within 5 minutes.",
    )
    environment: str | None = Field(
        default=None, description="The slug of the hub's environment attendees use; unset: the default one."
    )
    spawn_p95_seconds: float = Field(
        default=10.0, gt=0, le=600, description="Target: 95% of servers start within this many seconds."
    )
    ready_lead_minutes: int = Field(
        default=DEFAULT_LEAD_MINUTES,
        ge=0,
        le=24 * 60,
        description="Ready mode starts this many minutes before `start`.",
    )
    readiness_test_users: int = Field(
        default=DEFAULT_TEST_USERS,
        ge=0,
        le=500,
        description="Simulated attendees of the test run when ready mode starts (0: no test).",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        return value.isoformat() if isinstance(value, datetime) else value

    @model_validator(mode="after")
    def _zoned_and_ordered(self) -> Event:
        zone = ZoneInfo(self.timezone) if self.timezone else None
        for key in ("start", "end"):
            value: datetime = getattr(self, key)
            if value.tzinfo is None:
                if zone is None:
                    raise ValueError(
                        f"{key} {value:%Y-%m-%dT%H:%M} has no time zone; add `timezone: Europe/Berlin` (the "
                        "event's IANA zone) or write the offset, such as 2026-12-07T09:00+01:00"
                    )
                object.__setattr__(self, key, value.replace(tzinfo=zone))
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self

    def rush(self) -> Arrival:
        """The expected arrival: `arrival`, else every attendee within five minutes."""
        return parse_arrival(self.arrival) if self.arrival else Arrival(self.attendees, 300.0)

    def ready_from(self) -> datetime:
        return self.start - timedelta(minutes=self.ready_lead_minutes)

    def ready_at(self, now: datetime) -> bool:
        """Whether the schedule says the hub is in ready mode for this event at `now`."""
        return self.ready_from() <= now < self.end

    def seats(self, node_startup_minutes: float) -> int:
        """Seats to keep warm on kubernetes: min(attendees, arrival rate x node start-up time): users who
        come while a new node boots need a place that exists already."""
        during_startup = math.ceil(self.rush().per_minute * node_startup_minutes)
        return max(1, min(self.attendees, during_startup))
