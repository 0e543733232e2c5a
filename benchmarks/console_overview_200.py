"""The web console's overview data for a generated 200-hub fleet with 30 days of monitoring data; prints JSON.

The fleet is validate_500's generator with 100 communities (a staging and a prod hub each, local cluster),
loaded with load_fleet; a daemon.json names every hub (running, a few failed or starting) with this process
as the daemon's pid. The store (real schema via open_store, rows inserted with sqlite3) holds:

- probe_days: 30 UTC days per hub (2,880 probes a day, a few failures);
- probe_samples: the last 24 hours of every hub at 30 s intervals (576,000 rows; version on ok ones);
- hub_samples: the last 24 hours of every hub every minute (288,000 rows) with spawn counters;
- user_days: 3,000 users over 30 days (a home hub, one in five a second one);
- incidents (resolved ones over the month, a few open), deployments (10 per hub), restarts and checks.

Timed: `overview_rows` for all 200 hubs followed by `fleet_totals` (what the overview page and
GET /api/hubs compute), best and median of RUNS after one warm-up; the number of SQL statements one call runs
is counted too. For reference: `hub_detail` of one hub, `community_detail`, every chart of one hub over
30 days, and some charts of the whole fleet (the hub-sample ones over the one day of samples there is).
The whole page too: GET / (the operator's overview, HTML rendered by the app) and GET /api/hubs (with an
API token), through the real FastAPI app in this process (starlette's TestClient: no socket, so the figure is
the server's own time: authentication, store reads, template rendering).
Not part of the test suite. Target: the overview page for 200 hubs under 200 ms server-side.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its TestClient; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402
from validate_500 import generate as generate_fleet  # noqa: E402

from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.console import accounts  # noqa: E402
from hubfleet.console.app import create_app  # noqa: E402
from hubfleet.console.data.charts import CHARTS, chart  # noqa: E402
from hubfleet.console.data.details import community_detail, hub_detail  # noqa: E402
from hubfleet.console.data.overview import fleet_totals, overview_rows  # noqa: E402
from hubfleet.console.data.source import ConsoleSource  # noqa: E402
from hubfleet.console.web import SESSION_COOKIE  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

COMMUNITIES = 100  # x 2 hubs
DAYS = 30
USERS = 3000
RUNS = 20
FLEET_CHARTS = (("active-users", 30), ("running-servers", 1), ("spawn-duration", 1), ("uptime", 30))
TARGET_MS = 200.0


def stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # how the store keeps UTC in SQLite


def probe_rows(hubs: list[str], now: dt.datetime, rnd: random.Random) -> tuple[list[tuple], list[tuple]]:
    """probe_days of 30 days and raw samples of the last 24 h."""
    today = now.date()
    days = []
    for hub in hubs:
        for back in range(DAYS):
            failed = rnd.choice((0, 0, 0, 1, 3, 40))
            days.append(
                (hub, (today - dt.timedelta(days=back)).isoformat(), 2880, 2880 - failed, 2880 * 12.5, 80.0)
            )
    samples = []
    start = now - dt.timedelta(hours=24)
    for hub in hubs:
        down = rnd.randrange(2880) if rnd.random() < 0.1 else -1
        for i in range(2880):
            at = stamp(start + dt.timedelta(seconds=30 * i))
            ok = not (down <= i < down + 4)
            status = 200 if ok else 503
            error = "" if ok else "GET /hub/health, /hub/api/: HTTP 503 Service Unavailable"
            version = "6.1.1" if ok else None
            latency = 8.0 + rnd.random() * 10
            samples.append((hub, at, int(ok), status, status, latency, error, None, version))
    return days, samples


def hub_sample_rows(hubs: list[str], now: dt.datetime, rnd: random.Random) -> list[tuple]:
    rows = []
    start = now - dt.timedelta(hours=24)
    for hub in hubs:
        ok = failed = seconds = 0.0
        for minute in range(24 * 60):
            if rnd.random() < 0.05:
                ok += 1
                seconds += 2 + rnd.random() * 6
            if rnd.random() < 0.002:
                failed += 1
            running = rnd.randrange(0, 25)
            rows.append(
                (
                    hub,
                    stamp(start + dt.timedelta(minutes=minute)),
                    running,
                    120,
                    10,
                    30,
                    60,
                    ok,
                    failed,
                    seconds,
                )
            )
    return rows


def user_day_rows(hubs: list[str], now: dt.datetime, rnd: random.Random) -> list[tuple]:
    rows = []
    today = now.date()
    for number in range(USERS):
        name = f"user{number:04d}"
        home = rnd.randrange(len(hubs))
        mine = [hubs[home]] if rnd.random() >= 0.2 else [hubs[home], hubs[(home + 1) % len(hubs)]]
        rate = rnd.choice((0.6, 0.25, 0.05))
        for back in range(DAYS):
            if rnd.random() >= rate:
                continue
            day = today - dt.timedelta(days=back)
            at = stamp(dt.datetime.combine(day, dt.time(10), dt.UTC))
            rows.append((rnd.choice(mine), name, day.isoformat(), f"native:{name}", at, at))
    return sorted(set(rows), key=lambda r: (r[0], r[1], r[2]))


def history_rows(hubs: list[str], now: dt.datetime, rnd: random.Random) -> dict[str, list[tuple]]:
    incidents, deployments, restarts, checks = [], [], [], []
    for hub in hubs:
        for _ in range(rnd.randrange(0, 6)):
            started = now - dt.timedelta(minutes=rnd.randrange(60, DAYS * 1440))
            incidents.append(
                (hub, "down", None, stamp(started), stamp(started + dt.timedelta(minutes=3)), "refused")
            )
        for k in range(10):
            at = now - dt.timedelta(days=DAYS - 3 * k, minutes=rnd.randrange(600))
            result = "ok" if rnd.random() < 0.9 else "failed"
            deployments.append(
                (hub, f"{k:064x}", stamp(at), stamp(at + dt.timedelta(seconds=40)), result, "", "ada")
            )
        for k in range(3):
            restarts.append((hub, stamp(now - dt.timedelta(days=k, hours=3)), "exited", 1, 1))
            checks.append((hub, stamp(now - dt.timedelta(days=k, hours=1)), 1, None, 4.2, "[]"))
    for hub in rnd.sample(hubs, 8):
        incidents.append((hub, "down", None, stamp(now - dt.timedelta(minutes=5)), None, "refused"))
    return {"incidents": incidents, "deployments": deployments, "restarts": restarts, "checks": checks}


def fill(db: Path, hubs: list[str], now: dt.datetime) -> dict[str, int]:
    rnd = random.Random(200)
    days, samples = probe_rows(hubs, now, rnd)
    hub_samples = hub_sample_rows(hubs, now, rnd)
    users = user_day_rows(hubs, now, rnd)
    history = history_rows(hubs, now, rnd)
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO probe_days VALUES (?,?,?,?,?,?)", days)
        conn.executemany(
            "INSERT INTO probe_samples (hub, at, ok, health_status, api_status, latency_ms, error,"
            " cert_expires_at, version) VALUES (?,?,?,?,?,?,?,?,?)",
            samples,
        )
        conn.executemany(
            "INSERT INTO hub_samples (hub, at, running_servers, users, active_24h, active_7d, active_30d,"
            " spawn_success_total, spawn_failure_total, spawn_seconds_total) VALUES (?,?,?,?,?,?,?,?,?,?)",
            hub_samples,
        )
        conn.executemany(
            "INSERT INTO user_days (hub, username, day, identity, first_seen, last_seen)"
            " VALUES (?,?,?,?,?,?)",
            users,
        )
        conn.executemany(
            "INSERT INTO incidents (hub, kind, rule, started_at, resolved_at, cause) VALUES (?,?,?,?,?,?)",
            history["incidents"],
        )
        conn.executemany(
            "INSERT INTO deployments (hub, config_hash, started_at, finished_at, result, message, actor)"
            " VALUES (?,?,?,?,?,?,?)",
            history["deployments"],
        )
        conn.executemany(
            "INSERT INTO restarts (hub, at, reason, exit_code, attempt) VALUES (?,?,?,?,?)",
            history["restarts"],
        )
        conn.executemany(
            "INSERT INTO checks (hub, at, ok, failed_step, total_seconds, steps) VALUES (?,?,?,?,?,?)",
            history["checks"],
        )
        conn.execute("ANALYZE")
    counts = {"probe_days": len(days), "probe_samples": len(samples), "hub_samples": len(hub_samples)}
    return {**counts, "user_days": len(users), **{k: len(v) for k, v in history.items()}}


def write_daemon_status(state: Path, hubs: list[str]) -> None:
    """daemon.json as the supervisor writes it; this process stands in for the daemon (its pid is alive)."""
    states = {}
    for i, hub in enumerate(hubs):
        kind = "failed" if i % 50 == 7 else "starting" if i % 50 == 9 else "running"
        states[hub] = {"state": kind, "url": f"http://127.0.0.1:{20001 + i}", "pid": 1000 + i, "restarts": 0}
    (state / "daemon.json").write_text(json.dumps({"pid": os.getpid(), "hubs": states}))


def timings_ms(func: Callable[[], Any], runs: int = RUNS) -> dict[str, float]:
    func()  # warm-up: SQLAlchemy compiles and caches the statements once
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return {"best": round(min(times), 2), "median": round(statistics.median(times), 2)}


def statements(store: Any, func: Callable[[], Any]) -> int:
    count = 0

    def counted(*_: Any) -> None:
        nonlocal count
        count += 1

    event.listen(store.engine, "before_cursor_execute", counted)
    try:
        func()
    finally:
        event.remove(store.engine, "before_cursor_execute", counted)
    return count


def page_timings(store: Any, fleet: Any, state: Path) -> dict[str, dict[str, float]]:
    """GET / as a signed-in operator and GET /api/hubs with a token, through the app in this process."""
    session_id, _ = accounts.create_session(store, "ops", "password", hours=1)
    token, _ = accounts.create_token(store, "ops", "bench")
    with TestClient(create_app(store, fleet, state_dir=state), base_url="http://127.0.0.1") as client:
        client.cookies.set(SESSION_COOKIE, session_id)

        def get(path: str, **headers: str) -> None:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])

        return {
            "overview_page": timings_ms(lambda: get("/")),
            "api_hubs": timings_ms(lambda: get("/api/hubs", authorization=f"Bearer {token}")),
        }


def main() -> None:
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_fleet(Path(tmp) / "fleet", COMMUNITIES)
        with (root / "fleet.yaml").open("a") as fleet_yaml:
            fleet_yaml.write("console:\n  accounts:\n    - {username: ops, role: operator}\n")
        fleet = load_fleet(root)
        names = sorted(fleet.hubs)
        state = Path(tmp) / "state"
        open_store(state).close()  # the schema, by the real migrations
        begin = time.perf_counter()
        rows = fill(state / "hubfleet.sqlite", names, now)
        generate_s = round(time.perf_counter() - begin, 1)
        write_daemon_status(state, names)
        size_mb = round((state / "hubfleet.sqlite").stat().st_size / 1e6, 1)
        hubs = [fleet.hubs[name] for name in names]
        with open_store(state) as store:
            source = ConsoleSource(store, fleet, state)

            def overview() -> dict[str, Any]:
                return fleet_totals(overview_rows(source, hubs, now))

            overview_ms = timings_ms(overview)
            queries = statements(store, overview)
            totals = overview()
            pages = page_timings(store, fleet, state)
            one_hub = names[0]
            reference = {
                "hub_detail_one_hub": timings_ms(lambda: hub_detail(source, one_hub, now), 5),
                "community_detail": timings_ms(lambda: community_detail(source, "c042", now), 5),
                **{
                    f"chart_{name}_one_hub_30d": timings_ms(
                        lambda n=name: chart(source, n, [one_hub], 30, now), 5
                    )
                    for name in CHARTS
                },
                **{
                    f"chart_{name}_fleet_{days}d": timings_ms(
                        lambda n=name, k=days: chart(source, n, names, k, now), 3
                    )
                    for name, days in FLEET_CHARTS
                },
            }
    result = {
        "benchmark": "console_overview_200",
        "date": now.date().isoformat(),
        "machine": machine(),
        "data": {"hubs": len(names), "days": DAYS, "users": USERS, **rows, "db_mb": size_mb},
        "generate_seconds": generate_s,
        "overview_rows_plus_fleet_totals_ms": overview_ms,
        "runs": RUNS,
        "sql_statements_per_overview": queries,
        "http_in_process_ms": pages,
        "fleet_totals": totals,
        "reference_ms_best_median_of_5_or_3": reference,
        "target_ms": TARGET_MS,
        "meets_target": pages["overview_page"]["median"] < TARGET_MS,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
