"""Spawn latency of single-user servers on one demo hub: alone, 10 at once and a burst of 100, for each
spawner (`spawner: process` and `fork`, in the same run); prints JSON.

Not part of the test suite; the targets of issue 17 are goals, not gates: the figures are recorded in
docs/benchmarks.md.

For each spawner, brings up only the `uni-a-staging` hub (dummy auth) of a copy of the demo fleet on a free
port, with that `spawner` in its hub file. A spawn is
timed from sending POST /hub/api/users/NAME/server (with an operator token) until GET /hub/api/users/NAME
shows servers[''].ready. The POST's own answer is not trusted: JupyterHub 6.1.1 may answer 500 when a
spawn outlasts slow_spawn_timeout while the spawn goes on, so the user model is always polled.

Concurrency 1: one unrecorded warm-up spawn, then `--sequential` spawns one after another, each server
stopped before the next. Concurrency 10: `--concurrent` users spawn at once; each latency runs from that
user's request to that user's server being ready. Burst: `--burst` users likewise (0 to skip). All servers
are stopped (DELETE, then poll until gone) between rounds, and the fleet is brought down at the end whatever
happens. The memory of one server (RSS, PSS, USS) is read while it runs, and with `fork` the template's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import (  # noqa: E402
    copy_demo_fleet,
    daemon_status,
    drop_section,
    hubfleet,
    passable_tempdir,
    running_fleet,
)
from machine_info import machine  # noqa: E402

HUB = "uni-a-staging"
HUB_FILE = "communities/uni-a/hubs/staging.yaml"
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0


PROXY_CLIENTS = """extra_config: |
  import sys as _sys
  _chp = ("import sys; from tornado.httpclient import AsyncHTTPClient; "
          "AsyncHTTPClient.configure(None, max_clients={n}); "
          "from configurable_http_proxy.cli import main; sys.argv[0] = 'configurable-http-proxy'; main()")
  c.ConfigurableHTTPProxy.command = [_sys.executable, "-c", _chp] + c.ConfigurableHTTPProxy.command[1:]
"""
"""configurable-http-proxy (the Python port) forwards through tornado's AsyncHTTPClient, which runs at most
10 requests at once and fails the others with 503 after 20 s in its queue; a hub's POST .../server holds one
for up to slow_spawn_timeout (10 s)."""


class SpawnFailed(RuntimeError):
    pass


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "n": len(latencies),
        "p50_seconds": round(percentile(latencies, 50), 3),
        "p95_seconds": round(percentile(latencies, 95), 3),
        "max_seconds": round(max(latencies), 3),
        "latencies_seconds": [round(x, 3) for x in latencies],
    }


def memory(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {k: round(getattr(info, k) / 2**20, 1) for k in ("rss", "pss", "uss")}


def server_memory(fleet: Path, user: str) -> dict[str, Any]:
    """MiB of the user's server (found by its home as working directory) and, when forked, its template."""
    home = str(fleet / ".hubfleet-data" / "homes" / HUB / user)
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if proc.info["cwd"] == home and "jupyterhub-singleuser" in " ".join(proc.info["cmdline"] or []):
            found: dict[str, Any] = {"server_mib": memory(proc.pid)}
            parent = proc.parent()
            if parent is not None and "forktemplate" in " ".join(parent.cmdline()):
                found["template_mib"] = memory(parent.pid)
            return found
    return {}


_HUB_LINE = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[.,](\d{3}) [^\]]*\] (.*)$")
_DAEMON_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ hubfleet\.broker: (.*)$")
PHASES = {
    "hub_before_broker": ("request", "oauth"),
    "broker_to_fork": ("oauth", "forked"),
    "fork_to_listening": ("forked", "answered"),
    "hub_wait_up": ("answered", "up"),
    "proxy_route": ("up", "routed"),
}
"""Each spawn's phases from the hub's and the daemon's logs: the hub gets the request, makes the server's
OAuth client and asks the broker; the broker makes account, home and group and forks (or starts) the
server; the server listens and the broker answers; the hub finds it up; the proxy's route is added."""


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def spawn_phases(fleet: Path, users: list[str], after: float = 0.0) -> dict[str, Any]:
    """Median seconds of each phase (PHASES) over `users`' spawns since `after` (epoch seconds), read from
    the logs."""
    events: dict[str, dict[str, float]] = {u: {} for u in users}
    patterns = [
        ("request", re.compile(r"20[12] POST /hub/api/users/([^/]+)/server .* ([\d.]+)ms$")),
        ("oauth", re.compile(r"Creating oauth client jupyterhub-user-(\S+)$")),
        ("answered", re.compile(r"hubfleet broker started (\S+)'s server")),
        ("up", re.compile(r"User (\S+) took [\d.]+ seconds to start")),
        ("routed", re.compile(r"Route added /user/(\S+) ->")),
    ]
    hub_log = fleet / ".hubfleet" / "hubs" / HUB / "hub.log"
    for line in hub_log.read_text(errors="replace").splitlines():
        m = _HUB_LINE.match(line)
        if not m:
            continue
        when, text = _stamp(f"{m[1]}.{m[2]}"), m[3]
        for kind, pattern in patterns:
            hit = pattern.search(text)
            if hit and hit[1] in events:
                if kind == "request":  # logged when answered: the request came its duration earlier
                    when -= float(hit[2]) / 1000
                if when >= after:
                    events[hit[1]].setdefault(kind, when)
    daemon_log = fleet / ".hubfleet" / "daemon.log"
    for line in daemon_log.read_text(errors="replace").splitlines():
        m = _DAEMON_LINE.match(line)
        hit = m and re.search(r"(?:forked|started) (\S+)'s server", m[3])
        when = _stamp(f"{m[1]}.{m[2]}") if m else 0.0
        if m and hit and hit[1] in events and when >= after:
            events[hit[1]].setdefault("forked", when)
    found: dict[str, Any] = {}
    for phase, (start, end) in PHASES.items():
        spans = [e[end] - e[start] for e in events.values() if start in e and end in e]
        if spans:
            found[phase] = {
                "p50_seconds": round(percentile(spans, 50), 3),
                "max_seconds": round(max(spans), 3),
            }
    return found


