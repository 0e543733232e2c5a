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

import json
import sys
import warnings
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from cost_fixtures import allocated_month, best_and_median, size_arguments  # noqa: E402
from costs_allocate import MONTH  # noqa: E402

from hubfleet.costs.budgets import budget_statuses  # noqa: E402
from hubfleet.costs.cost_anomaly import cost_anomalies  # noqa: E402
from hubfleet.daemon.cost_watch import CostWatch  # noqa: E402
from hubfleet.monitor.incidents import list_incidents  # noqa: E402
from machine_info import machine  # noqa: E402

TARGET_S = 2.0
NOW = datetime(2026, 10, 31, 12, tzinfo=UTC)


class _NoAllocation(CostWatch):
    def allocate(self, fleet: Any, month: str) -> None:  # timed by costs_allocate.py
        return None


def main() -> None:
    args = size_arguments(__doc__.splitlines()[0])
    warnings.simplefilter("ignore")
    with allocated_month(args, "hubfleet-bench-costs-budgets-") as month:
        store, fleet, sizes = month.store, month.fleet, month.sizes
        today = date(2026, 10, 31)
        watch = _NoAllocation(fleet, None, store)
        first = watch.check(NOW)
        results = {
            "budget_statuses": best_and_median(
                lambda: budget_statuses(store, fleet, MONTH, today=today), args.repeat
            ),
            "cost_anomalies": best_and_median(lambda: cost_anomalies(store, fleet, today=today), args.repeat),
            "check_without_allocation": best_and_median(lambda: watch.check(NOW), args.repeat),
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
