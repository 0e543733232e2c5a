"""What every console route shares: the app's state, templates, who is asking, CSRF checks.

Browsers authenticate with a session cookie (HttpOnly, SameSite=Lax, Secure behind https); scripts with
`Authorization: Bearer hf_...`. A request that changes something with the cookie must carry the
session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`); bearer tokens need none, as
browsers never attach them on their own."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.secret_refs import SecretRef
from hubfleet.console import accounts
from hubfleet.console.access import Principal, principal_for
from hubfleet.console.data.source import ConsoleSource
from hubfleet.store.api import Store

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
SESSION_COOKIE = "hubfleet_session"
SECURE_SESSION_COOKIE = "__Host-hubfleet_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


@dataclass
class ConsoleState:
    """app.state.console: everything the routes read."""

    source: ConsoleSource
    public_url: str | None = None
    """`hubfleet console --public-url`, else fleet.yaml console.public_url."""
    secrets: Any = None
    """A SecretResolver for fleet-level secrets (the OIDC client secret); made on first use when None."""
    pending_oidc: dict[str, Any] = field(default_factory=dict)
    """OIDC sign-ins under way: state -> what the callback needs (verifier, nonce, next URL)."""
    checks_running: set[str] = field(default_factory=set)
    """Hubs whose synthetic check the console is running (one at a time per hub)."""

    def resolve_secret(self, ref: SecretRef) -> str:
        if self.secrets is None:
            from hubfleet.secrets.store import SecretResolver

            self.secrets = SecretResolver(self.fleet)
        value: str = self.secrets.fleet_value(ref.secret)
        return value

    @property
    def store(self) -> Store:
        return self.source.store

    @property
    def fleet(self) -> FleetConfig:
        return self.source.fleet

    @property
    def secure_cookies(self) -> bool:
        url = self.public_url or self.fleet.console_url()
        return bool(url and url.startswith("https://"))

    @property
    def cookie_name(self) -> str:
        return SECURE_SESSION_COOKIE if self.secure_cookies else SESSION_COOKIE


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


class SignInRequired(Exception):
    """Raised by page routes; the app turns it into a redirect to /login?next=<the page>."""

    def __init__(self, next_url: str):
        self.next_url = next_url


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def identify(request: Request) -> Principal | None:
    """The caller, from a bearer token or the session cookie; None when neither is valid.

    The account is looked up in fleet.yaml on every request, so removing it there locks it out at once."""
    cached = getattr(request.state, "principal", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    state = console_state(request)
    principal: Principal | None = None
    token = _bearer(request)
    if token is not None:
        info = accounts.lookup_token(state.store, token)
        if info is not None:
            principal = principal_for(state.fleet, info.username, "token")
    else:
        session_id = request.cookies.get(state.cookie_name)
        if session_id:
            session = accounts.lookup_session(state.store, session_id)
            if session is not None:
                principal = principal_for(state.fleet, session.username, "session", session.csrf_token)
    request.state.principal = principal
    return principal


def _check_csrf_header(request: Request, principal: Principal) -> None:
    if request.method in SAFE_METHODS or principal.via != "session":
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not (principal.csrf_token and hmac.compare_digest(sent, principal.csrf_token)):
        raise HTTPException(status_code=403, detail="missing or wrong X-CSRF-Token header; reload the page")


async def api_principal(request: Request) -> Principal:
    """Dependency of /api routes: 401 without credentials; cookie callers changing things need CSRF.

    A coroutine on purpose: the lookup is one indexed read (well under a millisecond), cheaper on the
    loop than a hop to the thread pool, which FastAPI makes for plain-function dependencies."""
    principal = identify(request)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="sign in to the console, or send an API token as `Authorization: Bearer hf_...`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    _check_csrf_header(request, principal)
    return principal


async def page_principal(request: Request) -> Principal:
    """Dependency of HTML pages: without a valid session, a redirect to the sign-in page (a coroutine,
    like api_principal)."""
    principal = identify(request)
    if principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    return principal


def check_form_csrf(principal: Principal, sent: str | None) -> None:
    """For form posts of signed-in pages: the hidden `csrf_token` field must match the session's."""
    if principal.via != "session":
        return
    if not (sent and principal.csrf_token and hmac.compare_digest(sent, principal.csrf_token)):
        raise HTTPException(
            status_code=403, detail="the form expired or came from another site; reload the page"
        )


def safe_next(next_url: str | None) -> str:
    """Only local paths after sign-in: never an open redirect to another site."""
    if not next_url:
        return "/"
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or not next_url.startswith("/") or next_url.startswith("//"):
        return "/"
    return next_url


def login_url(next_url: str) -> str:
    return "/login?next=" + quote(safe_next(next_url), safe="/")


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Any:
    """A page with what every template uses: `principal`, `fleet_name`, `csrf_token`."""
    principal = getattr(request.state, "principal", None) or None
    state = console_state(request)
    base = {
        "principal": principal,
        "fleet_name": state.fleet.settings.display_name or state.fleet.settings.name,
        "csrf_token": principal.csrf_token if principal else None,
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)
