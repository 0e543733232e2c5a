"""The day roll-ups behind DAU/WAU/MAU (hubfleet.store.usage_rollups, migration 0020): every count they give
equals the plain count over user_days, before a refresh (marked days are read raw), after it, after
identities are relabelled or rows deleted, and after the migration back-fills a store. Real SQLite stores."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, inspect, select, text, update

from hubfleet.monitor.collector import record_collection
from hubfleet.monitor.usage import WINDOWS, active_by_hub, active_counts, active_series, active_users
from hubfleet.store import db as store_db
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.store.models import UserDay
from hubfleet.store.usage_rollups import UsageFleetDay, UsageHubDay, UsageStaleDay, refresh

Row = tuple[str, str, date, str]
"""(hub, username, day, identity)"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as s:
        yield s


def generated(seed: int, first: date, days: int, hubs: int = 4, users: int = 40) -> list[Row]:
    """Seeded activity: people on one or two hubs, one auth type per hub (hub3 is github: the same
    username there is another person), and a few usernames a second person signed in as."""
    rnd = random.Random(seed)
    found: dict[tuple[str, str, date], str] = {}
    for number in range(users):
        name = f"u{number}"
        homes = rnd.sample(range(hubs), 2 if rnd.random() < 0.3 else 1)
        rate = rnd.choice((0.05, 0.2, 0.6))
        for offset in range(days):
            if rnd.random() < rate:
                hub = rnd.choice(homes)
                auth = "github" if hub == 3 else "dummy"
                who = f"{auth}:{name}" if rnd.random() < 0.95 else f"oidc:issuer#{name}-other"
                found[(f"h{hub}", name, first + timedelta(days=offset))] = who
    return [(hub, name, day, who) for (hub, name, day), who in found.items()]


def add(store: Store, rows: list[Row]) -> None:
    with store.session() as session, session.begin():
        for hub, name, day, who in rows:
            at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=9)
            session.add(UserDay(hub=hub, username=name, day=day, identity=who, first_seen=at, last_seen=at))


def rebuild(store: Store) -> int:
    with store.session() as session, session.begin():
        return refresh(session)


def stale(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(UsageStaleDay)) or 0)


# --------------------------------------------------------------------------- the plain computation


def raw_people(rows: list[Row], day: date, window: int, hubs: set[str] | None = None) -> int:
    first = day - timedelta(days=window - 1)
    return len({who for hub, _, d, who in rows if first <= d <= day and (hubs is None or hub in hubs)})


def raw_by_hub(rows: list[Row], day: date, window: int, hubs: set[str] | None = None) -> dict[str, int]:
    first = day - timedelta(days=window - 1)
    found: dict[str, set[str]] = {}
    for hub, name, d, _ in rows:
        if first <= d <= day and (hubs is None or hub in hubs):
            found.setdefault(hub, set()).add(name)
    return {hub: len(names) for hub, names in found.items()}


def assert_equal_to_raw(store: Store, rows: list[Row], days: list[date]) -> None:
    subsets: list[set[str] | None] = [None, {"h0"}, {"h0", "h1"}, {"h1", "h3"}, {"h0", "h1", "h2", "h3"}]
    for day in days:
        for hubs in subsets:
            listed = sorted(hubs) if hubs is not None else None
            expected = {key: raw_people(rows, day, window, hubs) for key, window in WINDOWS.items()}
            assert active_counts(store, day, listed) == expected, (day, hubs)
            for window in (1, 7, 30, 365):
                assert active_users(store, day, window, listed) == raw_people(rows, day, window, hubs)
                assert active_by_hub(store, day, window, listed) == raw_by_hub(rows, day, window, hubs)


# --------------------------------------------------------------------------- tests


