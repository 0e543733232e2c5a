"""The front door (Caddy run by the daemon) as people reach it: real hubs, real Caddy, real TLS, no mocks.

One demo-fleet copy with the front door on two free loopback ports: uni-a-staging (dummy login) at
https://hubs.localhost:PORT/uni-a-staging/, uni-a (native login) at https://uni-a.hubs.localhost:PORT/ and the
console at https://console.hubs.localhost:PORT/. Names do not resolve here, so every connection goes to
127.0.0.1 with the name in the Host header and in SNI, and certificates are verified against the fleet's local
CA for that name, as a browser that trusts the CA would. Covered: routing by name and path, redirects (HTTP to
HTTPS, /hub to /hub/), HSTS; sign-in through the login form up to the user's JupyterLab; a kernel's websocket
that stays open while a hub is added and removed (a Caddy reload, not a restart); the console without its
/metrics; an access log (and Caddy's own log) without tokens, cookies or Authorization headers; and Debian's
Chromium (driven by Playwright, skipped without it) signing in at the public address and running a cell.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import socket
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets.exceptions
import websockets.sync.client
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from console_helpers import write_accounts
from fleet_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DEMO,
    alive,
    copy_demo_fleet,
    daemon_status,
    free_ports,
    hubfleet,
    press_start,
    running_fleet,
    wait_for,
)
from hubfleet.config.validate import load_fleet

pytestmark = pytest.mark.integration

HUBS = {"communities/uni-a/hubs/staging.yaml", "communities/uni-a/hubs/prod.yaml"}
PATH_HUB = "uni-a-staging"  # dummy login, served at https://hubs.localhost:PORT/uni-a-staging/
NAMED_HUB = "uni-a"  # native login, served at https://uni-a.hubs.localhost:PORT/
FLEET_DOMAIN = "hubs.localhost"
NAMED_DOMAIN = "uni-a.hubs.localhost"
CONSOLE_DOMAIN = "console.hubs.localhost"
ADDED_HUB = "uni-a-extra"
ADDED_DOMAIN = "extra.hubs.localhost"
ADDED_HUB_FILE = """\
name: uni-a-extra
display_name: University A (extra)
community: uni-a
cluster: local
stage: staging
port: {port}
domain: extra.hubs.localhost
auth:
  type: dummy
  password: {password}
  admin_users: [grace]
"""
NO_HUB = "No hub is served at this address."
CONSOLE_PASSWORD = "a-long-console-password-7"
BROWSER_USER = "carol"  # nobody else in this module signs in as carol


def dummy_password() -> str:
    """The demo staging hub's shared password, from its hub file (as the demo's README tells users)."""
    text = (DEMO / "communities/uni-a/hubs/staging.yaml").read_text()
    found = re.search(r"(?m)^  password: (\S+)$", text)
    assert found, "the demo staging hub has no dummy password"
    return found.group(1)


class DoorTransport(httpx.BaseTransport):
    """Sends every request to 127.0.0.1 (names do not resolve here) with the URL's name as Host header and as
    SNI, verifying the certificate for that name against `context`; one connection pool per name, so that a
    connection (and the certificate checked on it) is never reused for another name."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.pools: dict[tuple[str, str], httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host, scheme = request.url.host, request.url.scheme
        pool = self.pools.setdefault((scheme, host), httpx.HTTPTransport(verify=self.context))
        extensions = dict(request.extensions)
        if scheme == "https":
            extensions["sni_hostname"] = host
        # the Host header httpx set from the URL (name and port) stays; only the address changes
        sent = httpx.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1"),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )
        return pool.handle_request(sent)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


