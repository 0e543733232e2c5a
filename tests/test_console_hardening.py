"""Issue 12's smaller console findings, against the app in this process (starlette's TestClient) over a real
SQLite store: passwords and tokens, out-of-range ids, the atomic sign-in lockout and its lifting by
`hubfleet console-password`, and the headers of signed-in answers."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from console_helpers import PASSWORDS, input_value, sign_in, write_accounts
from fleet_helpers import copy_demo_fleet, hubfleet
from hubfleet.config.validate import load_fleet
from hubfleet.console import accounts
from hubfleet.console.app import create_app
from hubfleet.store import Store, open_store

with warnings.catch_warnings():  # starlette suggests httpx2; httpx is what the project has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = copy_demo_fleet(tmp_path / "fleet")
    write_accounts(root)
    return root


@pytest.fixture
def store(fleet: Path) -> Iterator[Store]:
    with open_store(fleet / ".hubfleet") as opened:
        for username, password in PASSWORDS.items():
            accounts.set_password(opened, username, password)
        yield opened


@pytest.fixture
def app(fleet: Path, store: Store) -> object:
    return create_app(store, load_fleet(fleet))


def _client(app: object) -> TestClient:
    return TestClient(app, follow_redirects=False)  # type: ignore[arg-type]


def _signed_in(app: object, username: str) -> tuple[TestClient, str]:
    """A client with a session of `username`, and the session's CSRF token."""
    client = _client(app)
    assert sign_in(client, username, PASSWORDS[username]).status_code == 303
    match = re.search(r'<meta\s+name="csrf-token"\s+content="([^"]+)"', client.get("/").text)
    assert match
    return client, match.group(1)


# --------------------------------------------------------------------------- passwords revoke tokens


def test_changing_or_removing_a_password_revokes_the_accounts_tokens(store: Store) -> None:
    token, _ = accounts.create_token(store, "ops", "ci")
    other, _ = accounts.create_token(store, "lead-a", "ci")
    assert accounts.set_password(store, "ops", "a new password") == 1
    assert accounts.lookup_token(store, token) is None
    assert accounts.lookup_token(store, other) is not None  # other accounts keep theirs
    fresh, _ = accounts.create_token(store, "ops", "after the change")
    assert accounts.remove_password(store, "ops")
    assert accounts.lookup_token(store, fresh) is None


def test_the_cli_says_it_revoked_the_tokens(fleet: Path) -> None:
    with open_store(fleet / ".hubfleet") as opened:
        token, _ = accounts.create_token(opened, "ops", "ci")
    changed = hubfleet("console-password", "ops", "--stdin", fleet=fleet, input="another password\n")
    assert changed.returncode == 0, changed.stderr
    assert "1 API token(s) revoked" in changed.stdout
    with open_store(fleet / ".hubfleet") as opened:
        assert accounts.lookup_token(opened, token) is None
        token, _ = accounts.create_token(opened, "ops", "ci")
    removed = hubfleet("console-password", "ops", "--remove", fleet=fleet)
    assert removed.returncode == 0 and "1 API token(s) revoked" in removed.stdout
    with open_store(fleet / ".hubfleet") as opened:
        assert accounts.lookup_token(opened, token) is None


# --------------------------------------------------------------------------- token ids


@pytest.mark.parametrize("token_id", ["9223372036854775808", "2147483648", "0", "-1"])
def test_an_out_of_range_token_id_is_a_validation_error_not_a_server_error(
    app: object, token_id: str
) -> None:
    client, csrf = _signed_in(app, "ops")
    with client:
        page = client.post(
            f"/tokens/{token_id}/revoke", data={"csrf_token": csrf}, headers={"Accept": "text/html"}
        )
        assert page.status_code == 400 and "token_id" in page.text  # the validation error page
        form = client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf})
        assert form.status_code == 422
        api = client.delete(f"/api/tokens/{token_id}", headers={"X-CSRF-Token": csrf})
        assert api.status_code == 422 and "token_id" in api.json()["detail"]
    assert not accounts.revoke_token(accounts_store(app), 2**63)  # and the function refuses on its own


