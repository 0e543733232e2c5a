"""A real OpenID Connect provider on loopback, and a browser driven with httpx, for auth tests.

The provider is `oidc-provider-mock` (PyPI): a complete OAuth 2.0 / OpenID Connect provider built on authlib
(discovery document, JWKS, authorization-code grant, signed ID tokens, userinfo). Nothing in it is replaced:
it runs as its own process (this file is its runner: `python oidc_helpers.py --port N ...`), served by
uvicorn, optionally over TLS with a certificate from a throwaway CA made here. Tests use it over HTTP only:

- clients are registered through its dynamic client registration endpoint (`POST /oauth2/clients`, RFC 7591),
  and the provider runs with registration required, so it checks the client secret and the redirect URI;
- a user's claims (email, groups, idp, eppn, ...) are stored with `PUT /users/<sub>`;
- at the authorization step the provider shows a form; the browser posts the chosen subject (`sub=`) to it,
  exactly as a person typing it would, and the provider redirects back to the client with a code.

`cilogon_paths=True` also serves CILogon's endpoint paths (`/authorize`, `/oauth2/userinfo`) so that
OAuthenticator's CILogonOAuthenticator, configured only with `cilogon_host`, finds the provider where it
would find cilogon.org.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx

from fleet_helpers import free_ports

CILOGON_PATHS = {"/authorize": "/oauth2/authorize", "/oauth2/userinfo": "/userinfo"}
"""CILogon's paths (as OAuthenticator's CILogonOAuthenticator builds them) -> the provider's own."""


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TestCA:
    """A throwaway certificate authority and a server certificate for 127.0.0.1 signed by it."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_test_ca(directory: Path) -> TestCA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubfleet test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    paths = TestCA(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    paths.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    paths.server_cert.write_bytes(cert.public_bytes(pem))
    paths.server_key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths.server_key.chmod(0o600)
    return paths


# --------------------------------------------------------------------------- the provider process


@dataclass
class Provider:
    """A running provider: its issuer URL and the CA to trust (None for plain http)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    ca_cert: Path | None = None

    @property
    def host(self) -> str:
        """host:port, as CILogonOAuthenticator's `cilogon_host` wants it."""
        return urlparse(self.url).netloc

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.verify(), timeout=30)

    def verify(self) -> ssl.SSLContext | bool:
        """What a client needs to trust this provider."""
        return ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else True

    def register_client(
        self, redirect_uris: list[str], auth_method: str = "client_secret_post"
    ) -> tuple[str, str]:
        """Dynamic client registration; returns (client_id, client_secret) issued by the provider.

        The provider then accepts only this secret, these redirect URIs and this way of sending the secret
        (OAuthenticator's default: in the token request's body)."""
        with self.client() as http:
            response = http.post(
                "/oauth2/clients",
                json={
                    "redirect_uris": redirect_uris,
                    "token_endpoint_auth_method": auth_method,
                },
            )
        response.raise_for_status()
        body = response.json()
        return body["client_id"], body["client_secret"]

    def set_user(self, sub: str, **claims: object) -> None:
        """Store a user and the claims the provider will put in its ID token and userinfo answers."""
        with self.client() as http:
            http.put(f"/users/{sub}", json=claims).raise_for_status()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def oidc_provider(
    log_dir: Path, *, tls: TestCA | None = None, cilogon_paths: bool = False, timeout: float = 30
) -> Iterator[Provider]:
    """Run the provider on a free loopback port for the block; stopped by process group afterwards."""
    (port,) = free_ports(1)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"oidc-provider-{port}.log"
    args = [sys.executable, str(Path(__file__).resolve()), "--port", str(port)]
    if tls:
        args += ["--certfile", str(tls.server_cert), "--keyfile", str(tls.server_key)]
    if cilogon_paths:
        args.append("--cilogon-paths")
    scheme = "https" if tls else "http"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    provider = Provider(f"{scheme}://127.0.0.1:{port}", process, log, tls.ca_cert if tls else None)
    try:
        _wait_ready(provider, timeout)
        yield provider
    finally:
        _stop(process)


