"""The usage collector's own cost per minute at N hubs, against loopback HTTP servers; prints one JSON object.

    .venv/bin/python benchmarks/usage_collector.py --hubs 1000 --users 100000 --passes 6

One stand-in server process (plain asyncio, HTTP/1.1 keep-alive, one loopback port per hub) answers like
JupyterHub 6: `/hub/api/users` paginated (200 a page, `include_stopped_servers`), with each user's
servers (started, last_activity, ready, user_options) and groups, and `/hub/metrics` (the active-user gauges
and the spawn histogram). The users are `--users` people spread over the hubs (one in five on two hubs);
`--running` of them have a server at once. Before each pass the server moves its clock one minute on: a
share of the users (`--active`) show new activity, a few servers stop and others start, as in a busy hour.
This process runs the daemon's own `UsageCollector.collect_once()` (every hub's HTTP requests, parsing,
and its store writes into a real SQLite store in a temporary directory) once per pass: pass 1 is the
first collection of a fleet (every user day, session and membership new), the others are the steady
state, what the daemon pays every `monitoring.collect_interval` (60 s by default).

Reported per pass: wall time, CPU seconds of this process and of the stand-in server separately, SQL
statements executed, and the share of one core at a 60 s interval; then the median of the steady passes.
`--profile FILE` writes a cProfile of the steady passes. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.config.fleet import FleetConfig  # noqa: E402
from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.monitor import collector as collector_module  # noqa: E402
from hubfleet.monitor.collector import HubTarget, UsageCollector  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
INTERVAL = 60.0
PAGE = 200
METRICS = b"""# TYPE jupyterhub_active_users gauge
jupyterhub_active_users{period="24h"} 30.0
jupyterhub_active_users{period="7d"} 80.0
jupyterhub_active_users{period="30d"} 110.0
# TYPE jupyterhub_running_servers gauge
jupyterhub_running_servers 12.0
# TYPE jupyterhub_total_users gauge
jupyterhub_total_users 120.0
# TYPE jupyterhub_server_spawn_duration_seconds histogram
jupyterhub_server_spawn_duration_seconds_bucket{le="0.5",reason="",status="success"} 3.0
jupyterhub_server_spawn_duration_seconds_bucket{le="1.0",reason="",status="success"} 40.0
jupyterhub_server_spawn_duration_seconds_bucket{le="+Inf",reason="",status="success"} 41.0
jupyterhub_server_spawn_duration_seconds_count{reason="",status="success"} 41.0
jupyterhub_server_spawn_duration_seconds_sum{reason="",status="success"} 30.5
"""


# --------------------------------------------------------------------------- the stand-in server


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Hubs:
    """Every hub's users, changed one minute at a time, each hub's pages rendered once per minute."""

    def __init__(self, hubs: int, users: int, running: int, active: float, seed: int = 21) -> None:
        self.rnd = random.Random(seed)
        self.now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        self.active = active
        self.users: list[dict[str, dict[str, Any]]] = [{} for _ in range(hubs)]
        for number in range(users):
            home = self.rnd.randrange(hubs)
            for hub in {home, (home + 1 + self.rnd.randrange(hubs - 1)) % hubs if hubs > 1 else home}:
                if hub != home and self.rnd.random() >= 0.2:
                    continue
                name = f"user{number:06d}"
                self.users[hub][name] = {
                    "name": name,
                    "kind": "user",
                    "admin": False,
                    "groups": [f"course-{number % 7}"],
                    "last_activity": iso(self.now - timedelta(days=self.rnd.randrange(1, 30))),
                    "servers": {},
                }
        accounts = [(hub, name) for hub, found in enumerate(self.users) for name in found]
        for hub, name in self.rnd.sample(accounts, min(running, len(accounts))):
            self._start(self.users[hub][name])
        self.pages: list[list[bytes]] = []
        self.render()

    def _start(self, user: dict[str, Any]) -> None:
        stamp = iso(self.now)
        user["servers"][""] = {
            "name": "",
            "ready": True,
            "pending": None,
            "stopped": False,
            "started": stamp,
            "last_activity": stamp,
            "url": f"/user/{user['name']}/",
            "user_options": {"environment": "python"},
        }
        user["last_activity"] = stamp

    def tick(self) -> None:
        """One minute on: some users act (their running servers too), 1 % of servers stop, as many start."""
        self.now += timedelta(minutes=1)
        stamp = iso(self.now)
        for found in self.users:
            for user in found.values():
                if self.rnd.random() < self.active:
                    user["last_activity"] = stamp
                    for server in user["servers"].values():
                        if server["ready"]:
                            server["last_activity"] = stamp
                for server in user["servers"].values():
                    if server["ready"] and self.rnd.random() < 0.01:
                        server.update(ready=False, stopped=True, last_activity=stamp)
                    elif server["stopped"] and self.rnd.random() < 0.01:
                        server.update(ready=True, stopped=False, started=stamp, last_activity=stamp)
        self.render()

    def render(self) -> None:
        self.pages = []
        for found in self.users:
            items = list(found.values())
            pages = []
            for offset in range(0, max(1, len(items)), PAGE):
                following = {"offset": offset + PAGE, "limit": PAGE} if offset + PAGE < len(items) else None
                body = {
                    "items": items[offset : offset + PAGE],
                    "_pagination": {"offset": offset, "limit": PAGE, "total": len(items), "next": following},
                }
                pages.append(json.dumps(body).encode())
            self.pages.append(pages)


def response(body: bytes, status: bytes = b"200 OK", kind: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


async def handle(hubs: Hubs, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            parts = urlsplit(target)
            if parts.path == "/hub/api/users":
                offset = int(parse_qs(parts.query).get("offset", ["0"])[0])
                pages = hubs.pages[index]
                writer.write(response(pages[min(offset // PAGE, len(pages) - 1)]))
            elif parts.path == "/hub/metrics":
                writer.write(response(METRICS, kind=b"text/plain; version=0.0.4"))
            else:
                writer.write(response(b'{"status": 404}', b"404 Not Found"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(args: argparse.Namespace) -> None:
    hubs = Hubs(args.hubs, args.users, args.running, args.active)
    servers = [
        await asyncio.start_server(lambda r, w, i=i: handle(hubs, i, r, w), "127.0.0.1", 0, backlog=512)
        for i in range(args.hubs)
    ]
    sys.stdout.write(json.dumps([s.sockets[0].getsockname()[1] for s in servers]) + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    while True:  # one line from the parent: a minute on; end of input: stop
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        hubs.tick()
        sys.stdout.write(iso(hubs.now) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- the collecting side


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def fleet_of(count: int, root: Path) -> FleetConfig:
    """The demo fleet's settings with `count` copies of its uni-a hub (native auth, local cluster)."""
    demo = load_fleet(DEMO)
    template = demo.hubs["uni-a"]
    hubs = {f"hub{i:04d}": template.model_copy(update={"name": f"hub{i:04d}"}) for i in range(count)}
    return FleetConfig(root=root, settings=demo.settings, clusters=demo.clusters, hubs=hubs)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(2 * args.hubs + 256)
    command = [sys.executable, __file__, "--serve", "--hubs", str(args.hubs), "--users", str(args.users)]
    command += ["--running", str(args.running), "--active", str(args.active)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    me, other = psutil.Process(), psutil.Process(server.pid)
    profile = cProfile.Profile() if args.profile else None
    assert server.stdin is not None and server.stdout is not None
    try:
        ports = json.loads(server.stdout.readline())
        targets = [
            HubTarget(f"hub{i:04d}", f"http://127.0.0.1:{port}", "token") for i, port in enumerate(ports)
        ]
        with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "state") as store:
            statements = [0]
            event.listen(
                store.engine, "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1)
            )
            fleet = fleet_of(args.hubs, Path(tmp))
            collector = UsageCollector(fleet, store, lambda: targets, interval=INTERVAL)
            rows = []
            for number in range(1, args.passes + 1):
                server.stdin.write("tick\n")
                server.stdin.flush()
                now = datetime.strptime(server.stdout.readline().strip(), "%Y-%m-%dT%H:%M:%S.%fZ")
                collector_module.utcnow = lambda now=now: now.replace(tzinfo=UTC)  # the stand-in's clock
                server_cpu, cpu, wall, before = (
                    cpu_seconds(other),
                    cpu_seconds(me),
                    time.perf_counter(),
                    statements[0],
                )
                if profile and number > 1:
                    profile.enable()
                results = await collector.collect_once()
                if profile and number > 1:
                    profile.disable()
                wall, cpu = time.perf_counter() - wall, cpu_seconds(me) - cpu
                rows.append(
                    {
                        "pass": number,
                        "hubs_collected": len(results),
                        "users_seen": sum(r.users for r in results),
                        "active_users": sum(r.active_users for r in results),
                        "running_servers": sum(r.running_servers for r in results),
                        "sessions_opened": sum(r.sessions_opened for r in results),
                        "sessions_closed": sum(r.sessions_closed for r in results),
                        "wall_s": round(wall, 3),
                        "cpu_s": round(cpu, 3),
                        "server_cpu_s": round(cpu_seconds(other) - server_cpu, 3),
                        "sql_statements": statements[0] - before,
                        "core_share_at_60s": round(cpu / INTERVAL, 4),
                    }
                )
            db_mb = round((Path(tmp) / "state" / "hubfleet.sqlite").stat().st_size / 1e6, 1)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    if profile:
        profile.dump_stats(args.profile)
        pstats.Stats(args.profile, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    steady = rows[1:] or rows
    return {
        "benchmark": "usage_collector",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_end": os.getloadavg(),
        "machine": machine(),
        "sizes": {"hubs": args.hubs, "users": args.users, "running": args.running, "active": args.active},
        "http": "real HTTP/1.1 on loopback: one stand-in server process, one port per hub",
        "passes": rows,
        "steady_median": {
            key: statistics.median(r[key] for r in steady)
            for key in ("wall_s", "cpu_s", "server_cpu_s", "sql_statements", "core_share_at_60s")
        },
        "store_mb_after": db_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--running", type=int, default=5000, help="servers running at once, fleet-wide")
    parser.add_argument("--active", type=float, default=0.05, help="share of users acting each minute")
    parser.add_argument("--passes", type=int, default=6)
    parser.add_argument("--profile", help="write a cProfile of the steady passes here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args))
        return
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
