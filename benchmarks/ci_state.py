"""`hubfleet ci state` save, load and a lost race's merge, with `--deployments N` store rows; prints JSON.

Not part of the test suite. A scaffolded GKE fleet in a git repository, a bare repository as the remote (as in
tests/test_ci_state.py), a store with N deployment records (each with a rendered configuration of about 4 KB,
as a real hub's z2jh values are) spread over the two hubs. Timed: the first save (a root commit), a load in
another clone, and a save that loses the race to another job's and merges and retries. Each figure is wall
seconds, this process's CPU seconds and its children's (git) CPU seconds; the state file's size too. What it
costs a CI job: one load and one save per job.

Run: `.venv/bin/python benchmarks/ci_state.py --deployments 1000` and `--deployments 20000`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.deploy import ci_state  # noqa: E402
from hubfleet.scaffold import scaffold  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

RENDERED = "hub:\n  config:\n" + "".join(f"    key_{i}: value-{i:04d}-{'x' * 40}\n" for i in range(70))


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def timed(work: Callable[[], Any]) -> dict[str, float]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "git_cpu_s": round((after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime), 3),
    }


def record(state: Path, hubs: list[str], count: int, tag: str) -> None:
    with open_store(state) as store:
        for i in range(count):
            hub = hubs[i % len(hubs)]
            store.record_deployment(hub, f"{tag}-{i}", "ok", actor="bench", rendered=RENDERED, stage="prod")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000, help="rows in the store (default 1000)")
    args = parser.parse_args()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI_"))}
    remote = ci_state.remote_for(None, environ)
    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-state-") as scratch:
        root = Path(scratch)
        identity, work = root / "age-identity.txt", root / "work"
        scaffold(work, cluster="gcp", identity=identity)
        git(root, "init", "-q", "-b", "main", str(work))
        git(work, "add", "-A")
        git(work, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "fleet")
        git(root, "clone", "-q", "--bare", str(work), str(root / "remote.git"))
        for name in ("a", "b"):
            git(root, "clone", "-q", str(root / "remote.git"), str(root / name))
        fleet = load_fleet(root / "a")
        hubs = sorted(fleet.hubs)

        first = root / "state-first"
        ci_state.load(root / "a", first, remote=remote, identity=identity)
        record(first, hubs, args.deployments, "seed")
        result: dict[str, Any] = {"deployments": args.deployments}
        result["first_save"] = timed(lambda: ci_state.save(fleet, first, remote=remote, identity=identity))
        size = subprocess.run(
            ["git", "cat-file", "-s", f"refs/heads/{ci_state.BRANCH}:{ci_state.STATE_FILE}"],
            cwd=root / "remote.git",
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result["state_file_bytes"] = int(size)
        result["database_bytes"] = (first / ci_state.DB_FILENAME).stat().st_size

        state_a, state_b = root / "state-a", root / "state-b"
        result["load"] = timed(lambda: ci_state.load(root / "a", state_a, remote=remote, identity=identity))
        ci_state.load(root / "b", state_b, remote=remote, identity=identity)
        record(state_a, hubs, 1, "job-a")
        record(state_b, hubs, 1, "job-b")
        result["save"] = timed(lambda: ci_state.save(fleet, state_a, remote=remote, identity=identity))
        result["save_after_lost_race"] = timed(
            lambda: ci_state.save(load_fleet(root / "b"), state_b, remote=remote, identity=identity)
        )
    result["loadavg"] = os.getloadavg()
    result["measured_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
