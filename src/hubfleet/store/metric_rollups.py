"""Hourly roll-ups of hub samples: per hub and UTC hour, the peak of running servers and the spawns (from the
deltas of the hubs' cumulative counters), so that a fleet chart over a month reads 720 rows per hub instead of
43,200 samples, and the newest hour costs no more than the others.

`roll_up` folds the samples written since it last ran into their hours (the open hour too: its row is
complete up to the newest sample). It follows the samples by id (the mark keeps the highest id folded in), so
each call reads only the new rows (about one per hub and minute) and one index seek per hub for the
sample before them; it runs from the charts that read the roll-ups, so no daemon loop is needed. A sample
dated before its hub's newest one already folded in (a clock set back, an import, a test) makes that hub's
hours from there on computed again from raw samples. The first call (migration 0021) reads every sample.

Spawn deltas: a sample's counters minus its hub's previous sample's (ordered by time, then id), when that
one is at most SPAWN_GAP older; a counter lower than before means the hub restarted (counters start again at
0): the new value is the delta then. After a longer gap (collector or hub down) the first sample starts the
count again. `hour_figures` is the same computation in SQL over raw samples; the charts use it for hours
the roll-ups cannot answer (a chart of a past moment) and with `rollups=False`, and a test checks both agree.
Hours are integers (UTC seconds since the epoch // 3600): the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    Interval,
    String,
    TextClause,
    case,
    cast,
    column,
    delete,
    extract,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import ColumnElement

from hubfleet.store.api import Store
from hubfleet.store.models import Base, HubSample, UTCDateTime

HOUR = 3600
SPAWN_GAP = timedelta(hours=1)
"""A counter delta needs the hub's previous sample at most this much older."""
MAX_ROWS_PER_CALL = 200_000
"""Samples one `roll_up` call folds in at most (a request must not fold a month): the next call goes on."""
MARK = "hub_sample_hours"
RETENTION_HOURS = 400 * 24
"""Roll-ups older than this (the charts' longest window) are deleted, once a day per process."""
_pruned_day: list[int] = [0]


class HubSampleHour(Base):
    """One hub's UTC hour of hub samples, summed (migration 0021). WITHOUT ROWID on SQLite: a chart reads
    ranges of (hub, hour) and finds the figures in the key's own B-tree."""

    __tablename__ = "hub_sample_hours"
    __table_args__ = {"sqlite_with_rowid": False}

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    """UTC seconds since the epoch // 3600 of the hour's start."""
    samples: Mapped[int] = mapped_column(Integer, default=0)
    running_max: Mapped[int | None] = mapped_column(Integer)
    spawn_ok: Mapped[float | None] = mapped_column(Float)
    """Successful spawns (sum of counter deltas); None when no sample of the hour had a delta."""
    spawn_failed: Mapped[float | None] = mapped_column(Float)
    spawn_seconds: Mapped[float | None] = mapped_column(Float)
    """Seconds of the successful spawns whose duration the hub reported (`_sum` deltas)."""
    spawn_timed_ok: Mapped[float | None] = mapped_column(Float)
    """Successful spawns counted in spawn_seconds (the mean is spawn_seconds / spawn_timed_ok)."""


FLEET = "*"
"""The hub of the rows summing every hub's hour (no hub has this name; its running_max stays None): a fleet
spawn chart over a month reads 720 of them instead of 720,000 (minus the few hubs it must leave out)."""


class HubSampleDay(Base):
    """One hub's UTC day: its peak of running servers (the max of its hours), for charts in daily buckets
    (1,000 hubs over a month: 30,000 rows instead of 720,000)."""

    __tablename__ = "hub_sample_days"
    __table_args__ = {"sqlite_with_rowid": False}

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    """UTC seconds since the epoch // 86400."""
    running_max: Mapped[int] = mapped_column(Integer)


class HubSampleHub(Base):
    """Each hub with roll-ups, and the span of its hours: which hubs the FLEET rows hold."""

    __tablename__ = "hub_sample_hubs"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_hour: Mapped[int] = mapped_column(Integer)
    last_hour: Mapped[int] = mapped_column(Integer)