def _wait_ready(provider: Provider, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with provider.client() as http:
        while time.monotonic() < deadline:
            if provider.process.poll() is not None:
                raise AssertionError(
                    f"OIDC provider exited {provider.process.returncode}:\n{provider.log_text()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if http.get("/.well-known/openid-configuration").status_code == 200:
                    return
            time.sleep(0.1)
    raise AssertionError(f"OIDC provider not ready within {timeout} s:\n{provider.log_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _serve(port: int, certfile: str | None, keyfile: str | None, cilogon_paths: bool) -> None:
    """The provider process: oidc-provider-mock's Flask app under uvicorn, as its own CLI runs it, plus
    TLS and CILogon's paths when asked."""
    import uvicorn
    from oidc_provider_mock import app

    if not certfile:
        os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on loopback
    flask_app = app(require_client_registration=True)
    wsgi = flask_app.wsgi_app

    def application(environ, start_response):  # noqa: ANN001, ANN202
        path = environ.get("PATH_INFO", "")
        if cilogon_paths and path in CILOGON_PATHS:
            environ["PATH_INFO"] = CILOGON_PATHS[path]
        return wsgi(environ, start_response)

    flask_app.wsgi_app = application
    uvicorn.run(
        flask_app,
        interface="wsgi",
        host="127.0.0.1",
        port=port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_level="warning",
    )


# --------------------------------------------------------------------------- the browser


def browser(hub_url: str, provider: Provider) -> httpx.Client:
    """A cookie-keeping HTTP client that trusts the provider's CA; redirects are followed by hand."""
    return httpx.Client(
        base_url=hub_url,
        verify=provider.verify(),
        follow_redirects=False,
        timeout=60,
    )


def follow(client: httpx.Client, response: httpx.Response, *, limit: int = 10) -> httpx.Response:
    """Follow redirects (any host) like a browser, keeping cookies."""
    for _ in range(limit):
        if not response.is_redirect:
            return response
        response = client.get(urljoin(str(response.url), response.headers["location"]))
    raise AssertionError(f"too many redirects, last {response.url}")


def log_in(client: httpx.Client, provider: Provider, sub: str) -> httpx.Response:
    """The whole browser login: hub /hub/oauth_login -> provider's authorize page -> the user submits the
    form as `sub` -> hub /hub/oauth_callback?code=... -> wherever the hub sends the browser next.

    Returns the hub's answer to the callback (a redirect into the hub, or its 403 page), not followed: a
    followed redirect would go on to /hub/spawn and start a server."""
    start = client.get("/hub/oauth_login")
    assert start.status_code == 302, (start.status_code, start.text[:500])
    authorize_url = start.headers["location"]
    assert authorize_url.startswith(provider.url), authorize_url
    page = client.get(authorize_url)
    assert page.status_code == 200 and 'name="sub"' in page.text, (page.status_code, page.text[:500])
    # the form posts back to the same URL (query string included), as a browser would
    action = _form_action(page.text)
    target = urljoin(authorize_url, action) if action else authorize_url
    answer = client.post(target, data={"sub": sub})
    assert answer.status_code == 302, (answer.status_code, answer.text[:500])
    callback = answer.headers["location"]
    assert urlparse(callback).path.endswith("/hub/oauth_callback") and "code=" in callback, callback
    return client.get(callback)


def _form_action(html: str) -> str:
    match = re.search(r'<form method="post"(?: action="([^"]*)")?', html)
    return unescape(match.group(1) or "") if match else ""


def wait_for_server(admin: httpx.Client, user: str, timeout: float = 90) -> dict:
    """Poll the user model (the REST API may answer 500 to a slow spawn while it goes on)."""
    deadline = time.monotonic() + timeout
    model: dict = {}
    while time.monotonic() < deadline:
        model = admin.get(f"/hub/api/users/{user}").json()
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            return server
        time.sleep(0.3)
    raise AssertionError(f"server of {user} not ready within {timeout} s: {model}")


# --------------------------------------------------------------------------- the fleet


def new_identity(path: Path) -> str:
    """A throwaway age identity file; returns its public recipient."""
    from pyrage import x25519

    key = x25519.Identity.generate()
    path.write_text(f"# test identity\n{key}\n")
    path.chmod(0o600)
    return str(key.to_public())


def main() -> None:
    parser = argparse.ArgumentParser(description="Run oidc-provider-mock for hubfleet's auth tests.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--cilogon-paths", action="store_true")
    options = parser.parse_args()
    _serve(options.port, options.certfile, options.keyfile, options.cilogon_paths)


if __name__ == "__main__":
    main()
