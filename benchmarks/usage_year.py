"""DAU/WAU/MAU queries over one year of generated activity: 5,000 users across 50 hubs; prints JSON.

Each user has a home hub, one in five also a second hub; a user is heavy (active on 60 % of weekdays),
regular (25 %) or occasional (5 %), three times less on weekends, and has one server session of 0.5-4 h on
each active day. Rows go into a temporary SQLite store (the real schema, via open_store). Timings are the
best of RUNS runs of the plain query functions of hubfleet.monitor.usage. Not part of the test suite.
Target: a DAU/WAU/MAU query over a year under 100 ms.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.monitor.usage import active_by_hub, active_counts, active_series, active_users  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

USERS, HUBS, YEAR = 5000, 50, 2025
RUNS = 5
TARGET_MS = 100.0
FIRST, LAST = dt.date(YEAR, 1, 1), dt.date(YEAR, 12, 31)


def stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # how the store keeps UTC datetimes in SQLite


def generate(db: Path) -> dict[str, int]:
    rnd = random.Random(2025)
    days = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
    user_days, sessions = [], []
    for number in range(USERS):
        name = f"user{number:04d}"
        home = rnd.randrange(HUBS)
        hubs = [home] if rnd.random() >= 0.2 else [home, (home + rnd.randrange(1, HUBS)) % HUBS]
        rate = rnd.choices((0.6, 0.25, 0.05), weights=(3, 4, 3))[0]
        for day in days:
            if rnd.random() >= (rate if day.weekday() < 5 else rate / 3):
                continue
            hub = f"hub{(hubs[0] if len(hubs) == 1 or rnd.random() < 0.7 else hubs[1]):02d}"
            start = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=rnd.randrange(7 * 60, 22 * 60))
            end = start + dt.timedelta(minutes=rnd.randrange(30, 240))
            user_days.append((hub, name, day.isoformat(), f"dummy:{name}", stamp(start), stamp(end)))
            sessions.append((hub, name, "", stamp(start), stamp(end), stamp(end)))
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO user_days (hub, username, day, identity, first_seen, last_seen)"
            " VALUES (?,?,?,?,?,?)",
            user_days,
        )
        conn.executemany(
            "INSERT INTO server_sessions (hub, username, server_name, started_at, stopped_at, last_activity)"
            " VALUES (?,?,?,?,?,?)",
            sessions,
        )
    return {"user_days": len(user_days), "server_sessions": len(sessions)}


def hub_samples_per_year(db: Path) -> dict[str, Any]:
    """HubSample grows with time, not users: measure one day of per-minute samples of 50 hubs and scale."""
    before = db.stat().st_size
    start = dt.datetime(YEAR, 6, 1)
    rows = [
        (f"hub{h:02d}", stamp(start + dt.timedelta(minutes=m)), 7, 100, 10, 30, 60, 100.0, 1.0)
        for m in range(24 * 60)
        for h in range(HUBS)
    ]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO hub_samples (hub, at, running_servers, users, active_24h, active_7d, active_30d,"
            " spawn_success_total, spawn_failure_total) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.commit()
        conn.execute("VACUUM")
    per_day = db.stat().st_size - before
    return {
        "measured_rows_one_day": len(rows),
        "bytes_one_day": per_day,
        "estimated_mb_per_year": round(per_day * 365 / 1e6, 1),
    }


def best_ms(func: Callable[[], Any], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return round(min(times), 2)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        open_store(state).close()  # create the schema with the real migrations
        db = state / "hubfleet.sqlite"
        start = time.perf_counter()
        rows = generate(db)
        with sqlite3.connect(db) as conn:
            conn.execute("ANALYZE")
            conn.execute("VACUUM")
        generate_s = round(time.perf_counter() - start, 1)
        size_mb = round(db.stat().st_size / 1e6, 1)
        day = dt.date(YEAR, 6, 30)
        all_hubs = [f"hub{h:02d}" for h in range(HUBS)]
        with open_store(state) as store:
            distinct_people = active_users(store, LAST, window=365)
            one_day = {
                "fleet_dau_wau_mau_3_queries": best_ms(lambda: active_counts(store, day)),
                "fleet_mau_1_query": best_ms(lambda: active_users(store, day, 30)),
                "per_hub_dau_wau_mau_3_queries": best_ms(
                    lambda: [active_by_hub(store, day, w) for w in (1, 7, 30)]
                ),
                "fleet_over_all_50_hubs_listed_3_queries": best_ms(
                    lambda: active_counts(store, day, all_hubs)
                ),
                "one_hub_dau_wau_mau_3_queries": best_ms(lambda: active_counts(store, day, ["hub07"])),
            }
            year_window_ms = best_ms(lambda: active_users(store, LAST, window=365))
            series_ms = best_ms(lambda: active_series(store, FIRST, LAST))
            series_hub_ms = best_ms(lambda: active_series(store, FIRST, LAST, ["hub07"]))
            days = [FIRST + dt.timedelta(days=i) for i in range(365)]
            loop_ms = best_ms(lambda: [active_counts(store, d) for d in days], runs=1)
            sample = active_counts(store, day)
        samples = hub_samples_per_year(db)
    result = {
        "benchmark": "usage_year",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "data": {
            "users": USERS,
            "hubs": HUBS,
            "days": 365,
            **rows,
            "distinct_people_over_the_year": distinct_people,
            "db_mb_user_days_and_sessions": size_mb,
            "generate_seconds": generate_s,
            "example_day": {"day": day.isoformat(), **sample},
            "hub_samples_per_minute": samples,
        },
        "definitions": {
            "year_window_query": "active_users(window=365): COUNT(DISTINCT identity) over every UserDay "
            "row of the year, fleet-wide (distinct people active at least once in the 365 days)",
            "one_day": "DAU, WAU and MAU of one day (2025-06-30) in the year-long store: 3 SQL queries",
            "series": "active_series: DAU, WAU and MAU of each of the 365 days, exact, from one SQL query "
            "plus a running sum in Python",
            "per_day_loop": "active_counts for each of the 365 days: 1,095 SQL queries",
        },
        "timings_ms_best_of": RUNS,
        "one_day_ms": one_day,
        "year_window_query_ms": year_window_ms,
        "series_365_days_ms": {
            "fleet_total": series_ms,
            "fleet_per_day": round(series_ms / 365, 3),
            "one_hub_total": series_hub_ms,
        },
        "per_day_loop_365_days_ms": {"total": loop_ms, "per_day": round(loop_ms / 365, 2), "runs": 1},
        "target_ms": TARGET_MS,
        "meets_target": {
            "year_window_query": year_window_ms < TARGET_MS,
            "one_day_fleet_dau_wau_mau": one_day["fleet_dau_wau_mau_3_queries"] < TARGET_MS,
            "series_365_days": series_ms < TARGET_MS,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
