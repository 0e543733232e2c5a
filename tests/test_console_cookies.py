"""The session cookie's attributes, on plain http (loopback) and behind an https `--public-url`, against
real `hubfleet console` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console_helpers import (
    PASSWORDS,
    input_value,
    set_credentials,
    sign_in,
    start_console,
    stop_console,
    write_accounts,
)
from fleet_helpers import copy_demo_fleet, free_ports


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_demo_fleet(tmp_path_factory.mktemp("cookies") / "fleet")
    write_accounts(root)
    (root / ".hubfleet").mkdir()
    set_credentials(root / ".hubfleet")
    return root


def _console(fleet: Path, *args: str) -> Iterator[str]:
    (port,) = free_ports(1)
    process = start_console(fleet, fleet / ".hubfleet", port, args=args)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_console(process)


@pytest.fixture(scope="module")
def plain(fleet: Path) -> Iterator[str]:
    yield from _console(fleet)


@pytest.fixture(scope="module")
def behind_tls(fleet: Path) -> Iterator[str]:
    yield from _console(fleet, "--public-url", "https://console.example.org")


def _cookie(answer: httpx.Response, contains: str) -> str:
    """The one Set-Cookie header of `answer` that contains `contains`."""
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie" and contains in v]
    assert len(cookies) == 1, answer.headers
    return cookies[0]


def _session_cookie(answer: httpx.Response) -> str:
    return _cookie(answer, "session=")


def _attributes(cookie: str) -> set[str]:
    return {part.strip().lower() for part in cookie.split(";")[1:]}


def test_on_loopback_http_the_cookie_is_httponly_and_samesite_but_not_secure(plain: str) -> None:
    with httpx.Client(base_url=plain) as client:
        answer = sign_in(client, "ops", PASSWORDS["ops"])
        assert answer.status_code == 303
        cookie = _session_cookie(answer)
        assert cookie.startswith("hubfleet_session=")
        attributes = _attributes(cookie)
        assert {"httponly", "path=/", "samesite=lax"} <= attributes and "secure" not in attributes
        assert client.get("/api/me").json()["username"] == "ops"


def test_behind_an_https_public_url_the_cookie_is_secure_with_the_host_prefix(behind_tls: str) -> None:
    # httpx, like a browser, keeps Secure cookies to https; the TLS proxy in front would carry them to
    # the console over plain http, so this client sends them by hand
    page = httpx.get(f"{behind_tls}/login")
    login_cookie = _cookie(page, "hubfleet_login_csrf")
    assert "secure" in _attributes(login_cookie)
    answer = httpx.post(
        f"{behind_tls}/login",
        data={
            "username": "ops",
            "password": PASSWORDS["ops"],
            "login_csrf": input_value(page.text, "login_csrf"),
        },
        headers={"Cookie": login_cookie.split(";")[0]},
    )
    assert answer.status_code == 303, answer.text[:500]
    cookie = _session_cookie(answer)
    name, _, rest = cookie.partition("=")
    assert name == "__Host-hubfleet_session"
    attributes = _attributes(cookie)
    assert {"httponly", "path=/", "samesite=lax", "secure"} <= attributes
    assert not any(a.startswith("domain=") for a in attributes)
    session = rest.split(";")[0]
    me = httpx.get(f"{behind_tls}/api/me", headers={"Cookie": f"{name}={session}"})
    assert me.status_code == 200 and me.json()["username"] == "ops"
    # the plain-http cookie name means nothing here
    plain_name = httpx.get(f"{behind_tls}/api/me", headers={"Cookie": f"hubfleet_session={session}"})
    assert plain_name.status_code == 401


def test_a_failed_sign_in_names_accounts_but_not_what_was_typed_as_a_name(plain: str, fleet: Path) -> None:
    """Someone may type their password into the username field: an unknown name is never logged."""
    with httpx.Client(base_url=plain) as client:
        assert sign_in(client, "correct-horse-battery-staple", "x" * 12).status_code == 401
        assert sign_in(client, "lead-a", "not-the-password").status_code == 401
    log = (fleet / ".hubfleet" / "console.log").read_text()
    assert "correct-horse-battery-staple" not in log and "not-the-password" not in log
    assert "failed password sign-in for an unknown account" in log
    assert "failed password sign-in for 'lead-a'" in log