class RollupMark(Base):
    """How far a roll-up went: every source row up to `max_id` is folded in."""

    __tablename__ = "rollup_marks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    max_id: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class HourFigures:
    """One hub's hour: samples, peak running servers, and the spawn sums (None: no delta)."""

    samples: int = 0
    running_max: int | None = None
    spawn_ok: float | None = None
    spawn_failed: float | None = None
    spawn_seconds: float | None = None
    spawn_timed_ok: float | None = None


FIELDS = ("samples", "running_max", "spawn_ok", "spawn_failed", "spawn_seconds", "spawn_timed_ok")


def hour_of(value: Any, dialect: str) -> ColumnElement[int]:
    """The hour (UTC epoch seconds // 3600) a datetime column falls in."""
    return bucket_of(value, HOUR, dialect)


def bucket_of(value: Any, seconds: int, dialect: str) -> ColumnElement[int]:
    """Which `seconds`-long bucket since the Unix epoch a datetime column falls in (an integer)."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", value), Integer) // seconds
    return cast(func.floor(extract("epoch", value) / seconds), Integer)


def moment(hour: int) -> datetime:
    """The start of an hour."""
    return datetime.fromtimestamp(hour * HOUR, UTC)


def _hour(at: datetime) -> int:
    return int(at.timestamp()) // HOUR


# --------------------------------------------------------------------------- raw samples, in SQL


def hour_figures(
    conn: Connection,
    start: datetime,
    end: datetime | None = None,
    hubs: Sequence[str] | None = None,
    max_id: int | None = None,
    parts: tuple[str, ...] = ("running", "spawns"),
) -> dict[tuple[str, int], HourFigures]:
    """Per (hub, hour): the figures of the raw samples in [start, end] (end None: no end) of `hubs` (None:
    every hub, a full scan) with ids up to `max_id`. Two grouped statements, whatever the number of hubs;
    `parts` ("running", "spawns") says which (a chart needs one)."""
    dialect = conn.dialect.name
    where = [HubSample.hub.in_(list(hubs))] if hubs is not None else []
    if end is not None:
        where.append(HubSample.at <= end)
    if max_id is not None:
        where.append(HubSample.id <= max_id)
    bucket = hour_of(HubSample.at, dialect).label("hour")
    running = (
        select(HubSample.hub, bucket, func.count(), func.max(HubSample.running_servers))
        .where(HubSample.at >= start, *where)
        .group_by(HubSample.hub, bucket)
    )
    found: dict[tuple[str, int], HourFigures] = {}
    if "running" in parts:
        for hub, hour, n, peak in conn.execute(running):
            found[(hub, int(hour))] = HourFigures(int(n), None if peak is None else int(peak))
    if "spawns" not in parts:
        return found
    for hub, hour, ok, failed, seconds, timed in conn.execute(_spawn_statement(start, where, dialect)):
        base = found.get((hub, int(hour)), HourFigures())
        found[(hub, int(hour))] = HourFigures(base.samples, base.running_max, ok, failed, seconds, timed)
    return found


def _spawn_statement(start: datetime, where: list[Any], dialect: str) -> Any:
    """Per hub and hour, the sums of the counters' deltas (see the module's docstring)."""
    counters = {
        "s": HubSample.spawn_success_total,
        "f": func.coalesce(HubSample.spawn_failure_total, 0.0),
        "t": HubSample.spawn_seconds_total,
    }
    order = (HubSample.at, HubSample.id)

    def lag(value: Any) -> Any:
        return func.lag(value).over(partition_by=HubSample.hub, order_by=order)

    inner = (
        select(
            HubSample.hub.label("hub"),
            HubSample.at.label("at"),
            lag(HubSample.at).label("pat"),
            *(v.label(k) for k, v in counters.items()),
            *(lag(v).label(f"p{k}") for k, v in counters.items()),
        )
        .where(HubSample.at >= start - SPAWN_GAP, HubSample.spawn_success_total.is_not(None), *where)
        .subquery()
    )
    c = inner.c
    reset = (c.s < c.ps) | (c.f < c.pf) | (c.t < c.pt)

    def delta(cur: Any, prev: Any) -> Any:
        return case((c.ps.is_(None), None), (reset, cur), else_=cur - prev)

    ds, df, dt = delta(c.s, c.ps), delta(c.f, c.pf), delta(c.t, c.pt)
    bucket = hour_of(c.at, dialect).label("hour")
    # most samples change nothing (skipped early); a previous sample older than SPAWN_GAP gives no delta
    changed = (c.s != c.ps) | (c.f != c.pf) | (c.t != c.pt)
    recent = c.pat >= _gap_floor(c.at, dialect)
    return (
        select(c.hub, bucket, func.sum(ds), func.sum(df), func.sum(dt), func.sum(case((dt.is_not(None), ds))))
        .where(c.at >= start, changed, recent)
        .group_by(c.hub, bucket)
    )


def _gap_floor(at: Any, dialect: str) -> Any:
    """`at` - SPAWN_GAP in the stored form (SQLite keeps text that sorts by time; to the millisecond)."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M:%f000", at, f"-{int(SPAWN_GAP.total_seconds())} seconds")
    return at - literal(SPAWN_GAP, Interval())


