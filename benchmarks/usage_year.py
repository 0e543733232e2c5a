"""DAU/WAU/MAU over a year of generated activity, at any size; prints one JSON object.

    .venv/bin/python benchmarks/usage_year.py                                   # 5,000 users, 50 hubs
    .venv/bin/python benchmarks/usage_year.py --users 100000 --hubs 1000 --days 365

Each user has a home hub, one in five also a second hub; a user is heavy (active on 60 % of weekdays),
regular (25 %) or occasional (5 %), three times less on weekends, and has one server session of 0.5-4 h on
each active day. Rows go into a temporary SQLite store with the real schema (open_store runs the
migrations): user_days (and server_sessions unless --no-sessions) written in bulk with the benchmark's own
database tuned for it (journal off, no sync, user_days' indexes and triggers dropped during the insert and
made again after), then the roll-ups built exactly as migration 0020 back-fills them
(hubfleet.store.usage_rollups.refresh over every hub-day). Each query is the plain function of
hubfleet.monitor.usage, best of --runs, with its wall and CPU (process) time. --verify checks the
sample day's fleet and per-hub counts against COUNT(DISTINCT) over the raw rows. Not part of the test suite.
Targets: DAU/WAU/MAU of a day, fleet-wide and per hub, ≤ 100 ms; the year generated in ≤ 5 min.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import sqlite3
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.monitor.usage import active_by_hub, active_counts, active_series, active_users  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from hubfleet.store.usage_rollups import refresh  # noqa: E402
from machine_info import machine  # noqa: E402

TARGET_MS = 100.0
BATCH = 200_000


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = clock()
    return {"wall_s": round(wall - start[0], 2), "cpu_s": round(cpu - start[1], 2)}


def active_days(rnd: random.Random, pools: tuple[list[int], list[int]], rate: float) -> list[int]:
    """About `rate` of the weekdays and rate/3 of the weekend days (indexes), drawn in O(active days)."""
    chosen: list[int] = []
    for pool, p in zip(pools, (rate, rate / 3), strict=True):
        n = len(pool)
        k = round(rnd.gauss(n * p, math.sqrt(n * p * (1 - p)))) if n else 0
        chosen += rnd.sample(pool, max(0, min(n, k)))
    return chosen


def rows(users: int, hubs: int, days: list[dt.date], seed: int) -> Iterator[tuple[tuple, tuple]]:
    """(user_days row, server_sessions row) per active user-day, as the store keeps them in SQLite, day by
    day (the order the collector writes them: a day's rows are neighbours on disk)."""
    rnd = random.Random(seed)
    pools = (
        [i for i, d in enumerate(days) if d.weekday() < 5],
        [i for i, d in enumerate(days) if d.weekday() >= 5],
    )
    by_day_user = [array("I") for _ in days]
    by_day_hub = [array("I") for _ in days]
    for number in range(users):
        home = rnd.randrange(hubs)
        second = (home + rnd.randrange(1, hubs)) % hubs if hubs > 1 and rnd.random() < 0.2 else None
        rate = rnd.choices((0.6, 0.25, 0.05), weights=(3, 4, 3))[0]
        for i in active_days(rnd, pools, rate):
            by_day_user[i].append(number)
            by_day_hub[i].append(home if second is None or rnd.random() < 0.7 else second)
    minutes = [f" {m // 60:02d}:{m % 60:02d}:00.000000" for m in range(24 * 60 + 240)]
    width = len(str(users - 1))
    names = [f"user{n:0{width}d}" for n in range(users)]
    people = [f"dummy:{name}" for name in names]
    hub_names = [f"hub{h:04d}" for h in range(hubs)]
    for i, day in enumerate(days):
        text, following = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
        for number, h in zip(by_day_user[i], by_day_hub[i], strict=True):
            begin = rnd.randrange(7 * 60, 22 * 60)
            end = begin + rnd.randrange(30, 240)
            start = text + minutes[begin]
            stop = (text + minutes[end]) if end < 24 * 60 else (following + minutes[end - 24 * 60])
            hub, name = hub_names[h], names[number]
            yield (hub, name, text, people[number], start, stop), (hub, name, "", start, stop, stop)


def generate(db: Path, users: int, hubs: int, days: list[dt.date], sessions: bool) -> dict[str, Any]:
    """Bulk insert into the benchmark's own database: indexes and triggers of user_days off meanwhile."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    conn.execute("PRAGMA temp_store = MEMORY")
    saved = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ('user_days', 'server_sessions')"
        " AND type IN ('index', 'trigger') AND sql IS NOT NULL"
    ).fetchall()
    for kind, name, _ in saved:
        conn.execute(f"DROP {kind.upper()} {name}")
    start = clock()
    counts = {"user_days": 0, "server_sessions": 0}
    day_rows: list[tuple] = []
    session_rows: list[tuple] = []

    def flush() -> None:
        conn.executemany("INSERT INTO user_days VALUES (?,?,?,?,?,?)", day_rows)
        if sessions:
            conn.executemany(
                "INSERT INTO server_sessions (hub, username, server_name, started_at, stopped_at,"
                " last_activity) VALUES (?,?,?,?,?,?)",
                session_rows,
            )
        counts["user_days"] += len(day_rows)
        counts["server_sessions"] += len(session_rows) if sessions else 0
        day_rows.clear()
        session_rows.clear()

    columns = [c[1] for c in conn.execute("PRAGMA table_info(user_days)")]
    assert columns == ["hub", "username", "day", "identity", "first_seen", "last_seen"], columns
    conn.execute("BEGIN")
    for day_row, session_row in rows(users, hubs, days, seed=2025):
        day_rows.append(day_row)
        session_rows.append(session_row)
        if len(day_rows) >= BATCH:
            flush()
    flush()
    inserted = since(start)
    start = clock()
    for _, _, sql in saved:
        conn.execute(sql)
    # What the triggers would have marked, as migration 0020 marks every stored hub-day
    conn.execute("INSERT INTO usage_stale_days (hub, day) SELECT DISTINCT hub, day FROM user_days")
    conn.execute("COMMIT")
    indexed = since(start)
    conn.close()
    return {**counts, "insert": inserted, "indexes_and_triggers": indexed}


def best(func: Callable[[], Any], runs: int) -> dict[str, float]:
    """Best wall and best CPU (process) time over `runs` runs, in ms."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = clock()
        func()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return {"wall_ms": round(min(walls), 2), "cpu_ms": round(min(cpus), 2)}


def raw_counts(db: Path, day: dt.date, hub: str) -> dict[str, Any]:
    """COUNT(DISTINCT) over user_days: what the roll-ups must equal."""
    conn = sqlite3.connect(db)
    out: dict[str, Any] = {}
    for key, window in (("dau", 1), ("wau", 7), ("mau", 30)):
        first = (day - dt.timedelta(days=window - 1)).isoformat()
        where = "day >= ? AND day <= ?"
        out[key] = conn.execute(
            f"SELECT COUNT(DISTINCT identity) FROM user_days WHERE {where}", (first, day.isoformat())
        ).fetchone()[0]
        out[f"{hub}_{key}_users"] = conn.execute(
            f"SELECT COUNT(DISTINCT username) FROM user_days WHERE {where} AND hub = ?",
            (first, day.isoformat(), hub),
        ).fetchone()[0]
    conn.close()
    return out


def table_bytes(db: Path) -> dict[str, int] | None:
    """Bytes per table and index (SQLite's dbstat, when compiled in)."""
    try:
        conn = sqlite3.connect(db)
        found = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"))
        conn.close()
        return {name: int(size) for name, size in found.items() if size > 1_000_000 or "usage" in name}
    except sqlite3.Error:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--hubs", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-sessions", dest="sessions", action="store_false", help="skip server_sessions")
    parser.add_argument(
        "--verify", action="store_true", help="check the sample day against raw COUNT(DISTINCT)"
    )
    parser.add_argument("--keep", type=Path, help="build the store in this directory and keep it")
    options = parser.parse_args()
    last = dt.date(2025, 12, 31)
    first = last - dt.timedelta(days=options.days - 1)
    days = [first + dt.timedelta(days=i) for i in range(options.days)]
    hub_names = [f"hub{h:04d}" for h in range(options.hubs)]
    community = hub_names[: max(1, options.hubs // 100)]
    with tempfile.TemporaryDirectory() as tmp:
        state = options.keep or Path(tmp)
        total = clock()
        open_store(state).close()  # the schema and triggers, by the real migrations
        db = state / "hubfleet.sqlite"
        generated = generate(db, options.users, options.hubs, days, options.sessions)
        start = clock()
        with open_store(state) as store, store.session() as session, session.begin():
            hub_days = refresh(session)
        rollups = {**since(start), "hub_days": hub_days}
        start = clock()
        with sqlite3.connect(db) as conn:
            conn.execute("ANALYZE")
        analyzed = since(start)
        whole = since(total)
        size_mb = round(db.stat().st_size / 1e6, 1)
        sizes = table_bytes(db)
        day = min(last, first + dt.timedelta(days=max(0, options.days - 185)))  # a day in the middle
        hub = hub_names[7 % options.hubs]
        runs = options.runs
        with open_store(state) as store:
            sample = active_counts(store, day)
            per_hub_sample = {w: active_by_hub(store, day, w).get(hub, 0) for w in (1, 7, 30)}
            one_day = {
                "fleet_dau_wau_mau": best(lambda: active_counts(store, day), runs),
                "fleet_mau": best(lambda: active_users(store, day, 30), runs),
                "per_hub_dau_wau_mau_every_hub": best(
                    lambda: [active_by_hub(store, day, w) for w in (1, 7, 30)], runs
                ),
                "fleet_over_every_hub_listed_dau_wau_mau": best(
                    lambda: active_counts(store, day, hub_names), runs
                ),
                f"community_of_{len(community)}_hubs_dau_wau_mau": best(
                    lambda: active_counts(store, day, community), runs
                ),
                "one_hub_dau_wau_mau": best(lambda: active_counts(store, day, [hub]), runs),
            }
            year_window = best(lambda: active_users(store, last, window=options.days), runs)
            series = {
                "fleet": best(lambda: active_series(store, first, last), max(1, runs // 2)),
                "one_hub": best(lambda: active_series(store, first, last, [hub]), max(1, runs // 2)),
            }
            distinct_people = active_users(store, last, window=options.days)
        verified = None
        if options.verify:
            raw = raw_counts(db, day, hub)
            mine = {
                **sample,
                **{f"{hub}_{k}_users": per_hub_sample[w] for k, w in (("dau", 1), ("wau", 7), ("mau", 30))},
            }
            verified = {"raw": raw, "equal": raw == mine}
    print(
        json.dumps(
            {
                "benchmark": "usage_year",
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "loadavg_at_end": os.getloadavg(),
                "machine": machine(),
                "sizes": {"users": options.users, "hubs": options.hubs, "days": options.days},
                "data": {
                    **{k: v for k, v in generated.items() if k in ("user_days", "server_sessions")},
                    "distinct_people": distinct_people,
                    "db_mb": size_mb,
                    "table_and_index_bytes": sizes,
                    "example_day": {"day": day.isoformat(), **sample, f"{hub}_users": per_hub_sample},
                },
                "build": {
                    "insert_raw_rows": generated["insert"],
                    "indexes_and_triggers": generated["indexes_and_triggers"],
                    "rollups_backfill": rollups,
                    "analyze": analyzed,
                    "total": whole,
                },
                "query_best_of": runs,
                "one_day": one_day,
                "year_window_distinct_people": year_window,
                f"series_{options.days}_days": series,
                "verify": verified,
                "target_ms": TARGET_MS,
                "meets_target": {
                    "fleet_dau_wau_mau": one_day["fleet_dau_wau_mau"]["wall_ms"] <= TARGET_MS,
                    "per_hub_dau_wau_mau": one_day["per_hub_dau_wau_mau_every_hub"]["wall_ms"] <= TARGET_MS,
                    "generated_in_5_min": whole["wall_s"] <= 300,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
