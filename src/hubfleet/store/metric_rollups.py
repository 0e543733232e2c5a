"""Hourly roll-ups of hub samples: per hub and closed UTC hour, the peak of running servers and the spawns
(from the deltas of the hubs' cumulative counters), so that a fleet chart over a month reads 720 rows per hub
instead of 43,200 samples.

A closed hour never changes, so its roll-up is final: `roll_up` adds the hours that closed since it last ran
(lazily, from the charts that read them, a bounded number of hours per call) and keeps a mark, the first hour
not rolled up yet. Readers take the roll-ups for the hours before the mark and compute the later ones from
raw samples with the very same SQL (`hour_figures`), so a chart equals its raw computation whether or not the
roll-up is current. A sample written late into an hour already rolled up (a clock set back, an import, a
test) is noticed by its id (the mark keeps the highest id seen) and its hours are rolled up again.

Spawn deltas: a sample's counters minus its hub's previous sample's, when that one is at most SPAWN_GAP
older; a counter lower than before means the hub restarted (counters start again at 0): the new value is
the delta then. After a longer gap (collector or hub down) the first sample starts the count again.
Hours are integers (UTC seconds since the epoch // 3600): the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Float, Integer, String, case, cast, delete, extract, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import ColumnElement

from hubfleet.store.api import Store
from hubfleet.store.models import Base, HubSample

HOUR = 3600
SPAWN_GAP = timedelta(hours=1)
"""A counter delta needs the hub's previous sample at most this much older."""
SEAL_DELAY = timedelta(minutes=5)
"""An hour is rolled up this long after it ended: a collection stamped just before the hour's end may be
committed a little after it."""
MAX_HOURS_PER_CALL = 24
"""Hours one `roll_up` call adds at most (a chart request must not roll up a month); the rest stay raw."""
MARK = "hub_sample_hours"


class HubSampleHour(Base):
    """One hub's closed UTC hour of hub samples, summed (migration 0021)."""

    __tablename__ = "hub_sample_hours"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    """UTC seconds since the epoch // 3600 of the hour's start."""
    samples: Mapped[int] = mapped_column(Integer, default=0)
    running_max: Mapped[int | None] = mapped_column(Integer)
    spawn_ok: Mapped[float | None] = mapped_column(Float)
    """Successful spawns (sum of counter deltas); None when no sample of the hour had counters."""
    spawn_failed: Mapped[float | None] = mapped_column(Float)
    spawn_seconds: Mapped[float | None] = mapped_column(Float)
    """Seconds of the successful spawns whose duration the hub reported (`_sum` deltas)."""
    spawn_timed_ok: Mapped[float | None] = mapped_column(Float)
    """Successful spawns counted in spawn_seconds (the mean is spawn_seconds / spawn_timed_ok)."""


class RollupMark(Base):
    """How far a roll-up went: every hour before `through` is rolled up; `max_id` is the highest source
    row id seen (a newer row dated before `through` came late: its hours are rolled up again)."""

    __tablename__ = "rollup_marks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    through: Mapped[int | None] = mapped_column(Integer)
    max_id: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class HourFigures:
    """One hub's hour: samples, peak running servers, and the spawn sums (None: no counters)."""

    samples: int = 0
    running_max: int | None = None
    spawn_ok: float | None = None
    spawn_failed: float | None = None
    spawn_seconds: float | None = None
    spawn_timed_ok: float | None = None


def hour_of(value: Any, dialect: str) -> ColumnElement[int]:
    """The hour (UTC epoch seconds // 3600) a datetime column falls in."""
    return bucket_of(value, HOUR, dialect)


