"""Events in the fleet files: the model (time zones, arrival rates, seats), the cross-file rules (which hub,
no overlap, max_users, environments) with the line each error points at, and `hubfleet events`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet_helpers import copy_demo_without_front_door, hubfleet
from hubfleet.config.models_events import Event, parse_arrival
from hubfleet.config.validate import validate_fleet
from hubfleet.events.catalog import phase

HACKWEEK = "communities/hackweek/hubs/prod.yaml"
UNI_COMMUNITY = "communities/uni-a/community.yaml"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    copy_demo_without_front_door(root)
    return root


def errors_of(root: Path) -> list[str]:
    _, errors = validate_fleet(root)
    return [str(e) for e in errors]


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize(
    ("text", "people", "seconds"),
    [
        ("60 in 3m", 60, 180),
        ("100 people within 90s", 100, 90),
        ("300 per 1h", 300, 3600),
        ("5 in 2 min", 5, 120),
    ],
)
def test_arrival_rates(text: str, people: int, seconds: float) -> None:
    arrival = parse_arrival(text)
    assert (arrival.people, arrival.seconds) == (people, seconds)


@pytest.mark.parametrize("text", ["lots", "60", "0 in 3m", "60 in 0m", "60 in 3 days"])
def test_bad_arrival_rates_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="such as '60 in 3m'"):
        parse_arrival(text)


def test_seats_are_what_arrives_while_a_node_starts() -> None:
    """The issue's example: 300 attendees arriving 60 per 3 minutes, nodes taking 10 minutes: 200 seats."""
    event = Event(
        name="e", start="2027-01-01T09:00Z", end="2027-01-01T10:00Z", attendees=300, arrival="60 in 3m"
    )
    assert event.seats(10) == 200
    assert event.seats(30) == 300  # never more than the attendees
    small = Event(name="e", start="2027-01-01T09:00Z", end="2027-01-01T10:00Z", attendees=40)
    assert small.rush().seconds == 300 and small.seats(10) == 40  # default: everyone within five minutes


def test_times_take_the_events_time_zone() -> None:
    event = Event(
        name="e", start="2027-01-18T10:00", end="2027-01-18T12:00", timezone="Europe/Berlin", attendees=5
    )
    assert event.start.astimezone(UTC) == datetime(2027, 1, 18, 9, 0, tzinfo=UTC)
    assert event.ready_from().astimezone(UTC) == datetime(2027, 1, 18, 8, 30, tzinfo=UTC)


def test_a_time_without_a_zone_is_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="has no time zone; add `timezone: Europe/Berlin`"):
        Event(name="e", start="2027-01-18T10:00", end="2027-01-18T12:00", attendees=5)
    with pytest.raises(ValidationError, match="not a time zone name"):
        Event(
            name="e", start="2027-01-18T10:00", end="2027-01-18T12:00", timezone="Mars/Olympus", attendees=5
        )


def test_phases_by_the_clock() -> None:
    start = datetime(2027, 1, 1, 9, tzinfo=UTC)
    event = Event(name="e", start=start, end=start + timedelta(hours=2), attendees=5, ready_lead_minutes=30)
    assert phase(event, start - timedelta(minutes=31)) == "upcoming"
    assert phase(event, start - timedelta(minutes=30)) == "ready"
    assert phase(event, start) == "on"
    assert phase(event, start + timedelta(hours=2)) == "past"


def test_end_before_start_points_at_the_event(demo: Path) -> None:
    append(
        demo / HACKWEEK,
        "  - {name: backwards, start: '2027-10-23T10:00Z', end: '2027-10-23T09:00Z', attendees: 5}\n",
    )
    [error] = errors_of(demo)
    assert error.startswith(f"{HACKWEEK}:")
    assert "must be after start" in error


def test_overlap_max_users_and_environment_on_one_hub(demo: Path) -> None:
    append(
        demo / HACKWEEK,
        "  - {name: overlapping, start: '2027-08-23T10:00-07:00', end: '2027-08-23T11:00-07:00', "
        "attendees: 500, environment: gpu}\n",
    )
    errors = errors_of(demo)
    assert any("overlaps 'hackweek-2027-day1'" in e and "may not overlap" in e for e in errors), errors
    assert any("500 attendees but hub hackweek allows at most 200" in e for e in errors), errors
    assert any("no environment 'gpu' on hub hackweek; the hub has no `environments`" in e for e in errors)
    assert all(e.startswith(f"{HACKWEEK}:") for e in errors)


def test_a_name_used_twice_on_one_hub(demo: Path) -> None:
    append(
        demo / UNI_COMMUNITY,
        "  - {name: phys101-first-lab, hub: uni-a, start: '2027-03-01T10:00Z', "
        "end: '2027-03-01T11:00Z', attendees: 5}\n",
    )
    [error] = errors_of(demo)
    assert error.startswith(f"{UNI_COMMUNITY}:") and "already listed for hub uni-a" in error


def test_a_community_event_names_a_hub_of_its_community(demo: Path) -> None:
    text = (demo / UNI_COMMUNITY).read_text()
    (demo / UNI_COMMUNITY).write_text(text.replace("    hub: uni-a\n", "    hub: hackweek\n"))
    [error] = errors_of(demo)
    assert "no hub 'hackweek' in this community" in error
    (demo / UNI_COMMUNITY).write_text(text.replace("    hub: uni-a\n", ""))
    [error] = errors_of(demo)
    assert "names no hub; add `hub:` (one of: uni-a, uni-a-staging)" in error


def test_a_hub_files_event_may_not_name_another_hub(demo: Path) -> None:
    append(
        demo / HACKWEEK,
        "  - {name: x, hub: uni-a, start: '2028-01-01T10:00Z', end: '2028-01-01T11:00Z', attendees: 5}\n",
    )
    [error] = errors_of(demo)
    assert "this is the file of hub 'hackweek'" in error


def test_events_are_not_inherited_through_defaults(demo: Path) -> None:
    """An event belongs to one hub: `events` in a community's `defaults` is an unknown key there."""
    path = demo / UNI_COMMUNITY
    path.write_text(path.read_text().replace("defaults:\n", "defaults:\n  events: []\n", 1))
    [error] = errors_of(demo)
    assert "defaults.events" in error or "events" in error


def test_events_command_lists_upcoming_and_past(demo: Path, tmp_path: Path) -> None:
    result = hubfleet("events", "--json", "--state-dir", str(tmp_path / "state"), fleet=demo, check=True)
    listed = json.loads(result.stdout)["events"]
    assert [(e["hub"], e["name"], e["phase"]) for e in listed] == [
        ("hackweek", "hackweek-2026-day1", "past"),
        ("uni-a", "phys101-first-lab", "upcoming"),
        ("hackweek", "hackweek-2027-day1", "upcoming"),
    ]
    assert listed[1]["start"] == "2027-01-18T10:00:00+01:00" and listed[1]["environment"] == "r"
    assert listed[1]["arrival"] == {"people": 60, "seconds": 300.0, "text": "60 in 5m"}
