"""Console accounts: fleet.yaml validation, passwords/sessions/tokens in a real store, and the CLI."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from fleet_helpers import DEMO, drop_section, hubfleet
from hubfleet.config.validate import validate_fleet
from hubfleet.console import accounts
from hubfleet.store.api import open_store
from hubfleet.store.models import ApiToken, ConsolePassword, ConsoleSession


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".hubfleet"))
    return root


def _console_section(root: Path, section: str) -> None:
    """fleet.yaml's console accounts replaced with `section`; the demo's support desk goes too (its rota
    names the demo's operators)."""
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(drop_section(drop_section(fleet_yaml.read_text(), "console"), "support") + section)


def _errors(root: Path) -> list[str]:
    _, errors = validate_fleet(root)
    return [str(e) for e in errors]


def _line_of(root: Path, needle: str) -> int:
    lines = (root / "fleet.yaml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


# --------------------------------------------------------------------------- validation


def test_the_demo_accounts_validate() -> None:
    config, errors = validate_fleet(DEMO)
    assert errors == [] and config is not None
    roles = {a.username: (a.role, a.communities) for a in config.settings.console.accounts}
    assert roles == {
        "ada": ("operator", []),
        "lin": ("operator", []),
        "uni-a-lead": ("community-leader", ["uni-a"]),
        "hackweek-lead": ("community-leader", ["hackweek"]),
    }


def test_a_leader_of_an_unknown_community_is_an_error_with_a_suggestion(demo: Path) -> None:
    _console_section(
        demo,
        "console:\n  accounts:\n    - username: prof\n      role: community-leader\n"
        "      communities: [uni-b]\n",
    )
    line = _line_of(demo, "communities: [uni-b]")
    assert _errors(demo) == [
        f"fleet.yaml:{line}:21: console.accounts.0.communities.0: community 'uni-b' of 'prof' "
        "does not exist; did you mean 'uni-a'?"
    ]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "console:\n  accounts:\n    - username: prof\n      role: community-leader\n",
            "community-leader 'prof' has no communities; list the communities they lead under `communities`",
        ),
        (
            "console:\n  accounts:\n    - username: ada\n      role: operator\n      communities: [uni-a]\n",
            "operator 'ada' sees every community; remove `communities`",
        ),
        (
            "console:\n  accounts:\n    - {username: ada, role: operator}\n"
            "    - {username: ada, role: operator}\n",
            "console account 'ada' is listed twice",
        ),
        (
            "console:\n  accounts:\n    - {username: ada, role: admin}\n",
            "'admin' is not one of: operator, community-leader",
        ),
    ],
)
def test_account_mistakes_are_named(demo: Path, section: str, message: str) -> None:
    _console_section(demo, section)
    errors = _errors(demo)
    assert len(errors) == 1 and errors[0].startswith("fleet.yaml:") and message in errors[0], errors


def test_console_oidc_needs_https_and_a_fleet_level_secret(demo: Path) -> None:
    _console_section(
        demo,
        "console:\n  oidc:\n    issuer: http://login.example.org\n    client_id: console\n"
        "    client_secret: {secret: console_oidc}\n",
    )
    errors = _errors(demo)
    issuer_line, secret_line = _line_of(demo, "issuer: http"), _line_of(demo, "client_secret:")
    assert (
        f"fleet.yaml:{issuer_line}:5: console.oidc.issuer: the console must reach its identity provider "
        in ("\n".join(errors))
    )
    assert (
        f"fleet.yaml:{secret_line}:5: console.oidc.client_secret: fleet-level secret 'console_oidc' "
        "is not set in secrets/fleet.yaml; run `hubfleet secrets set --fleet-level console_oidc`"
    ) in errors
    assert len(errors) == 2


def test_a_plain_text_oidc_client_secret_is_refused(demo: Path) -> None:
    _console_section(
        demo,
        "console:\n  oidc:\n    issuer: https://login.example.org\n    client_id: console\n"
        "    client_secret: hunter2-the-secret\n",
    )
    errors = _errors(demo)
    assert len(errors) == 1 and "must be a secret reference such as {secret: KEY}" in errors[0]
    assert "hunter2-the-secret" not in errors[0]


# --------------------------------------------------------------------------- store