def bucket_of(value: Any, seconds: int, dialect: str) -> ColumnElement[int]:
    """Which `seconds`-long bucket since the Unix epoch a datetime column falls in (an integer)."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", value), Integer) // seconds
    return cast(func.floor(extract("epoch", value) / seconds), Integer)


def _moment(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * HOUR, UTC)


def hour_figures(
    conn: Connection,
    start: datetime,
    end: datetime,
    hubs: Sequence[str] | None = None,
    inclusive: bool = False,
) -> dict[tuple[str, int], HourFigures]:
    """Per (hub, hour): the figures of the raw samples in [start, end) (`inclusive`: [start, end]), of
    `hubs` (None: every hub). Two grouped statements, whatever the number of hubs."""
    dialect = conn.dialect.name
    hub_filter = [HubSample.hub.in_(list(hubs))] if hubs is not None else []
    upper = HubSample.at <= end if inclusive else HubSample.at < end
    bucket = hour_of(HubSample.at, dialect).label("hour")
    running = (
        select(HubSample.hub, bucket, func.count(), func.max(HubSample.running_servers))
        .where(HubSample.at >= start, upper, *hub_filter)
        .group_by(HubSample.hub, bucket)
    )
    found: dict[tuple[str, int], HourFigures] = {
        (hub, int(hour)): HourFigures(int(n), None if peak is None else int(peak))
        for hub, hour, n, peak in conn.execute(running)
    }
    for hub, hour, ok, failed, seconds, timed in conn.execute(
        _spawn_statement(start, upper, hub_filter, dialect)
    ):
        base = found.get((hub, int(hour)), HourFigures())
        found[(hub, int(hour))] = HourFigures(base.samples, base.running_max, ok, failed, seconds, timed)
    return found


def _spawn_statement(start: datetime, upper: Any, hub_filter: list[Any], dialect: str) -> Any:
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
        .where(
            HubSample.at >= start - SPAWN_GAP,
            upper,
            HubSample.spawn_success_total.is_not(None),
            *hub_filter,
        )
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
    """`at` - SPAWN_GAP, in the stored form (SQLite keeps text that sorts by time)."""
    seconds = int(SPAWN_GAP.total_seconds())
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M:%f000", at, f"-{seconds} seconds")
    return at - SPAWN_GAP


# --------------------------------------------------------------------------- rolling up

_lock = threading.Lock()


def sealed_hour(now: datetime) -> int:
    """The first hour that is not closed (and sealed) at `now`: every earlier hour is final."""
    return int((now - SEAL_DELAY).timestamp()) // HOUR


def roll_up_connection(conn: Connection, now: datetime, max_hours: int | None = MAX_HOURS_PER_CALL) -> int:
    """Roll up the closed hours not rolled up yet (at most `max_hours`; None: all); returns the mark
    (every hour before it is rolled up) or -1 when nothing was ever rolled up. Run inside a transaction."""
    mark = conn.execute(select(RollupMark.through, RollupMark.max_id).where(RollupMark.name == MARK)).first()
    through, max_id = (mark[0], mark[1]) if mark else (None, 0)
    first_new, newest_id = conn.execute(
        select(func.min(HubSample.at), func.max(HubSample.id)).where(HubSample.id > max_id)
    ).one()
    if first_new is not None:
        new_hour = int(_aware(first_new).timestamp()) // HOUR
        if through is None or new_hour < through:  # rows dated before the mark: roll those hours again
            through = new_hour
            conn.execute(delete(HubSampleHour).where(HubSampleHour.hour >= through))
    if through is None:
        return -1
    target = sealed_hour(now)
    if max_hours is not None:
        target = min(target, through + max_hours)
    if target > through:
        figures = hour_figures(conn, _moment(through), _moment(target))
        _insert(conn, figures)
        through = target
    values = {"through": through, "max_id": max(max_id, newest_id or 0)}
    if mark is None:
        conn.execute(RollupMark.__table__.insert().values(name=MARK, **values))
    elif (mark[0], mark[1]) != (values["through"], values["max_id"]):
        conn.execute(RollupMark.__table__.update().where(RollupMark.name == MARK).values(**values))
    return through


def _insert(conn: Connection, figures: dict[tuple[str, int], HourFigures]) -> None:
    if not figures:
        return
    rows = [{"hub": hub, "hour": hour, **vars(f)} for (hub, hour), f in sorted(figures.items())]
    hours = {hour for _, hour in figures}
    # another process may have rolled up the same hours meanwhile: its rows are the same, replace them
    conn.execute(delete(HubSampleHour).where(HubSampleHour.hour.in_(sorted(hours))))
    conn.execute(HubSampleHour.__table__.insert(), rows)


def _aware(value: datetime | str) -> datetime:
    """min() bypasses the column type: SQLite hands back text or a naive (UTC) datetime."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def roll_up(store: Store, now: datetime, max_hours: int | None = MAX_HOURS_PER_CALL) -> int:
    """`roll_up_connection` in its own transaction; returns the mark, or -1. A roll-up that cannot write
    (the store busy with another writer) is skipped: readers compute the missing hours from raw samples."""
    with _lock:
        try:
            with store.engine.begin() as conn:
                return roll_up_connection(conn, now, max_hours)
        except OperationalError:
            with store.engine.connect() as conn:
                mark = conn.execute(select(RollupMark.through).where(RollupMark.name == MARK)).scalar()
            return -1 if mark is None else int(mark)


def figures(
    store: Store, hubs: Sequence[str], first_hour: int, now: datetime, rollups: bool = True
) -> dict[tuple[str, int], HourFigures]:
    """Per (hub, hour) of `hubs` from `first_hour` up to `now` (included): roll-ups for the hours that
    have them, raw samples for the others (`rollups=False`: raw samples only, for checking)."""
    if not hubs:
        return {}
    split = first_hour
    if rollups:
        mark = roll_up(store, now)
        split = max(first_hour, min(mark, int(now.timestamp()) // HOUR))  # a past `now` ends mid-hour
    found: dict[tuple[str, int], HourFigures] = {}
    with store.engine.connect() as conn:
        if split > first_hour:
            query = select(HubSampleHour).where(
                HubSampleHour.hub.in_(list(hubs)),
                HubSampleHour.hour >= first_hour,
                HubSampleHour.hour < split,
            )
            for row in conn.execute(query).mappings():
                found[(row["hub"], row["hour"])] = HourFigures(
                    row["samples"],
                    row["running_max"],
                    row["spawn_ok"],
                    row["spawn_failed"],
                    row["spawn_seconds"],
                    row["spawn_timed_ok"],
                )
        found.update(hour_figures(conn, _moment(split), now, hubs, inclusive=True))
    return found


def fsum_or_none(values: Iterable[float | None]) -> float | None:
    """An exact sum (the same whatever the order) of the values that are not None; None if none is."""
    present = [v for v in values if v is not None]
    return math.fsum(present) if present else None
