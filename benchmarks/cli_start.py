"""What one `hubfleet` command costs to start, in CPU and wall seconds; prints one JSON object.

Not part of the test suite. The test suite runs the real CLI as a subprocess well over a thousand times, so
its start-up is a large share of the suite's CPU (and an operator feels it on every command). Each command
runs `--runs` times against a copy of the demo fleet (no daemon); the CPU is the children's rusage (user +
system), the figures the median run. hubfleet runs from a copy of `--src` (default: this checkout's src/;
give an older checkout's to compare) byte-compiled first, as the test suite now does; with `--no-pyc` it is
not, and PYTHONDONTWRITEBYTECODE is set, as in a fresh clone on the CI machines before: every process
compiled every module of hubfleet it imported again.

Run: `.venv/bin/python benchmarks/cli_start.py --runs 10` and the same with `--no-pyc`.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import HUBFLEET, copy_demo_fleet, hubfleet_env  # noqa: E402
from machine_info import machine  # noqa: E402

COMMANDS = {
    "help": ["--help"],
    "validate": ["validate"],
    "status": ["status", "--json"],
    "tickets_list": ["tickets", "list", "--json"],
}


def _run(args: list[str], fleet: Path | None, env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [str(HUBFLEET), *args, *(["--fleet", str(fleet)] if fleet else [])]
    subprocess.run(command, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-pyc", action="store_true", help="compile hubfleet in every process, as before")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubfleet-cli-start-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(options.src, src, ignore=shutil.ignore_patterns("__pycache__"))
        if not options.no_pyc:
            compileall.compile_dir(src, quiet=2)
        env = hubfleet_env() | {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(src)}
        fleet = copy_demo_fleet(Path(tmp) / "fleet")
        results = {}
        for name, args in COMMANDS.items():
            runs = [_run(args, None if name == "help" else fleet, env) for _ in range(options.runs)]
            results[name] = {
                "wall_s": round(statistics.median(w for w, _ in runs), 3),
                "cpu_s": round(statistics.median(c for _, c in runs), 3),
            }
    print(
        json.dumps(
            {
                "benchmark": "cli_start",
                "runs": options.runs,
                "no_pyc": options.no_pyc,
                "src": str(options.src),
                "commands": results,
                "load_avg": os.getloadavg(),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
