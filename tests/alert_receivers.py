"""Real alert receivers on loopback for tests: an SMTP server (aiosmtpd) and a webhook HTTP server.

    with smtp_server() as smtp, webhook_receiver(fail_first=2) as hook:
        fleet.yaml: smtp_host 127.0.0.1, smtp_port smtp.port, security none; webhook url hook.url
        ... smtp.messages (email.message.EmailMessage), hook.bodies (parsed JSON), hook.requests

Both run in their own threads, so they answer while the code under test blocks or runs its own loop.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from hubfleet.ports import free_port


class _Controller(Controller):
    def factory(self) -> Any:
        # AUTH without TLS is what a loopback test server does; the warning is not about the code under test.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll until predicate() is true; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --------------------------------------------------------------------------- SMTP


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None = None

    @property
    def subject(self) -> str:
        return " ".join(str(self.message["Subject"]).split())

    @property
    def body(self) -> str:
        return self.message.get_content()


@dataclass
class SMTPReceiver:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    """(username, password) of every AUTH attempt, successful or not."""

    def to(self, address: str) -> list[ReceivedMail]:
        """Messages whose envelope recipients include `address`."""
        return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]


class _Handler:
    def __init__(self, receiver: SMTPReceiver):
        self.receiver = receiver

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        message = message_from_bytes(envelope.content, policy=policy.default)
        login = session.auth_data.login.decode() if session.auth_data else None
        self.receiver.messages.append(
            ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message, login)  # type: ignore[arg-type]
        )
        return "250 OK"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost: (cert.pem, key.pem); the cert is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubfleet test SMTP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@contextmanager
def smtp_server(
    credentials: dict[str, str] | None = None,
    *,
    security: str = "none",
    cert: tuple[Path, Path] | None = None,
) -> Iterator[SMTPReceiver]:
    """An SMTP server on a free loopback port collecting every message. With `credentials`
    (username -> password), AUTH PLAIN/LOGIN is offered and required. `security`: none, starttls (STARTTLS
    offered and required) or tls (implicit TLS), with `cert` = (cert.pem, key.pem) from self_signed_cert()."""
    port = free_port()
    receiver = SMTPReceiver("127.0.0.1", port)
    kwargs: dict[str, Any] = {}
    if security != "none":
        assert cert is not None, "a TLS SMTP server needs cert=self_signed_cert(dir)"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*cert)
        if security == "starttls":
            kwargs = {"tls_context": context, "require_starttls": True}
        else:
            kwargs = {"ssl_context": context}
    if credentials is not None:

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            user, password = data.login.decode(), data.password.decode()
            receiver.logins.append((user, password))
            return AuthResult(success=credentials.get(user) == password, handled=False)

        kwargs |= {
            "authenticator": authenticator,
            "auth_required": True,
            "auth_require_tls": security == "starttls",
        }
    controller = _Controller(_Handler(receiver), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


# --------------------------------------------------------------------------- webhook


@dataclass
class WebhookReceiver:
    url: str
    fail_first: int = 0
    """Answer 500 to this many requests before answering 200."""
    delay: float = 0.0
    """Seconds to wait before answering each request (a slow channel)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request: {"path", "status", "body" (parsed JSON or None)}."""

    @property
    def bodies(self) -> list[Any]:
        """JSON bodies of the requests answered 200."""
        return [r["body"] for r in self.requests if r["status"] == 200]

    @property
    def texts(self) -> list[str]:
        return [b.get("text", "") for b in self.bodies if isinstance(b, dict)]


@contextmanager
def webhook_receiver(
    fail_first: int = 0, delay: float = 0.0, path: str = "/services/T000/B000/hook-token-123"
) -> Iterator[WebhookReceiver]:
    """A real HTTP server on a free loopback port; POSTs to any path are collected (bodies as JSON).
    `url` embeds a token-like path, as Slack webhooks do."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if receiver.delay:
                time.sleep(receiver.delay)
            with lock:
                failed_so_far = sum(1 for r in receiver.requests if r["status"] != 200)
                status = 500 if failed_so_far < receiver.fail_first else 200
                receiver.requests.append({"path": self.path, "status": status, "body": body})
            payload = b"ok" if status == 200 else b"error"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_port}{path}", fail_first, delay)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
