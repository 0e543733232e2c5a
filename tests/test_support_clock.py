"""Working time on the support calendar (hubfleet.support.calendar), the first-line rota (support.rota) and
the response-time targets of real tickets (support.tickets on a real SQLite store): a weekend, a pause, a
holiday, 09:00-17:00 in America/Chicago across a daylight-saving change, the rota's turns and overrides,
priorities moving the due moment, and hypothesis properties of the clock. Pure and fast."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_support import Rota, RotaOverride, Support, SupportCalendar
from hubfleet.config.validate import load_fleet
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.support import tickets as t
from hubfleet.support.calendar import add_working, due, elapsed, working_seconds
from hubfleet.support.rota import on_duty, week_of

DEMO = Path(__file__).parent.parent / "examples" / "demo-fleet"
H = 3600.0
WEEKDAYS_24 = SupportCalendar()  # the modelled service: 24 hours, Monday to Friday, UTC
FRIDAY_EVENING = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
CHICAGO = ZoneInfo("America/Chicago")
OFFICE_CHICAGO = SupportCalendar(time_zone="America/Chicago", day_start="09:00", day_end="17:00")


def at(text: str, zone: ZoneInfo | None = None) -> datetime:
    """An aware datetime from 'YYYY-MM-DD HH:MM' (UTC unless `zone`)."""
    return datetime.fromisoformat(text).replace(tzinfo=zone or UTC)


# --------------------------------------------------------------------------- the calendar


def test_a_ticket_opened_on_friday_evening_waits_out_the_weekend() -> None:
    # Friday 18:00 to Saturday 00:00 is 6 working hours; the weekend is none; Monday counts from 00:00
    assert working_seconds(WEEKDAYS_24, FRIDAY_EVENING, at("2026-12-07 10:00")) == 16 * H
    assert working_seconds(WEEKDAYS_24, at("2026-12-05 08:00"), at("2026-12-06 23:00")) == 0
    assert add_working(WEEKDAYS_24, FRIDAY_EVENING, 4 * H) == at("2026-12-04 22:00")
    # 24 working hours: 6 on Friday, 18 on Monday
    assert due(WEEKDAYS_24, FRIDAY_EVENING, 24) == at("2026-12-07 18:00")
    # opened on Saturday: the clock starts on Monday at midnight
    assert add_working(WEEKDAYS_24, at("2026-12-05 12:00"), 0) == at("2026-12-07 00:00")
    assert due(WEEKDAYS_24, at("2026-12-05 12:00"), 4) == at("2026-12-07 04:00")


def test_a_pause_while_waiting_for_the_requester_stops_the_clock() -> None:
    start = at("2026-11-30 09:00")  # a Monday
    pause = (at("2026-11-30 10:00"), at("2026-12-01 10:00"))
    assert elapsed(WEEKDAYS_24, start, at("2026-12-01 12:00"), [pause]) == 3 * H
    # an open pause counts up to `until`, and there is no due moment while it lasts
    waiting = (at("2026-11-30 10:00"), None)
    assert elapsed(WEEKDAYS_24, start, at("2026-12-02 10:00"), [waiting]) == 1 * H
    assert due(WEEKDAYS_24, start, 8, [waiting]) is None
    # 8 hours: 1 before the pause, the 24 paused added, 7 after it
    assert due(WEEKDAYS_24, start, 8, [pause]) == at("2026-12-01 17:00")
    # a pause across the weekend costs only its working hours
    friday = (at("2026-12-04 20:00"), at("2026-12-07 02:00"))
    assert elapsed(WEEKDAYS_24, at("2026-12-04 12:00"), at("2026-12-07 06:00"), [friday]) == 12 * H


def test_a_pause_begun_after_the_target_was_missed_does_not_move_the_due_moment() -> None:
    start = at("2026-11-30 09:00")
    late_pause = [(at("2026-11-30 15:00"), at("2026-12-01 15:00"))]
    assert due(WEEKDAYS_24, start, 4, late_pause) == at("2026-11-30 13:00")
    still_open = [(at("2026-11-30 15:00"), None)]  # missed before the pause: due stays in the past
    assert due(WEEKDAYS_24, start, 4, still_open) == at("2026-11-30 13:00")


def test_a_holiday_is_not_working_time() -> None:
    christmas = WEEKDAYS_24.model_copy(update={"holidays": [date(2026, 12, 25)]})
    thursday_noon = at("2026-12-24 12:00")
    # 12 hours on Thursday, Friday the 25th off, the weekend off, 12 on Monday the 28th
    assert due(christmas, thursday_noon, 24) == at("2026-12-28 12:00")
    assert due(WEEKDAYS_24, thursday_noon, 24) == at("2026-12-25 12:00")  # without the holiday
    assert working_seconds(christmas, at("2026-12-25 00:00"), at("2026-12-28 00:00")) == 0


def test_office_hours_in_chicago_across_the_end_of_daylight_saving() -> None:
    # 2026-11-01 (a Sunday) Chicago goes from CDT (UTC-5) back to CST (UTC-6)
    friday = at("2026-10-30 15:00", CHICAGO)
    assert friday.astimezone(UTC) == at("2026-10-30 20:00")
    # 8 working hours: 2 on Friday (to 17:00 CDT), 6 from Monday 09:00 CST: 15:00 CST, 21:00 UTC
    found = due(OFFICE_CHICAGO, friday, 8)
    assert found == at("2026-11-02 15:00", CHICAGO) and found.astimezone(UTC) == at("2026-11-02 21:00")
    # a working day is 8 hours on both sides of the change, though its start moves an hour in UTC
    for day in ("2026-10-30", "2026-11-02"):
        start = at(f"{day} 00:00", CHICAGO)
        assert working_seconds(OFFICE_CHICAGO, start, start + timedelta(days=1)) == 8 * H
    assert add_working(OFFICE_CHICAGO, at("2026-10-30 18:00", CHICAGO), 0).astimezone(UTC) == at(
        "2026-11-02 15:00"
    )
    # a 24-hour calendar counts the wall clock's day: the Sunday of the change has 25 hours, spring's 23
    every_day = SupportCalendar(
        time_zone="America/Chicago", working_days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    autumn = at("2026-11-01 00:00", CHICAGO)
    spring = at("2026-03-08 00:00", CHICAGO)
    assert working_seconds(every_day, autumn, at("2026-11-02 00:00", CHICAGO)) == 25 * H
    assert working_seconds(every_day, spring, at("2026-03-09 00:00", CHICAGO)) == 23 * H


def test_office_hours_starting_in_the_skipped_hour_of_spring() -> None:
    # 02:30-03:00 does not exist on 2026-03-08 in Chicago: that day has no working time, and no negative time
    night = SupportCalendar(
        time_zone="America/Chicago",
        working_days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        day_start="02:30",
        day_end="03:00",
    )
    day = at("2026-03-08 00:00", CHICAGO)
    assert working_seconds(night, day, day + timedelta(days=1)) == 0
    assert working_seconds(night, day - timedelta(days=1), day) == 1800
    assert add_working(night, day, 60) == at("2026-03-09 02:31", CHICAGO)


def test_a_long_span_is_counted_whole() -> None:
    # more than three years of working time (a calendar walk once stopped at 3 x 366 days)
    start = at("2026-01-05 00:00")
    end = start + timedelta(weeks=200)
    assert working_seconds(WEEKDAYS_24, start, end) == 200 * 5 * 24 * H


# --------------------------------------------------------------------------- the rota


def _support(**rota: object) -> Support:
    return Support(rota=Rota(**rota))  # type: ignore[arg-type]


def test_the_rota_turns_every_week_from_its_starting_monday() -> None:
    support = _support(first_line=["ada", "lin", "kim"], starting=date(2026, 11, 30))
    mondays = [at("2026-11-30 00:00") + timedelta(weeks=n) for n in range(4)]
    assert [on_duty(support, m) for m in mondays] == ["ada", "lin", "kim", "ada"]
    assert on_duty(support, at("2026-12-06 23:59")) == "ada"  # Sunday is still the week of ada
    assert on_duty(support, at("2026-11-29 12:00")) == "kim"  # the week before turns backwards
    two_weeks = _support(first_line=["ada", "lin"], starting=date(2026, 11, 30), weeks_each=2)
    assert [on_duty(two_weeks, m) for m in mondays] == ["ada", "ada", "lin", "lin"]


def test_the_rota_turns_without_a_starting_date_and_none_without_first_line() -> None:
    support = _support(first_line=["ada", "lin"])
    week = [on_duty(support, at("2026-11-30 00:00") + timedelta(weeks=n)) for n in range(2)]
    assert sorted(week) == ["ada", "lin"]  # it turns (it once stayed with the first account forever)
    assert on_duty(Support(), at("2026-11-30 00:00")) is None


def test_an_override_names_the_account_for_its_week() -> None:
    support = _support(
        first_line=["ada", "lin"],
        starting=date(2026, 11, 30),
        overrides=[RotaOverride(week="2026-W50", account="kim")],
    )
    assert week_of(support, at("2026-12-09 12:00")) == "2026-W50"
    assert on_duty(support, at("2026-12-09 12:00")) == "kim"
    assert on_duty(support, at("2026-12-14 00:00")) == "ada"  # W51: the rotation again
    empty = _support(overrides=[RotaOverride(week="2026-W50", account="kim")])
    assert on_duty(empty, at("2026-12-09 12:00")) == "kim"  # an override needs no rotation


def test_the_rota_weeks_turn_in_the_calendars_time_zone() -> None:
    support = Support(
        calendar=SupportCalendar(time_zone="Europe/Berlin"),
        rota=Rota(first_line=["ada", "lin"], starting=date(2026, 11, 30)),
    )
    # Sunday 23:30 UTC is Monday 00:30 in Berlin: already lin's week
    assert week_of(support, at("2026-12-06 23:30")) == "2026-W50"
    assert on_duty(support, at("2026-12-06 23:30")) == "lin"
    assert on_duty(support, at("2026-12-06 22:30")) == "ada"


# --------------------------------------------------------------------------- targets of real tickets


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    fleet = load_fleet(DEMO)
    support = Support(rota=Rota(first_line=["ada"]))
    fleet.settings = fleet.settings.model_copy(update={"support": support})
    return fleet


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path)


def _open(store: Store, fleet: FleetConfig, when: datetime, urgency: str = "normal") -> int:
    new = t.NewTicket(
        source="console",
        category="server-start",
        urgency=urgency,
        subject="The server does not start",
        description="spawn failed",
        hub="uni-a",
        verified=True,
    )
    return t.open_ticket(store, fleet, new, now=when)


def test_a_higher_priority_brings_the_due_moment_forward(fleet: FleetConfig, store: Store) -> None:
    ticket = _open(store, fleet, FRIDAY_EVENING, urgency="low")
    before = t.get_ticket(store, fleet, ticket, now=FRIDAY_EVENING)["targets"]
    assert before["first_response"]["due"] == at("2026-12-07 18:00").isoformat()  # low: 24 h
    # 240 h: 6 on Friday, two weeks of 120 less 6, the last on Friday the 18th until 18:00
    assert before["resolution"]["due"] == at("2026-12-18 18:00").isoformat()
    t.set_priority(store, fleet, ticket, "urgent", actor="ada", now=at("2026-12-07 01:00"))
    after = t.get_ticket(store, fleet, ticket, now=at("2026-12-07 01:00"))
    # urgent: 4 hours, 6 of which were used on Friday: missed the moment it became urgent
    assert after["targets"]["first_response"]["due"] == at("2026-12-04 22:00").isoformat()
    assert after["targets"]["first_response"]["status"] == "missed"
    assert after["targets"]["resolution"]["due"] == at("2026-12-07 18:00").isoformat()  # 24 h
    assert after["history"][-1]["action"] == "priority"
    t.set_priority(store, fleet, ticket, "high", actor="ada", now=at("2026-12-07 01:00"))
    high = t.get_ticket(store, fleet, ticket, now=at("2026-12-07 01:00"))["targets"]
    assert high["first_response"]["due"] == at("2026-12-07 02:00").isoformat()  # 8 h
    assert high["first_response"]["status"] == "running" and high["first_response"]["used_hours"] == 7.0


def test_targets_over_a_weekend_and_a_wait(fleet: FleetConfig, store: Store) -> None:
    ticket = _open(store, fleet, FRIDAY_EVENING, urgency="high")  # 8 h first response, 72 h resolution
    monday = at("2026-12-07 01:00")
    running = t.get_ticket(store, fleet, ticket, now=monday)["targets"]["first_response"]
    assert running["used_hours"] == 7.0 and running["percent"] == 87.5 and running["status"] == "running"
    t.add_message(store, fleet, ticket, author="ada", author_kind="staff", body="Which browser?", now=monday)
    waiting = t.get_ticket(store, fleet, ticket, now=at("2026-12-09 01:00"))
    assert waiting["targets"]["first_response"]["status"] == "met"
    assert waiting["targets"]["resolution"] | {"due": None} == {
        "target_hours": 72,
        "used_hours": 7.0,
        "percent": 9.7,
        "due": None,
        "status": "paused",
    }
    t.add_message(
        store,
        fleet,
        ticket,
        author="alice",
        author_kind="requester",
        body="Firefox",
        now=at("2026-12-09 01:00"),
    )
    # 72 h: 7 used, 65 from Wednesday 01:00 = 23 to Thursday 00:00, 24 on Thursday, 18 on Friday
    back = t.get_ticket(store, fleet, ticket, now=at("2026-12-09 02:00"))["targets"]["resolution"]
    assert back["due"] == at("2026-12-11 18:00").isoformat() and back["used_hours"] == 8.0


def test_a_reopened_ticket_does_not_count_the_days_it_lay_resolved(fleet: FleetConfig, store: Store) -> None:
    start = at("2026-11-30 09:00")
    ticket = _open(store, fleet, start, urgency="urgent")  # 24 h to resolution
    t.resolve(store, fleet, ticket, actor="ada", summary="Restarted it.", now=start + timedelta(hours=2))
    done = t.get_ticket(store, fleet, ticket, now=start + timedelta(days=3))["targets"]["resolution"]
    assert done["status"] == "met" and done["used_hours"] == 2.0
    t.add_message(
        store,
        fleet,
        ticket,
        author="alice",
        author_kind="requester",
        body="It broke again.",
        now=start + timedelta(days=3),
    )
    again = t.get_ticket(store, fleet, ticket, now=start + timedelta(days=3, hours=1))
    assert again["state"] == "open"
    assert (
        again["targets"]["resolution"]["used_hours"] == 3.0
    )  # 2 before, 1 since: the 3 days resolved left out
    assert again["targets"]["resolution"]["status"] == "running"


# --------------------------------------------------------------------------- properties

ZONES = ["UTC", "America/Chicago", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def calendars(draw: st.DrawFn) -> SupportCalendar:
    start = draw(st.integers(0, 23 * 4)) * 15
    end = draw(st.integers(start // 15 + 1, 24 * 4)) * 15
    days = draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True))
    holidays = draw(st.lists(st.dates(date(2026, 1, 1), date(2027, 12, 31)), max_size=5))
    return SupportCalendar(
        time_zone=draw(st.sampled_from(ZONES)),
        working_days=days,
        day_start=f"{start // 60:02d}:{start % 60:02d}",
        day_end=f"{end // 60:02d}:{end % 60:02d}",
        holidays=holidays,
    )


moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(calendars(), moments, st.floats(0, 300 * H, allow_nan=False))
def test_elapsed_of_add_working_is_what_was_added(
    cal: SupportCalendar, start: datetime, seconds: float
) -> None:
    end = add_working(cal, start, seconds)
    assert end >= start
    assert elapsed(cal, start, end) == pytest.approx(seconds, abs=1e-3)


@FAST
@given(calendars(), moments, st.floats(0, 2000 * H), st.floats(0, 2000 * H))
def test_working_time_adds_up_over_any_split(
    cal: SupportCalendar, start: datetime, a: float, b: float
) -> None:
    middle, end = start + timedelta(seconds=a), start + timedelta(seconds=a + b)
    whole = working_seconds(cal, start, end)
    assert whole == pytest.approx(working_seconds(cal, start, middle) + working_seconds(cal, middle, end))
    assert 0 <= whole <= a + b + 1e-6


@FAST
@given(
    calendars(),
    moments,
    st.floats(0.25, 200),
    st.lists(st.tuples(st.floats(0, 500 * H), st.floats(0, 100 * H)), max_size=4),
)
def test_due_is_where_the_unpaused_clock_reaches_the_target(
    cal: SupportCalendar, start: datetime, hours: float, gaps: list[tuple[float, float]]
) -> None:
    pauses: list[tuple[datetime, datetime | None]] = []
    cursor = start
    for gap, length in gaps:  # pauses one after the other, as waiting periods are
        begin = cursor + timedelta(seconds=gap)
        cursor = begin + timedelta(seconds=length)
        pauses.append((begin, cursor))
    found = due(cal, start, hours, pauses)
    assert found is not None
    assert elapsed(cal, start, found, pauses) == pytest.approx(hours * H, abs=1e-2)
    # and not a moment earlier: a minute of working time before, the clock had not yet reached it
    assert elapsed(cal, start, found - timedelta(seconds=60), pauses) < hours * H
