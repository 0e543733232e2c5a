"""`hubfleet plan` on a generated fleet of `--hubs N` hubs, no-op and one hub changed; prints JSON.

The whole of what the command does is timed: load + validate the fleet, render every hub, hash it, read what
was deployed from the store, compare, diff the changed hub. Each figure is the best (and median) of `--runs`
runs, wall and CPU seconds:
- `noop_uncached`: no cache at all (the path before the cache existed);
- `noop_cold`: an empty cache, filled by the run (the first plan after an upgrade);
- `noop_warm`: nothing changed since the last plan;
- `one_changed_warm`: one hub file changed since the last plan (each run changes it again, so every run
  is the first plan after a change).
Targets (issue 21, 5,000 hubs): no-op ≤ 2 s, one changed hub ≤ 1 s. Setup writes each hub's runtime.json
(its internal ports, as `hubfleet up` leaves them) and records every hub as deployed; it is not timed.

Run: `.venv/bin/python benchmarks/plan.py --hubs 500` and `--hubs 5000`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from validate import environment, generate, timed  # noqa: E402

from fleet_helpers import mark_deployed  # noqa: E402
from hubfleet.backends.local import hub_dir  # noqa: E402
from hubfleet.config.cache import FleetCache  # noqa: E402
from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.deploy.plan import make_plan  # noqa: E402
from hubfleet.runtime.layout import write_private  # noqa: E402
from hubfleet.store import open_store  # noqa: E402

TARGETS = {"noop_seconds": 2.0, "one_changed_seconds": 1.0}


def plan_once(root: Path, state: Path, cached: bool) -> int:
    cache = FleetCache(state / "cache") if cached else None
    config = load_fleet(root, cache=cache)
    with open_store(state) as store:
        return len(make_plan(config, state, store, cache=cache).changes)


def write_runtime(root: Path, state: Path) -> None:
    """Each hub's internal ports, as `hubfleet up` writes them (runtime.json), so that setup need not pick
    5,000 free ports."""
    fleet = load_fleet(root)
    for i, hub in enumerate(fleet.hubs.values()):
        ports = {"hub_port": 30000 + 3 * i, "proxy_api_port": 30001 + 3 * i, "support_port": 30002 + 3 * i}
        write_private(
            hub_dir(state, hub.name) / "runtime.json", json.dumps(ports | {"url": fleet.internal_url(hub)})
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=500, help="hubs in the fleet (default 500)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each way (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "fleet", max(1, args.hubs // 2))
        state = root / ".hubfleet"
        write_runtime(root, state)
        mark_deployed(root)  # everything deployed, as right after `hubfleet up`
        changes: dict[str, int] = {}

        def run(name: str, cached: bool) -> None:
            changes[name] = plan_once(root, state, cached)

        result = {
            "noop_uncached": timed(lambda: run("noop", False), args.runs),
            "noop_cold": timed(
                lambda: run("noop", True), args.runs, before=lambda: shutil.rmtree(state / "cache", True)
            ),
            "noop_warm": timed(lambda: run("noop", True), args.runs),
        }
        hub_file = root / "communities/c000/hubs/prod.yaml"
        edits = iter(range(60, 60 + args.runs))

        def change() -> None:
            text = hub_file.read_text()
            hub_file.write_text(
                text[: text.index("max_users:")]
                + f"max_users: {next(edits)}\n"
                + "resources:\n  memory_limit: 2G\n"
            )

        result["one_changed_warm"] = timed(lambda: run("one", True), args.runs, before=change)
        json.dump(
            {
                "benchmark": "plan",
                "hubs": args.hubs // 2 * 2,
                "runs": args.runs,
                **result,
                "noop_changes": changes["noop"],
                "one_changed_changes": changes["one"],
                "targets_at_5000": TARGETS,
                **environment(),
            },
            sys.stdout,
        )
        print()


if __name__ == "__main__":
    main()