@dataclass
class Door:
    """The running fleet and its front door."""

    root: Path
    http_port: int
    https_port: int
    ca_file: Path
    console: str
    """The console's loopback address (http://127.0.0.1:PORT)."""
    console_token: str
    """An operator's console API token (for /metrics)."""
    caddy_pid: int
    clients: list[httpx.Client] = field(default_factory=list)

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.https_port}{path}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, **kwargs: Any) -> httpx.Client:
        """A browser-like client (a cookie jar) that trusts only the fleet's local CA."""
        client = httpx.Client(transport=DoorTransport(self.context()), timeout=30, **kwargs)
        self.clients.append(client)
        return client

    def status(self) -> dict[str, Any]:
        return daemon_status(self.root)["front_door"]


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    root = copy_demo_fleet(tmp_path_factory.mktemp("door") / "demo", keep=HUBS, front_door=True)
    write_accounts(root, {"ops": "operator"})
    # the password first: setting one revokes the account's API tokens
    hubfleet("console-password", "ops", "--stdin", fleet=root, input=CONSOLE_PASSWORD + "\n", check=True)
    token = hubfleet("console-token", "create", "ops", fleet=root, check=True).stdout.strip()
    settings = load_fleet(root).settings.front_door
    assert settings is not None and settings.address == "127.0.0.1"
    ports = (settings.http_port, settings.https_port)
    caddy_pid = 0
    started = time.monotonic()
    try:
        with running_fleet(root):
            print(f"fleet up in {time.monotonic() - started:.1f} s")
            status = daemon_status(root)
            front = status["front_door"]
            assert front["state"] == "running" and front["error"] == "", front
            caddy_pid = front["pid"]
            # the local CA's root (for browsers and curl to trust) is named by the time `up` returns
            assert front["local_ca"] and Path(front["local_ca"]).read_text().startswith("-----BEGIN CERT")
            found = Door(root, *ports, Path(front["local_ca"]), status["console"], token, caddy_pid)
            try:
                yield found
            finally:
                for client in found.clients:
                    client.close()
    finally:
        # `down` (and the leak check of running_fleet) ran: Caddy is gone and its ports are free again
        if caddy_pid:
            assert not gone_or_alive(caddy_pid), f"Caddy (pid {caddy_pid}) still runs after down"
        for port in ports:
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers after down"


def gone_or_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie does not)."""
    try:
        return alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def fetch(door: Door, host: str, path: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(transport=DoorTransport(door.context()), timeout=30) as client:
        return client.get(door.url(host, path), **kwargs)


def refused(door: Door, host: str, path: str = "/") -> str:
    """How the front door turns away a name it does not serve: a TLS failure (no certificate) or 404."""
    try:
        response = fetch(door, host, path)
    except httpx.ConnectError as exc:  # the TLS handshake fails: Caddy has no certificate for the name
        return f"TLS: {exc}"
    assert response.status_code == 404 and NO_HUB in response.text, response.text[:300]
    return "404"


def raw_get(door: Door, host: str, target: str, headers: str = "", sni: str = "") -> str:
    """The status line of one request with `target` sent as given (no client-side normalization); the TLS
    name is `host` unless `sni` says otherwise."""
    with door.context().wrap_socket(
        socket.create_connection(("127.0.0.1", door.https_port), timeout=10), server_hostname=sni or host
    ) as tls:
        tls.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def peer_names(door: Door, host: str) -> list[str]:
    """The DNS names of the certificate the front door presents for `host` (verified against the local CA)."""
    with door.context().wrap_socket(
        socket.create_connection(("127.0.0.1", door.https_port), timeout=10), server_hostname=host
    ) as tls:
        cert = tls.getpeercert()
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


# --------------------------------------------------------------------------- sign-in through the form


def post_login(client: httpx.Client, base: str, username: str, password: str) -> httpx.Response:
    """GET the login page, then POST its form with the page's _xsrf value and the cookies, as a browser."""
    page = client.get(f"{base}/hub/login")
    assert page.status_code == 200, page.text[:500]
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]*)"', page.text)
    assert xsrf, "no _xsrf field on the login page"
    action = re.search(r'<form action="([^"?]*)', page.text)
    assert action and action.group(1) == f"{httpx.URL(base).path}/hub/login", "the form posts elsewhere"
    return client.post(
        f"{base}/hub/login",
        data={"username": username, "password": password, "_xsrf": html.unescape(xsrf.group(1))},
    )


