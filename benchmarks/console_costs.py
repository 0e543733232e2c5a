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

import json
import sys
import warnings
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from cost_fixtures import allocated_month, best_and_median, size_arguments  # noqa: E402
from costs_allocate import MONTH  # noqa: E402

from hubfleet.console import accounts  # noqa: E402
from hubfleet.console.app import create_app  # noqa: E402
from hubfleet.costs.invoices import generate_month  # noqa: E402
from hubfleet.monitor.usage import people_in_month  # noqa: E402
from machine_info import machine  # noqa: E402

TARGET_S = 1.0


def main() -> None:
    args = size_arguments(__doc__.splitlines()[0])
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    with allocated_month(args, "hubfleet-bench-console-costs-") as month:
        store, fleet, state, sizes = month.store, month.fleet, month.state, month.sizes
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

            results[name] = best_and_median(call, args.repeat)
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
