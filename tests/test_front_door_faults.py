"""The front door (Caddy in front of the local hubs) when things go wrong, with real processes: the port it
needs is taken, the certificate files the operator provides are used exactly (or cannot be read), the ACME
CA does not answer, a certificate is really issued over ACME, and Caddy dies under the daemon.

Each fleet is a one-hub copy of the demo fleet (uni-a-staging, served at https://DOMAIN/uni-a-staging/).
Whatever happens to the front door, the hub keeps answering on its internal address.

Names do not resolve on this machine: clients connect to 127.0.0.1:<https_port> and send the name as Host
header and SNI. The ACME test needs the ACME server to resolve the fleet's name too (HTTP-01 validation
connects to http://NAME:80/.well-known/acme-challenge/...): it runs in a private mount namespace of its own
whose /etc/hosts (a bind mount of a file the test writes) maps the name to 127.0.0.1,

    unshare --mount sh -c 'mount --bind HOSTS /etc/hosts && exec caddy run --config acme.json'

which stands in for public DNS, which this machine cannot have; nothing else on the machine sees that
/etc/hosts.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet_helpers import (
    copy_demo_fleet,
    daemon_status,
    fleet_processes,
    free_ports,
    hubfleet,
    kill_leftovers,
    new_identity,
    remove_accounts,
    wait_for,
)
from hubfleet.config.validate import load_fleet
from hubfleet.daemon.front_door import CADDY, FrontDoorError, certificate_pems, port_problem
from hubfleet.secrets.store import SecretResolver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CADDY.exists(), reason=f"no Caddy at {CADDY} (pip install caddy)"),
]

STAGING = "communities/uni-a/hubs/staging.yaml"
HUB = "uni-a-staging"
DOMAIN = "hubs.example.org"
CONSOLE_DOMAIN = "console.hubs.example.org"
INTERNAL = "  certificates:\n    internal: true\n"


# ---------------------------------------------------------------------------------------------- helpers


def door_fleet(
    dest: Path,
    certificates: str | None = None,
    *,
    http_port: int | None = None,
    https_port: int | None = None,
) -> Path:
    """A one-hub demo fleet with a front door on loopback at DOMAIN; `certificates` replaces the demo's
    `certificates: {internal: true}` block (YAML indented under front_door)."""
    root = copy_demo_fleet(dest, keep={STAGING}, front_door=True)
    fleet_yaml = root / "fleet.yaml"
    text = fleet_yaml.read_text()
    text = text.replace("domain: hubs.localhost", f"domain: {DOMAIN}")
    text = text.replace("console_domain: console.hubs.localhost", f"console_domain: {CONSOLE_DOMAIN}")
    if certificates is not None:
        assert INTERNAL in text
        text = text.replace(INTERNAL, certificates)
    if http_port is not None:
        text = re.sub(r"(?m)^  http_port: \d+$", f"  http_port: {http_port}", text)
    if https_port is not None:
        text = re.sub(r"(?m)^  https_port: \d+$", f"  https_port: {https_port}", text)
    fleet_yaml.write_text(text)
    return root


def door_ports(root: Path) -> tuple[int, int]:
    text = (root / "fleet.yaml").read_text()
    http = int(re.search(r"(?m)^  http_port: (\d+)$", text).group(1))  # type: ignore[union-attr]
    https = int(re.search(r"(?m)^  https_port: (\d+)$", text).group(1))  # type: ignore[union-attr]
    return http, https


@contextlib.contextmanager
def fleet_up(
    root: Path, env: dict[str, str] | None = None, *, keep_accounts: bool = False
) -> Iterator[subprocess.CompletedProcess[str]]:
    """`hubfleet up --detach` for the block (its result is yielded, whatever it is); `down`, a leak check
    and the fleet's accounts removed afterwards, even when the block fails. `keep_accounts` when the same
    fleet comes up again in the test: a deleted account's uid may go to another test's new account at once,
    and hubfleet rightly refuses a data directory owned by someone else's account."""
    began = time.monotonic()
    try:
        up = hubfleet("up", "--detach", fleet=root, env=env)
        print(f"up: {time.monotonic() - began:.1f} s")
        yield up
    finally:
        began = time.monotonic()
        down = hubfleet("down", fleet=root, env=env)
        print(f"down: {time.monotonic() - began:.1f} s")
        leaks = kill_leftovers(root)
        if not keep_accounts:
            remove_accounts(root)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not leaks, f"processes left after down: {leaks}"