def test_rollups_equal_the_raw_count_before_and_after_refresh(store: Store) -> None:
    first = date(2025, 11, 15)  # crosses the end of November and of the year
    rows = generated(7, first, 60)
    add(store, rows)
    days = [first + timedelta(days=n) for n in (0, 5, 15, 16, 29, 46, 47, 59)]
    assert stale(store) > 0
    assert_equal_to_raw(store, rows, days)  # nothing rolled up yet: every day is read raw
    assert rebuild(store) > 0
    assert stale(store) == 0
    assert_equal_to_raw(store, rows, days)  # every day from the roll-ups
    series = active_series(store, first, first + timedelta(days=59))
    assert [row["day"] for row in series] == [(first + timedelta(days=n)).isoformat() for n in range(60)]
    for row in series:
        day = date.fromisoformat(row["day"])
        assert row == {"day": row["day"], **{k: raw_people(rows, day, w) for k, w in WINDOWS.items()}}
    one_hub = active_series(store, first, first + timedelta(days=59), ["h1"])
    assert [r["mau"] for r in one_hub] == [
        raw_people(rows, date.fromisoformat(r["day"]), 30, {"h1"}) for r in one_hub
    ]


def test_added_rows_after_a_refresh_are_counted_raw_then_rolled_up_again(store: Store) -> None:
    first = date(2026, 2, 20)  # crosses the end of February
    rows = generated(11, first, 20)
    add(store, rows)
    rebuild(store)
    more = [r for r in generated(12, first, 20, users=60) if (r[0], r[1], r[2]) not in {x[:3] for x in rows}]
    add(store, more)  # new people and accounts, on days already rolled up
    everything = rows + more
    days = [first + timedelta(days=n) for n in (0, 8, 9, 19)]
    assert_equal_to_raw(store, everything, days)  # marked days read raw: unnumbered people included
    rebuild(store)
    assert_equal_to_raw(store, everything, days)


def test_relabelled_identities_and_deleted_rows_rebuild_the_fleet_day(store: Store) -> None:
    day = date(2026, 1, 1)
    rows: list[Row] = [
        ("h0", "alice", day, "dummy:alice"),
        ("h1", "alice", day, "dummy:alice"),  # the same person on two hubs: counted once fleet-wide
        ("h0", "bob", day, "dummy:bob"),
        ("h1", "carol", day - timedelta(days=1), "dummy:carol"),  # Dec 31, last year
    ]
    add(store, rows)
    rebuild(store)
    assert active_counts(store, day) == {"dau": 2, "wau": 3, "mau": 3}
    assert active_by_hub(store, day) == {"h0": 2, "h1": 1}
    with store.session() as session, session.begin():
        session.execute(  # bob signed in through a provider: his day belongs to the asserted person
            update(UserDay)
            .where(UserDay.hub == "h0", UserDay.username == "bob")
            .values(identity="oidc:issuer#alice")
        )
        session.execute(delete(UserDay).where(UserDay.hub == "h1", UserDay.username == "alice"))
    assert stale(store) == 2
    assert active_counts(store, day) == {"dau": 2, "wau": 3, "mau": 3}  # read raw
    rebuild(store)
    assert active_counts(store, day) == {"dau": 2, "wau": 3, "mau": 3}
    assert active_by_hub(store, day) == {"h0": 2}
    with store.session() as session:
        fleet = session.scalar(select(UsageFleetDay.people_count).where(UsageFleetDay.day == day))
        hubs = set(session.scalars(select(UsageHubDay.hub).where(UsageHubDay.day == day)))
    assert fleet == 2 and hubs == {"h0"}  # the emptied hub day is gone, the fleet day lost dummy:bob
    with store.session() as session, session.begin():
        session.execute(delete(UserDay).where(UserDay.day == day))
    rebuild(store)
    assert active_counts(store, day) == {"dau": 0, "wau": 1, "mau": 1}
    with store.session() as session:
        assert session.scalar(select(UsageFleetDay.day).where(UsageFleetDay.day == day)) is None


