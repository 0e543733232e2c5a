"""The prober through the front door: a real Caddy (rendered by render_caddy_config) in front of hub-like
servers, with operator-provided certificates; and `up`/`status` of a real fleet showing the front door."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet_helpers import (
    copy_demo_fleet,
    daemon_status,
    free_ports,
    hubfleet,
    kill_leftovers,
    remove_accounts,
    wait_for,
)
from hubfleet.backends.local import BIN_DIR, front_door_connect
from hubfleet.config.validate import load_fleet
from hubfleet.monitor.incidents import list_incidents
from hubfleet.monitor.prober import Prober, ProbeTarget, local_targets
from hubfleet.render.caddy import CaddyFiles, fleet_sites, render_caddy_config
from hubfleet.store import open_store

HUB_FILES = {
    "uni-a": "uni-a/hubs/prod.yaml",
    "hackweek": "hackweek/hubs/prod.yaml",
    "uni-a-staging": "uni-a/hubs/staging.yaml",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HubLike(ThreadingHTTPServer):
    """Answers /hub/health and /hub/api/ with 200, like a JupyterHub; records the Host headers it got."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hosts: list[str] = []
        self.port = self.server_address[1]
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    server: HubLike

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.hosts.append(self.headers.get("Host", ""))
        ok = self.path.endswith(("/hub/health", "/hub/api/"))
        body = json.dumps({"version": "5.2.1"} if ok else {}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("hubfleet test CA"))
        .issuer_name(_name("hubfleet test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / "test-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def issue(
    directory: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], host: str, days: int
) -> tuple[Path, Path]:
    """A certificate for `host` signed by `ca`, valid for `days` more days: (certificate file, key file)."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{host}.pem", directory / f"{host}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def hub_servers() -> Iterator[dict[str, HubLike]]:
    servers = {name: HubLike() for name in HUB_FILES}
    yield servers
    for server in servers.values():
        server.close()


@pytest.mark.anyio
async def test_certificate_incident_from_the_public_endpoint(
    tmp_path: Path, hub_servers: dict[str, HubLike], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fleet: uni-a at its domain with a certificate that expires in 5 days, hackweek with one of 90.
    # uni-a-staging (no domain of its own) at https://hubs.localhost:PORT/uni-a-staging/
    root = copy_demo_fleet(tmp_path / "fleet", front_door=True)
    for name, server in hub_servers.items():
        path = root / "communities" / HUB_FILES[name]
        path.write_text(re.sub(r"(?m)^port: \d+$", f"port: {server.port}", path.read_text()))
    certs = tmp_path / "certs"
    certs.mkdir()
    ca_cert, ca_key, ca_file = make_ca(certs)
    soon = issue(certs, (ca_cert, ca_key), "uni-a.hubs.localhost", days=5)
    later = issue(certs, (ca_cert, ca_key), "hackweek.hubs.localhost", days=90)
    fleet_cert = issue(certs, (ca_cert, ca_key), "hubs.localhost", days=90)
    fleet_yaml = root / "fleet.yaml"
    files = "".join(f"      - certificate: {c}\n        key: {k}\n" for c, k in (soon, later, fleet_cert))
    fleet_yaml.write_text(fleet_yaml.read_text().replace("    internal: true\n", f"    files:\n{files}"))
    fleet = load_fleet(root)
    door = fleet.settings.front_door
    assert door is not None and door.certificates.source == "files"

    # A real Caddy serving the fleet's sites, as the daemon configures it.
    home = tmp_path / "caddy-home"
    home.mkdir()
    caddy_files = CaddyFiles(
        storage=home / "storage", admin_socket=home / "admin.sock", access_log=home / "a.log"
    )
    sites = fleet_sites(fleet)
    pems = [(c.read_text(), k.read_text()) for c, k in (soon, later, fleet_cert)]
    config = home / "caddy.json"
    config.write_text(json.dumps(render_caddy_config(door, sites, caddy_files, pems)))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
    }
    log = (home / "caddy.log").open("wb")
    caddy = subprocess.Popen(
        [str(BIN_DIR / "caddy"), "run", "--config", str(config)], env=env, stdout=log, stderr=log
    )
    # The "system" CAs of this test include its CA (operator certificates come from a public CA in real life).
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    try:
        wait_for(lambda: caddy.poll() is not None or listening(door.https_port), timeout=30, interval=0.1)
        assert caddy.poll() is None, (home / "caddy.log").read_text()[-2000:]
        public = {s.hub: fleet.front_door_origin(s.host) + s.path for s in sites}
        status = {
            "state": "running",
            "sites": {url + "/": hub for hub, url in public.items()},
            "local_ca": "",
        }
        internal = {name: f"http://127.0.0.1:{server.port}" for name, server in hub_servers.items()}
        targets = local_targets(fleet, internal, status)
        assert targets["uni-a"] == ProbeTarget(
            public["uni-a"],
            front_door_connect(fleet),
            (),
            f"through the front door at 127.0.0.1:{door.https_port}",
        )

        with open_store(tmp_path / "state") as store:
            prober = Prober(
                fleet, None, store, targets=lambda: local_targets(fleet, internal, status), alerter=None
            )
            try:
                results = {r.hub: r for r in await prober.probe_once()}
                assert results["uni-a"].ok, results["uni-a"].error
                assert results["hackweek"].ok, results["hackweek"].error
                assert results["uni-a-staging"].ok, results["uni-a-staging"].error
                assert (
                    results["uni-a-staging"].url == f"https://hubs.localhost:{door.https_port}/uni-a-staging"
                )
                assert (
                    results["uni-a"].url
                    == public["uni-a"]
                    == f"https://uni-a.hubs.localhost:{door.https_port}"
                )
                assert results["uni-a"].version == "5.2.1"
                # the hub saw its public name: the request came through Caddy, not to its loopback port
                assert f"uni-a.hubs.localhost:{door.https_port}" in hub_servers["uni-a"].hosts
                left = {hub: r.cert_expires_at - r.at for hub, r in results.items() if r.cert_expires_at}
                assert 4 <= left["uni-a"].days <= 5 and 89 <= left["hackweek"].days <= 90, left

                [incident] = list_incidents(store)
                assert (incident.hub, incident.kind) == ("uni-a", "certificate")
                assert f"TLS certificate of {public['uni-a']} expires in" in incident.cause, incident.cause

                # The front door down while the daemon still thinks it runs: the error names the address.
                caddy.terminate()
                caddy.wait(10)
                failed = {r.hub: r for r in await prober.probe_once()}
                assert not failed["uni-a"].ok
                assert failed["uni-a"].error.endswith(
                    f"(through the front door at 127.0.0.1:{door.https_port})"
                ), failed["uni-a"].error

                # The daemon's front door failed: hubs are probed at their internal address, which serves.
                status["state"] = "failed"
                fallback = {r.hub: r for r in await prober.probe_once()}
                assert fallback["uni-a"].ok and fallback["uni-a"].url == internal["uni-a"]
                assert {i.kind for i in list_incidents(store, open_only=True)} == {"certificate"}
            finally:
                await prober.aclose()
    finally:
        if caddy.poll() is None:
            caddy.terminate()
            caddy.wait(10)
        log.close()


# --------------------------------------------------------------------------- a real fleet: daemon, up, status


@contextlib.contextmanager
def fleet_up(root: Path, env: dict[str, str]) -> Iterator[subprocess.CompletedProcess[str]]:
    """`hubfleet up --detach` (its output for the block), then `down` and the leak check, as running_fleet."""
    try:
        yield hubfleet("up", "--detach", fleet=root, env=env, check=True)
    finally:
        hubfleet("down", fleet=root, env=env)
        leaks = kill_leftovers(root)
        remove_accounts(root)
        assert not leaks, f"processes left after down: {leaks}"


def test_daemon_probes_through_the_front_door_and_up_status_show_it(tmp_path: Path) -> None:
    keep = {"communities/uni-a/hubs/prod.yaml", "communities/uni-a/hubs/staging.yaml"}
    root = copy_demo_fleet(tmp_path / "fleet", keep=keep, front_door=True)
    env = {"HUBFLEET_PROBE_INTERVAL": "1"}
    with fleet_up(root, env) as up:
        door = daemon_status(root)["front_door"]
        assert door["state"] == "running", door
        port = load_fleet(root).settings.front_door.https_port
        public = {
            f"https://uni-a.hubs.localhost:{port}/": "uni-a",
            f"https://hubs.localhost:{port}/uni-a-staging/": "uni-a-staging",
            f"https://console.hubs.localhost:{port}/": "console",
        }
        assert door["sites"] == public

        # `up` and `status`: one block with the state, each address, the console's and the local CA
        status = hubfleet("status", fleet=root, check=True)
        for out in (up.stdout, status.stdout):
            assert "front door: running (certificates: internal)" in out, out
            assert f"  https://uni-a.hubs.localhost:{port}/ -> uni-a\n" in out
            assert f"  https://hubs.localhost:{port}/uni-a-staging/ -> uni-a-staging\n" in out
            assert f"  console: https://console.hubs.localhost:{port}/\n" in out
        ca = wait_for(lambda: daemon_status(root)["front_door"]["local_ca"])
        status = hubfleet("status", fleet=root, check=True).stdout
        assert f"  local CA: {ca} (trust it, or: curl --cacert {ca} https://" in status, status
        as_json = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
        assert as_json["front_door"]["sites"] == public and as_json["front_door"]["local_ca"] == ca

        # The daemon's prober asks Caddy, with each hub's public name: the front door's access log shows it.
        access_log = Path(door["access_log"])

        def probed_through_the_door() -> bool:
            text = access_log.read_text() if access_log.exists() else ""
            return '"host":"uni-a.hubs.localhost' in text and "/uni-a-staging/hub/health" in text

        wait_for(probed_through_the_door, timeout=30)
        with open_store(root / ".hubfleet") as store:
            assert uptime_of(store, "uni-a") and uptime_of(store, "uni-a-staging")
            # Caddy's local CA issues 12-hour certificates and renews them itself: no certificate incident
            assert list_incidents(store) == []

        # A new https_port applied by `front-door reload`: the daemon's prober follows it.
        new_port = free_ports(1)[0]
        text = (root / "fleet.yaml").read_text()
        (root / "fleet.yaml").write_text(
            re.sub(r"(?m)^  https_port: \d+$", f"  https_port: {new_port}", text)
        )
        hubfleet("front-door", "reload", fleet=root, check=True)
        assert f"https://uni-a.hubs.localhost:{new_port}/" in daemon_status(root)["front_door"]["sites"]
        wait_for(lambda: f'"host":"uni-a.hubs.localhost:{new_port}"' in access_log.read_text(), timeout=30)
        time.sleep(2.5)  # two more passes
        with open_store(root / ".hubfleet") as store:
            assert uptime_of(store, "uni-a") and uptime_of(store, "uni-a-staging")
            assert list_incidents(store) == []


def uptime_of(store, hub: str) -> bool:  # noqa: ANN001
    """The hub's latest probe sample is ok."""
    from sqlalchemy import select

    from hubfleet.store.models import ProbeSample

    with store.session() as session:
        query = select(ProbeSample.ok).where(ProbeSample.hub == hub).order_by(ProbeSample.at.desc())
        return bool(session.scalars(query).first())


def test_a_failed_front_door_is_one_line_and_hubs_are_probed_inside(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"}, front_door=True)
    port = load_fleet(root).settings.front_door.https_port
    with socket.socket() as taken:  # another program holds the front door's https port
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with fleet_up(root, {"HUBFLEET_PROBE_INTERVAL": "1"}) as up:
            door = daemon_status(root)["front_door"]
            assert door["state"] == "failed" and f"port {port}" in door["error"], door
            status = hubfleet("status", fleet=root, check=True).stdout
            for out in (up.stdout, status):
                assert "front door: failed (certificates: internal)\n" in out, out
                [error] = [line for line in out.splitlines() if line.startswith("  error: ")]
                assert f"port {port} on 127.0.0.1 is already in use" in error
                assert "hubs keep serving on their internal addresses" in error
            assert (
                json.loads(hubfleet("status", "--json", fleet=root).stdout)["front_door"]["state"] == "failed"
            )

            # the daemon probes the hub at its internal address, which serves: no incident
            with open_store(root / ".hubfleet") as store:
                wait_for(lambda: uptime_of(store, "uni-a-staging"), timeout=30)
                assert list_incidents(store) == []
            # and a one-off probe says where it asked
            [result] = json.loads(hubfleet("probe", "--json", fleet=root, check=True).stdout)["hubs"]
            assert result["ok"] and result["url"] == daemon_status(root)["hubs"]["uni-a-staging"]["url"]