def hub_answers_internally(root: Path) -> None:
    """The hub's own address (http://127.0.0.1:PORT/<base path>) answers /hub/health."""
    hub = daemon_status(root)["hubs"][HUB]
    assert hub["state"] == "running", hub
    assert hub["url"].startswith("http://127.0.0.1:") and hub["url"].endswith(f"/{HUB}"), hub["url"]
    assert httpx.get(f"{hub['url']}/hub/health", timeout=10, trust_env=False).status_code == 200


def through_door(https_port: int, host: str, path: str, verify: ssl.SSLContext) -> httpx.Response:
    """GET https://HOST<path> through the front door on 127.0.0.1 (HOST as Host header and SNI)."""
    with httpx.Client(verify=verify, timeout=10, trust_env=False) as client:
        return client.get(
            f"https://127.0.0.1:{https_port}{path}",
            headers={"Host": host},
            extensions={"sni_hostname": host},
        )


def presented_certificate(https_port: int, host: str) -> x509.Certificate:
    """The leaf certificate the front door presents for SNI `host` (not verified here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def caddy_log(door: dict[str, Any]) -> list[str]:
    return Path(door["log_path"]).read_text(errors="replace").splitlines()


def daemon_log(root: Path) -> str:
    return (root / ".hubfleet" / "daemon.log").read_text(errors="replace")


def add_recipient(root: Path, recipient: str) -> None:
    fleet = root / "fleet.yaml"
    text = fleet.read_text()
    assert "    email: ada@hubfleet.example\n" in text
    fleet.write_text(
        text.replace(
            "    email: ada@hubfleet.example\n",
            f"    email: ada@hubfleet.example\n    age_recipient: {recipient}\n",
            1,
        )
    )


def pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca_and_site(
    names: list[str],
) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA and a certificate (with its key) it signed for `names`, as an operator's own PKI would issue."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubfleet test operator CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    site_key = ec.generate_private_key(ec.SECP256R1())
    site = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(site_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca, site, site_key


def verify_with(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


# ---------------------------------------------------------------------------------------------- 1. port taken


def test_https_port_taken_fails_the_door_not_the_fleet(tmp_path: Path) -> None:
    """Another program holds the https_port (443 when free, as on a real server): the fleet comes up, the
    front door is `failed` with one error naming the port and the holder (this test's pid), the hub answers
    on its internal address, and `hubfleet up` and `hubfleet status` show the problem on one line (under
    a `front door: failed` heading)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            holder.bind(("127.0.0.1", 443))
            port = 443
        except OSError as exc:  # 443 taken by something else (or not root): hold a free port instead
            assert exc.errno in (errno.EADDRINUSE, errno.EACCES), exc
            port = free_ports(1)[0]
            holder.bind(("127.0.0.1", port))
        holder.listen(1)
        root = door_fleet(tmp_path / "fleet", https_port=port)
        with fleet_up(root) as up:
            assert up.returncode == 0, up.stdout + up.stderr
            door = daemon_status(root)["front_door"]
            assert door["state"] == "failed", door
            assert door["pid"] is None
            error = door["error"]
            assert "\n" not in error
            assert f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()}" in error, error
            assert "hubs keep serving on their internal addresses" in error
            assert door["sites"] == {}
            hub_answers_internally(root)
            status = hubfleet("status", fleet=root)
            assert status.returncode == 0, status.stdout + status.stderr
            for command, said in (("up", up.stdout + up.stderr), ("status", status.stdout + status.stderr)):
                lines = said.splitlines()
                assert "front door: failed (certificates: internal)" in lines, (command, said)
                problem = [line for line in lines if f"port {port}" in line]
                assert len(problem) == 1, (command, said)
                assert f"already in use by pid {os.getpid()}" in problem[0], (command, problem)
    finally:
        holder.close()


# ---------------------------------------------------------------------------------------------- 2. files


