"""Wall time of `hubfleet deploy` of the 4 demo hubs, all changed, at --parallel 1 and 4; prints JSON.

Each deploy restarts every hub with its new configuration and runs its synthetic check (spawn, run code,
stop); staging hubs go first, then prod hubs, so --parallel 4 still runs two waves of two. Not part of the
test suite; the fleet is brought down even when a deploy fails.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import copy_demo_fleet, hubfleet, passable_tempdir, running_fleet  # noqa: E402
from machine_info import machine  # noqa: E402


def change_every_hub(root: Path, round_: int) -> None:
    """A real change to each hub: its idle-culling timeout."""
    for path in root.glob("communities/*/hubs/*.yaml"):
        text = path.read_text()
        text = "\n".join(
            line
            for line in text.splitlines()
            if not line.startswith("culling:") and not line.startswith("  timeout:")
        )
        path.write_text(text + f"\nculling:\n  timeout: {3600 + round_}\n")


def timed_deploy(root: Path, parallel: int) -> dict[str, object]:
    start = time.perf_counter()
    result = hubfleet("deploy", "--json", "--parallel", str(parallel), fleet=root, timeout=900)
    seconds = time.perf_counter() - start
    report = json.loads(result.stdout)
    return {
        "parallel": parallel,
        "seconds": round(seconds, 2),
        "deployed": len(report["deployed"]),
        "failed": len(report["failed"]) + len(report["rolled_back"]),
        "exit_code": result.returncode,
    }


def main() -> None:
    with passable_tempdir() as tmp:
        root = copy_demo_fleet(tmp / "demo")
        with running_fleet(root):
            runs = []
            for round_, parallel in enumerate((1, 4, 1, 4), start=1):
                change_every_hub(root, round_)
                runs.append(timed_deploy(root, parallel))
    by_parallel = {p: [r["seconds"] for r in runs if r["parallel"] == p] for p in (1, 4)}
    json.dump(
        {
            "benchmark": "deploy_parallel",
            "hubs": 4,
            "runs": runs,
            "best_seconds": {str(p): min(times) for p, times in by_parallel.items()},
            "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