# --------------------------------------------------------------------------- the same, one sample at a time


@dataclass(frozen=True)
class _Counters:
    at: datetime
    s: float
    f: float
    t: float | None


def _recent(previous: _Counters, at: datetime) -> bool:
    """`_gap_floor`'s rule: the previous sample at most SPAWN_GAP older, `at` - SPAWN_GAP to the ms."""
    floor = at - SPAWN_GAP
    return previous.at >= floor.replace(microsecond=floor.microsecond // 1000 * 1000)


def _spawn_delta(previous: _Counters | None, current: _Counters) -> tuple[float, float, float | None] | None:
    """(ok, failed, seconds) deltas of one sample, as `_spawn_statement` takes them; None: not counted."""
    p = previous
    if p is None or not _recent(p, current.at):
        return None
    both_t = current.t is not None and p.t is not None
    if not (current.s != p.s or current.f != p.f or (both_t and current.t != p.t)):
        return None  # nothing changed
    if current.s < p.s or current.f < p.f or (both_t and current.t < p.t):  # type: ignore[operator]
        return current.s, current.f, current.t  # the hub restarted
    return current.s - p.s, current.f - p.f, (current.t - p.t) if both_t else None  # type: ignore[operator]


def _add(total: float | None, value: float | None) -> float | None:
    if value is None:
        return total
    return value if total is None else total + value


def _fold(
    figures: HourFigures, running: int | None, delta: tuple[float, float, float | None] | None
) -> HourFigures:
    peak = figures.running_max
    if running is not None:
        peak = running if peak is None else max(peak, running)
    found = replace(figures, samples=figures.samples + 1, running_max=peak)
    if delta is None:
        return found
    ok, failed, seconds = delta
    return replace(
        found,
        spawn_ok=_add(found.spawn_ok, ok),
        spawn_failed=_add(found.spawn_failed, failed),
        spawn_seconds=_add(found.spawn_seconds, seconds),
        spawn_timed_ok=_add(found.spawn_timed_ok, ok if seconds is not None else None),
    )


def _merge(a: HourFigures, b: HourFigures) -> HourFigures:
    peaks = [p for p in (a.running_max, b.running_max) if p is not None]
    return HourFigures(
        a.samples + b.samples,
        max(peaks) if peaks else None,
        *(_add(getattr(a, name), getattr(b, name)) for name in FIELDS[2:]),
    )


# --------------------------------------------------------------------------- rolling up

_lock = threading.Lock()


@lru_cache(maxsize=8)
def _heads_statement(count: int) -> TextClause:
    """Per hub of a VALUES list, among the samples up to :max_id: the newest one's time, and the newest one
    with counters (time, counters): index seeks on (hub, at), like the overview's newest rows."""
    hubs = ", ".join(f"(:h{i})" for i in range(count))
    table = HubSample.__tablename__

    def newest(value: str, where: str = "") -> str:
        return (
            f"(SELECT t.{value} FROM {table} t WHERE t.hub = w.hub AND t.id <= :max_id{where} "
            "ORDER BY t.at DESC, t.id DESC LIMIT 1)"
        )

    counted = " AND t.spawn_success_total IS NOT NULL"
    sql = (
        f"WITH wanted(hub) AS (VALUES {hubs}) SELECT w.hub AS hub, {newest('at')} AS newest, "
        f"{newest('id', counted)} AS counted_id FROM wanted w"
    )
    return text(sql).columns(
        column("hub", String), column("newest", UTCDateTime()), column("counted_id", Integer)
    )


def _fold_new(conn: Connection, max_id: int, upto: int) -> None:
    """Fold the samples max_id < id <= upto into their hours (see the module's docstring)."""
    query = (
        select(
            HubSample.id,
            HubSample.hub,
            HubSample.at,
            HubSample.running_servers,
            HubSample.spawn_success_total,
            HubSample.spawn_failure_total,
            HubSample.spawn_seconds_total,
        )
        .where(HubSample.id > max_id, HubSample.id <= upto)
        .order_by(HubSample.id)
    )
    by_hub: dict[str, list[Any]] = {}
    for row in conn.execute(query):
        by_hub.setdefault(row.hub, []).append(row)
    if not by_hub:
        return
    names = sorted(by_hub)
    heads = {
        hub: (newest, counted_id)
        for hub, newest, counted_id in conn.execute(
            _heads_statement(len(names)), {"max_id": max_id, **{f"h{i}": n for i, n in enumerate(names)}}
        )
    }
    ids = [counted for _, counted in heads.values() if counted is not None]
    previous: dict[str, _Counters] = {}
    if ids:
        counter_rows = select(
            HubSample.hub,
            HubSample.at,
            HubSample.spawn_success_total,
            HubSample.spawn_failure_total,
            HubSample.spawn_seconds_total,
        ).where(HubSample.id.in_(ids))
        for hub, at, s, f, t in conn.execute(counter_rows):
            previous[hub] = _Counters(at, s, f or 0.0, t)
    again: dict[str, int] = {}
    folded: dict[tuple[str, int], HourFigures] = {}
    for hub, rows in by_hub.items():
        rows.sort(key=lambda r: (r.at, r.id))
        newest = heads.get(hub, (None, None))[0]
        if newest is not None and rows[0].at < newest:  # written late: this hub's hours from there again
            again[hub] = _hour(rows[0].at)
            continue
        last = previous.get(hub)
        for row in rows:
            key = (hub, _hour(row.at))
            current = None
            delta = None
            if row.spawn_success_total is not None:
                current = _Counters(
                    row.at, row.spawn_success_total, row.spawn_failure_total or 0.0, row.spawn_seconds_total
                )
                delta = _spawn_delta(last, current)
                last = current
            folded[key] = _fold(folded.get(key, HourFigures()), row.running_servers, delta)
    if folded:
        _note_hubs(conn, folded)
        _add_to_stored(conn, folded | _with_fleet(folded))
        _raise_day_peaks(conn, folded)
        newest_hour = max(hour for _, hour in folded)
        if newest_hour // 24 != _pruned_day[0]:  # a key range per hub, once a day
            old = (
                HubSampleHour.hub.in_([FLEET, *sorted(by_hub)]),
                HubSampleHour.hour < newest_hour - RETENTION_HOURS,
            )
            conn.execute(delete(HubSampleHour).where(*old))
            days = (
                HubSampleDay.hub.in_(sorted(by_hub)),
                HubSampleDay.day < (newest_hour - RETENTION_HOURS) // 24,
            )
            conn.execute(delete(HubSampleDay).where(*days))
            _pruned_day[0] = newest_hour // 24
    for hub, hour in again.items():
        recomputed = hour_figures(conn, moment(hour), None, [hub], upto)
        mine = (HubSampleHour.hub == hub, HubSampleHour.hour >= hour)
        before = {
            (row["hub"], row["hour"]): HourFigures(*(row[name] for name in FIELDS))
            for row in conn.execute(select(HubSampleHour).where(*mine)).mappings()
        }
        conn.execute(delete(HubSampleHour).where(*mine))
        _insert(conn, recomputed)
        _note_hubs(conn, recomputed)
        _recompute_day_peaks(conn, hub, hour // 24)
        change = _with_fleet(before, -1)
        for key, found in _with_fleet(recomputed).items():
            change[key] = _merge(change.get(key, HourFigures()), found)
        if change:
            _add_to_stored(conn, change)


def _with_fleet(
    figures: dict[tuple[str, int], HourFigures], sign: int = 1
) -> dict[tuple[str, int], HourFigures]:
    """`figures` and, per hour, their sum under the FLEET hub (`sign` -1: to take them away)."""
    fleet: dict[tuple[str, int], HourFigures] = {}
    for (_, hour), found in figures.items():
        if sign < 0:
            found = HourFigures(-found.samples, None, *(None if v is None else -v for v in _sums(found)))
        fleet[(FLEET, hour)] = _merge(
            fleet.get((FLEET, hour), HourFigures()), replace(found, running_max=None)
        )
    return fleet


def _sums(found: HourFigures) -> tuple[float | None, ...]:
    return tuple(getattr(found, name) for name in FIELDS[2:])


def _raise_day_peaks(conn: Connection, figures: dict[tuple[str, int], HourFigures]) -> None:
    """Raise each (hub, day)'s peak to its hours' in `figures` (peaks only grow as samples come)."""
    peaks: dict[tuple[str, int], int] = {}
    for (hub, hour), found in figures.items():
        if hub != FLEET and found.running_max is not None:
            key = (hub, hour // 24)
            peaks[key] = max(peaks.get(key, found.running_max), found.running_max)
    if not peaks:
        return
    table = HubSampleDay.__table__
    sqlite = conn.dialect.name == "sqlite"
    statement = (sqlite_insert if sqlite else postgresql_insert)(table)
    higher = (func.max if sqlite else func.greatest)(table.c.running_max, statement.excluded.running_max)
    statement = statement.on_conflict_do_update(index_elements=["hub", "day"], set_={"running_max": higher})
    rows = [{"hub": hub, "day": day, "running_max": n} for (hub, day), n in sorted(peaks.items())]
    conn.execute(statement, rows)


def _recompute_day_peaks(conn: Connection, hub: str, first_day: int) -> None:
    """A hub's day peaks from `first_day` on, from its hours again (after they were computed again)."""
    conn.execute(delete(HubSampleDay).where(HubSampleDay.hub == hub, HubSampleDay.day >= first_day))
    day = (HubSampleHour.hour // 24).label("day")
    query = (
        select(day, func.max(HubSampleHour.running_max))
        .where(HubSampleHour.hub == hub, HubSampleHour.hour >= first_day * 24)
        .group_by(day)
    )
    rows = [
        {"hub": hub, "day": int(d), "running_max": int(n)} for d, n in conn.execute(query) if n is not None
    ]
    if rows:
        conn.execute(HubSampleDay.__table__.insert(), rows)


def _note_hubs(conn: Connection, figures: Iterable[tuple[str, int]]) -> None:
    """Widen the span of hours recorded for each hub of `figures`."""
    spans: dict[str, tuple[int, int]] = {}
    for hub, hour in figures:
        if hub != FLEET:
            low, high = spans.get(hub, (hour, hour))
            spans[hub] = (min(low, hour), max(high, hour))
    if not spans:
        return
    table = HubSampleHub.__table__
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["hub"],
        set_={
            "first_hour": func.min(table.c.first_hour, statement.excluded.first_hour)
            if conn.dialect.name == "sqlite"
            else func.least(table.c.first_hour, statement.excluded.first_hour),
            "last_hour": func.max(table.c.last_hour, statement.excluded.last_hour)
            if conn.dialect.name == "sqlite"
            else func.greatest(table.c.last_hour, statement.excluded.last_hour),
        },
    )
    rows = [{"hub": hub, "first_hour": low, "last_hour": high} for hub, (low, high) in sorted(spans.items())]
    conn.execute(statement, rows)


def _add_to_stored(conn: Connection, folded: dict[tuple[str, int], HourFigures]) -> None:
    """Add `folded` to the stored rows of the same (hub, hour): one read, one upsert of whole rows."""
    hubs = sorted({hub for hub, _ in folded})
    hours = [hour for _, hour in folded]
    stored = select(HubSampleHour).where(
        HubSampleHour.hub.in_(hubs), HubSampleHour.hour >= min(hours), HubSampleHour.hour <= max(hours)
    )
    merged = dict(folded)
    for row in conn.execute(stored).mappings():
        key = (row["hub"], row["hour"])
        if key in merged:
            merged[key] = _merge(HourFigures(*(row[name] for name in FIELDS)), merged[key])
    _insert(conn, merged, upsert=True)


def _insert(conn: Connection, figures: dict[tuple[str, int], HourFigures], upsert: bool = False) -> None:
    """Write `figures`; `upsert`: replacing the rows of the same (hub, hour) (SQLite and PostgreSQL)."""
    if not figures:
        return
    rows = [{"hub": hub, "hour": hour, **vars(f)} for (hub, hour), f in sorted(figures.items())]
    table = HubSampleHour.__table__
    if not upsert:
        conn.execute(table.insert(), rows)
        return
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["hub", "hour"], set_={name: statement.excluded[name] for name in FIELDS}
    )
    conn.execute(statement, rows)


def roll_up_connection(conn: Connection, max_rows: int | None = MAX_ROWS_PER_CALL) -> tuple[int, int]:
    """Fold the samples written since the last call (at most `max_rows`; None: all) into their hours;
    returns (the mark: the highest sample id folded in, the highest sample id). Run in a transaction."""
    max_id = conn.execute(select(RollupMark.max_id).where(RollupMark.name == MARK)).scalar()
    newest = conn.execute(select(func.max(HubSample.id))).scalar() or 0
    if newest <= (max_id or 0):
        return max_id or 0, newest
    if max_id is None:  # the first roll-up of this store: every sample, in one pass of SQL
        every = hour_figures(conn, datetime(1970, 1, 2, tzinfo=UTC), None, None, newest)
        _insert(conn, every | _with_fleet(every))
        _note_hubs(conn, every)
        _raise_day_peaks(conn, every)
        conn.execute(RollupMark.__table__.insert().values(name=MARK, max_id=newest))
        return newest, newest
    upto = newest if max_rows is None else min(newest, max_id + max_rows)
    _fold_new(conn, max_id, upto)
    conn.execute(RollupMark.__table__.update().where(RollupMark.name == MARK).values(max_id=upto))
    return upto, newest


def roll_up(store: Store, max_rows: int | None = MAX_ROWS_PER_CALL) -> tuple[int, int]:
    """`roll_up_connection` in its own transaction. A roll-up that cannot write (the store busy with
    another writer) is skipped: the mark stays where it was, and readers read what follows it raw."""
    with _lock:
        try:
            with store.engine.begin() as conn:
                return roll_up_connection(conn, max_rows)
        except OperationalError:
            with store.engine.connect() as conn:
                mark = conn.execute(select(RollupMark.max_id).where(RollupMark.name == MARK)).scalar()
                newest = conn.execute(select(func.max(HubSample.id))).scalar() or 0
            return mark or 0, newest


# --------------------------------------------------------------------------- what the charts read


def _split(store: Store, hubs: Sequence[str], first_hour: int, now: datetime, rollups: bool) -> int:
    """The first hour the charts compute from raw samples: after `now`'s hour when the roll-ups hold every
    sample (as of the roll-up that just ran); `now`'s hour when a sample of `hubs` is dated after `now` in
    it (a chart of a past moment); the hour of the first sample not folded in yet (a backlog, or a store
    too busy to roll up); `first_hour` without roll-ups."""
    if not rollups:
        return first_hour
    mark, newest = roll_up(store)
    split = _hour(now) + 1
    with store.engine.connect() as conn:
        later = conn.execute(
            select(HubSample.id)
            .where(HubSample.hub.in_(list(hubs)), HubSample.at > now, HubSample.at < moment(split))
            .limit(1)
        ).first()
        if later:
            split = _hour(now)
        if mark < newest:
            behind = conn.execute(select(func.min(HubSample.at)).where(HubSample.id > mark)).scalar()
            if behind is not None:
                split = min(split, _hour(_aware(behind)))
    return max(first_hour, split)


def _aware(value: datetime | str) -> datetime:
    """min() bypasses the column type: SQLite hands back text or a naive (UTC) datetime."""
    found = datetime.fromisoformat(value) if isinstance(value, str) else value
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def running_peaks(
    store: Store, hubs: Sequence[str], first_hour: int, now: datetime, seconds: int, rollups: bool = True
) -> dict[tuple[str, int], int]:
    """Per (hub, bucket of `seconds`, a multiple of an hour): the peak of running servers from `first_hour`
    up to `now`. Roll-ups where they answer, grouped in SQL; raw samples for the rest."""
    if not hubs:
        return {}
    split = _split(store, hubs, first_hour, now, rollups)
    peaks: dict[tuple[str, int], int] = {}
    with store.engine.connect() as conn:
        hours_from = first_hour
        if seconds % 86400 == 0 and split // 24 > first_hour // 24:  # whole days from the day peaks
            days_to = split // 24
            d = HubSampleDay
            bucket = ((d.day * 86400) // seconds).label("bucket")
            query = (
                select(d.hub, bucket, func.max(d.running_max))
                .where(d.hub.in_(list(hubs)), d.day >= first_hour // 24, d.day < days_to)
                .group_by(d.hub, bucket)
            )
            peaks = {(hub, int(b)): int(n) for hub, b, n in conn.execute(query)}
            hours_from = days_to * 24
        if split > hours_from:
            bucket = ((HubSampleHour.hour * HOUR) // seconds).label("bucket")
            query = (
                select(HubSampleHour.hub, bucket, func.max(HubSampleHour.running_max))
                .where(
                    HubSampleHour.hub.in_(list(hubs)),
                    HubSampleHour.hour >= hours_from,
                    HubSampleHour.hour < split,
                )
                .group_by(HubSampleHour.hub, bucket)
            )
            for hub, b, n in conn.execute(query):
                if n is not None:
                    key = (hub, int(b))
                    peaks[key] = max(peaks.get(key, int(n)), int(n))
        if split <= _hour(now):
            for (hub, hour), found in hour_figures(
                conn, moment(split), now, hubs, parts=("running",)
            ).items():
                if found.running_max is not None:
                    key = (hub, hour * HOUR // seconds)
                    peaks[key] = max(peaks.get(key, found.running_max), found.running_max)
    return peaks


def spawn_totals(
    store: Store, hubs: Sequence[str], first_hour: int, now: datetime, rollups: bool = True
) -> dict[int, tuple[float | None, float | None, float | None, float | None]]:
    """Per hour from `first_hour` up to `now`: (ok, failed, seconds, timed ok) summed over `hubs`."""
    if not hubs:
        return {}
    split = _split(store, hubs, first_hour, now, rollups)
    totals: dict[int, tuple[float | None, float | None, float | None, float | None]] = {}
    with store.engine.connect() as conn:
        if split > first_hour:
            totals = _rolled_spawns(conn, hubs, first_hour, split)
        if split <= _hour(now):
            by_hour: dict[int, list[HourFigures]] = {}
            for (_, hour), found in hour_figures(conn, moment(split), now, hubs, parts=("spawns",)).items():
                by_hour.setdefault(hour, []).append(found)
            for hour, found in by_hour.items():
                totals[hour] = tuple(fsum_or_none(getattr(f, name) for f in found) for name in FIELDS[2:])  # type: ignore[assignment]
    return totals


def _rolled_spawns(
    conn: Connection, hubs: Sequence[str], first_hour: int, split: int
) -> dict[int, tuple[float | None, float | None, float | None, float | None]]:
    """Per hour in [first_hour, split): the spawn sums of `hubs` from the roll-ups: the FLEET rows less the
    hubs not asked for when those are fewer than the hubs asked for (an operator's fleet chart), else the
    hubs' own rows (a community's)."""
    h = HubSampleHour
    present = set(
        conn.execute(
            select(HubSampleHub.hub).where(
                HubSampleHub.last_hour >= first_hour, HubSampleHub.first_hour < split
            )
        ).scalars()
    )
    asked = set(hubs)
    left_out = sorted(present - asked)
    sums = (
        func.sum(h.spawn_ok),
        func.sum(h.spawn_failed),
        func.sum(h.spawn_seconds),
        func.sum(h.spawn_timed_ok),
    )
    window = (h.hour >= first_hour, h.hour < split, h.spawn_ok.is_not(None))
    if len(left_out) >= len(asked & present):
        query = select(h.hour, *sums).where(h.hub.in_(sorted(asked)), *window).group_by(h.hour)
        return {int(hour): tuple(rest) for hour, *rest in conn.execute(query)}  # type: ignore[misc]
    totals = {
        int(hour): list(rest)
        for hour, *rest in conn.execute(select(h.hour, *sums).where(h.hub == FLEET, *window).group_by(h.hour))
    }
    if left_out:
        for hour, *rest in conn.execute(
            select(h.hour, *sums).where(h.hub.in_(left_out), *window).group_by(h.hour)
        ):
            found = totals.setdefault(int(hour), [None] * 4)
            for i, value in enumerate(rest):
                if value is not None:
                    found[i] = (found[i] or 0.0) - value
    return {hour: tuple(values) for hour, values in totals.items()}  # type: ignore[misc]


def fsum_or_none(values: Iterable[float | None]) -> float | None:
    """An exact sum (the same whatever the order) of the values that are not None; None if none is."""
    present = [v for v in values if v is not None]
    return math.fsum(present) if present else None
