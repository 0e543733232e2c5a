"""`hubfleet plan` on a generated 500-hub fleet: a no-op plan, and a plan with one changed hub; prints JSON.

The whole of what the command does is timed: load + validate the fleet, render every hub, hash it, read
what was deployed from the store, compare, diff the changed hub. Not part of the test suite.
Target: a no-op plan under 1 s.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from validate_500 import generate  # noqa: E402

from fleet_helpers import mark_deployed  # noqa: E402
from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.deploy.plan import make_plan  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

RUNS = 5
TARGET_SECONDS = 1.0


def timed_plan(root: Path, state: Path) -> tuple[float, int]:
    start = time.perf_counter()
    config = load_fleet(root)
    with open_store(state) as store:
        plan = make_plan(config, state, store)
    return time.perf_counter() - start, len(plan.changes)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "fleet")
        state = root / ".hubfleet"
        config = load_fleet(root)
        mark_deployed(root)  # everything deployed, as right after `hubfleet up`
        noop = [timed_plan(root, state) for _ in range(RUNS)]
        hub_file = root / "communities/c100/hubs/prod.yaml"
        hub_file.write_text(hub_file.read_text().replace("max_users: 50", "max_users: 60"))
        one = [timed_plan(root, state) for _ in range(RUNS)]
        json.dump(
            {
                "benchmark": "plan_500",
                "hubs": len(config.hubs),
                "noop_seconds": round(min(t for t, _ in noop), 4),
                "noop_changes": noop[0][1],
                "one_changed_seconds": round(min(t for t, _ in one), 4),
                "one_changed_changes": one[0][1],
                "runs": RUNS,
                "target_noop_seconds": TARGET_SECONDS,
                "machine": machine(),
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
            sys.stdout,
        )
        print()


if __name__ == "__main__":
    main()