def open_lab(client: httpx.Client, base: str, username: str, timeout: float = 120) -> httpx.Response:
    """Start the server as the home page's button does and wait until the user's JupyterLab page opens."""
    spawn = client.get(f"{base}/hub/spawn", follow_redirects=True)
    assert spawn.status_code == 200, spawn.text[:500]
    press_start(client, spawn)  # the demo's uni-a hubs offer Python and R: keep Python

    def lab() -> httpx.Response | None:
        page = client.get(f"{base}/user/{username}/lab", follow_redirects=True)
        return page if page.status_code == 200 and page.url.path.endswith(f"/user/{username}/lab") else None

    return wait_for(lab, timeout=timeout, interval=1)


# --------------------------------------------------------------------------- a kernel's websocket


@dataclass
class KernelSocket:
    """A kernel of a user's server, its channels websocket opened through the front door."""

    ws: websockets.sync.client.ClientConnection
    kernel_id: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex)

    def execute(self, code: str, timeout: float = 60) -> tuple[str, dict[str, Any]]:
        """Run `code`: (its stdout, the execute_reply's content)."""
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "", "session": self.session,
                  "version": "5.3", "date": ""}  # fmt: skip
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        self.ws.send(json.dumps({**message, "channel": "shell"}))
        stdout, reply, idle = "", None, False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:  # the reply (shell) and the last output before idle (iopub)
            if time.monotonic() > deadline:
                raise AssertionError(f"no execute_reply to {code!r} within {timeout} s")
            answer = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if answer.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = answer["msg_type"], answer["content"]
            if kind == "stream" and body["name"] == "stdout":
                stdout += body["text"]
            elif kind == "execute_reply":
                reply = body
            elif kind == "status" and body["execution_state"] == "idle":
                idle = True
        return stdout, reply


def channels_url(door: Door, username: str, kernel_id: str) -> str:
    return (
        f"wss://{FLEET_DOMAIN}:{door.https_port}/{PATH_HUB}/user/{username}/api/kernels/{kernel_id}/channels"
    )


def open_channels(door: Door, url: str, **kwargs: Any) -> websockets.sync.client.ClientConnection:
    return websockets.sync.client.connect(
        url,
        sock=socket.create_connection(("127.0.0.1", door.https_port), timeout=10),
        ssl=door.context(),
        server_hostname=FLEET_DOMAIN,
        proxy=None,
        open_timeout=30,
        **kwargs,
    )


@pytest.fixture(scope="module")
def kernel(door: Door) -> Iterator[KernelSocket]:
    """bob signs in through the form on the path hub, his server starts, a kernel is made through the front
    door with his cookies, and its channels websocket is opened through the front door (kept open for the
    module: the hub-added test proves it survives Caddy's reload)."""
    base = door.url(FLEET_DOMAIN, f"/{PATH_HUB}").rstrip("/")
    bob = door.client()
    assert post_login(bob, base, "bob", dummy_password()).status_code == 302
    open_lab(bob, base, "bob")
    server = f"/{PATH_HUB}/user/bob/"
    xsrf = next(c.value for c in bob.cookies.jar if c.name == "_xsrf" and c.path == server)
    made = bob.post(f"{base}/user/bob/api/kernels", json={"name": "python3"}, headers={"X-XSRFToken": xsrf})
    assert made.status_code == 201, made.text[:500]
    kernel_id = made.json()["id"]
    # the browser's cookies for the server's path, and its Origin: the page it runs in
    cookies = "; ".join(f"{c.name}={c.value}" for c in bob.cookies.jar if server.startswith(c.path))
    with open_channels(
        door,
        channels_url(door, "bob", kernel_id),
        additional_headers={"Cookie": cookies},
        origin=door.url(FLEET_DOMAIN, "").rstrip("/"),
    ) as ws:
        yield KernelSocket(ws, kernel_id)


# --------------------------------------------------------------------------- tests


