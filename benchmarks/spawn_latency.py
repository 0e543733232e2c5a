"""Spawn latency of single-user servers on one demo hub, at concurrency 1 and 10; prints JSON.

Not part of the test suite, and no target: the figures are recorded in docs/benchmarks.md.

Brings up only the `uni-a-staging` hub (dummy auth) of a copy of the demo fleet on a free port. A spawn is
timed from sending POST /hub/api/users/NAME/server (with an operator token) until GET /hub/api/users/NAME
shows servers[''].ready. The POST's own answer is not trusted: JupyterHub 6.1.1 may answer 500 when a
spawn outlasts slow_spawn_timeout while the spawn goes on, so the user model is always polled.

Concurrency 1: one unrecorded warm-up spawn, then `--sequential` spawns one after another, each server
stopped before the next. Concurrency 10: `--concurrent` users spawn at once; each latency runs from that
user's request to that user's server being ready. All servers are stopped (DELETE, then poll until gone)
between rounds, and the fleet is brought down at the end whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import copy_demo_fleet, daemon_status, hubfleet, passable_tempdir, running_fleet  # noqa: E402
from machine_info import machine  # noqa: E402

HUB = "uni-a-staging"
HUB_FILE = "communities/uni-a/hubs/staging.yaml"
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0


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


class Bench:
    def __init__(self, client: httpx.AsyncClient, poll: float) -> None:
        self.client = client
        self.poll = poll
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

    async def run(self, sequential: int, concurrent: int) -> dict[str, Any]:
        seq_users = [f"bench-seq-{i}" for i in range(sequential + 1)]
        conc_users = [f"bench-conc-{i}" for i in range(concurrent)]
        await self.create_users(seq_users + conc_users)

        warmup = await self.spawn(seq_users[0])
        await self.stop(seq_users[0])
        c1 = []
        for user in seq_users[1:]:
            c1.append(await self.spawn(user))
            await self.stop(user)

        start = time.perf_counter()
        results = await asyncio.gather(*(self.spawn(u) for u in conc_users), return_exceptions=True)
        wall = time.perf_counter() - start
        await asyncio.gather(*(self.stop(u) for u in conc_users))
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        cn = [r for r in results if isinstance(r, float)]
        if not cn:
            raise RuntimeError(f"every concurrent spawn failed: {errors}")
        return {
            "warmup_seconds": round(warmup, 3),
            "concurrency_1": summary(c1),
            f"concurrency_{concurrent}": {**summary(cn), "wall_seconds": round(wall, 3), "errors": errors},
        }


async def measure(url: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        bench = Bench(client, args.poll)
        results = await bench.run(args.sequential, args.concurrent)
        results["post_server_status"] = dict(bench.post_status)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=5, help="spawns at concurrency 1 (default 5)")
    parser.add_argument("--concurrent", type=int, default=10, help="users spawning at once (default 10)")
    parser.add_argument("--poll", type=float, default=0.1, help="user-model poll interval, s (default 0.1)")
    parser.add_argument(
        "--single-account", action="store_true", help="HUBFLEET_ISOLATION=single: no accounts, no broker"
    )
    args = parser.parse_args()
    single = args.single_account or os.geteuid() != 0
    env = {"HUBFLEET_ISOLATION": "single"} if args.single_account else None

    with passable_tempdir() as tmp:
        fleet = copy_demo_fleet(tmp / "demo", keep={HUB_FILE})
        with running_fleet(
            fleet, env=env
        ):  # brought down (and checked for leftovers) even when measuring fails
            url = daemon_status(fleet)["hubs"][HUB]["url"]
            token = hubfleet("token", HUB, fleet=fleet, check=True).stdout.strip()
            results = asyncio.run(measure(url, token, args))

    json.dump(
        {
            "benchmark": "spawn_latency",
            "hub": HUB,
            "spawner": "SimpleLocalProcessSpawner (single-account mode)"
            if single
            else "BrokerSpawner (an OS account per user)",
            "poll_interval_seconds": args.poll,
            "percentiles": "linear interpolation between closest ranks",
            **results,
            "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
