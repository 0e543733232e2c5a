"""Loopback load on the web console: the overview page and GET /api/hubs, concurrent clients; prints JSON.

Not part of the test suite, and no target: the figures are recorded in docs/benchmarks.md.

Starts the real `hubfleet console` exactly like the tests do (tests/console_helpers.py: a copy of the demo
fleet with console accounts, its store seeded with 30 days of monitoring rows, no hub running) on a free
127.0.0.1 port. Then `--clients` concurrent clients (each an httpx.AsyncClient with keep-alive, all in this
process) send requests back to back for `--seconds`, each alternating between GET / (the overview page,
with the operator's session cookie) and GET /api/hubs (with the operator's API token). A request counts
as an error unless it answers 200. Reported per endpoint: requests, requests/s, latency p50/p95/p99/max,
errors by kind; plus the console process's CPU time over the run. The console is stopped at the end
whatever happens, and nothing but 127.0.0.1 is contacted.

Run: `.venv/bin/python benchmarks/console_load.py [--clients 8] [--seconds 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from console_helpers import ConsoleFleet, console_fleet, signed_in_client  # noqa: E402
from machine_info import machine  # noqa: E402

USER = "ops"
WARMUP_REQUESTS = 5
ENDPOINTS = ("GET /", "GET /api/hubs")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
        self.errors: dict[str, Counter[str]] = {name: Counter() for name in ENDPOINTS}

    def summary(self, seconds: float) -> dict[str, Any]:
        result = {}
        for name in ENDPOINTS:
            times = self.latencies[name]
            errors = sum(self.errors[name].values())
            result[name] = {
                "requests": len(times) + errors,
                "ok": len(times),
                "requests_per_second": round((len(times) + errors) / seconds, 1),
                "latency_ms": {
                    f"p{q}": round(percentile(times, q) * 1000, 2) if times else None for q in (50, 95, 99)
                }
                | {"max": round(max(times) * 1000, 2) if times else None},
                "errors": errors,
                "errors_by_kind": dict(self.errors[name]),
            }
        return result


async def one_request(client: httpx.AsyncClient, name: str, tally: Tally | None) -> None:
    method, path = name.split(" ", 1)
    start = time.perf_counter()
    try:
        response = await client.request(method, path)
        await response.aread()
        kind = None if response.status_code == 200 else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        kind = type(exc).__name__
    elapsed = time.perf_counter() - start
    if tally is None:
        return
    if kind is None:
        tally.latencies[name].append(elapsed)
    else:
        tally.errors[name][kind] += 1


async def worker(
    index: int, page: httpx.AsyncClient, api: httpx.AsyncClient, deadline: float, tally: Tally
) -> None:
    clients = {"GET /": page, "GET /api/hubs": api}
    turn = index  # half the workers start with the page, half with the API
    while time.monotonic() < deadline:
        name = ENDPOINTS[turn % 2]
        await one_request(clients[name], name, tally)
        turn += 1


async def load(cf: ConsoleFleet, cookies: list[httpx.Cookies], seconds: float) -> tuple[Tally, float]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    token = {"Authorization": f"Bearer {cf.tokens[USER]}"}
    async with contextlib.AsyncExitStack() as stack:
        pairs = []
        for jar in cookies:
            page = await stack.enter_async_context(
                httpx.AsyncClient(base_url=cf.url, cookies=jar, limits=limits, timeout=30, trust_env=False)
            )
            api = await stack.enter_async_context(
                httpx.AsyncClient(base_url=cf.url, headers=token, limits=limits, timeout=30, trust_env=False)
            )
            pairs.append((page, api))
        for page, api in pairs:  # open the connections and warm the console up (not counted)
            for i in range(WARMUP_REQUESTS):
                await one_request(page if i % 2 else api, ENDPOINTS[1 - i % 2], None)
        tally = Tally()
        start = time.monotonic()
        deadline = start + seconds
        await asyncio.gather(*(worker(i, page, api, deadline, tally) for i, (page, api) in enumerate(pairs)))
        return tally, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="duration of the measured run (default 20)"
    )
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.seconds <= 300):
        parser.error("--clients must be 1..64 and --seconds 1..300")

    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-") as tmp, console_fleet(Path(tmp)) as cf:
        assert urlsplit(cf.url).hostname == "127.0.0.1", cf.url
        cookies = []
        for _ in range(args.clients):  # one browser session per client
            with contextlib.closing(signed_in_client(cf, USER)) as browser:
                cookies.append(httpx.Cookies(browser.cookies))
        assert cf.process is not None
        console = psutil.Process(cf.process.pid)
        cpu_before = sum(console.cpu_times()[:2])
        tally, elapsed = asyncio.run(load(cf, cookies, args.seconds))
        cpu = sum(console.cpu_times()[:2]) - cpu_before
        rows = len(
            httpx.get(f"{cf.url}/api/hubs", headers={"Authorization": f"Bearer {cf.tokens[USER]}"}).json()[
                "hubs"
            ]
        )

    endpoints = tally.summary(elapsed)
    total = sum(e["requests"] for e in endpoints.values())
    json.dump(
        {
            "benchmark": "console_load",
            "clients": args.clients,
            "seconds": round(elapsed, 2),
            "hubs": rows,
            "server": "hubfleet console (uvicorn, one process), store: SQLite seeded with 30 days",
            "percentiles": "linear interpolation between closest ranks",
            "requests": total,
            "requests_per_second": round(total / elapsed, 1),
            "errors": sum(e["errors"] for e in endpoints.values()),
            "endpoints": endpoints,
            "console_cpu_seconds": round(cpu, 2),
            "console_cpu_percent_of_one_core": round(100 * cpu / elapsed, 1),
            "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
