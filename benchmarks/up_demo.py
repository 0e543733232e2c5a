"""Wall time of `hubfleet up --detach` for the demo fleet (4 real JupyterHubs); prints JSON.

Not part of the test suite. Copies examples/demo-fleet to a temporary directory with every hub on a free
port, then, `--runs` times: runs `hubfleet up --detach` (timed from starting the command until it returns
with every hub healthy) and `hubfleet down` (also timed). Target (issue 17): `up` within 6 s (median).

`--mode both` alternates hubs forked from the hub template (HUBFLEET_HUB_START=fork, the default) with fresh
`jupyterhub` processes (HUBFLEET_HUB_START=process) in the same run, after one uncounted cold cycle (the
first `up` creates the accounts and the hubs' databases): before and after on the same machine and load.
`--cpu-priority` (root, cgroup v1 cpu controller) runs the benchmark and everything it starts in a cpu cgroup
with 100 times the default shares: on a machine other jobs keep busy, the fleet then gets nearly the two
cores it would have on an idle machine (with the kernel's autogroups, `nice` does not reach the daemon and
hubs, which run in sessions of their own). The other jobs' load is recorded with each run.

Each run also gives its phases, read from the daemon's log: when the daemon opened its store (it has
imported itself), when the hub template was ready, when the first hub process started, when the last hub
was healthy, each in seconds from the start of the command.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import copy_demo_fleet, hubfleet, kill_leftovers, passable_tempdir, remove_accounts  # noqa: E402
from machine_info import machine  # noqa: E402

TARGET_SECONDS = 6
LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)")
PHASES = {
    "store_opened": re.compile(r"Context impl"),
    "template_ready": re.compile(r"fork template hubs:.* ready"),
    "first_hub_process": re.compile(r"hub \S+: process \d+ started"),
    "last_hub_healthy": re.compile(r"hub \S+: healthy"),
}


def cpu_seconds(proc: psutil.Process, *, children: bool = False) -> float:
    """User and system CPU seconds a live process has used (and its live descendants', with `children`)."""
    try:
        procs = [proc, *proc.children(recursive=True)] if children else [proc]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def cpu_breakdown(fleet: Path, cli_seconds: float) -> dict[str, float]:
    """CPU seconds each part of the fleet used by the time `up` returned: a figure the machine's load does not
    change much (wall times here do, on a machine shared with other test runs)."""
    status = json.loads((fleet / ".hubfleet" / "daemon.json").read_text())
    daemon = psutil.Process(status["pid"])
    hub_pids = {h["pid"] for h in status["hubs"].values() if h.get("pid")}
    parts = {"cli": cli_seconds, "daemon": cpu_seconds(daemon), "hub_template": 0.0, "server_template": 0.0}
    for child in daemon.children():
        with contextlib.suppress(psutil.Error):
            command = " ".join(child.cmdline())
            if "hubfleet.isolation.forktemplate" in command:
                kind = "hub_template" if "--label hubs:" in command else "server_template"
                parts[kind] += cpu_seconds(child)
    hubs = [psutil.Process(pid) for pid in hub_pids if psutil.pid_exists(pid)]
    parts["hubs"] = sum(cpu_seconds(p) for p in hubs)
    parts["hub_children"] = sum(cpu_seconds(p, children=True) for p in hubs) - parts["hubs"]
    parts["total"] = sum(parts.values())
    return {k: round(v, 2) for k, v in parts.items()}


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PRIORITY_SHARES = 102400


@contextlib.contextmanager
def cpu_priority(enabled: bool):  # noqa: ANN201 - Iterator[None]
    """This process (and all it starts from now on) in a cpu cgroup with PRIORITY_SHARES; back out after."""
    if not enabled:
        yield
        return
    group = CGROUP_CPU / f"hubfleet-bench-{os.getpid()}"
    if os.geteuid() != 0 or not (CGROUP_CPU / "cpu.shares").exists():
        raise SystemExit("--cpu-priority needs root and the cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
    group.mkdir()
    try:
        (group / "cpu.shares").write_text(str(PRIORITY_SHARES))
        (group / "cgroup.procs").write_text(str(os.getpid()))
        yield
    finally:
        (CGROUP_CPU / "cgroup.procs").write_text(str(os.getpid()))
        try:
            group.rmdir()
        except OSError as exc:  # a process the fleet left is still in it (kill_leftovers reports it)
            print(f"could not remove {group}: {exc}", file=sys.stderr)


def timed(*args: str, fleet: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = hubfleet(*args, fleet=fleet, timeout=300, env=env)
    return time.perf_counter() - start, result


def fail(what: str, result: subprocess.CompletedProcess[str]) -> None:
    raise SystemExit(f"hubfleet {what} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


def phases(log: Path, offset: int, began: float) -> dict[str, float]:
    """Seconds from `began` (epoch) to each phase, from the daemon log's lines after byte `offset`."""
    found: dict[str, float] = {}
    with log.open(errors="replace") as f:
        f.seek(offset)
        for line in f:
            match = LOG_LINE.match(line)
            if not match:
                continue
            at = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
            for phase, pattern in PHASES.items():
                if pattern.search(match.group(2)) and (phase == "last_hub_healthy" or phase not in found):
                    found[phase] = round(at - began, 2)
    return found


def cycle(fleet: Path, mode: str) -> dict[str, Any]:
    log = fleet / ".hubfleet" / "daemon.log"
    offset = log.stat().st_size if log.exists() else 0
    env = {"HUBFLEET_HUB_START": mode}
    began = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    up_seconds, result = timed("up", "--detach", fleet=fleet, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        fail("up --detach", result)
    cli = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    cpu = cpu_breakdown(fleet, cli)
    down_seconds, result = timed("down", fleet=fleet, env=env)
    if result.returncode != 0:
        fail("down", result)
    return {
        "mode": mode,
        "up_seconds": round(up_seconds, 3),
        "down_seconds": round(down_seconds, 3),
        "phases": phases(log, offset, began),
        "cpu_seconds": cpu,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "median_seconds": round(statistics.median(r["up_seconds"] for r in runs), 3),
        "median_down_seconds": round(statistics.median(r["down_seconds"] for r in runs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many up/down cycles per mode (default 3)")
    parser.add_argument(
        "--mode",
        choices=["fork", "process", "both"],
        default="fork",
        help="hubs forked from the template (default), fresh processes, or both alternating",
    )
    parser.add_argument(
        "--cpu-priority",
        action="store_true",
        help="run the fleet in a cpu cgroup with 100x shares (root): an idle machine's figures on a busy one",
    )
    args = parser.parse_args()
    modes = ["process", "fork"] if args.mode == "both" else [args.mode]

    runs: list[dict[str, Any]] = []
    cold: dict[str, Any] | None = None
    with cpu_priority(args.cpu_priority), passable_tempdir() as tmp:
        fleet = copy_demo_fleet(tmp / "demo")
        hubs = len(list(fleet.glob("communities/*/hubs/*.yaml")))
        try:
            if args.mode == "both":  # accounts and databases made once, outside the comparison
                cold = cycle(fleet, "fork")
            for _ in range(args.runs):
                runs += [cycle(fleet, mode) for mode in modes]
        finally:
            hubfleet("down", fleet=fleet, timeout=120)
            leftovers = kill_leftovers(fleet)
            remove_accounts(fleet)
            if leftovers:
                print(f"stopped leftover processes: {leftovers}", file=sys.stderr)

    by_mode = {mode: summary([r for r in runs if r["mode"] == mode]) for mode in modes}
    json.dump(
        {
            "benchmark": "up_demo",
            "hubs": hubs,
            "runs": runs,
            **({"cold_run": cold} if cold else {}),
            **(by_mode[modes[0]] if len(modes) == 1 else {"by_mode": by_mode}),
            "target_seconds": TARGET_SECONDS,
            "cpu_priority": args.cpu_priority,
            "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