def test_operator_certificate_files(tmp_path: Path) -> None:
    """`certificates: {files: [{certificate: certs/site.pem, key: {secret: door_key}}]}` with the key a
    fleet-level secret: the front door presents exactly that certificate (its fingerprint), which verifies
    against the operator's CA for both names, and the key is in no file of the fleet. Then two faults an
    operator really hits, each in its own `up`: the certificate in DER rather than PEM (what many CAs
    deliver as .crt), with a real `up`: the front door is `failed` with one line naming the file, no PEM
    text in daemon.json or daemon.log, and the hub keeps serving; and the key file given as the certificate
    (swapped), where the daemon reads it: the message names the file and shows nothing of it."""
    names = [DOMAIN, CONSOLE_DOMAIN]
    ca, site, site_key = make_ca_and_site(names)
    ca_file = tmp_path / "operator-ca.pem"
    ca_file.write_text(pem_cert(ca))
    root = door_fleet(
        tmp_path / "fleet",
        "  certificates:\n    files:\n      - certificate: certs/site.pem\n        key: {secret: door_key}\n",
    )
    (root / "certs").mkdir()
    site_file = root / "certs" / "site.pem"
    site_file.write_text(pem_cert(site) + pem_cert(ca))  # a full chain, as operators install them
    identity = tmp_path / "ada.txt"
    add_recipient(root, new_identity(identity))
    key_text = pem_key(site_key)
    hubfleet("secrets", "set", "--fleet-level", "door_key", fleet=root, input=key_text, check=True)
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    _, https_port = door_ports(root)
    key_body = "".join(key_text.splitlines()[1:-1])

    with fleet_up(root, env, keep_accounts=True) as up:
        assert up.returncode == 0, up.stdout + up.stderr
        door = daemon_status(root)["front_door"]
        assert door["state"] == "running", door
        assert door["certificates"] == "files" and door["warnings"] == [] and door["error"] == ""
        assert door["sites"][f"https://{DOMAIN}:{https_port}/{HUB}/"] == HUB
        for name in names:
            assert fingerprint(presented_certificate(https_port, name)) == fingerprint(site), name
        health = through_door(https_port, DOMAIN, f"/{HUB}/hub/health", verify_with(ca_file))
        assert health.status_code == 200, health.text
        assert through_door(https_port, CONSOLE_DOMAIN, "/", verify_with(ca_file)).status_code < 500
        hub_answers_internally(root)
        # the key is decrypted into Caddy's memory only: in no file of the fleet (state, data, logs)
        holding = [
            str(path)
            for path in root.rglob("*")
            if path.is_file() and key_body[:40].encode() in path.read_bytes()
        ]
        assert holding == [], holding

    # DER: a binary file where a PEM chain was expected
    site_file.write_bytes(site.public_bytes(serialization.Encoding.DER))
    expect_failed_door(
        root,
        env,
        f"cannot read the front door's certificates.files[0].certificate {site_file}: not a text (PEM) file",
        key_body,
    )

    # the key file named as the certificate (swapped): PEM text, but no certificate in it; checked where
    # the daemon reads it (one more `up` of a fleet would prove nothing more and cost half a minute)
    key_file = root / "certs" / "site.key"
    key_file.write_text(key_text)
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(
        fleet_yaml.read_text().replace("certificate: certs/site.pem", "certificate: certs/site.key")
    )
    fleet = load_fleet(root)
    with pytest.raises(FrontDoorError) as swapped:
        certificate_pems(fleet, SecretResolver(fleet, identity), [DOMAIN])
    assert str(swapped.value) == (
        f"front_door certificates.files[0].certificate {key_file} is not a PEM certificate chain"
    )


def expect_failed_door(root: Path, env: dict[str, str], names: str, key_body: str) -> None:
    """`up`: the front door failed with one line holding `names`; nothing of a PEM in daemon.json and
    daemon.log; the hub answers internally."""
    with fleet_up(root, env) as up:
        assert up.returncode == 0, up.stdout + up.stderr
        status = daemon_status(root)
        door = status["front_door"]
        assert door["state"] == "failed", door
        assert names in door["error"], door["error"]
        assert "\n" not in door["error"]
        assert f"  error: {door['error']}" in up.stdout.splitlines(), up.stdout
        hub_answers_internally(root)
        for text in (json.dumps(status), daemon_log(root)):
            assert "-----BEGIN" not in text
            assert key_body[:40] not in text


