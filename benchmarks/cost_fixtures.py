"""What the cost benchmarks share: their size arguments, costs_allocate.py's fleet and month with a price plan
and budgets, allocated, and best/median timing after a warm-up."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from costs_allocate import MONTH, fill_store, write_fleet

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.costs.allocation import allocate_month
from hubfleet.store import Store, open_store


def size_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--hubs", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=18)
    return parser.parse_args()


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


@dataclass
class AllocatedMonth:
    fleet: FleetConfig
    store: Store
    state: Path
    sizes: dict[str, int]


@contextmanager
def allocated_month(args: argparse.Namespace, prefix: str) -> Iterator[AllocatedMonth]:
    """costs_allocate.py's fleet (`--hubs`) and month of use (`--users`, `--seed`) with billing, allocated."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        placed = write_fleet(root / "fleet", args.hubs)
        add_billing(root / "fleet")
        fleet = load_fleet(root / "fleet")
        state = root / "state"
        with open_store(state) as store:
            sizes = fill_store(store, placed, args.users, args.seed)
            allocate_month(store, fleet, MONTH, now=datetime(2026, 11, 2, tzinfo=UTC))
            yield AllocatedMonth(fleet, store, state, sizes)


def best_and_median(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    call()  # warm-up: templates compiled, caches filled
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"best_seconds": round(min(times), 3), "median_seconds": round(statistics.median(times), 3)}