class Bench:
    def __init__(self, client: httpx.AsyncClient, poll: float, fleet: Path, burst_poll: float = 1.0) -> None:
        self.client = client
        self.poll = poll
        self.burst_poll = burst_poll
        self.fleet = fleet
        self.post_status: Counter[str] = Counter()

    async def server(self, user: str) -> dict[str, Any] | None:
        response = await self.client.get(f"/hub/api/users/{user}")
        response.raise_for_status()
        return response.json().get("servers", {}).get("")

    async def create_users(self, users: list[str]) -> None:
        response = await self.client.post("/hub/api/users", json={"usernames": users})
        if response.status_code not in (201, 409):
            raise RuntimeError(f"creating users answered {response.status_code}: {response.text}")

    async def spawn(self, user: str) -> float:
        """Seconds from the spawn request until the user's default server is ready."""
        start = time.perf_counter()
        response = await self.client.post(f"/hub/api/users/{user}/server")
        self.post_status[str(response.status_code)] += 1
        if response.status_code in (400, 403, 404, 429):
            raise SpawnFailed(f"{user}: POST server answered {response.status_code}: {response.text}")
        while time.perf_counter() - start < READY_TIMEOUT:
            server = await self.server(user)
            if server is None:
                raise SpawnFailed(f"{user}: server vanished before it was ready (spawn failed; see hub.log)")
            if server.get("ready"):
                return time.perf_counter() - start
            await asyncio.sleep(self.poll)
        raise SpawnFailed(f"{user}: not ready within {READY_TIMEOUT:.0f} s")

    async def stop(self, user: str) -> None:
        response = await self.client.delete(f"/hub/api/users/{user}/server")
        if response.status_code not in (202, 204, 400):  # 400: not running
            raise RuntimeError(f"{user}: DELETE server answered {response.status_code}: {response.text}")
        deadline = time.perf_counter() + STOP_TIMEOUT
        while await self.server(user) is not None:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{user}: server still there {STOP_TIMEOUT:.0f} s after DELETE")
            await asyncio.sleep(self.poll)

    async def at_once(self, users: list[str]) -> dict[str, Any]:
        start = time.perf_counter()
        results = await asyncio.gather(*(self.spawn(u) for u in users), return_exceptions=True)
        wall = time.perf_counter() - start
        await asyncio.gather(*(self.stop(u) for u in users), return_exceptions=True)
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        ok = [r for r in results if isinstance(r, float)]
        if not ok:
            return {"n": 0, "failures": len(errors), "errors": errors[:10]}
        return {**summary(ok), "wall_seconds": round(wall, 3), "failures": len(errors), "errors": errors[:10]}

    async def burst(self, users: list[str]) -> dict[str, Any]:
        load, began = os.getloadavg()[0], time.time()
        self.poll, poll = self.burst_poll, self.poll
        try:
            measured = await self.at_once(users)
        finally:
            self.poll = poll
        return {
            **measured,
            "poll_interval_seconds": self.burst_poll,
            "phases": spawn_phases(self.fleet, users, after=began),
            "load_average_1min_before": round(load, 2),
        }

    async def run(self, sequential: int, concurrent: int, burst: int) -> dict[str, Any]:
        seq_users = [f"bench-seq-{i}" for i in range(sequential + 1)]
        conc_users = [f"bench-conc-{i}" for i in range(concurrent)]
        burst_users = [f"bench-burst-{i}" for i in range(burst)]
        await self.create_users(seq_users + conc_users + burst_users)

        warmup = await self.spawn(seq_users[0])
        await self.stop(seq_users[0])
        c1 = []
        mem: dict[str, Any] = {}
        for user in seq_users[1:]:
            c1.append(await self.spawn(user))
            if not mem:
                await asyncio.sleep(2)  # settled: the server has answered the hub and the proxy
                mem = await asyncio.to_thread(server_memory, self.fleet, user)
            await self.stop(user)
        results = {
            "warmup_seconds": round(warmup, 3),
            "concurrency_1": {**summary(c1), "phases": spawn_phases(self.fleet, seq_users[1:])},
        }
        load = os.getloadavg()[0]
        results[f"concurrency_{concurrent}"] = {
            **await self.at_once(conc_users),
            "phases": spawn_phases(self.fleet, conc_users),
            "load_average_1min_before": round(load, 2),
        }
        # the same users again: their accounts, homes and groups exist, as after ready mode's warm-up
        load, began = os.getloadavg()[0], time.time()
        results[f"concurrency_{concurrent}_accounts_made"] = {
            **await self.at_once(conc_users),
            "phases": spawn_phases(self.fleet, conc_users, after=began),
            "load_average_1min_before": round(load, 2),
        }
        if burst:
            results[f"burst_{burst}"] = await self.burst(burst_users)
            # again with the accounts, homes and groups made, as ready mode's warm-up makes them
            results[f"burst_{burst}_accounts_made"] = await self.burst(burst_users)
        results["memory"] = mem
        return results