# ---------------------------------------------------------------------------------------------- 3. ACME down


def test_acme_directory_that_does_not_answer(tmp_path: Path) -> None:
    """An ACME directory nobody listens at: the front door still runs (Caddy keeps trying), its status
    carries one warning naming the directory, and the hub answers on its internal address."""
    closed = free_ports(1)[0]
    directory = f"https://127.0.0.1:{closed}/directory"
    root = door_fleet(
        tmp_path / "fleet",
        f"  certificates:\n    acme:\n      directory: {directory}\n      email: ops@example.org\n",
    )
    with fleet_up(root) as up:
        assert up.returncode == 0, up.stdout + up.stderr
        door = daemon_status(root)["front_door"]
        assert door["state"] == "running", door
        assert door["pid"] and door["error"] == ""
        warnings = [w for w in door["warnings"] if directory in w]
        assert len(warnings) == 1 and "does not answer" in warnings[0], door["warnings"]
        assert directory in daemon_log(root)
        said = [line for line in up.stderr.splitlines() if directory in line]
        assert said == [f"warning: {warnings[0]}"], up.stderr
        hub_answers_internally(root)


# ---------------------------------------------------------------------------------------------- 4. ACME


def unshare_refused() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount --bind /etc/hostname /etc/hosts"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"unshare --mount refused: {probe.stderr.strip()}"


@contextlib.contextmanager
def acme_server(where: Path, names: list[str]) -> Iterator[tuple[str, Path, Path]]:
    """A second Caddy as a private ACME CA (`acme_server`, its own local CA) on 127.0.0.1:<free port>, in a
    mount namespace whose /etc/hosts sends `names` to 127.0.0.1; yields (directory URL, root, intermediate).
    Stopped by its process group."""
    where.mkdir()
    port = free_ports(1)[0]
    hosts = where / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n127.0.0.1 {' '.join(names)}\n")
    config = where / "acme.json"
    config.write_text(
        json.dumps(
            {
                "admin": {"disabled": True},
                "storage": {"module": "file_system", "root": str(where / "data")},
                "apps": {
                    "http": {
                        "servers": {
                            "acme": {
                                "listen": [f"127.0.0.1:{port}"],
                                "routes": [{"handle": [{"handler": "acme_server"}]}],
                                "tls_connection_policies": [{}],
                                "automatic_https": {"disable": True},
                            }
                        }
                    },
                    "tls": {
                        "certificates": {"automate": ["127.0.0.1"]},
                        "automation": {
                            "policies": [{"subjects": ["127.0.0.1"], "issuers": [{"module": "internal"}]}]
                        },
                    },
                    "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
                },
            }
        )
    )
    log = where / "acme.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$1" run --config "$2"',
             str(hosts), str(CADDY), str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(where), "XDG_DATA_HOME": str(where),
                 "XDG_CONFIG_HOME": str(where)},
        )  # fmt: skip
    try:
        authority = where / "data" / "pki" / "authorities" / "local"
        directory = f"https://127.0.0.1:{port}/acme/local/directory"

        def answers() -> bool:
            assert proc.poll() is None, log.read_text()
            if not (authority / "root.crt").is_file():
                return False
            with (
                contextlib.suppress(httpx.HTTPError, ssl.SSLError),
                httpx.Client(verify=verify_with(authority / "root.crt"), trust_env=False) as client,
            ):
                return "newOrder" in client.get(directory, timeout=5).text
            return False

        wait_for(answers, timeout=30)
        yield directory, authority / "root.crt", authority / "intermediate.crt"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_certificate_issued_over_acme(tmp_path: Path) -> None:
    """A private ACME CA (a second Caddy) issues the front door's certificates, validated on ports 80
    (HTTP-01) or 443 (TLS-ALPN-01) as on a real server: the hub is served over HTTPS with a certificate that
    the ACME CA's intermediate signed, which verifies against its root (fleet.yaml `acme.ca_root`), for the
    fleet's domain and the console's.

    Both ports are needed: hubfleet renders the ACME issuer with both challenges, the CA's client picks one
    at random, and the CA keeps retrying a TLS-ALPN-01 validation that finds no listener on 443."""
    if reason := unshare_refused():
        pytest.skip(reason)
    for port in (80, 443):
        if problem := port_problem("127.0.0.1", port):
            pytest.skip(
                f"ACME validation comes to ports 80 and 443, which the front door cannot have: {problem}"
            )
    https_port = 443
    names = [DOMAIN, CONSOLE_DOMAIN]
    with acme_server(tmp_path / "acme", names) as (directory, ca_root, intermediate_file):
        root = door_fleet(
            tmp_path / "fleet",
            "  certificates:\n    acme:\n"
            f"      directory: {directory}\n"
            "      email: ops@example.org\n"
            "      ca_root: certs/acme-root.pem\n",
            http_port=80,
            https_port=https_port,
        )
        (root / "certs").mkdir()
        shutil.copyfile(ca_root, root / "certs" / "acme-root.pem")
        intermediate = x509.load_pem_x509_certificate(intermediate_file.read_bytes())
        with fleet_up(root) as up:
            assert up.returncode == 0, up.stdout + up.stderr
            door = daemon_status(root)["front_door"]
            assert door["state"] == "running" and door["warnings"] == [] and door["error"] == "", door
            for name in names:

                def issued(name: str = name) -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        path = f"/{HUB}/hub/health" if name == DOMAIN else "/"
                        return through_door(https_port, name, path, verify_with(ca_root)).status_code < 500
                    return False

                wait_for(issued, timeout=90, interval=1)
                cert = presented_certificate(https_port, name)
                assert cert.issuer == intermediate.subject, (name, cert.issuer)
                sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert sans.get_values_for_type(x509.DNSName) == [name]
            health = through_door(https_port, DOMAIN, f"/{HUB}/hub/health", verify_with(ca_root))
            assert health.status_code == 200
            # obtained by the front door's Caddy: the CA validated each name at the front door's ports
            entries = [json.loads(line) for line in caddy_log(door) if line.startswith("{")]
            tried = [(e.get("identifier"), e.get("challenge_type")) for e in entries if "challenge_type" in e]
            obtained = [e for e in entries if e.get("msg") == "certificate obtained successfully"]
            assert {e.get("identifier") for e in obtained} == set(names), (obtained, tried)
            assert all(e.get("issuer", "").endswith("acme-local-directory") for e in obtained), obtained
            hub_answers_internally(root)
        assert DOMAIN not in Path("/etc/hosts").read_text()  # the name resolved inside the namespace only