def test_hubs_answer_by_name_over_verified_https_with_redirects_and_hsts(door: Door) -> None:
    origin = f"https://{{}}:{door.https_port}/"
    assert door.status()["sites"] == {
        origin.format(FLEET_DOMAIN) + f"{PATH_HUB}/": PATH_HUB,
        origin.format(NAMED_DOMAIN): NAMED_HUB,
        origin.format(CONSOLE_DOMAIN): "console",
    }
    # each name gets a certificate for that name from the local CA (verified: the context trusts only it)
    for name in (FLEET_DOMAIN, NAMED_DOMAIN, CONSOLE_DOMAIN):
        assert peer_names(door, name) == [name]
    plain = socket.create_connection(("127.0.0.1", door.https_port), timeout=10)
    with plain, pytest.raises(ssl.SSLCertVerificationError):  # without the local CA nothing is trusted
        ssl.create_default_context().wrap_socket(plain, server_hostname=NAMED_DOMAIN)

    # the hub at its own name: uni-a's native login page (it offers sign-up), with HSTS
    named = fetch(door, NAMED_DOMAIN, "/hub/health")
    assert named.status_code == 200
    assert named.headers["strict-transport-security"] == "max-age=31536000"
    login = fetch(door, NAMED_DOMAIN, "/hub/login")
    assert login.status_code == 200 and 'href="/hub/signup"' in login.text
    # the hub at a path of the fleet's domain: the dummy hub's pages under /uni-a-staging/
    health = fetch(door, FLEET_DOMAIN, f"/{PATH_HUB}/hub/health")
    assert health.status_code == 200 and health.headers["strict-transport-security"] == "max-age=31536000"
    staging_login = fetch(door, FLEET_DOMAIN, f"/{PATH_HUB}/hub/login")
    assert f'action="/{PATH_HUB}/hub/login' in staging_login.text and "/hub/signup" not in staging_login.text
    bare = fetch(door, FLEET_DOMAIN, f"/{PATH_HUB}")
    assert bare.status_code in (301, 308) and bare.headers["location"] == f"/{PATH_HUB}/"
    # what the fleet's domain does not serve, and a name the front door does not know
    for path in ("/", "/uni-a/hub/health", f"/{PATH_HUB}x/hub/health"):
        nothing = fetch(door, FLEET_DOMAIN, path)
        assert nothing.status_code == 404 and NO_HUB in nothing.text, path
    print("unknown name:", refused(door, "unknown.hubs.localhost"))
    # an unknown Host over a connection made for a served name (SNI) gets nothing either
    assert " 404 " in raw_get(door, "evil.example", f"/{PATH_HUB}/hub/health", sni=FLEET_DOMAIN)
    assert " 200 " in raw_get(door, FLEET_DOMAIN, f"/{PATH_HUB}/hub/health")

    # plain HTTP redirects (308: the method and body stay) to HTTPS on the https port; a browser follows it
    with httpx.Client(transport=DoorTransport(door.context()), timeout=30) as browser:
        plain = browser.get(f"http://{FLEET_DOMAIN}:{door.http_port}/{PATH_HUB}/hub/health?probe=1")
        assert plain.status_code == 308
        assert plain.headers["location"] == door.url(FLEET_DOMAIN, f"/{PATH_HUB}/hub/health?probe=1")
        assert "strict-transport-security" not in plain.headers  # HSTS means something over HTTPS only
        landed = browser.get(f"http://{NAMED_DOMAIN}:{door.http_port}/hub/health", follow_redirects=True)
        assert landed.status_code == 200 and str(landed.url) == door.url(NAMED_DOMAIN, "/hub/health")