def test_last_seen_updates_mark_nothing(store: Store) -> None:
    """The collector moves last_seen every minute; only changes of who was active when mark a day."""
    add(store, [("h0", "alice", date(2026, 3, 1), "dummy:alice")])
    rebuild(store)
    with store.session() as session, session.begin():
        row = session.get(UserDay, ("h0", "alice", date(2026, 3, 1)))
        assert row is not None
        row.last_seen = datetime(2026, 3, 1, 18, tzinfo=UTC)
    assert stale(store) == 0


def test_a_collection_marks_its_days_and_a_refresh_rolls_them_up(store: Store) -> None:
    now = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    users = [{"name": name, "last_activity": stamp, "servers": {}} for name in ("alice", "bob")]
    add(store, [("h0", "alice", date(2025, 12, 31), "dummy:alice")])  # written by anything else
    with store.session() as session, session.begin():
        record_collection(session, "h1", "dummy", users, now=now, since=now - timedelta(minutes=15))
    with store.session() as session:
        marked = {(h, d) for h, d in session.execute(select(UsageStaleDay.hub, UsageStaleDay.day))}
    assert marked == {("h0", date(2025, 12, 31)), ("h1", now.date())}
    assert active_counts(store, now.date()) == {"dau": 2, "wau": 2, "mau": 2}  # read raw meanwhile
    rebuild(store)  # what the collector does every REFRESH_EVERY hubs and after each pass
    assert stale(store) == 0
    assert active_counts(store, now.date()) == {"dau": 2, "wau": 2, "mau": 2}  # alice on two hubs: once
    assert active_by_hub(store, now.date(), 7) == {"h0": 1, "h1": 2}


def test_migration_backfills_existing_user_days(tmp_path: Path) -> None:
    engine = store_db.make_engine(store_db.store_url(tmp_path))
    store_db.upgrade(engine, "0019")
    rows = generated(3, date(2025, 12, 1), 45)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO user_days (hub, username, day, identity, first_seen, last_seen)"
                " VALUES (:hub, :name, :day, :who, :at, :at)"
            ),
            [
                {"hub": h, "name": n, "day": d.isoformat(), "who": w, "at": f"{d} 09:00:00.000000"}
                for h, n, d, w in rows
            ],
        )
    engine.dispose()
    with open_store(tmp_path) as store:  # upgrades to head: 0020 back-fills
        assert stale(store) == 0
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(UsageHubDay)) == len(
                {(h, d) for h, _, d, _ in rows}
            )
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("user_days")}
        assert "ix_user_days_day_identity" not in indexes and "ix_user_days_day_hub" in indexes
        assert_equal_to_raw(store, rows, [date(2025, 12, 31), date(2026, 1, 1), date(2026, 1, 14)])


def test_rollups_on_postgresql_equal_the_raw_count() -> None:
    """The same on a real PostgreSQL (the store takes any SQLAlchemy URL): its trigger function marks the
    days, bytea holds the bitmaps, and a relabel rebuilds the fleet day."""
    from postgres_helpers import postgres_server

    with postgres_server() as server:
        if isinstance(server, str):
            pytest.skip(f"PostgreSQL could not start: {server}")
        with open_store(server.new_database()) as pg:
            first = date(2025, 12, 20)
            rows = generated(5, first, 20)
            add(pg, rows)
            days = [first + timedelta(days=n) for n in (0, 11, 12, 19)]
            assert_equal_to_raw(pg, rows, days)  # raw: every day marked by the trigger function
            assert rebuild(pg) > 0 and stale(pg) == 0
            assert_equal_to_raw(pg, rows, days)
            with pg.session() as session, session.begin():
                session.execute(update(UserDay).where(UserDay.username == "u1").values(identity="dummy:u2"))
            relabelled = [(h, n, d, "dummy:u2" if n == "u1" else w) for h, n, d, w in rows]
            rebuild(pg)
            assert_equal_to_raw(pg, relabelled, days)