# ---------------------------------------------------------------------------------------------- 5. Caddy dies


def test_caddy_killed_is_restarted(tmp_path: Path) -> None:
    """SIGKILL to Caddy: the daemon starts it again (a new process) and the hub answers through the front
    door again, with a certificate of the local CA (`certificates: {internal: true}`); daemon.json follows."""
    root = door_fleet(tmp_path / "fleet")
    _, https_port = door_ports(root)
    with fleet_up(root) as up:
        assert up.returncode == 0, up.stdout + up.stderr
        door = wait_for(lambda: (d := daemon_status(root)["front_door"])["local_ca"] and d, timeout=30)
        assert door["state"] == "running", door
        local_ca = Path(door["local_ca"])
        path = f"/{HUB}/hub/health"
        wait_for(lambda: through_door(https_port, DOMAIN, path, verify_with(local_ca)).status_code == 200, 30)
        old = door["pid"]
        assert caddy_pids(root) == [old]
        os.kill(old, signal.SIGKILL)

        def answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return through_door(https_port, DOMAIN, path, verify_with(local_ca)).status_code == 200
            return False

        wait_for(answers, timeout=30)
        new = caddy_pids(root)
        assert len(new) == 1 and new[0] != old, (old, new)
        assert "the front door (Caddy) exited with code -9; restart attempt 1" in daemon_log(root)
        hub_answers_internally(root)
        # daemon.json (and so `hubfleet status`) follows the restart
        door = wait_for(lambda: (d := daemon_status(root)["front_door"])["pid"] == new[0] and d, timeout=10)
        assert door["state"] == "running", door
        assert door["error"] == ""


def caddy_pids(root: Path) -> list[int]:
    """The fleet's Caddy processes (found by what they run; its front door is the only Caddy in it)."""
    return sorted(p.pid for p in fleet_processes(root) if Path(p.exe()).resolve() == CADDY.resolve())
