"""The uptime prober against N loopback endpoints standing in for N hubs; prints one JSON object.

One server process (plain asyncio, HTTP/1.1 with keep-alive) listens on `--hubs` loopback ports and answers
`/hub/health` and `/hub/api/` like JupyterHub; this process runs `Prober.probe_once()` (the prober's own HTTP
path, concurrency bound, samples recorded in a SQLite store, incident logic) for `--passes` passes.
`--endpoints-per-hub` is how many of a hub's HTTP endpoints each probe requests: 2 (the default, as the
daemon does) asks `/hub/health` and `/hub/api/`, 1 asks `/hub/api/` only (whose answer says both whether
the hub is up and its version). `--tls` serves https with a certificate the prober trusts;
`--down 0.2` makes a fifth of the hubs answer 503 (their incidents open in pass 2: the incident bookkeeping).

Reported per pass: wall time, CPU seconds of the prober and of the
stand-in server separately, CPU per request, the share of one core at the 30 s default interval, and the
prober's resident memory; plus medians. The server stops by itself when this process closes its stdin (also
when this process dies). `--profile FILE` writes a cProfile of the probing passes (this process only) and
prints the top functions to stderr.

Run: `.venv/bin/python benchmarks/probe.py [--hubs 1000] [--endpoints-per-hub 2] [--passes 5]
[--concurrency N] [--tls] [--down SHARE] [--profile FILE]`; the 5,000-hub fleet: `--hubs 5000`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import functools
import inspect
import ipaddress
import json
import os
import pstats
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.config.fleet import FleetConfig  # noqa: E402
from hubfleet.config.models import FleetSettings  # noqa: E402
from hubfleet.monitor.incidents import list_incidents  # noqa: E402
from hubfleet.monitor.prober import DEFAULT_CONCURRENCY, PATHS, Prober, new_client  # noqa: E402
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
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


# --------------------------------------------------------------------------- the stand-in server


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool = False) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            ok = RESPONSE if path in (b"/hub/health", b"/hub/api/") else NOT_FOUND
            writer.write(UNAVAILABLE if down else ok)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def self_signed(directory: Path) -> Path:
    """A certificate for 127.0.0.1 (ECDSA P-256, as Caddy makes) and its key in `directory`; the cert path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory / "cert.pem"


async def serve(count: int, cert_dir: str, down: int) -> None:
    context = None
    if cert_dir:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(cert_dir) / "cert.pem", Path(cert_dir) / "key.pem")
    servers = [
        await asyncio.start_server(
            functools.partial(handle, down=index < down), "127.0.0.1", 0, backlog=512, ssl=context
        )
        for index in range(count)
    ]
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


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 4)


async def run(args: argparse.Namespace) -> dict:
    hubs, passes = args.hubs, args.passes
    paths = PATHS if args.endpoints_per_hub == 2 else ("/hub/api/",)
    tls_dir = tempfile.TemporaryDirectory()
    cert = self_signed(Path(tls_dir.name)) if args.tls else None
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(hubs), "--cert-dir", tls_dir.name if cert else ""]
        + ["--down", str(round(args.down * hubs))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    me = psutil.Process()
    profile = cProfile.Profile() if args.profile else None
    try:
        ports = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        scheme = "https" if cert else "http"
        targets = {f"hub-{i:05d}": f"{scheme}://127.0.0.1:{port}" for i, port in enumerate(ports)}
        server_process = psutil.Process(server.pid)
        options: dict = {}  # only when asked for, so that the script also measures the prober before them
        if len(paths) != len(PATHS):
            options["paths"] = paths
        if cert:
            trust = ssl.create_default_context(cafile=str(cert))
            if "verify" in inspect.signature(Prober).parameters:
                options["verify"] = trust
            else:  # the prober before issue 21: an httpx client
                options["client"] = new_client(args.concurrency, verify=trust)
        with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "state") as store:
            fleet = FleetConfig(root=Path(tmp), settings=FleetSettings(name="bench"))
            prober = Prober(
                fleet,
                None,
                store,
                targets=targets,
                alerter=None,
                concurrency=args.concurrency,
                **options,
            )
            rows = []
            for number in range(1, passes + 1):
                server_cpu = cpu_seconds(server_process)
                cpu, wall = cpu_seconds(me), time.perf_counter()
                if profile:
                    profile.enable()
                results = await prober.probe_once()
                if profile:
                    profile.disable()
                wall, cpu = time.perf_counter() - wall, cpu_seconds(me) - cpu
                server_cpu = cpu_seconds(server_process) - server_cpu
                latencies = sorted(r.latency_ms or 0.0 for r in results)
                requests = len(paths) * len(results)
                rows.append(
                    {
                        "pass": number,
                        "wall_seconds": round(wall, 3),
                        "prober_cpu_seconds": round(cpu, 3),
                        "server_cpu_seconds": round(server_cpu, 3),
                        "prober_cpu_ms_per_request": round(1000 * cpu / requests, 4),
                        "prober_share_of_one_core_at_interval": round(cpu / INTERVAL, 4),
                        "prober_rss_mb": round(me.memory_info().rss / 2**20, 1),
                        "ok": sum(r.ok for r in results),
                        "failed": sum(not r.ok for r in results),
                        "incidents_opened": sum(e == "opened" for e, _ in prober.tracker.last_changes),
                        "latency_ms_p50": round(statistics.median(latencies), 1),
                        "latency_ms_max": round(latencies[-1], 1),
                        "fits_interval": wall < INTERVAL,
                    }
                )
                if number < passes:
                    await asyncio.sleep(1)
            await prober.aclose()
            incidents = len(list_incidents(store))
        server_rss = server_process.memory_info().rss
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        tls_dir.cleanup()
    if profile:
        profile.dump_stats(args.profile)
        stats = pstats.Stats(args.profile, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
    return {
        "benchmark": "probe",
        "hubs": hubs,
        "endpoints_per_hub": len(paths),
        "requests_per_pass": len(paths) * hubs,
        "concurrency": args.concurrency,
        "tls": args.tls,
        "down_share": args.down,
        "interval_seconds": INTERVAL,
        "passes": rows,
        "wall_seconds_median": median(rows, "wall_seconds"),
        "prober_cpu_seconds_median": median(rows, "prober_cpu_seconds"),
        "prober_cpu_ms_per_request_median": median(rows, "prober_cpu_ms_per_request"),
        "prober_share_of_one_core_at_interval_median": median(rows, "prober_share_of_one_core_at_interval"),
        "server_cpu_seconds_median": median(rows, "server_cpu_seconds"),
        "prober_rss_mb_max": max(r["prober_rss_mb"] for r in rows),
        "prober_maxrss_mb_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "server_rss_mb": round(server_rss / 2**20, 1),
        "all_ok": all(r["failed"] == 0 for r in rows),
        "all_fit_interval": all(r["fits_interval"] for r in rows),
        "incidents": incidents,
        "loadavg_at_end": os.getloadavg(),
        "profiled": bool(args.profile),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=1000)
    parser.add_argument("--endpoints-per-hub", type=int, choices=(1, 2), default=2)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--tls", action="store_true", help="https hubs (a self-signed certificate, trusted)")
    parser.add_argument(
        "--down", type=float, default=0.0, help="share of hubs answering 503 (incidents open from pass 2)"
    )
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the passes to FILE")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit(4 * (args.serve or args.hubs) + 256)
    if args.serve:
        asyncio.run(serve(args.serve, args.cert_dir, int(args.down)))
        return
    json.dump(asyncio.run(run(args)), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
