"""One pass of the daemon's cost watch for a large fleet (budgets, forecasts, anomalies, incidents); prints
JSON.

Not part of the test suite; runs no hub. The fleet and the month of usage and billing lines are
costs_allocate.py's (`--hubs` hubs, default 200, ten per community), allocated with `allocate_month`; every
other community has a budget (console_costs.py's billing), the rest get the default rule (no history here:
no budget). Timed, best and median of `--repeat` after one warm-up: `budget_statuses` (every community),
`cost_anomalies` (every hub) and the incident part of a pass, `CostWatch.check` without the re-allocation
(costs_allocate.py times that). The first pass opens the incidents; later ones find them raised.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from console_costs import add_billing  # noqa: E402
from costs_allocate import MONTH, fill_store, write_fleet  # noqa: E402

from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.costs.allocation import allocate_month  # noqa: E402
from hubfleet.costs.budgets import budget_statuses  # noqa: E402
from hubfleet.costs.cost_anomaly import cost_anomalies  # noqa: E402
from hubfleet.daemon.cost_watch import CostWatch  # noqa: E402
from hubfleet.monitor.incidents import list_incidents  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

TARGET_S = 2.0
NOW = datetime(2026, 10, 31, 12, tzinfo=UTC)


def timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"best_seconds": round(min(times), 3), "median_seconds": round(statistics.median(times), 3)}


class _NoAllocation(CostWatch):
    def allocate(self, fleet: Any, month: str) -> None:  # timed by costs_allocate.py
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-costs-budgets-") as tmp:
        root = Path(tmp)
        placed = write_fleet(root / "fleet", args.hubs)
        add_billing(root / "fleet")
        fleet = load_fleet(root / "fleet")
        with open_store(root / "state") as store:
            sizes = fill_store(store, placed, args.users, args.seed)
            allocate_month(store, fleet, MONTH, now=datetime(2026, 11, 2, tzinfo=UTC))
            today = date(2026, 10, 31)
            watch = _NoAllocation(fleet, None, store)
            first = watch.check(NOW)
            results = {
                "budget_statuses": timed(
                    lambda: budget_statuses(store, fleet, MONTH, today=today), args.repeat
                ),
                "cost_anomalies": timed(lambda: cost_anomalies(store, fleet, today=today), args.repeat),
                "check_without_allocation": timed(lambda: watch.check(NOW), args.repeat),
            }
            statuses = budget_statuses(store, fleet, MONTH, today=today)
            incidents = list_incidents(store, kind="cost")
    print(
        json.dumps(
            {
                "benchmark": "costs_budgets",
                "hubs": args.hubs,
                "communities": len(fleet.communities),
                "users_per_hub": args.users,
                "month": MONTH,
                **sizes,
                "budgets": sum(1 for s in statuses if s.budget is not None),
                "incidents_opened_by_first_pass": len(first),
                "cost_incidents": len(incidents),
                "timings": results,
                "target_seconds": TARGET_S,
                "met": all(r["best_seconds"] <= TARGET_S for r in results.values()),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
