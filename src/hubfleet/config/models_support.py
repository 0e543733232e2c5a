"""The support desk: fleet.yaml `support:` (the support address and mail listener, the working-time calendar,
response-time targets per priority, the first-line rota and second line) and a community's `support:` (its
support-hours budget). See docs/support.md.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from hubfleet.config.fields import Email, Strict, Username

PRIORITIES = ("urgent", "high", "normal", "low")
Priority = Literal["urgent", "high", "normal", "low"]
CATEGORIES = {
    "sign-in": "I can't sign in",
    "server-start": "My server won't start",
    "environment": "An environment or package request",
    "data": "Data and storage",
    "performance": "The hub is slow",
    "billing": "Billing",
    "other": "Something else",
}
Category = Literal["sign-in", "server-start", "environment", "data", "performance", "billing", "other"]
URGENCY_HELP = {
    "urgent": "I (or my class) cannot work at all, right now: a lecture, an exam or a deadline today.",
    "high": "I cannot do my work, but nothing is due in the next few hours.",
    "normal": "Something is wrong or missing, and I can work around it for now.",
    "low": "A question or a wish; no hurry.",
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"'{value}' is not a time zone; write an IANA name such as Europe/Berlin or UTC"
        ) from None
    return value


TimeZone = Annotated[
    str, AfterValidator(_time_zone), Field(description="An IANA time zone, e.g. America/Chicago.")
]


def _clock(value: str) -> str:
    match = re.fullmatch(r"(\d{2}):(\d{2})", value)
    if not match or int(match[1]) > 24 or int(match[2]) > 59 or (int(match[1]) == 24 and int(match[2])):
        raise ValueError(f"'{value}' is not a time of day; write HH:MM from 00:00 to 24:00")
    return value


ClockTime = Annotated[str, AfterValidator(_clock)]


class SupportCalendar(Strict):
    """When the response-time clocks run. The modelled service counts a working day as 24 hours, Monday to
    Friday: that is the default."""

    time_zone: TimeZone = "UTC"
    working_days: list[Weekday] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"], min_length=1
    )
    day_start: ClockTime = Field(default="00:00", description="Working hours start (local time).")
    day_end: ClockTime = Field(
        default="24:00", description="Working hours end (local time; 24:00 = midnight)."
    )
    holidays: list[date] = Field(default_factory=list, description="Days the clocks stand still.")

    @model_validator(mode="after")
    def _day_not_empty(self) -> SupportCalendar:
        if self.day_start >= self.day_end:
            raise ValueError(f"day_start {self.day_start} must be before day_end {self.day_end}")
        return self

    @property
    def hours_per_day(self) -> float:
        start_h, start_m = (int(p) for p in self.day_start.split(":"))
        end_h, end_m = (int(p) for p in self.day_end.split(":"))
        return (end_h * 60 + end_m - start_h * 60 - start_m) / 60


class ResponseTarget(Strict):
    """Working hours (on the calendar) from the ticket's opening to its first public reply and to its
    resolution; the clocks stop while the ticket waits for the requester."""

    first_response_hours: float = Field(gt=0, le=10_000)
    resolution_hours: float = Field(gt=0, le=100_000)

    @model_validator(mode="after")
    def _order(self) -> ResponseTarget:
        if self.resolution_hours < self.first_response_hours:
            raise ValueError("resolution_hours must not be shorter than first_response_hours")
        return self


def _default_targets() -> dict[str, ResponseTarget]:
    return {
        "urgent": ResponseTarget(first_response_hours=4, resolution_hours=24),
        "high": ResponseTarget(first_response_hours=8, resolution_hours=72),
        "normal": ResponseTarget(first_response_hours=24, resolution_hours=120),
        "low": ResponseTarget(first_response_hours=24, resolution_hours=240),
    }


class RotaOverride(Strict):
    week: str = Field(pattern=r"^\d{4}-W(0[1-9]|[1-4]\d|5[0-3])$", description="ISO week, e.g. 2026-W52.")
    account: Username


class Rota(Strict):
    """Who triages new tickets, week by week (ISO weeks, Monday to Sunday in the calendar's time zone): the
    `first_line` console accounts take turns from `starting`, `weeks_each` weeks each; `overrides` name
    the account for single weeks (holidays, swaps)."""

    first_line: list[Username] = Field(default_factory=list)
    starting: date | None = Field(default=None, description="The Monday the first account's turn begins.")
    weeks_each: int = Field(default=1, ge=1, le=52)
    overrides: list[RotaOverride] = Field(default_factory=list)

    @field_validator("starting")
    @classmethod
    def _monday(cls, value: date | None) -> date | None:
        if value is not None and value.weekday() != 0:
            raise ValueError(f"{value} is a {WEEKDAYS[value.weekday()]}; the rota starts on a Monday")
        return value


class SupportListener(Strict):
    """The SMTP listener that receives the support address's mail (the MX, or a forwarding rule, delivers
    to it); bind it to loopback behind a mail relay, or to a public address on port 25."""

    host: str = Field(default="127.0.0.1")
    port: int = Field(default=2525, ge=1, le=65535)
    max_message_bytes: int = Field(default=15 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)


class Support(Strict):
    """fleet.yaml `support:` — the help desk (docs/support.md)."""

    address: Email | None = Field(
        default=None,
        description="The fleet's support address: mail to it becomes tickets; notifications come from it.",
    )
    listen: SupportListener | None = Field(
        default=None, description="Receive mail with hubfleet's own SMTP listener (unset: no mail in)."
    )
    send_through: str | None = Field(
        default=None,
        description="The monitoring.alerts.email channel (by name) whose SMTP server sends the desk's mail; "
        "default: the first one.",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Where requesters open confirmation and survey links (the console's /help/ pages); "
        "default: console.public_url.",
    )
    help_button: bool = Field(default=True, description="A 'Get help' link on every hub's pages.")
    calendar: SupportCalendar = Field(default_factory=SupportCalendar)
    targets: dict[Priority, ResponseTarget] = Field(default_factory=_default_targets)
    warn_at_percent: int = Field(
        default=75, ge=1, le=99, description="Warn when this share of a target's working time is used."
    )
    rota: Rota = Field(default_factory=Rota)
    second_line: list[Username] = Field(
        default_factory=list, description="Console accounts that take escalated tickets."
    )
    auto_close_days: int = Field(default=7, ge=1, le=365, description="Resolved tickets close after this.")
    max_attachment_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=25 * 1024 * 1024)

    @model_validator(mode="after")
    def _every_priority(self) -> Support:
        missing = [p for p in PRIORITIES if p not in self.targets]
        if missing:
            raise ValueError(f"targets has no entry for {', '.join(missing)}; give every priority a target")
        return self


class SupportBudget(Strict):
    hours: float = Field(gt=0, le=100_000, description="Support hours per period.")
    period: Literal["month", "quarter", "year"] = "month"


class CommunitySupport(Strict):
    """A community's `support:` — its support-hours budget."""

    budget: SupportBudget | None = None
