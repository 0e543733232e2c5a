"""Validation time for a generated fleet of `--hubs N` hubs (N/2 communities x staging + prod); prints JSON.

Not part of the test suite. Three ways, each the best of `--runs` runs of `load_fleet`, wall and CPU seconds:
`uncached` (no cache at all: the cold path as before the cache existed), `cold` (an empty cache, which this
run fills: what the first `hubfleet validate` after an upgrade costs) and `warm` (every file already in the
cache: what `hubfleet validate` costs when nothing changed). Targets (issue 21): under 0.5 s at 500 hubs,
under 1 s at 5,000.

Run: `.venv/bin/python benchmarks/validate.py --hubs 500` and `--hubs 5000`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.config.cache import FleetCache  # noqa: E402
from hubfleet.config.validate import load_fleet  # noqa: E402
from machine_info import machine  # noqa: E402

TARGETS = {500: 0.5, 5000: 1.0}


def generate(root: Path, communities: int = 250) -> Path:
    """A fleet of `communities` communities, each with a staging (dummy auth) and a prod (native) hub."""
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(
        "name: bench\noperators:\n  - name: Ada\n    email: ada@example.org\n"
        "defaults:\n  resources:\n    memory_limit: 1G\n    cpu_limit: 1\n  culling:\n    timeout: 3600\n"
    )
    (root / "clusters" / "local.yaml").write_text("name: local\nkind: local\n")
    port = 20000
    for i in range(communities):
        name = f"c{i:03d}"
        hubs = root / "communities" / name / "hubs"
        hubs.mkdir(parents=True)
        (root / "communities" / name / "community.yaml").write_text(
            f"name: {name}\ndisplay_name: Community {i}\ncontacts:\n"
            f"  - name: Lead {i}\n    email: lead{i}@example.org\n    role: teacher\n"
        )
        for stage, auth in (("staging", "dummy"), ("prod", "native")):
            port += 1
            hub = name if stage == "prod" else f"{name}-staging"
            (hubs / f"{stage}.yaml").write_text(
                f"name: {hub}\ndisplay_name: Hub {hub}\ncommunity: {name}\ncluster: local\n"
                f"stage: {stage}\nport: {port}\nauth:\n  type: {auth}\n  admin_users: [lead{i}]\n"
                "max_users: 50\nresources:\n  memory_limit: 2G\n"
            )
    return root


def timed(work: Callable[[], Any], runs: int, before: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Best and median of `runs` runs of `work` (`before` runs untimed before each): wall and CPU seconds."""
    walls, cpus = [], []
    for _ in range(runs):
        before()
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    walls.sort()
    cpus.sort()
    return {
        "best_seconds": round(walls[0], 4),
        "median_seconds": round(walls[len(walls) // 2], 4),
        "best_cpu_seconds": round(cpus[0], 4),
        "median_cpu_seconds": round(cpus[len(cpus) // 2], 4),
    }


def environment() -> dict[str, Any]:
    return {
        "machine": machine(),
        "loadavg": os.getloadavg(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=500, help="hubs in the fleet (default 500)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each way (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "fleet", max(1, args.hubs // 2))
        (Path(tmp) / "state").mkdir()  # the commands that own it make it; the cache never does
        cache_dir = Path(tmp) / "state" / "cache"
        hubs = len(load_fleet(root).hubs)
        uncached = timed(lambda: load_fleet(root), args.runs)
        cold = timed(
            lambda: load_fleet(root, cache=FleetCache(cache_dir)),
            args.runs,
            before=lambda: shutil.rmtree(cache_dir, ignore_errors=True),
        )
        warm = timed(lambda: load_fleet(root, cache=FleetCache(cache_dir)), args.runs)
        json.dump(
            {
                "benchmark": "validate",
                "hubs": hubs,
                "runs": args.runs,
                "uncached": uncached,
                "cold": cold,
                "warm": warm,
                "target_seconds": TARGETS.get(args.hubs),
                **environment(),
            },
            sys.stdout,
        )
        print()


if __name__ == "__main__":
    main()