def test_sign_in_through_the_login_form_lands_on_the_users_lab(door: Door) -> None:
    base = door.url(FLEET_DOMAIN, f"/{PATH_HUB}").rstrip("/")
    alice = door.client()
    # signed out, the hub's pages lead to its login page, at the front door's address
    start = alice.get(f"{base}/hub/", follow_redirects=True)
    assert start.status_code == 200 and start.url.path == f"/{PATH_HUB}/hub/login", start.url
    wrong = post_login(alice, base, "alice", "not-the-password")
    assert wrong.status_code == 403 and "Invalid username or password" in wrong.text
    right = post_login(alice, base, "alice", dummy_password())
    assert right.status_code == 302, right.text[:500]
    assert right.headers["location"].startswith(f"/{PATH_HUB}/hub/"), right.headers
    assert any(c.name == "jupyterhub-hub-login" and c.domain == FLEET_DOMAIN for c in alice.cookies.jar)
    # the hub knows it was reached over https (its proxy passes the front door's X-Forwarded-Proto on)
    assert all(c.secure for c in alice.cookies.jar if c.name.startswith("jupyterhub-")), alice.cookies.jar

    started = time.monotonic()
    lab = open_lab(alice, base, "alice")
    print(f"alice's server started and JupyterLab opened in {time.monotonic() - started:.1f} s")
    assert str(lab.url) == f"{base}/user/alice/lab"
    assert f"/{PATH_HUB}/user/alice/" in lab.text and "JupyterLab" in lab.text
    # the whole way (spawn, OAuth hand-over, callback) stayed at the front door's address: no redirect to
    # the hub's loopback port or to plain HTTP
    for step in lab.history:
        assert str(step.url).startswith(f"{base}/"), step.url
        location = step.headers.get("location", "")
        assert not location.startswith(("http:", "https://127.0.0.1")), location
    assert {c.name for c in alice.cookies.jar} >= {"jupyterhub-hub-login", "jupyterhub-user-alice"}


def test_kernel_websocket_through_the_front_door(door: Door, kernel: KernelSocket) -> None:
    stdout, reply = kernel.execute("x = 6 * 7\nprint(x)")
    assert reply["status"] == "ok" and stdout == "42\n"
    stdout, reply = kernel.execute("import getpass; print(getpass.getuser())")
    assert reply["status"] == "ok" and stdout.strip().startswith("hfu-"), stdout  # bob's own OS account
    # the same websocket without bob's cookies is refused by his server (through the front door)
    with (
        pytest.raises(websockets.exceptions.InvalidStatus) as refused_socket,
        open_channels(door, channels_url(door, "bob", kernel.kernel_id)),
    ):
        pass
    assert refused_socket.value.response.status_code in (302, 401, 403)


