"""How long a month's invoices take for many communities (numbered, stored, PDF, CSV and JSON written); prints
JSON.

Not part of the test suite; runs no hub. A fleet of `--communities` communities (default 100), each with a
prod and a staging hub and a price plan: three in four on the modelled service's graduated MAU tiers in USD
with a fixed fee, one in four on a EUR plan with a quarterly fee, 10 % markup, a discount and VAT (so its USD
cloud costs are converted). Each prod hub has between 5 and 1,500 people active in the month (UserDay rows, a
few with accounts on both hubs), each hub allocated cloud costs (CostAllocationLine rows as `allocate_month`
stores them: direct, shared and idle lines of two accounts). MAU comes from
hubfleet.monitor.usage.people_in_month and costs from hubfleet.costs.queries.hub_month_costs, as the CLI does.

Times `generate_month` for every community (`--repeat` times, each in a fresh store copy so every run issues
all invoices) and once more on an already invoiced month (nothing issued: the figures are compared).
Target: at most 10 s for 100 communities. Wall and CPU seconds are both printed: on a busy machine the wall
time is mostly waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sqlalchemy import insert  # noqa: E402

from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.costs.invoices import generate_month  # noqa: E402
from hubfleet.monitor.usage import people_in_month  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from hubfleet.store.cost_allocations import CostAllocationLine  # noqa: E402
from hubfleet.store.models import UserDay  # noqa: E402
from machine_info import machine  # noqa: E402

MONTH = "2026-10"
ISSUED = date(2026, 11, 2)
TARGET_S = 10.0
TIERS = [
    {"up_to": 10, "unit_price": 10},
    {"up_to": 100, "unit_price": 5},
    {"up_to": 1000, "unit_price": 2.5},
    {"up_to": 10000, "unit_price": 1.25},
    {"unit_price": 0},
]
FLEET = {
    "name": "bench",
    "costs": {
        "currency": "USD",
        "exchange_rates": [{"source": "EUR", "target": "USD", "rate": 1.08}],
        "plans": {
            "standard": {"currency": "USD", "fixed_fee": 250, "mau_tiers": TIERS},
            "euro": {"currency": "EUR", "fixed_fee": 900, "period": "quarter", "markup_percent": 10,
                     "discount_percent": 5, "mau_tiers": TIERS[:2] + [{"unit_price": 1}],
                     "tax": {"name": "VAT", "percent": 19}},
        },
        "invoicing": {"issuer": "Bench Hosting Ltd", "address": ["1 Bench Road", "Testville"],
                      "email": "billing@bench.example", "number_prefix": "INV-"},
    },
}  # fmt: skip


def write_fleet(root: Path, communities: int) -> list[str]:
    """The community names."""
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(yaml.safe_dump(FLEET))
    (root / "clusters" / "cloud.yaml").write_text(yaml.safe_dump({"name": "cloud", "kind": "local"}))
    names = []
    for index in range(communities):
        name = f"c{index:03d}"
        names.append(name)
        directory = root / "communities" / name / "hubs"
        directory.mkdir(parents=True)
        community = {
            "name": name,
            "display_name": f"Community {index} — Faculté des Sciences",
            "billing": {
                "plan": "euro" if index % 4 == 3 else "standard",
                "bill_to": {"name": f"Community {index} finance office", "email": f"finance@{name}.example",
                            "address": [f"{index} University Avenue", "Campus Town"]},
                "purchase_order": f"PO-{index:05d}",
            },
            "contacts": [{"name": "Lead", "email": f"lead@{name}.example"}],
        }  # fmt: skip
        (root / "communities" / name / "community.yaml").write_text(yaml.safe_dump(community))
        for stage, port in (("prod", 20000 + 2 * index), ("staging", 20001 + 2 * index)):
            hub = name if stage == "prod" else f"{name}-staging"
            settings = {"name": hub, "community": name, "cluster": "cloud", "stage": stage, "port": port,
                        "auth": {"type": "native", "admin_users": ["admin"]}}  # fmt: skip
            (directory / f"{stage}.yaml").write_text(yaml.safe_dump(settings))
    return names


def fill_store(store, names: list[str], seed: int) -> dict[str, int]:  # noqa: ANN001
    rng = random.Random(seed)
    days, lines = [], []
    seen = datetime(2026, 10, 5, 9, tzinfo=UTC)
    for name in names:
        people = rng.randint(5, 1500)
        for person in range(people):
            day = date(2026, 10, 1 + person % 31)
            days.append({"hub": name, "username": f"u{person}", "day": day, "identity": f"native:u{person}",
                         "first_seen": seen, "last_seen": seen})  # fmt: skip
            if person % 50 == 0:  # some also use staging
                days.append({**days[-1], "hub": f"{name}-staging"})
        for hub in (name, f"{name}-staging"):
            for account, line in (("cloud-1", "direct"), ("cloud-1", "shared"), ("cloud-2", "idle")):
                micros = rng.randint(0, 900_000_000)
                lines.append({"month": MONTH, "account": account, "currency": "USD", "cluster": "cloud",
                              "hub": hub, "line": line, "amount_micros": micros,
                              "amount_cents": round(micros / 10_000)})  # fmt: skip
    with store.session() as session, session.begin():
        session.execute(insert(UserDay), days)
        session.execute(insert(CostAllocationLine), lines)
    return {"user_days": len(days), "allocation_lines": len(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--communities", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-invoices-") as tmp:
        root = Path(tmp)
        names = write_fleet(root / "fleet", args.communities)
        fleet = load_fleet(root / "fleet")
        with open_store(root / "template") as store:
            sizes = fill_store(store, names, args.seed)
        times, cpu, pages = [], [], 0
        for run in range(args.repeat):
            state = root / f"state-{run}"
            shutil.copytree(root / "template", state)
            with open_store(state) as store:
                t0, c0 = time.perf_counter(), time.process_time()
                outcomes = generate_month(store, fleet, MONTH, state_dir=state, people_fn=people_in_month,
                                          issued_on=ISSUED)  # fmt: skip
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                assert all(o.created and not o.error for o in outcomes), [o.error for o in outcomes]
                if run == 0:
                    t0 = time.perf_counter()
                    again = generate_month(store, fleet, MONTH, state_dir=state, people_fn=people_in_month,
                                           issued_on=ISSUED)  # fmt: skip
                    again_s = time.perf_counter() - t0
                    assert not any(o.created for o in again)
                    numbers = [o.record.number for o in outcomes if o.record]
                    files = sorted((state / "invoices" / "2026").iterdir())
                    pdf_bytes = sum(p.stat().st_size for p in files if p.suffix == ".pdf")
                    pages = sum(p.read_bytes().count(b"/Type /Page\n") for p in files if p.suffix == ".pdf")
    best = min(times)
    print(
        json.dumps(
            {
                "benchmark": "invoices",
                "communities": args.communities,
                "month": MONTH,
                **sizes,
                "invoices": len(numbers),
                "numbers": [numbers[0], numbers[-1]],
                "files": len(files),
                "pdf_pages": pages,
                "pdf_bytes": pdf_bytes,
                "generate_seconds": [round(t, 3) for t in times],
                "generate_best_seconds": round(best, 3),
                "generate_median_seconds": round(statistics.median(times), 3),
                "generate_cpu_seconds": [round(t, 3) for t in cpu],
                "generate_again_seconds": round(again_s, 3),
                "target_seconds": TARGET_S,
                "met": best <= TARGET_S,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
