"""Sign-in (password, OIDC), sign-out. Sessions live in the store; see web.py for the cookie rules.

Handlers that only touch the store are plain functions: FastAPI runs them in its thread pool, so a
password check (scrypt, ~50 ms) never stalls the daemon's event loop (probes, supervision)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from hubfleet.console import accounts
from hubfleet.console.access import find_account
from hubfleet.console.web import console_state, identify, render, safe_next

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "hubfleet_login_csrf"
OIDC_STATE_COOKIE = "hubfleet_oidc_state"
OIDC_PENDING_SECONDS = 600.0


@dataclass(frozen=True)
class PendingOIDC:
    verifier: str
    nonce: str
    next_url: str
    created: float


def _set_session(request: Request, response: Response, username: str, method: str) -> None:
    state = console_state(request)
    session_id, info = accounts.create_session(
        state.store, username, method, state.fleet.settings.console.session_hours
    )
    response.set_cookie(
        state.cookie_name,
        session_id,
        max_age=int(state.fleet.settings.console.session_hours * 3600),
        path="/",
        secure=state.secure_cookies,
        httponly=True,
        samesite="lax",
    )
    log.info("console: %s signed in (%s)", username, method)


def _login_page(
    request: Request, *, error: str = "", next_url: str = "/", username: str = "", status_code: int = 200
) -> Response:
    state = console_state(request)
    console = state.fleet.settings.console
    csrf = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {
            "error": error,
            "login_csrf": csrf,
            "next": safe_next(next_url),
            "username": username,
            "password_sign_in": console.password_sign_in,
            "oidc_button": console.oidc.button_text if console.oidc else None,
            "no_accounts": not console.accounts,
        },
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=state.secure_cookies,
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    if identify(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_url=next)


@router.post("/login")
def login_submit(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    login_csrf: str = Form(""),
    next: str = Form("/"),
) -> Response:
    state = console_state(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (cookie and login_csrf and hmac.compare_digest(cookie, login_csrf)):
        return _login_page(
            request, error="The sign-in form expired; please try again.", next_url=next, status_code=400
        )
    if not state.fleet.settings.console.password_sign_in:
        return _login_page(
            request, error="Password sign-in is turned off for this console.", next_url=next, status_code=400
        )
    username = username.strip()
    # counted before the password is checked, atomically and in the store: concurrent guesses get
    # MAX_FAILURES checks at most, across every console process sharing the store
    wait = accounts.begin_sign_in(state.store, username)
    if wait > 0:
        return _login_page(
            request,
            error=f"Too many failed sign-ins for this account; try again in {int(wait // 60) + 1} minutes.",
            next_url=next,
            username=username,
            status_code=429,
        )
    known = find_account(state.fleet, username) is not None
    ok = accounts.check_password(state.store, username, password) and known
    if not ok:
        # an unknown name may be a password typed in the wrong field: only accounts are named in the log
        log.info("console: failed password sign-in for %s", repr(username) if known else "an unknown account")
        return _login_page(
            request, error="Wrong username or password.", next_url=next, username=username, status_code=401
        )
    accounts.sign_in_succeeded(state.store, username)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    _set_session(request, response, username, "password")
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    state = console_state(request)
    principal = identify(request)
    session_id = request.cookies.get(state.cookie_name)
    if principal is not None and session_id:
        if not (principal.csrf_token and hmac.compare_digest(csrf_token, principal.csrf_token)):
            return render(
                request, "error.html", {"status": 403, "message": "Reload the page and sign out again."}, 403
            )
        accounts.end_session(state.store, session_id)
        log.info("console: %s signed out", principal.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        state.cookie_name, path="/", secure=state.secure_cookies, httponly=True, samesite="lax"
    )
    return response


# --------------------------------------------------------------------------- OIDC


def _redirect_uri(request: Request) -> str:
    state = console_state(request)
    base = state.public_url or state.fleet.console_url() or str(request.base_url)
    return base.rstrip("/") + "/login/oidc/callback"


async def _discovery(issuer: str) -> dict[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
    return document


def _oidc_error(request: Request, message: str, status_code: int = 502) -> Response:
    return _login_page(request, error=message, status_code=status_code)


@router.get("/login/oidc")
async def oidc_start(request: Request, next: str = "/") -> Response:
    state = console_state(request)
    oidc = state.fleet.settings.console.oidc
    if oidc is None:
        return _oidc_error(request, "This console has no OIDC sign-in configured.", 404)
    try:
        document = await _discovery(oidc.issuer)
        endpoint = document["authorization_endpoint"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log.warning("console: OIDC discovery at %s failed: %s", oidc.issuer, type(exc).__name__)
        return _oidc_error(
            request, f"The identity provider at {oidc.issuer} did not answer; try again later."
        )
    pending = state.pending_oidc
    now = time.monotonic()
    for key in [k for k, p in pending.items() if now - p.created > OIDC_PENDING_SECONDS]:
        del pending[key]
    oauth_state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    pending[oauth_state] = PendingOIDC(verifier, nonce, safe_next(next), now)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": oidc.client_id,
            "redirect_uri": _redirect_uri(request),
            "scope": " ".join(oidc.scopes),
            "state": oauth_state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"{endpoint}?{query}", status_code=303)
    response.set_cookie(
        OIDC_STATE_COOKIE,
        oauth_state,
        max_age=int(OIDC_PENDING_SECONDS),
        path="/login/oidc",
        httponly=True,
        samesite="lax",
        secure=state.secure_cookies,
    )
    return response


@router.get("/login/oidc/callback")
async def oidc_callback(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
    console = console_state(request)
    oidc = console.fleet.settings.console.oidc
    if oidc is None:
        return _oidc_error(request, "This console has no OIDC sign-in configured.", 404)
    if error:
        return _oidc_error(request, f"The identity provider refused the sign-in ({error[:100]}).", 400)
    pending_all = console.pending_oidc
    cookie = request.cookies.get(OIDC_STATE_COOKIE, "")
    pending = pending_all.pop(state, None) if state else None
    if pending is None or not (cookie and hmac.compare_digest(cookie, state)):
        return _oidc_error(request, "The sign-in took too long or came from another browser; try again.", 400)
    secret = console.resolve_secret(oidc.client_secret) if oidc.client_secret else None
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _redirect_uri(request),
        "code_verifier": pending.verifier,
        "client_id": oidc.client_id,
    }
    try:
        document = await _discovery(oidc.issuer)
        async with httpx.AsyncClient(timeout=10) as client:
            auth = httpx.BasicAuth(oidc.client_id, secret) if secret else None
            token_response = await client.post(document["token_endpoint"], data=form, auth=auth)
            token_response.raise_for_status()
            access_token = token_response.json()["access_token"]
            info = await client.get(
                document["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"}
            )
            info.raise_for_status()
            claims: dict[str, Any] = info.json()
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log.warning("console: OIDC code exchange with %s failed: %s", oidc.issuer, type(exc).__name__)
        return _oidc_error(request, "The identity provider did not confirm the sign-in; try again.")
    username = claims.get(oidc.username_claim)
    if not isinstance(username, str) or not username:
        return _oidc_error(
            request, f"The identity provider sent no '{oidc.username_claim}' claim; ask an operator.", 403
        )
    if find_account(console.fleet, username) is None:
        log.info("console: OIDC sign-in of %r refused: no console account", username[:200])
        return _oidc_error(
            request,
            f"There is no console account for {username}; ask an operator to add you to console.accounts.",
            403,
        )
    response = RedirectResponse(pending.next_url, status_code=303)
    response.delete_cookie(OIDC_STATE_COOKIE, path="/login/oidc")
    _set_session(request, response, username, "oidc")
    return response
