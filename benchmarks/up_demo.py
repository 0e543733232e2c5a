"""Wall time of `hubfleet up --detach` for the demo fleet (4 real JupyterHubs); prints JSON.

Not part of the test suite. Copies examples/demo-fleet to a temporary directory with every hub on a free
port, then, `--runs` times: runs `hubfleet up --detach` (timed from starting the command until it returns
with every hub healthy) and `hubfleet down` (also timed). Target: `up` under 15 s (median of the runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import copy_demo_fleet, hubfleet, kill_leftovers, passable_tempdir, remove_accounts  # noqa: E402
from machine_info import machine  # noqa: E402

TARGET_SECONDS = 15


def timed(*args: str, fleet: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = hubfleet(*args, fleet=fleet, timeout=300)
    return time.perf_counter() - start, result


def fail(what: str, result: subprocess.CompletedProcess[str]) -> None:
    raise SystemExit(f"hubfleet {what} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many up/down cycles (default 3)")
    args = parser.parse_args()

    runs: list[dict[str, float]] = []
    with passable_tempdir() as tmp:
        fleet = copy_demo_fleet(tmp / "demo")
        hubs = len(list(fleet.glob("communities/*/hubs/*.yaml")))
        try:
            for _ in range(args.runs):
                up_seconds, result = timed("up", "--detach", fleet=fleet)
                if result.returncode != 0:
                    fail("up --detach", result)
                down_seconds, result = timed("down", fleet=fleet)
                if result.returncode != 0:
                    fail("down", result)
                runs.append({"up_seconds": round(up_seconds, 3), "down_seconds": round(down_seconds, 3)})
        finally:
            hubfleet("down", fleet=fleet, timeout=120)
            leftovers = kill_leftovers(fleet)
            remove_accounts(fleet)
            if leftovers:
                print(f"stopped leftover processes: {leftovers}", file=sys.stderr)

    json.dump(
        {
            "benchmark": "up_demo",
            "hubs": hubs,
            "runs": runs,
            "median_seconds": round(statistics.median(r["up_seconds"] for r in runs), 3),
            "median_down_seconds": round(statistics.median(r["down_seconds"] for r in runs), 3),
            "target_seconds": TARGET_SECONDS,
            "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
