"""What the front door costs: latency through Caddy, a reload at 500 hubs, Caddy's memory; prints JSON.

Not part of the test suite; loopback only, stops by itself.
1. Runs the demo fleet (4 real hubs) with its front door on free ports (`hubfleet up --detach`) and times
   `--requests` sequential GET /hub/health of one hub, on one kept-alive connection each way: directly at
   http://127.0.0.1:PORT and through the front door (https, Host and SNI = the hub's name, verified against
   the local CA). Target: the front door adds at most 2 ms at the median.
2. Starts a bare Caddy with the front door's configuration for 500 hubs (render_caddy_config, internal CA,
   upstreams that need not exist) and times `POST /load` of that config and of the same plus one hub (what
   adding a hub costs). Target: a reload at 500 hubs in at most 1 s.
3. Caddy's resident memory after both (RSS). Target: at most 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import copy_demo_fleet, hubfleet, kill_leftovers, passable_tempdir, remove_accounts  # noqa: E402
from hubfleet.config.models_front_door import Certificates, FrontDoor  # noqa: E402
from hubfleet.daemon.front_door import CADDY  # noqa: E402
from hubfleet.render.caddy import CaddyFiles, Site, admin_only, render_caddy_config  # noqa: E402
from machine_info import machine  # noqa: E402

OVERHEAD_TARGET_MS = 2.0
RELOAD_TARGET_S = 1.0
RSS_TARGET_MB = 150


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed_gets(client: httpx.Client, url: str, n: int, **kwargs: object) -> list[float]:
    client.get(url, **kwargs)  # the connection and TLS handshake are not what is measured
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(url, **kwargs)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return times


def latency(requests: int) -> dict[str, object]:
    with passable_tempdir() as tmp:
        fleet = copy_demo_fleet(
            tmp / "demo",
            {"communities/uni-a/hubs/prod.yaml", "communities/uni-a/hubs/staging.yaml"},
            front_door=True,
        )
        try:
            hubfleet("up", "--detach", fleet=fleet, timeout=300, check=True)
            status = json.loads((fleet / ".hubfleet" / "daemon.json").read_text())
            door = status["front_door"]
            public = next(url for url, hub in door["sites"].items() if hub == "uni-a")
            internal = status["hubs"]["uni-a"]["url"]
            host, _, port = public.removeprefix("https://").rstrip("/").partition(":")
            deadline = time.monotonic() + 10
            while not door.get("local_ca") and time.monotonic() < deadline:
                time.sleep(0.2)
                door = json.loads((fleet / ".hubfleet" / "daemon.json").read_text())["front_door"]
            context = ssl.create_default_context(cafile=door["local_ca"])
            with httpx.Client(trust_env=False) as plain, httpx.Client(verify=context, trust_env=False) as tls:
                direct = timed_gets(plain, f"{internal}/hub/health", requests)
                through = timed_gets(
                    tls,
                    f"https://127.0.0.1:{port}/hub/health",
                    requests,
                    headers={"Host": f"{host}:{port}"},
                    extensions={"sni_hostname": host},
                )
            rss = psutil.Process(door["pid"]).memory_info().rss / 2**20
        finally:
            hubfleet("down", fleet=fleet, timeout=120)
            kill_leftovers(fleet)
            remove_accounts(fleet)
    overhead = statistics.median(through) - statistics.median(direct)
    return {
        "requests": requests,
        "direct_ms": {"p50": round(statistics.median(direct), 3), "p95": round(percentile(direct, 0.95), 3)},
        "front_door_ms": {
            "p50": round(statistics.median(through), 3),
            "p95": round(percentile(through, 0.95), 3),
        },
        "overhead_p50_ms": round(overhead, 3),
        "overhead_target_ms": OVERHEAD_TARGET_MS,
        "overhead_met": overhead <= OVERHEAD_TARGET_MS,
        "caddy_rss_mb_demo": round(rss, 1),
    }


async def reload_at_scale(hubs: int) -> dict[str, object]:
    http_port = _free()
    door = FrontDoor(
        domain="hubs.example.org",
        address="127.0.0.1",
        http_port=http_port,
        https_port=_free({http_port}),
        certificates=Certificates(internal=True),
    )
    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-") as tmp:
        root = Path(tmp)
        files = CaddyFiles(
            storage=root / "caddy", admin_socket=root / "admin.sock", access_log=root / "access.log"
        )
        sites = [Site(f"hub-{i:04d}.hubs.example.org", "", 20000 + i, f"hub-{i:04d}") for i in range(hubs)]
        init = root / "init.json"
        init.write_text(json.dumps(admin_only(files.admin_socket)))
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "XDG_DATA_HOME": tmp, "XDG_CONFIG_HOME": tmp}
        proc = subprocess.Popen(
            [str(CADDY), "run", "--config", str(init)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            transport = httpx.AsyncHTTPTransport(uds=str(files.admin_socket))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", timeout=120
            ) as admin:
                for _ in range(100):
                    if files.admin_socket.exists():
                        break
                    await asyncio.sleep(0.1)

                async def load(config: dict[str, object]) -> float:
                    start = time.perf_counter()
                    response = await admin.post("/load", json=config, headers={"Host": ""})
                    response.raise_for_status()
                    return time.perf_counter() - start

                first = await load(render_caddy_config(door, sites, files))
                extra = Site("new.hubs.example.org", "", 30000, "new")
                adds = [
                    await load(render_caddy_config(door, [*sites, extra] if i % 2 == 0 else sites, files))
                    for i in range(5)
                ]
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    median_add = statistics.median(adds)
    return {
        "hubs": hubs,
        "first_load_s": round(first, 3),
        "reload_adding_or_removing_one_hub_s": {"median": round(median_add, 3), "max": round(max(adds), 3)},
        "reload_target_s": RELOAD_TARGET_S,
        "reload_met": median_add <= RELOAD_TARGET_S,
        "caddy_rss_mb_at_scale": round(rss, 1),
        "rss_target_mb": RSS_TARGET_MB,
        "rss_met": rss <= RSS_TARGET_MB,
    }


def _free(avoid: set[int] | None = None) -> int:
    from hubfleet.ports import free_port

    return free_port(avoid or set())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--hubs", type=int, default=500)
    args = parser.parse_args()
    result = {
        "benchmark": "front_door",
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "latency": latency(args.requests),
        "reload": asyncio.run(reload_at_scale(args.hubs)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
