"""The console's cost pages for a large fleet, server-side; prints JSON.

Not part of the test suite; runs no hub. The fleet and the month of usage and billing lines are
costs_allocate.py's (`--hubs` hubs, default 200, ten per community, on four clusters, `--users` users each
with a server every day of the month), allocated with `allocate_month`, and one invoice per community issued
by `generate_month`. An operator's API token is made as `hubfleet console-token create` makes it.

Timed through the real FastAPI app in this process (starlette's TestClient: no socket, so the figure is the
server's own time: authentication, store reads, budgets, template rendering), best and median of `--repeat`
after one warm-up: GET /costs (HTML, every community), GET /api/costs, GET /communities/<c>/costs (one
community of ten hubs, HTML) and GET /api/communities/<c>/costs. Target: each page under 1 s for 200 hubs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from costs_allocate import MONTH, fill_store, write_fleet  # noqa: E402

from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.console import accounts  # noqa: E402
from hubfleet.console.app import create_app  # noqa: E402
from hubfleet.costs.allocation import allocate_month  # noqa: E402
from hubfleet.costs.invoices import generate_month  # noqa: E402
from hubfleet.monitor.usage import people_in_month  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

TARGET_S = 1.0


def add_billing(root: Path) -> None:
    """An operator account, a plan every community uses, and budgets for every other community."""
    fleet_yaml = root / "fleet.yaml"
    settings = yaml.safe_load(fleet_yaml.read_text())
    settings["console"] = {"accounts": [{"username": "ops", "role": "operator"}]}
    settings["costs"] = {"plans": {"std": {"fixed_fee": 100, "mau_tiers": [{"up_to": 10, "unit_price": 10},
                                                                          {"unit_price": 5}]}}}  # fmt: skip
    fleet_yaml.write_text(yaml.safe_dump(settings))
    for index, path in enumerate(sorted(root.glob("communities/*/community.yaml"))):
        community = yaml.safe_load(path.read_text())
        community["billing"] = {"plan": "std", **({"budget": {"monthly": 5000}} if index % 2 else {})}
        path.write_text(yaml.safe_dump(community))


def timed(call: Callable[[], Any], repeat: int) -> list[float]:
    call()  # warm-up: templates compiled, caches filled
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-console-costs-") as tmp:
        root = Path(tmp)
        placed = write_fleet(root / "fleet", args.hubs)
        add_billing(root / "fleet")
        fleet = load_fleet(root / "fleet")
        state = root / "state"
        with open_store(state) as store:
            sizes = fill_store(store, placed, args.users, args.seed)
            allocate_month(store, fleet, MONTH, now=datetime(2026, 11, 2, tzinfo=UTC))
            issued = generate_month(
                store, fleet, MONTH, state_dir=state, people_fn=people_in_month, issued_on=date(2026, 11, 2)
            )
            token, _ = accounts.create_token(store, "ops", "bench")
            client = TestClient(create_app(store, fleet, state_dir=state))
            headers = {"Authorization": f"Bearer {token}"}
            community = sorted(fleet.communities)[0]
            paths = ["/costs", "/api/costs"]
            paths += [f"/communities/{community}/costs", f"/api/communities/{community}/costs"]
            pages = {f"GET {path}": f"{path}?month={MONTH}" for path in paths}
            results = {}
            for name, path in pages.items():

                def call(path: str = path) -> None:
                    response = client.get(path, headers=headers)
                    assert response.status_code == 200, (path, response.status_code, response.text[:300])

                times = timed(call, args.repeat)
                results[name] = {
                    "best_seconds": round(min(times), 3),
                    "median_seconds": round(statistics.median(times), 3),
                }
            overview = client.get(f"/api/costs?month={MONTH}", headers=headers).json()
    print(
        json.dumps(
            {
                "benchmark": "console_costs",
                "hubs": args.hubs,
                "communities": len(fleet.communities),
                "users_per_hub": args.users,
                "month": MONTH,
                **sizes,
                "invoices": sum(1 for o in issued if o.record is not None),
                "pages": results,
                "target_seconds": TARGET_S,
                "met": all(r["best_seconds"] <= TARGET_S for r in results.values()),
                "all_accounts_add_up": all(c["ok"] for c in overview["checks"]),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
