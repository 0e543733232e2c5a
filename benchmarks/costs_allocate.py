"""How long allocating one month takes for a large fleet; prints JSON.

Not part of the test suite; runs no hub. A fleet of `--hubs` hubs (default 200) on four clusters: three billed
by one billing account (one of them with a capacity, so idle capacity is computed) and one with a price sheet.
Each hub has `--users` users (default 20), each running a server of about an hour on every day of the month
(hourly usage: --hubs x --users x 30 server sessions, requests and measured use mixed, some without requests
so the configured resources are used), groups for half of them, home storage samples. The billing export is
stored as `hubfleet costs import` stores it: per day a direct line of every billed hub, per day and cluster
shared lines of five services, and an unallocated line.

Times `allocate_month` (reading everything, splitting, rounding, replacing the month's rows in one
transaction) `--repeat` times and reports the best and the median wall-clock time, the CPU time of each run
and the machine's load average (on a shared machine the CPU time is the fairer figure). Target: at most 2 s
for 200 hubs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sqlalchemy import insert  # noqa: E402

from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.costs.allocation import allocate_month  # noqa: E402
from hubfleet.costs.queries import month_check  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from hubfleet.store.costs import CostImport, CostLine  # noqa: E402
from hubfleet.store.models import HomeUsage, HubUserGroup, ServerSession  # noqa: E402
from machine_info import machine  # noqa: E402

MONTH = "2026-10"
DAYS = 31
TARGET_S = 2.0
GIB = 1024**3
CLUSTERS = {
    "east": {"capacity": {"cpu": 400, "memory_gib": 1600}},
    "west": {},
    "north": {"idle": "even", "capacity": {"cpu": 300, "memory_gib": 1200}},
    "lab": {"price_sheet": {"cpu_hour": "0.02", "memory_gib_hour": "0.005", "storage_gib_month": "0.04",
                            "monthly_fixed": "900"}},
}  # fmt: skip
SERVICES = [
    "Compute Engine",
    "Kubernetes Engine",
    "Cloud Load Balancing",
    "Cloud Storage",
    "Cloud Monitoring",
]


def write_fleet(root: Path, hubs: int) -> dict[str, str]:
    """hub -> cluster."""
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(yaml.safe_dump({"name": "bench"}))
    for name, costs in CLUSTERS.items():
        (root / "clusters" / f"{name}.yaml").write_text(
            yaml.safe_dump({"name": name, "kind": "local", "costs": costs})
        )
    placed: dict[str, str] = {}
    names = list(CLUSTERS)
    for index in range(hubs):
        community = f"c{index // 10:03d}"
        hub = f"hub{index:04d}"
        cluster = names[index % len(names)]
        directory = root / "communities" / community / "hubs"
        directory.mkdir(parents=True, exist_ok=True)
        (root / "communities" / community / "community.yaml").write_text(f"name: {community}\n")
        settings = {
            "name": hub,
            "community": community,
            "cluster": cluster,
            "stage": "staging",
            "port": 20000 + index,
            "auth": {"type": "native", "admin_users": ["admin"]},
            "resources": {"cpu_limit": 2, "memory_limit": "4G"},
        }
        (directory / f"{hub}.yaml").write_text(yaml.safe_dump(settings))
        placed[hub] = cluster
    return placed


def fill_store(store, placed: dict[str, str], users: int, seed: int) -> dict[str, int]:  # noqa: ANN001
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    now = datetime(2026, 11, 2, tzinfo=UTC)
    sessions, groups, homes, lines = [], [], [], []
    for hub in placed:
        for u in range(users):
            user = f"user{u:02d}"
            if u % 2 == 0:
                groups.append({"hub": hub, "username": user, "group": f"g{u % 3}", "first_seen": now,
                               "last_seen": now})  # fmt: skip
            for day in range(DAYS):
                begin = start + timedelta(days=day, hours=rng.uniform(6, 20))
                known = rng.random() > 0.1
                sessions.append(
                    {
                        "hub": hub,
                        "username": user,
                        "server_name": "",
                        "started_at": begin,
                        "stopped_at": begin + timedelta(minutes=rng.uniform(30, 90)),
                        "environment": None,
                        "cpu_request": rng.choice([0.5, 1.0, 2.0]) if known else None,
                        "memory_request_bytes": rng.choice([1, 2, 4]) * GIB if known else None,
                        "cpu_seconds_used": rng.uniform(0, 7200) if rng.random() > 0.5 else None,
                        "memory_peak_bytes": int(rng.uniform(0.2, 3) * GIB) if rng.random() > 0.5 else None,
                    }
                )
            if placed[hub] == "lab":
                for sample in range(3):
                    homes.append({"hub": hub, "username": user, "at": start + timedelta(days=10 * sample + 1),
                                  "bytes": int(rng.uniform(0.1, 20) * GIB)})  # fmt: skip
    billed = [hub for hub, cluster in placed.items() if cluster != "lab"]
    for day in range(1, DAYS + 1):
        when = date(2026, 10, day)
        for hub in billed:
            lines.append(
                (when, placed[hub], hub, "Usage", "Compute Engine", rng.randint(1_000_000, 90_000_000))
            )
        for cluster in ("east", "west", "north"):
            for service in SERVICES:
                lines.append((when, cluster, None, "Usage", service, rng.randint(1_000_000, 400_000_000)))
        lines.append((when, None, None, "Usage", "Support", rng.randint(0, 5_000_000)))
        lines.append((when, "east", None, "Credit", "Compute Engine", -rng.randint(0, 2_000_000)))
    with store.session() as session, session.begin():
        session.execute(insert(ServerSession), sessions)
        session.execute(insert(HubUserGroup), groups)
        if homes:
            session.execute(insert(HomeUsage), homes)
        record = CostImport(account="bench-account", month=MONTH, currency="USD", rows=len(lines),
                            billed_micros=sum(line[-1] for line in lines), effective_micros=None, files=[],
                            raw_path="", imported_at=now, actor="bench")  # fmt: skip
        session.add(record)
        session.flush()
        session.execute(
            insert(CostLine),
            [
                {"import_id": record.id, "account": "bench-account", "sub_account": "", "month": MONTH,
                 "day": when, "cluster": cluster, "hub": hub, "category": category, "service": service,
                 "currency": "USD", "billed_micros": micros, "effective_micros": None, "list_micros": None,
                 "rows": 1}
                for when, cluster, hub, category, service, micros in lines
            ],
        )  # fmt: skip
    return {"server_sessions": len(sessions), "cost_lines": len(lines), "group_memberships": len(groups),
            "home_samples": len(homes)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-alloc-") as tmp:
        root = Path(tmp)
        placed = write_fleet(root / "fleet", args.hubs)
        fleet = load_fleet(root / "fleet")
        with open_store(root / "state") as store:
            t0 = time.perf_counter()
            sizes = fill_store(store, placed, args.users, args.seed)
            fill_s = time.perf_counter() - t0
            times, cpu = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                allocation = allocate_month(store, fleet, MONTH, now=datetime(2026, 11, 2, tzinfo=UTC))
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            checks = month_check(store, MONTH)
    best = min(times)
    print(
        json.dumps(
            {
                "benchmark": "costs_allocate",
                "hubs": args.hubs,
                "users_per_hub": args.users,
                "month": MONTH,
                **sizes,
                "fill_seconds": round(fill_s, 2),
                "allocate_seconds": [round(t, 3) for t in times],
                "allocate_best_seconds": round(best, 3),
                "allocate_median_seconds": round(statistics.median(times), 3),
                "allocate_cpu_seconds": [round(t, 3) for t in cpu],
                "load_average": [round(x, 1) for x in os.getloadavg()],
                "target_seconds": TARGET_S,
                "met": best <= TARGET_S,
                "accounts": [
                    {"account": c.account, "billed": str(c.billed), "allocated": str(c.allocated), "ok": c.ok}
                    for c in checks
                ],
                "invariant_ok": all(c.ok for c in checks) and all(a.ok for a in allocation.accounts),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
