"""The uptime prober against 1,000 loopback endpoints standing in for 1,000 hubs; prints JSON.

One server process (plain asyncio, HTTP/1.1 with keep-alive) listens on 1,000 loopback ports and answers
`/hub/health` and `/hub/api/` like JupyterHub; this process runs `Prober.probe_once()` (one shared
httpx.AsyncClient, concurrency bound, samples recorded in a SQLite store, incident logic) for `--passes`
passes. Every probe opens new connections (the prober keeps no idle connections: at a 30 s interval
they would have expired anyway). Reported per pass: wall time, CPU seconds of this
process (time.process_time: probing, parsing, storing), and whether the pass fits in the interval; plus the
server's CPU over the run. Target: a pass well inside the 30 s default interval.

Run: `.venv/bin/python benchmarks/probe_1000.py [--hubs 1000] [--passes 5] [--concurrency 50]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.config.fleet import FleetConfig  # noqa: E402
from hubfleet.config.models import FleetSettings  # noqa: E402
from hubfleet.monitor.incidents import list_incidents  # noqa: E402
from hubfleet.monitor.prober import DEFAULT_CONCURRENCY, Prober  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

INTERVAL = 30.0
BODY = b'{"version": "6.1.1"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


# --------------------------------------------------------------------------- the stand-in server


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            writer.write(RESPONSE if path in (b"/hub/health", b"/hub/api/") else NOT_FOUND)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(count: int) -> None:
    servers = [await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512) for _ in range(count)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin


# --------------------------------------------------------------------------- the probing side


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


async def run(hubs: int, passes: int, concurrency: int) -> dict:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(hubs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ports = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        targets = {f"hub-{i:04d}": f"http://127.0.0.1:{port}" for i, port in enumerate(ports)}
        server_cpu_before = sum(psutil.Process(server.pid).cpu_times()[:2])
        with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "state") as store:
            fleet = FleetConfig(root=Path(tmp), settings=FleetSettings(name="bench"))
            prober = Prober(fleet, None, store, targets=targets, alerter=None, concurrency=concurrency)
            rows = []
            for number in range(1, passes + 1):
                cpu, wall = time.process_time(), time.perf_counter()
                results = await prober.probe_once()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                latencies = sorted(r.latency_ms or 0.0 for r in results)
                rows.append(
                    {
                        "pass": number,
                        "wall_seconds": round(wall, 3),
                        "cpu_seconds": round(cpu, 3),
                        "ok": sum(r.ok for r in results),
                        "failed": sum(not r.ok for r in results),
                        "latency_ms_p50": round(statistics.median(latencies), 1),
                        "latency_ms_max": round(latencies[-1], 1),
                        "fits_interval": wall < INTERVAL,
                    }
                )
                if number < passes:
                    await asyncio.sleep(1)
            await prober.aclose()
            incidents = len(list_incidents(store))
        server_cpu = sum(psutil.Process(server.pid).cpu_times()[:2]) - server_cpu_before
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {
        "benchmark": "probe_1000",
        "hubs": hubs,
        "requests_per_pass": 2 * hubs,
        "concurrency": concurrency,
        "interval_seconds": INTERVAL,
        "passes": rows,
        "wall_seconds_median": round(statistics.median(r["wall_seconds"] for r in rows), 3),
        "cpu_seconds_median": round(statistics.median(r["cpu_seconds"] for r in rows), 3),
        "cpu_share_of_one_core_at_interval": round(
            statistics.median(r["cpu_seconds"] for r in rows) / INTERVAL, 4
        ),
        "server_cpu_seconds_total": round(server_cpu, 2),
        "all_fit_interval": all(r["fits_interval"] for r in rows),
        "incidents": incidents,
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit(4 * (args.serve or args.hubs) + 256)
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    json.dump(asyncio.run(run(args.hubs, args.passes, args.concurrency)), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
