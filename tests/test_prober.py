"""The uptime prober and incidents against real loopback HTTP(S) servers started by the test."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet_helpers import copy_demo_fleet, hubfleet
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import FleetSettings, Monitoring
from hubfleet.monitor.incidents import IncidentTracker, list_incidents, open_incident, resolve_incident
from hubfleet.monitor.prober import Prober, new_client, probe_hub, probe_interval
from hubfleet.monitor.uptime import ProbeResult, prune_samples, record_samples, uptime, uptime_by_hub
from hubfleet.store import open_store
from hubfleet.store.api import Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- a switchable fake hub


class FakeHub(ThreadingHTTPServer):
    """Answers /hub/health and /hub/api/ like JupyterHub; `mode` switches it: healthy | down | api_error
    | slow."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "healthy"
        self.requests: list[str] = []
        self.connections = 0
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's signature
        self.connections += 1  # once per accepted connection (after a TLS handshake)
        super().process_request(request, client_address)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        mode = self.server.mode
        if mode == "slow":
            time.sleep(1.5)
        if self.path not in ("/hub/health", "/hub/api/"):
            status = 404
        elif mode == "down":
            status = 503
        elif mode == "api_error" and self.path == "/hub/api/":
            status = 500
        else:
            status = 200
        body = json.dumps({"version": "6.1.1"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub()
    yield server
    server.close()


def make_fleet(tmp_path: Path, **monitoring: object) -> FleetConfig:
    return FleetConfig(root=tmp_path, settings=FleetSettings(name="t", monitoring=Monitoring(**monitoring)))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state") as opened:
        yield opened


class RecordingAlerter:
    """Stands in for hubfleet.monitor.alerts.Alerter: records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def incident_opened(self, incident) -> None:  # noqa: ANN001
        self.sent.append(("opened", incident.hub, incident.kind))

    async def incident_resolved(self, incident) -> None:  # noqa: ANN001
        self.sent.append(("resolved", incident.hub, incident.kind))

    async def drain(self, timeout: float | None = None) -> None:
        """Nothing to wait for: it records at once."""


async def passes(prober: Prober, count: int = 1) -> list[ProbeResult]:
    results: list[ProbeResult] = []
    for _ in range(count):
        results += await prober.probe_once()
        await prober.tracker.drain(5)
    return results


# --------------------------------------------------------------------------- probe_hub


@pytest.mark.anyio
async def test_probe_hub_healthy_and_failing(hub: FakeHub) -> None:
    async with new_client() as client:
        ok = await probe_hub(client, hub.url, 5, hub="h")
        assert ok.ok and (ok.health_status, ok.api_status) == (200, 200)
        assert ok.latency_ms is not None and ok.latency_ms > 0
        assert ok.error == "" and ok.cert_expires_at is None
        assert ok.version == "6.1.1"  # from the /hub/api/ body
        assert sorted(hub.requests) == ["/hub/api/", "/hub/health"]

        hub.mode = "down"
        down = await probe_hub(client, hub.url, 5, hub="h")
        assert not down.ok and down.health_status == 503 and down.version is None
        assert down.error == "GET /hub/health, /hub/api/: HTTP 503 Service Unavailable"

        hub.mode = "api_error"
        half = await probe_hub(client, hub.url, 5, hub="h")
        assert not half.ok and (half.health_status, half.api_status) == (200, 500) and half.version is None
        assert half.error == "GET /hub/api/: HTTP 500 Internal Server Error"

        hub.mode = "slow"
        slow = await probe_hub(client, hub.url, 0.5, hub="h")
        assert not slow.ok and ("no answer in time" in slow.error or "within 0.5 s" in slow.error), slow.error


@pytest.mark.anyio
async def test_probe_hub_connection_refused() -> None:
    server = FakeHub()
    url = server.url
    server.close()
    async with new_client() as client:
        result = await probe_hub(client, url, 2, hub="gone")
    assert not result.ok and result.latency_ms is None
    assert result.error == "GET /hub/health, /hub/api/: cannot connect (connection refused)"


# --------------------------------------------------------------------------- incidents


@pytest.mark.anyio
async def test_incident_opens_after_consecutive_failures_once_and_resolves(
    tmp_path: Path, hub: FakeHub, store: Store
) -> None:
    alerter = RecordingAlerter()
    prober = Prober(make_fleet(tmp_path), None, store, targets={"h": hub.url}, alerter=alerter)
    await passes(prober)
    hub.mode = "down"
    await passes(prober)
    assert list_incidents(store) == [], "one failure is not an incident (failures_to_open: 2)"
    await passes(prober)
    [incident] = list_incidents(store, open_only=True)
    assert (incident.hub, incident.kind, incident.resolved_at) == ("h", "down", None)
    assert incident.cause == "GET /hub/health, /hub/api/: HTTP 503 Service Unavailable"
    await passes(prober, 3)  # still down: no second incident, no second alert
    assert len(list_incidents(store)) == 1
    assert alerter.sent == [("opened", "h", "down")]

    hub.mode = "healthy"
    await passes(prober)
    [resolved] = list_incidents(store)
    assert resolved.id == incident.id and resolved.resolved_at is not None
    assert resolved.to_dict()["duration_seconds"] > 0
    await passes(prober, 2)
    assert alerter.sent == [("opened", "h", "down"), ("resolved", "h", "down")]
    await prober.aclose()


@pytest.mark.anyio
async def test_failures_to_open_is_configurable_and_counted_across_processes(
    tmp_path: Path, hub: FakeHub, store: Store
) -> None:
    """`hubfleet probe` is one pass per process: the consecutive failures come from the stored samples."""
    fleet = make_fleet(tmp_path, failures_to_open=3)
    hub.mode = "down"
    for expected in (0, 0, 1, 1):
        prober = Prober(fleet, None, store, targets={"h": hub.url}, alerter=None)
        await passes(prober)
        await prober.aclose()
        assert len(list_incidents(store)) == expected
    hub.mode = "healthy"
    prober = Prober(fleet, None, store, targets={"h": hub.url}, alerter=None)
    await passes(prober)
    await prober.aclose()
    assert [i.open for i in list_incidents(store)] == [False]


def test_open_incident_has_no_duplicates_per_hub_kind_and_rule(store: Store) -> None:
    first, opened = open_incident(store, "h", "down", "refused")
    assert opened
    again, opened_again = open_incident(store, "h", "down", "another cause")
    assert (again.id, again.cause, opened_again) == (first.id, "refused", False)
    rule_a, a_opened = open_incident(store, "h", "anomaly", "too many servers", rule="max_running_servers")
    rule_b, b_opened = open_incident(store, "h", "anomaly", "old server", rule="max_server_age")
    assert a_opened and b_opened and rule_a.id != rule_b.id
    assert open_incident(store, "other", "down", "x")[1]

    resolved = resolve_incident(store, "h", "anomaly", rule="max_running_servers")
    assert resolved is not None and resolved.id == rule_a.id and resolved.resolved_at is not None
    assert resolve_incident(store, "h", "anomaly", rule="max_running_servers") is None
    assert resolve_incident(store, "nobody", "down") is None
    assert {(i.hub, i.kind, i.rule) for i in list_incidents(store, open_only=True)} == {
        ("h", "down", None),
        ("h", "anomaly", "max_server_age"),
        ("other", "down", None),
    }
    # after resolution a new incident may open
    resolve_incident(store, "h", "down")
    reopened, opened = open_incident(store, "h", "down", "again")
    assert opened and reopened.id != first.id
    with pytest.raises(ValueError, match="kind must be one of"):
        open_incident(store, "h", "exploded", "x")


def _open_in_process(state: str) -> bool:
    with open_store(state) as store:
        return open_incident(store, "h", "down", "race")[1]


def test_open_incident_races_between_processes_open_one(tmp_path: Path) -> None:
    state = str(tmp_path / "race")
    open_store(state).close()
    with ProcessPoolExecutor(6) as pool:
        opened = list(pool.map(_open_in_process, [state] * 6))
    assert opened.count(True) == 1
    with open_store(state) as store:
        assert len(list_incidents(store)) == 1


def _sample(hub: str, at: datetime, ok: bool) -> ProbeResult:
    return ProbeResult(hub, "http://x", at, ok, 200 if ok else 503, 200 if ok else 503, 3.0)


def test_uptime_windows_from_samples_and_retention(store: Store) -> None:
    now = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
    samples = [
        _sample("a", now - timedelta(hours=1), True),
        _sample("a", now - timedelta(hours=2), False),
        _sample("a", now - timedelta(days=3), True),
        _sample("a", now - timedelta(days=3, hours=1), True),
        _sample("a", now - timedelta(days=20), False),
        _sample("a", now - timedelta(days=40), False),  # outside every window, pruned below
        _sample("b", now - timedelta(days=10), True),
    ]
    record_samples(store, samples)
    # 24h: the raw samples; 7d / 30d: today's samples plus the whole UTC days before (6 / 29 of them)
    assert uptime(store, "a", now) == {"24h": 50.0, "7d": 75.0, "30d": 60.0}
    assert uptime(store, "b", now) == {"24h": None, "7d": None, "30d": 100.0}
    assert uptime(store, "never-probed", now) == {"24h": None, "7d": None, "30d": None}
    assert set(uptime_by_hub(store, now=now)) == {"a", "b"}

    assert prune_samples(store, now) == 1
    assert prune_samples(store, now) == 0
    assert uptime(store, "a", now)["30d"] == 60.0
    # past days come from their daily roll-up, which outlives the raw samples: with only the newest hour
    # of samples left, 24h and today change, the days before do not
    assert prune_samples(store, now, keep=timedelta(hours=1, minutes=30)) == 5
    assert uptime(store, "a", now) == {"24h": 100.0, "7d": 100.0, "30d": 75.0}


def test_probe_interval_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = make_fleet(tmp_path, probe_interval=45)
    assert probe_interval(fleet) == 45
    monkeypatch.setenv("HUBFLEET_PROBE_INTERVAL", "1.5")
    assert probe_interval(fleet) == 1.5


@pytest.mark.anyio
async def test_run_forever_survives_a_failing_pass(tmp_path: Path, hub: FakeHub, store: Store) -> None:
    prober = Prober(make_fleet(tmp_path), None, store, targets={"h": hub.url}, alerter=None)
    calls = {"n": 0}
    real = prober.current_targets

    def flaky() -> dict[str, str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real()

    prober.current_targets = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(prober.run_forever(0.1, stop))
    deadline = time.monotonic() + 10
    while prober.passes < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    await prober.aclose()
    assert prober.passes >= 2 and calls["n"] >= 3


# --------------------------------------------------------------------------- certificates


def self_signed(directory: Path, days: float) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"cert-{days}.pem", directory / f"key-{days}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def tls_hub(directory: Path, days: float) -> tuple[FakeHub, ssl.SSLContext]:
    cert, key = self_signed(directory, days)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    return FakeHub(tls=server_ctx), ssl.create_default_context(cafile=str(cert))


@pytest.mark.anyio
async def test_certificate_expiring_soon_opens_a_certificate_incident(tmp_path: Path, store: Store) -> None:
    soon, trust_soon = tls_hub(tmp_path, days=10)
    later, trust_later = tls_hub(tmp_path, days=90)
    try:
        alerter = RecordingAlerter()
        fleet = make_fleet(tmp_path, certificate_warning_days=21)
        for server, trust in ((soon, trust_soon), (later, trust_later)):
            name = "soon" if server is soon else "later"
            prober = Prober(fleet, None, store, targets={name: server.url}, alerter=alerter, verify=trust)
            result = (await passes(prober, 2))[-1]
            assert result.ok, result.error  # the probe itself verified the (trusted) certificate
            assert result.cert_expires_at is not None
            await prober.aclose()
        [incident] = list_incidents(store)
        assert (incident.hub, incident.kind) == ("soon", "certificate")
        assert re.search(r"expires in (9|10)\.\d days", incident.cause), incident.cause
        assert alerter.sent == [("opened", "soon", "certificate")]
        assert abs((soon_expiry(store) - datetime.now(UTC)).days - 10) <= 1

        # A renewed certificate (here: a shorter warning period) resolves it.
        tracker = IncidentTracker(store, certificate_warning_days=5, alerter=alerter)
        async with new_client(verify=trust_soon) as client:
            tracker.observe([await probe_hub(client, soon.url, 5, hub="soon")])
            await tracker.drain(5)
        assert not list_incidents(store, open_only=True)
        assert alerter.sent[-1] == ("resolved", "soon", "certificate")
    finally:
        soon.close()
        later.close()


def soon_expiry(store: Store) -> datetime:
    from sqlalchemy import select

    from hubfleet.store.models import ProbeSample

    with store.session() as session:
        return session.scalars(select(ProbeSample.cert_expires_at).where(ProbeSample.hub == "soon")).first()


@pytest.mark.anyio
async def test_untrusted_certificate_fails_the_probe_but_still_reports_expiry(tmp_path: Path) -> None:
    server, _ = tls_hub(tmp_path, days=5)
    try:
        async with new_client() as client:  # system trust store: the self-signed cert is rejected
            result = await probe_hub(client, server.url, 5, hub="s")
        assert not result.ok and "CERTIFICATE_VERIFY_FAILED" in result.error
        assert result.cert_expires_at is not None
    finally:
        server.close()


# --------------------------------------------------------------------------- CLI


def test_cli_probe_incidents_uptime(tmp_path: Path, hub: FakeHub) -> None:
    fleet = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    [hub_file] = fleet.glob("communities/*/hubs/*.yaml")
    port = hub.server_address[1]
    hub_file.write_text(re.sub(r"(?m)^port: \d+$", f"port: {port}", hub_file.read_text()))

    ok = hubfleet("probe", "--json", fleet=fleet)
    assert ok.returncode == 0, ok.stderr
    [result] = json.loads(ok.stdout)["hubs"]
    assert (result["hub"], result["ok"], result["url"]) == ("uni-a-staging", True, hub.url)
    table = hubfleet("probe", fleet=fleet)
    assert table.returncode == 0 and "uni-a-staging" in table.stdout and " ok " in table.stdout

    hub.mode = "down"
    first = hubfleet("probe", fleet=fleet)
    assert first.returncode == 1 and "FAILING" in first.stdout and "incident" not in first.stdout
    second = json.loads(hubfleet("probe", "--json", fleet=fleet).stdout)
    assert [i["hub"] for i in second["opened"]] == ["uni-a-staging"]

    [incident] = json.loads(hubfleet("incidents", "--open", "--json", fleet=fleet, check=True).stdout)
    assert incident["hub"] == "uni-a-staging" and incident["kind"] == "down"
    assert incident["resolved_at"] is None and "503" in incident["cause"]
    assert {"started_at", "duration_seconds"} <= incident.keys()

    hub.mode = "healthy"
    recovered = json.loads(hubfleet("probe", "--json", fleet=fleet, check=True).stdout)
    assert [i["hub"] for i in recovered["resolved"]] == ["uni-a-staging"]
    assert json.loads(hubfleet("incidents", "--open", "--json", fleet=fleet).stdout) == []
    [closed] = json.loads(hubfleet("incidents", "--json", fleet=fleet).stdout)
    assert closed["resolved_at"] is not None
    listing = hubfleet("incidents", fleet=fleet, check=True).stdout
    assert "uni-a-staging" in listing and "resolved" in listing

    figures = json.loads(hubfleet("uptime", "--json", fleet=fleet, check=True).stdout)
    assert figures["uptime"] == {"uni-a-staging": {"24h": 60.0, "7d": 60.0, "30d": 60.0}}  # 3 of 5 probes ok
    assert figures["excluding_planned_maintenance"] == figures["uptime"]  # no deploy: nothing planned
    assert "60.00%" in hubfleet("uptime", fleet=fleet, check=True).stdout

    missing = hubfleet("incidents", "--hub", "nope", fleet=fleet)
    assert missing.returncode == 1 and "no hub named 'nope'" in missing.stderr