def test_passwords_are_stored_as_scrypt_hashes_and_checked(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert not accounts.check_password(store, "ops", "no password yet")
        accounts.set_password(store, "ops", "correct horse battery")
        assert accounts.check_password(store, "ops", "correct horse battery")
        assert not accounts.check_password(store, "ops", "correct horse batterY")
        with store.session() as session:
            stored = session.scalars(select(ConsolePassword.password_hash)).one()
        assert stored.startswith("scrypt$16384$8$1$") and "correct horse" not in stored
        with pytest.raises(ValueError, match="at least 10 characters"):
            accounts.set_password(store, "ops", "short")
        assert accounts.remove_password(store, "ops") and not accounts.has_password(store, "ops")


def test_sessions_are_stored_hashed_end_on_sign_out_and_expire(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        cookie, info = accounts.create_session(store, "ops", "password", hours=1)
        assert accounts.lookup_session(store, cookie) == info
        with store.session() as session:
            assert cookie not in {row.id_hash for row in session.scalars(select(ConsoleSession))}
        accounts.end_session(store, cookie)
        assert accounts.lookup_session(store, cookie) is None
        expired, _ = accounts.create_session(store, "ops", "password", hours=1)
        with store.session() as session, session.begin():
            for row in session.scalars(select(ConsoleSession)):
                row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        assert accounts.lookup_session(store, expired) is None
        other, _ = accounts.create_session(store, "lead", "oidc", hours=1)
        assert accounts.end_sessions_of(store, "lead") == 1 and accounts.lookup_session(store, other) is None


def test_tokens_are_shown_once_revocable_and_expire(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        token, info = accounts.create_token(store, "ops", "ci")
        assert token.startswith("hf_") and len(token) > 40 and info.prefix == token[:10]
        found = accounts.lookup_token(store, token)
        assert found is not None and found.username == "ops" and found.last_used_at is not None
        assert accounts.lookup_token(store, token[:-1] + "x") is None
        assert accounts.lookup_token(store, "not-a-token") is None
        with store.session() as session:
            assert session.scalars(select(ApiToken.token_hash)).one() != token
        assert not accounts.revoke_token(store, info.id, username="someone-else")
        assert accounts.revoke_token(store, info.id, username="ops")
        assert accounts.lookup_token(store, token) is None
        assert not accounts.revoke_token(store, info.id)
        short, _ = accounts.create_token(store, "ops", "short-lived", expires_days=0.001)
        with store.session() as session, session.begin():
            for row in session.scalars(select(ApiToken).where(ApiToken.name == "short-lived")):
                row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        assert accounts.lookup_token(store, short) is None
        assert [t.name for t in accounts.list_tokens(store, "ops")] == ["ci", "short-lived"]
        assert [t.active for t in accounts.list_tokens(store)] == [False, False]


# --------------------------------------------------------------------------- CLI


def test_cli_sets_passwords_and_manages_tokens(demo: Path) -> None:
    made = hubfleet("console-password", "ada", "--stdin", fleet=demo, input="a long password\n")
    assert made.returncode == 0, made.stderr
    assert "password of 'ada' set" in made.stdout and "a long password" not in made.stdout + made.stderr
    with open_store(demo / ".hubfleet") as store:
        assert accounts.check_password(store, "ada", "a long password")

    unknown = hubfleet("console-password", "eve", "--stdin", fleet=demo, input="a long password\n")
    assert unknown.returncode == 1
    assert "no console account 'eve' in fleet.yaml console.accounts" in unknown.stderr
    assert "ada, lin, uni-a-lead, hackweek-lead" in unknown.stderr and "Traceback" not in unknown.stderr

    short = hubfleet("console-password", "ada", "--stdin", fleet=demo, input="short\n")
    assert short.returncode == 1 and "at least 10 characters; nothing changed" in short.stderr

    created = hubfleet("console-token", "create", "uni-a-lead", "--name", "grafana", fleet=demo)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("hf_") and "shown only now" in created.stderr
    listed = hubfleet("console-token", "list", "--json", fleet=demo)
    assert (
        token not in listed.stdout
        and '"name": "grafana"' in listed.stdout
        and '"active": true' in listed.stdout
    )
    revoked = hubfleet("console-token", "revoke", "1", fleet=demo)
    assert revoked.returncode == 0 and "token 1 revoked" in revoked.stdout
    again = hubfleet("console-token", "revoke", "1", fleet=demo)
    assert again.returncode == 1 and "no active token 1" in again.stderr
    with open_store(demo / ".hubfleet") as store:
        assert accounts.lookup_token(store, token) is None


# --------------------------------------------------------------------------- config reload


def test_the_console_rereads_changed_files_and_keeps_the_last_valid_fleet(demo: Path) -> None:
    from hubfleet.config.validate import load_fleet
    from hubfleet.console.reload import FleetReloader

    current = FleetReloader(load_fleet(demo), interval=0)
    assert [a.username for a in current().settings.console.accounts] == [
        "ada",
        "lin",
        "uni-a-lead",
        "hackweek-lead",
    ]
    fleet_yaml = demo / "fleet.yaml"
    fleet_yaml.write_text(fleet_yaml.read_text() + "    - {username: newcomer, role: operator}\n")
    assert current().settings.console.accounts[-1].username == "newcomer"
    fleet_yaml.write_text(fleet_yaml.read_text() + "    - {username: broken, role: nobody}\n")
    assert current().settings.console.accounts[-1].username == "newcomer"  # the last valid one, not an error
    fleet_yaml.write_text(fleet_yaml.read_text().replace("    - {username: broken, role: nobody}\n", ""))
    hub_file = demo / "communities/hackweek/hubs/staging.yaml"
    hub_file.write_text(
        hub_file.read_text().replace("display_name: Ocean Hackweek (staging)", "display_name: Renamed")
    )
    assert current().hubs["hackweek-staging"].display_name == "Renamed"  # hub files are watched too
