"""Benchmark: `hubfleet costs import` of a generated FOCUS export (default 1,000,000 rows) into a new store.

Prints JSON: the time to generate the export, the time to import it (read, check, map, sum, keep the raw
rows, store) in wall-clock and CPU seconds (CPU: every DuckDB thread of this process; on a busy machine the
wall clock waits for the CPU), the store's lines, the load average and the peak RSS of this process.
Target (issue 18): <= 30 s for 1,000,000 rows.

    .venv/bin/python benchmarks/costs_import.py --rows 1000000 [--flavour aws] [--format parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from hubfleet.config.validate import load_fleet
from hubfleet.costs.focus_import import import_exports
from hubfleet.costs.focus_sample import write_export
from hubfleet.store import open_store
from hubfleet.store.costs import CostLine

HUBS = 40


def fleet(root: Path) -> Path:
    """A fleet of HUBS hubs on two kubernetes clusters (AWS and GCP), in `root`."""
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(
        "name: bench\noperators:\n  - name: Ada Operator\n    email: ada@hubfleet.example\n"
    )
    (root / "clusters" / "eks.yaml").write_text(
        "name: eks\nkind: kubernetes\nstaging_hub: hub-00\ncredentials: {provider: aws, "
        "account: '123456789012', region: us-west-2, cluster: c}\n"
    )
    (root / "clusters" / "gke.yaml").write_text(
        "name: gke\nkind: kubernetes\nstaging_hub: hub-01\ncredentials: {provider: gcp, project: p, "
        "zone: europe-west1-b, cluster: c}\ncosts: {sub_accounts: [proj-claimed]}\n"
    )
    hubs = root / "communities" / "c" / "hubs"
    hubs.mkdir(parents=True)
    (root / "communities" / "c" / "community.yaml").write_text("name: c\n")
    for i in range(HUBS):
        cluster = "eks" if i % 2 == 0 else "gke"
        stage = "staging" if i < 2 else "prod"
        (hubs / f"hub-{i:02d}.yaml").write_text(
            f"name: hub-{i:02d}\ncommunity: c\ncluster: {cluster}\nstage: {stage}\n"
            f"domain: hub-{i:02d}.example.org\nauth: {{type: native, admin_users: [a]}}\n"
        )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--flavour", choices=["aws", "azure", "gcp"], default="aws")
    parser.add_argument("--format", choices=["csv", "csv.gz", "parquet"], default="csv.gz")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hf-bench-import-") as tmp:
        root = Path(tmp)
        config = load_fleet(fleet(root / "fleet"))
        hubs = {name: hub.cluster for name, hub in config.hubs.items()}
        export = root / f"export.{args.format}"
        started = time.perf_counter()
        expected = write_export(
            export,
            flavour=args.flavour,
            month="2026-11",
            account="111122223333",
            hubs=hubs,
            rows=args.rows,
            fmt=args.format,
            claimed_sub_account=("proj-claimed", "gke"),
        )
        generated = time.perf_counter() - started
        state = root / "state"
        store = open_store(state)
        started, cpu = time.perf_counter(), time.process_time()
        report = import_exports(store, config, [export], state_dir=state)
        imported, import_cpu = time.perf_counter() - started, time.process_time() - cpu
        with store.session() as session:
            lines = session.scalar(select(func.count()).select_from(CostLine))
        store.close()
        item = report.accounts[0]
        exact = item.billed_micros == round(expected.billed * 1_000_000)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            json.dumps(
                {
                    "benchmark": "costs_import",
                    "rows": args.rows,
                    "flavour": args.flavour,
                    "format": args.format,
                    "file_mib": round(export.stat().st_size / 2**20, 1),
                    "generate_seconds": round(generated, 2),
                    "import_seconds": round(imported, 2),
                    "import_cpu_seconds": round(import_cpu, 2),
                    "rows_per_second": round(args.rows / imported),
                    "store_lines": lines,
                    "billed": str(item.billed),
                    "billed_matches_export": exact,
                    "peak_rss_mib": round(peak_kib / 1024, 1),
                    "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
                    "load_average_1m": round(os.getloadavg()[0], 1),
                    "target_seconds": 30,
                },
                indent=2,
            )
        )
        if not exact:
            sys.exit("the imported total differs from the export's")


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