def accounts_store(app: object) -> Store:
    return app.state.console.source.store  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------- lockout


def _attempt(app: object, username: str, password: str) -> int:
    with _client(app) as client:
        return sign_in(client, username, password).status_code


def test_concurrent_wrong_passwords_lock_after_exactly_five(app: object) -> None:
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: _attempt(app, "ops", "wrong password!"), range(32)))
    assert codes.count(401) == accounts.MAX_FAILURES and codes.count(429) == 32 - accounts.MAX_FAILURES
    assert _attempt(app, "ops", PASSWORDS["ops"]) == 429  # the right password is refused while locked
    assert _attempt(app, "lead-a", PASSWORDS["lead-a"]) == 303  # other accounts are not affected


def test_consoles_sharing_a_store_count_failures_together(app: object, fleet: Path) -> None:
    """Two console apps, each with its own engine on the same SQLite file (as two processes would have)."""
    with open_store(fleet / ".hubfleet") as other_store:
        other = create_app(other_store, load_fleet(fleet))
        with ThreadPoolExecutor(32) as pool:
            codes = list(
                pool.map(lambda i: _attempt((app, other)[i % 2], "ops", "wrong password!"), range(32))
            )
        assert codes.count(401) == accounts.MAX_FAILURES and codes.count(429) == 32 - accounts.MAX_FAILURES
        assert (
            _attempt(other, "ops", PASSWORDS["ops"]) == 429 and _attempt(app, "ops", PASSWORDS["ops"]) == 429
        )


def test_console_password_lifts_a_lock(app: object, fleet: Path) -> None:
    for _ in range(accounts.MAX_FAILURES):
        assert _attempt(app, "ops", "wrong password!") == 401
    assert _attempt(app, "ops", PASSWORDS["ops"]) == 429
    unlocked = hubfleet("console-password", "ops", "--unlock", fleet=fleet)  # another process, same store
    assert unlocked.returncode == 0 and "may sign in again" in unlocked.stdout, unlocked.stderr
    assert _attempt(app, "ops", PASSWORDS["ops"]) == 303
    for _ in range(accounts.MAX_FAILURES):
        assert _attempt(app, "ops", "wrong password!") == 401
    assert _attempt(app, "ops", PASSWORDS["ops"]) == 429
    changed = hubfleet("console-password", "ops", "--stdin", fleet=fleet, input="a new password\n")
    assert changed.returncode == 0, changed.stderr
    assert _attempt(app, "ops", "a new password") == 303  # setting a password lifts it too
    nobody = hubfleet("console-password", "lead-h", "--unlock", "--remove", fleet=fleet)
    assert nobody.returncode == 1 and "do not go together" in nobody.stderr


# --------------------------------------------------------------------------- headers


def test_forms_post_only_here_and_signed_in_answers_are_not_cached(app: object) -> None:
    client, _ = _signed_in(app, "ops")
    with client:
        hub = next(iter(load_fleet_of(app).hubs))
        for path in ("/", f"/hubs/{hub}", "/incidents", "/tokens", "/api/me", "/api/hubs"):
            answer = client.get(path, headers={"Accept": "text/html"} if not path.startswith("/api") else {})
            assert answer.status_code == 200, path
            assert answer.headers["Cache-Control"] == "no-store", path
            assert "form-action 'self';" in answer.headers["Content-Security-Policy"] + ";", path
            assert "http:" not in answer.headers["Content-Security-Policy"], path
        login = _client(app).get("/login")
        assert login.headers["Cache-Control"] == "no-store" and input_value(login.text, "login_csrf")
        assert "no-store" not in _client(app).get("/static/plotly.min.js").headers.get("Cache-Control", "")


def load_fleet_of(app: object) -> object:
    return app.state.console.source.fleet  # type: ignore[attr-defined]