async def measure(url: str, token: str, fleet: Path, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"token {token}"}
    limits = httpx.Limits(max_connections=args.burst + 20)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        bench = Bench(client, args.poll, fleet, args.burst_poll)
        results = await bench.run(args.sequential, args.concurrent, args.burst)
        results["post_server_status"] = dict(bench.post_status)
        return results


def run_spawner(spawner: str, args: argparse.Namespace, env: dict[str, str] | None) -> dict[str, Any]:
    """One fleet with `spawner` set on the hub, measured."""
    with passable_tempdir() as tmp:
        fleet = copy_demo_fleet(tmp / "demo", keep={HUB_FILE})
        for community in fleet.glob("communities/*/community.yaml"):  # the demo's events name other hubs
            community.write_text(drop_section(community.read_text(), "events"))
        hub_file = fleet / HUB_FILE
        text = drop_section(drop_section(hub_file.read_text(), "events"), "max_users")
        hub_file.write_text(f"{text}spawner: {spawner}\nmax_users: {max(args.burst, args.concurrent) + 10}\n")
        if args.proxy_clients:
            hub_file.write_text(hub_file.read_text() + PROXY_CLIENTS.format(n=args.proxy_clients))
        with running_fleet(fleet, env=env):  # brought down (and checked for leftovers) even when it fails
            url = daemon_status(fleet)["hubs"][HUB]["url"]
            token = hubfleet("token", HUB, fleet=fleet, check=True).stdout.strip()
            return asyncio.run(measure(url, token, fleet, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=5, help="spawns at concurrency 1 (default 5)")
    parser.add_argument("--concurrent", type=int, default=10, help="users spawning at once (default 10)")
    parser.add_argument("--burst", type=int, default=100, help="users spawning in one burst (default 100)")
    parser.add_argument(
        "--spawners", default="process,fork", help="which spawners, in order (default process,fork)"
    )
    parser.add_argument(
        "--burst-poll",
        type=float,
        default=1.0,
        help="user-model poll interval in the burst, s (default 1: a hundred users polling every 0.1 s load "
        "the hub and its proxy more than the spawns do)",
    )
    parser.add_argument(
        "--proxy-clients",
        type=int,
        default=0,
        help="run the hub's proxy with this many concurrent upstream requests instead of its default 10 "
        "(tornado's max_clients; through the hub file's extra_config), to measure that bound",
    )
    parser.add_argument("--poll", type=float, default=0.1, help="user-model poll interval, s (default 0.1)")
    parser.add_argument(
        "--single-account", action="store_true", help="HUBFLEET_ISOLATION=single: no accounts, no broker"
    )
    args = parser.parse_args()
    single = args.single_account or os.geteuid() != 0
    env = {"HUBFLEET_ISOLATION": "single"} if args.single_account else None

    spawners = [] if single else args.spawners.split(",")
    results: dict[str, Any] = {}
    for spawner in spawners or ["single"]:
        results[spawner] = run_spawner(spawner if spawner != "single" else "process", args, env)
    json.dump(
        {
            "benchmark": "spawn_latency",
            "hub": HUB,
            "spawner": "SimpleLocalProcessSpawner (single-account mode)"
            if single
            else "BrokerSpawner (an OS account per user); the broker's spawner per key",
            "poll_interval_seconds": args.poll,
            "percentiles": "linear interpolation between closest ranks",
            "proxy_max_clients": args.proxy_clients or "10 (default)",
            "spawners": results,
            "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