def test_hub_added_and_removed_while_a_kernel_websocket_stays_open(door: Door, kernel: KernelSocket) -> None:
    stdout, _ = kernel.execute("x = 100\nprint(x)")
    assert stdout == "100\n"
    connection = kernel.ws.socket.getsockname()
    hub_pids = {name: hub["pid"] for name, hub in daemon_status(door.root)["hubs"].items()}
    added = door.root / "communities/uni-a/hubs/extra.yaml"
    added.write_text(ADDED_HUB_FILE.format(port=free_ports(1)[0], password=dummy_password()))

    started = time.monotonic()
    result = hubfleet("deploy", "--json", fleet=door.root, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["deployed"] == [ADDED_HUB]
    site = door.url(ADDED_DOMAIN)
    wait_for(lambda: door.status()["sites"].get(site) == ADDED_HUB, timeout=30)

    def answers() -> httpx.Response | None:
        try:
            response = fetch(door, ADDED_DOMAIN, "/hub/health")
        except httpx.ConnectError:  # its certificate is being issued
            return None
        return response if response.status_code == 200 else None

    wait_for(answers, timeout=30)
    print(f"hub added and answering by name in {time.monotonic() - started:.1f} s")
    assert peer_names(door, ADDED_DOMAIN) == [ADDED_DOMAIN]
    assert 'action="/hub/login' in fetch(door, ADDED_DOMAIN, "/hub/login").text
    # a reload, not a restart: the same Caddy, the other hubs untouched, and bob's websocket still runs
    assert door.status()["pid"] == door.caddy_pid
    assert hub_pids == {n: h["pid"] for n, h in daemon_status(door.root)["hubs"].items() if n != ADDED_HUB}
    stdout, reply = kernel.execute("x += 1\nprint(x)")
    assert reply["status"] == "ok" and stdout == "101\n"
    assert kernel.ws.socket.getsockname() == connection

    added.unlink()
    started = time.monotonic()
    result = hubfleet("deploy", "--json", fleet=door.root, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["removed"] == [ADDED_HUB]
    wait_for(lambda: site not in door.status()["sites"], timeout=30)
    print(f"hub removed in {time.monotonic() - started:.1f} s; its name now: {refused(door, ADDED_DOMAIN)}")
    assert fetch(door, FLEET_DOMAIN, f"/{PATH_HUB}/hub/health").status_code == 200
    stdout, reply = kernel.execute("x += 1\nprint(x)")
    assert reply["status"] == "ok" and stdout == "102\n"
    assert kernel.ws.socket.getsockname() == connection
    assert door.status()["pid"] == door.caddy_pid


def test_console_through_the_front_door_without_its_metrics(door: Door) -> None:
    auth = {"Authorization": f"Bearer {door.console_token}"}
    with httpx.Client(transport=DoorTransport(door.context()), timeout=30) as browser:
        home = browser.get(door.url(CONSOLE_DOMAIN))
        assert home.status_code in (302, 303, 307) and home.headers["location"].startswith("/login")
        login = browser.get(door.url(CONSOLE_DOMAIN), follow_redirects=True)
        assert login.status_code == 200 and login.url.path == "/login" and "password" in login.text
        assert login.headers["strict-transport-security"] == "max-age=31536000"
        # the operator signs in through the console's form at its public name: a __Host- session cookie,
        # Secure, as the console is served over HTTPS
        csrf = re.search(
            r'name="login_csrf"[^>]*value="([^"]*)"|value="([^"]*)"[^>]*name="login_csrf"', login.text
        )
        assert csrf, login.text[:1000]
        form = {
            "username": "ops",
            "password": CONSOLE_PASSWORD,
            "login_csrf": html.unescape(csrf[1] or csrf[2]),
        }
        signed_in = browser.post(door.url(CONSOLE_DOMAIN, "/login"), data={**form, "next": "/"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/", signed_in.text[:500]
        session = next(c for c in browser.cookies.jar if c.name == "__Host-hubfleet_session")
        assert session.secure and session.domain == CONSOLE_DOMAIN
        overview = browser.get(door.url(CONSOLE_DOMAIN))
        assert overview.status_code == 200 and PATH_HUB in overview.text and NAMED_HUB in overview.text
        hidden = browser.get(door.url(CONSOLE_DOMAIN, "/metrics"), headers=auth)
        assert hidden.status_code == 404 and NO_HUB in hidden.text and "hubfleet_" not in hidden.text
    # nor by any spelling of the path that the console would route to /metrics
    for target in ("/metrics/", "/metrics?format=text", "//metrics", "/./metrics", "/x/../metrics",
                   "/%6detrics", "/Metrics"):  # fmt: skip
        line = raw_get(door, CONSOLE_DOMAIN, target, f"Authorization: Bearer {door.console_token}\r\n")
        assert " 404 " in line, (target, line)
    # on loopback, for Prometheus, /metrics is there (with an operator's token)
    metrics = httpx.get(f"{door.console}/metrics", headers=auth, timeout=30)
    assert metrics.status_code == 200 and "hubfleet_hub_info" in metrics.text


def proxy_down_answer(door: Door, path: str, headers: dict[str, str]) -> int:
    """What the front door answers for the named hub right after its configurable-http-proxy was killed
    (JupyterHub starts a new one within seconds: a few tries in case it was quicker than this request)."""
    status = 0
    for _ in range(3):
        hub = psutil.Process(daemon_status(door.root)["hubs"][NAMED_HUB]["pid"])
        chp = wait_for(
            lambda hub=hub: next(
                (p for p in hub.children() if "configurable-http-proxy" in " ".join(p.cmdline())), None
            ),
            timeout=30,
        )
        chp.kill()
        chp.wait(10)
        status = fetch(door, NAMED_DOMAIN, path, headers=headers).status_code
        if status == 502:
            break
    return status


def test_logs_hold_requests_but_no_credentials(door: Door) -> None:
    secrets = ["SECRETVALUE123", "OTHERSECRET456", "COOKIESECRET789", "OAUTHCODE321"]
    marker = f"door-log-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"token {secrets[1]}", "Cookie": f"jupyterhub-session-id={secrets[2]}"}
    query = f"?token={secrets[0]}&code={secrets[3]}&marker={marker}"
    assert fetch(door, FLEET_DOMAIN, f"/{PATH_HUB}/hub/health{query}", headers=headers).status_code == 200
    assert fetch(door, NAMED_DOMAIN, f"/hub/api/users{query}", headers=headers).status_code == 403
    # a request the hub cannot answer (its proxy just died): Caddy logs an error entry with the request
    assert proxy_down_answer(door, f"/hub/api/users{query}", headers) == 502

    access_log = Path(door.status()["access_log"])
    mode = access_log.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600 and access_log.stat().st_uid != 0  # the door's account's alone

    def logged() -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in access_log.read_text().splitlines()]
        return [e for e in entries if marker in e["request"]["uri"]]

    entries = wait_for(lambda: len(found := logged()) >= 3 and found, timeout=10)
    assert [(e["request"]["uri"].split("?")[0], e["status"]) for e in entries[:2]] == [
        (f"/{PATH_HUB}/hub/health", 200),
        ("/hub/api/users", 403),
    ]
    assert entries[-1]["request"]["uri"].startswith("/hub/api/users?") and entries[-1]["status"] == 502
    assert all(e["request"]["uri"].endswith(f"?marker={marker}") for e in entries)
    assert all("headers" not in e["request"] and "resp_headers" not in e for e in entries)
    text = access_log.read_text()
    caddy_log = Path(door.status()["log_path"]).read_text()
    assert marker in caddy_log  # the 502's error entry, without the credentials
    for secret in secrets:
        assert secret not in text, f"{secret} in the access log"
        assert secret not in caddy_log, f"{secret} in Caddy's log"
    # the hub brings its proxy back (JupyterHub checks it), and the front door serves it again
    wait_for(lambda: fetch(door, NAMED_DOMAIN, "/hub/health").status_code == 200, timeout=60, interval=1)


# --------------------------------------------------------------------------- a real browser


def door_spki_sha256(door: Door, host: str) -> str:
    """The base64 SHA-256 of the SubjectPublicKeyInfo of the certificate the front door presents for `host`,
    verified against the fleet's local CA (the format of Chromium's --ignore-certificate-errors-spki-list)."""
    with door.context().wrap_socket(
        socket.create_connection(("127.0.0.1", door.https_port), timeout=10), server_hostname=host
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    key = x509.load_der_x509_certificate(der).public_key()
    return base64.b64encode(
        hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()
    ).decode()


def test_a_browser_signs_in_and_runs_code_through_the_front_door(door: Door, tmp_path: Path) -> None:
    """Chromium, trusting only the front door's certificate for the name (checked against the fleet's local
    CA), opens the dummy hub's public address, signs in through the form, waits for JupyterLab and runs a
    cell: the page's requests and its kernel websocket all go through the front door over HTTPS (never plain
    HTTP, never a loopback port)."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (scripts/install-debian-deps.sh)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    started = time.monotonic()
    origin = door.url(FLEET_DOMAIN, "").rstrip("/")
    start_url = f"{origin}/{PATH_HUB}/"
    lab_url = f"{origin}/{PATH_HUB}/user/{BROWSER_USER}/lab"
    # Chromium accepts a certificate whose chain holds a key of this list (honoured only with a
    # user-data-dir): the key of the certificate the local CA issued for the name, checked against that CA
    # here. (The CA's root is no use in the list: the front door does not send it, and Chromium hashes the
    # chain it was sent.)
    trusted = door_spki_sha256(door, FLEET_DOMAIN)
    requests: list[str] = []
    sockets: list[str] = []
    with sync_api.sync_playwright() as p:
        # without the local CA's key, Chromium refuses the front door's certificate: it is verified
        untrusting = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            with pytest.raises(sync_api.Error, match="ERR_CERT_AUTHORITY_INVALID"):
                untrusting.new_page().goto(start_url)
        finally:
            untrusting.close()

        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={trusted}"],
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(30_000)
        context.on("request", lambda request: requests.append(request.url))
        page = context.pages[0] if context.pages else context.new_page()
        failed_sockets: list[str] = []

        def opened(ws: Any) -> None:
            sockets.append(ws.url)
            ws.on("socketerror", lambda error: failed_sockets.append(f"{error}: {ws.url}"))

        page.on("websocket", opened)
        try:
            page.goto(start_url)
            page.wait_for_url(re.compile(re.escape(f"{origin}/{PATH_HUB}/hub/login")))
            page.locator("#username_input").fill(BROWSER_USER)
            page.locator("#password_input").fill(dummy_password())
            page.locator("#login_submit").click()
            # the hub offers Python and R (the demo's uni-a hubs): Python is preselected; press Start
            page.wait_for_url(re.compile(re.escape(f"{origin}/{PATH_HUB}/hub/spawn")))
            page.locator('#spawn_form [type="submit"]').click()
            # the hub spawns carol's server (its progress page) and sends the browser on to JupyterLab
            page.wait_for_url(re.compile(re.escape(lab_url)), timeout=90_000)
            print(f"signed in, JupyterLab at {page.url} after {time.monotonic() - started:.1f} s")
            # a new notebook from the launcher, as a person would, then one cell run on its kernel
            page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
            # the kernel's state comes over its websocket: Idle once connected (a cell run before may not run)
            page.get_by_text(re.compile(r"ipykernel\) \| Idle")).wait_for(timeout=60_000)
            cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
            cell.click()
            page.keyboard.type("print(6*7)")
            page.keyboard.press("Shift+Enter")
            page.locator(".jp-OutputArea-output").filter(has_text="42").first.wait_for(timeout=60_000)
            print(f"42 in the output area after {time.monotonic() - started:.1f} s")
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            context.close()

    # the kernel's websocket went through the front door, by name, over TLS
    channels = re.compile(
        re.escape(f"wss://{FLEET_DOMAIN}:{door.https_port}/{PATH_HUB}/user/{BROWSER_USER}/api/kernels/")
        + r"[0-9a-f-]+/channels"
    )
    assert any(channels.match(url) for url in sockets), sockets
    # JupyterLab's first try fails in Chromium ("Sent non-empty 'Sec-WebSocket-Protocol' header but no
    # response was received": the user's server answers 101 without the kernel subprotocol JupyterLab offers,
    # on its loopback port as well, without the front door) and JupyterLab tries again; one try must connect
    channel_failures = [f for f in failed_sockets if "/channels" in f]
    assert len(channel_failures) < len([u for u in sockets if channels.match(u)]), failed_sockets
    print("websocket failures:", failed_sockets)
    # and so did every request: HTTPS to the front door's name and port, nothing to plain HTTP or loopback
    hub_port = load_fleet(door.root).hubs[PATH_HUB].port
    elsewhere = [
        u
        for u in requests + sockets
        if not u.startswith((f"{origin}/", f"wss://{FLEET_DOMAIN}:{door.https_port}/"))
    ]
    assert not [u for u in elsewhere if not u.startswith(("data:", "blob:"))], elsewhere
    assert not [u for u in requests if u.startswith("http:") or "127.0.0.1" in u or f":{hub_port}/" in u]
    print(f"{len(requests)} requests and {len(sockets)} websockets, all through the front door; "
          f"{time.monotonic() - started:.1f} s in all")  # fmt: skip


def test_the_synthetic_check_goes_through_the_front_door(door: Door) -> None:
    """`hubfleet check` (and so every deploy's gate) signs in, starts a server and runs code on a kernel at
    the hub's public name through Caddy, as the hub's users do: the access log holds its kernel websocket."""
    check = hubfleet("check", NAMED_HUB, fleet=door.root, timeout=240)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"at https://{NAMED_DOMAIN}:{door.https_port} " in check.stdout, check.stdout
    assert "signed in through the login form" in check.stdout
    entries = [json.loads(line) for line in Path(door.status()["access_log"]).read_text().splitlines()]
    channels = [
        e
        for e in entries
        if e["request"]["host"] == f"{NAMED_DOMAIN}:{door.https_port}"
        and e["request"]["uri"].startswith("/user/hubfleet-check/api/kernels/")
        and "/channels" in e["request"]["uri"]
    ]
    assert channels and all(e["status"] == 101 for e in channels), channels
