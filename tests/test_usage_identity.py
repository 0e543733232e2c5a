"""People, not usernames: what hubs record at sign-in, the collector's storing of it, `people_in_month`, the
`hubfleet usage` people section and the validate warning (issue 18 §4).

The hub-side code runs here as it runs in a hub: a real OAuthenticator object and a real SQLite file; the
store is a real migrated SQLite store with rows written by the collector's own `record_collection`. The
real-hub test at the end signs two people in through a real OpenID Connect provider (oidc-provider-mock) with
one colliding username and starts a server, then reads what the daemon's collector stored.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from hubfleet.monitor.collector import record_collection
from hubfleet.monitor.identities import SignIn, person_identity, sign_ins
from hubfleet.monitor.usage import active_users, month_days, people_in_month
from hubfleet.render import identity_hub
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.store.identities import HubUserIdentity
from hubfleet.store.models import ServerSession, UserDay

UNI_A = "https://idp.uni-a.example/idp/shibboleth"
UNI_B = "https://idp.uni-b.example/idp/shibboleth"
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def user(name: str, last: datetime, groups: list[str] | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"name": name, "last_activity": iso(last), "servers": {}}
    if groups is not None:
        model["groups"] = groups
    return model


# --------------------------------------------------------------------------- the hub side


@pytest.fixture
def hub_code(tmp_path: Path) -> Iterator[Path]:
    """identity_hub with its settings set, as the rendered config sets them."""
    db = tmp_path / "identities.sqlite"
    identity_hub._HUBFLEET_IDENTITY_DB = str(db)  # type: ignore[attr-defined]
    identity_hub._HUBFLEET_PROVIDER = "https://issuer.example"  # type: ignore[attr-defined]
    yield db
    del identity_hub._HUBFLEET_IDENTITY_DB  # type: ignore[attr-defined]
    del identity_hub._HUBFLEET_PROVIDER  # type: ignore[attr-defined]


TOKENS = {
    "access_token": "AT-secret-1234567890",
    "refresh_token": "RT-secret-0987654321",
    "id_token": "eyJhbGciOiJSUzI1NiJ9.payload.signature",
}


def auth_model(name: str, key: str, user_info: dict[str, Any]) -> dict[str, Any]:
    """What OAuthenticator 17's authenticate() returns (build_auth_state_dict), tokens included."""
    state = {**TOKENS, "scope": ["openid"], "token_response": dict(TOKENS), key: user_info}
    return {"name": name, "admin": None, "auth_state": state}


def test_cilogon_sign_in_keeps_the_full_claim_and_no_token(hub_code: Path) -> None:
    from oauthenticator.cilogon import CILogonOAuthenticator

    authenticator = CILogonOAuthenticator(
        allowed_idps={
            UNI_A: {
                "username_derivation": {
                    "username_claim": "eppn",
                    "action": "strip_idp_domain",
                    "domain": "uni-a.example",
                },
                "allow_all": True,
            },
            UNI_B: {"username_derivation": {"username_claim": "preferred_username"}, "allow_all": True},
        }
    )
    model = auth_model("alice", "cilogon_user", {"idp": UNI_A, "eppn": "alice@uni-a.example", "sub": "x"})
    assert identity_hub.hubfleet_record_identity(authenticator, None, model) is model
    other = auth_model("alice", "cilogon_user", {"idp": UNI_B, "preferred_username": "alice"})
    identity_hub.hubfleet_record_identity(authenticator, None, other)

    rows = identity_hub.hubfleet_identities()
    assert [(r["username"], r["provider"], r["claim"], r["subject"]) for r in rows] == [
        ("alice", UNI_A, "eppn", "alice@uni-a.example"),
        ("alice", UNI_B, "preferred_username", "alice"),
    ]
    # nothing of the tokens reaches the file, and it is the hub account's only
    data = hub_code.read_bytes()
    for token in TOKENS.values():
        assert token.encode() not in data and token.split(".")[0].encode() not in data
    assert hub_code.stat().st_mode & 0o077 == 0
    columns = [c[1] for c in sqlite3.connect(hub_code).execute("PRAGMA table_info(identities)")]
    assert columns == ["username", "provider", "claim", "subject", "first_signin", "last_signin"]
    # the two people of one username become two identities, unscoped claims qualified by their IdP
    found = sign_ins("cilogon", rows)
    assert [s.identity for s in found] == [
        "cilogon:alice@uni-a.example",
        f"cilogon:{UNI_B}#alice",
    ]


def test_oidc_and_github_assert_sub_and_numeric_id(hub_code: Path) -> None:
    from oauthenticator.generic import GenericOAuthenticator
    from oauthenticator.github import GitHubOAuthenticator

    oidc = GenericOAuthenticator()
    identity_hub.hubfleet_record_identity(oidc, None, auth_model("jo", "oauth_user", {"sub": "s-1"}))
    github = GitHubOAuthenticator()
    identity_hub.hubfleet_record_identity(
        github, None, auth_model("jo", "github_user", {"id": 42, "login": "jo"})
    )
    # a sign-in without anything asserted (dummy) and a broken database never lock anyone out
    assert identity_hub.hubfleet_record_identity(oidc, None, {"name": "x", "auth_state": None})["name"] == "x"
    rows = identity_hub.hubfleet_identities(since=0)
    assert {(r["provider"], r["claim"], r["subject"]) for r in rows} == {
        ("https://issuer.example", "sub", "s-1"),
        ("github.com", "id", "42"),
    }
    assert (
        person_identity("oidc", "https://issuer.example", "sub", "s-1") == "oidc:https://issuer.example#s-1"
    )
    assert person_identity("github", "github.com", "id", "42") == "github:42"
    later = max(r["last_signin"] for r in rows) + 1
    assert identity_hub.hubfleet_identities(since=later) == []


# --------------------------------------------------------------------------- the store side


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state") as s:
        yield s


def collect(store: Store, hub: str, auth: str, users: list[dict], now: datetime, **kw: Any) -> Any:
    with store.session() as session, session.begin():
        return record_collection(session, hub, auth, users, now=now, since=now - timedelta(hours=1), **kw)


def signin(username: str, identity: str, at: datetime, claim: str = "eppn") -> SignIn:
    return SignIn(username, identity, "idp", claim, at, at)


def test_people_in_month_counts_people_not_usernames(store: Store) -> None:
    """alice@uni-a and alice@uni-b are both `alice` on uni-a (strip_domain): two people on one account;
    alice@uni-a also has an account `alice@uni-a.example` on uni-a-staging: two accounts of one person."""
    alice_a, alice_b = "cilogon:alice@uni-a.example", "cilogon:alice@uni-b.example"
    day1, day2 = NOW - timedelta(days=2), NOW
    collect(
        store, "uni-a", "cilogon", [user("alice", day1)], day1, signed_in=[signin("alice", alice_a, day1)]
    )
    collect(
        store, "uni-a", "cilogon", [user("alice", day2)], day2, signed_in=[signin("alice", alice_b, day2)]
    )
    collect(
        store,
        "uni-a-staging",
        "cilogon",
        [user("alice@uni-a.example", day2), user("bob", day2)],
        day2,
        signed_in=[signin("alice@uni-a.example", alice_a, day2 - timedelta(minutes=5))],
    )
    # a dummy hub's users stay `<auth type>:<username>`
    collect(store, "hackweek", "dummy", [user("carol", day2)], day2)

    with store.session() as session:
        days = {(d.hub, d.username, d.day): d.identity for d in session.scalars(select(UserDay))}
    assert days == {
        ("uni-a", "alice", day1.date()): alice_a,
        ("uni-a", "alice", day2.date()): alice_b,  # the username's days from the new sign-in are b's
        ("uni-a-staging", "alice@uni-a.example", day2.date()): alice_a,
        ("uni-a-staging", "bob", day2.date()): "cilogon:bob",  # no sign-in recorded (yet)
        ("hackweek", "carol", day2.date()): "dummy:carol",
    }

    people = people_in_month(store, "2026-11")
    assert (people.people, people.accounts) == (4, 4)  # alice a, alice b, bob, carol
    assert people.merged == [
        (
            alice_a,
            [("uni-a", "alice"), ("uni-a-staging", "alice@uni-a.example")],
            "same eppn alice@uni-a.example on uni-a, uni-a-staging",
        ),
    ]
    assert people.shared == [
        (("uni-a", "alice"), [alice_a, alice_b], "username alice on hub uni-a was used by 2 people")
    ]
    # only the hubs asked for, and an empty month
    assert people_in_month(store, "2026-11", ["uni-a"]).people == 2
    assert people_in_month(store, "2026-11", ["hackweek"]).as_json()["merged"] == []
    assert people_in_month(store, "2026-10").people == 0
    # the fleet MAU reads the same identities: the accounts of alice@uni-a are one person
    assert active_users(store, NOW.date(), 30) == 4


def test_a_sign_in_seen_later_relabels_the_days_since(store: Store) -> None:
    """Activity collected before the hub's sign-in record arrived counts as the person once it does."""
    collect(store, "uni-a", "oidc", [user("jo", NOW - timedelta(minutes=2))], NOW)
    who = "oidc:https://issuer.example#sub-jo"
    result = collect(
        store,
        "uni-a",
        "oidc",
        [],
        NOW + timedelta(minutes=1),
        signed_in=[SignIn("jo", who, "https://issuer.example", "sub", NOW, NOW)],
    )
    assert result.sign_ins == 1
    with store.session() as session:
        assert session.scalars(select(UserDay.identity)).all() == [who]
        row = session.scalars(select(HubUserIdentity)).one()
        assert (row.hub, row.username, row.claim, row.first_signin) == ("uni-a", "jo", "sub", NOW)
    # the same record again changes nothing; a later sign-in moves last_signin only
    later = NOW + timedelta(hours=1)
    again = collect(
        store,
        "uni-a",
        "oidc",
        [],
        later,
        signed_in=[SignIn("jo", who, "https://issuer.example", "sub", NOW, NOW)],
    )
    assert again.sign_ins == 0
    collect(store, "uni-a", "oidc", [], later, signed_in=[SignIn("jo", who, "i", "sub", NOW, later)])
    with store.session() as session:
        row = session.scalars(select(HubUserIdentity)).one()
        assert (row.first_signin, row.last_signin) == (NOW, later)


def test_month_is_checked() -> None:
    assert month_days("2026-02") == (date(2026, 2, 1), date(2026, 2, 28))
    assert month_days("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
    for bad in ("2026-13", "26-01", "November"):
        with pytest.raises(ValueError, match="write YYYY-MM"):
            month_days(bad)


def test_groups_are_recorded_and_end_dated(store: Store) -> None:
    from hubfleet.store.models import HubUserGroup

    t1, t2 = NOW, NOW + timedelta(minutes=1)
    collect(store, "uni-a", "oidc", [user("jo", t1, ["physics", "tas"]), user("ann", t1, ["physics"])], t1)
    collect(store, "uni-a", "oidc", [user("jo", t2, ["physics"]), user("ann", t2, ["physics"])], t2)
    with store.session() as session:
        rows = {
            (g.username, g.group): (g.first_seen, g.last_seen) for g in session.scalars(select(HubUserGroup))
        }
    assert rows == {
        ("jo", "physics"): (t1, t2),
        ("ann", "physics"): (t1, t2),
        ("jo", "tas"): (t1, t1),  # no longer a member: end-dated at the last collection that saw it
    }
    # back in the group later: the same row is seen again, the others stay current
    t3 = t2 + timedelta(minutes=1)
    collect(store, "uni-a", "oidc", [user("jo", t3, ["physics", "tas"]), user("ann", t3, [])], t3)
    with store.session() as session:
        rows = {
            (g.username, g.group): (g.first_seen, g.last_seen) for g in session.scalars(select(HubUserGroup))
        }
    assert rows == {("jo", "physics"): (t1, t3), ("ann", "physics"): (t1, t2), ("jo", "tas"): (t1, t3)}
    # what allocation splits by: the groups of a window, ended ones included for the time they lasted
    from hubfleet.store.identities import group_memberships

    with store.session() as session:
        assert group_memberships(session, t3, t3 + timedelta(hours=1)) == {
            ("uni-a", "jo"): ["physics", "tas"]
        }
        assert group_memberships(session, t1, t3) == {
            ("uni-a", "ann"): ["physics"],
            ("uni-a", "jo"): ["physics", "tas"],
        }
        assert group_memberships(session, t1, t3, ["other"]) == {}


# --------------------------------------------------------------------------- `hubfleet usage` and validate


def demo_copy(tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "demo"
    demo = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
    shutil.copytree(demo, root, ignore=shutil.ignore_patterns(".hubfleet", ".hubfleet-data"))
    return root


def test_usage_cli_shows_the_months_people(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hubfleet.cli.main import app

    root = demo_copy(tmp_path)
    with open_store(root / ".hubfleet") as store:
        day = NOW
        for hub in ("uni-a", "uni-a-staging"):
            collect(
                store,
                hub,
                "cilogon",
                [user("alice", day)],
                day,
                signed_in=[signin("alice", "cilogon:alice@uni-a.example", day)],
            )
    args = ["usage", "--fleet", str(root), "--to", "2026-11-20"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    people = json.loads(result.output)["people"]
    assert (people["month"], people["people"], people["accounts"]) == ("2026-11", 1, 2)
    assert people["merged"][0]["why"] == "same eppn alice@uni-a.example on uni-a, uni-a-staging"
    table = CliRunner().invoke(app, [*args, "--month", "2026-11"])
    assert "people active in 2026-11: 1 (2 accounts)" in table.output
    assert "2 accounts are 1 person: same eppn alice@uni-a.example on uni-a, uni-a-staging" in table.output
    bad = CliRunner().invoke(app, [*args, "--month", "Nov"])
    assert bad.exit_code == 1 and "--month: month 'Nov': write YYYY-MM" in bad.output


def test_username_rules_that_can_merge_people_are_warned_about(tmp_path: Path) -> None:
    from hubfleet.config.loader import load_fleet_files
    from hubfleet.config.rules_identity import username_merge_warnings

    root = demo_copy(tmp_path)
    idps = {
        UNI_A: {"username_claim": "eppn", "strip_domain": "uni-a.example", "allow_all": True},
        UNI_B: {"username_claim": "eppn", "strip_domain": "uni-b.example", "allow_all": True},
    }
    hub = {
        "name": "uni-a-cilogon",
        "community": "uni-a",
        "cluster": "local",
        "stage": "staging",
        "port": 18099,
        "auth": {"type": "cilogon", "client_id": "c1", "admin_users": ["grace"], "allowed_idps": idps},
    }
    path = root / "communities/uni-a/hubs/cilogon.yaml"

    def warnings() -> list[str]:
        path.write_text(yaml.safe_dump(hub, sort_keys=False))
        config, errors = load_fleet_files(root)
        assert config is not None and not errors, errors
        return [str(w) for w in username_merge_warnings(config)]

    (found,) = warnings()
    assert found.startswith("communities/uni-a/hubs/cilogon.yaml:")
    assert f"warning: hub 'uni-a-cilogon': IdPs {UNI_A}, {UNI_B} all give usernames without a domain" in found
    # one IdP keeps its domain (or prefixes its usernames): nobody can be merged
    idps[UNI_B] = {"username_claim": "eppn", "allow_all": True}
    assert warnings() == []
    idps[UNI_B] = {"username_claim": "preferred_username", "username_prefix": "b", "allow_all": True}
    assert warnings() == []
    # an OIDC username claim the provider does not keep unique
    hub["auth"] = {
        "type": "oidc",
        "client_id": "c1",
        "issuer": "https://issuer.example",
        "admin_users": ["grace"],
        "username_claim": "preferred_username",
    }
    (found,) = warnings()
    assert "username_claim preferred_username is not unique at the provider" in found
    hub["auth"]["username_claim"] = "email"  # type: ignore[index]
    assert warnings() == []


# --------------------------------------------------------------------------- a real hub and provider

OIDC_HUB = "uni-a-oidc"


@pytest.fixture(scope="module")
def oidc_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any, str]]:
    """One local oidc hub (usernames from `preferred_username`, groups from the `groups` claim, an
    environment with its own resources) behind a real OpenID Connect provider, under one `hubfleet up`
    whose collector runs every second."""
    from fleet_helpers import copy_demo_fleet, free_ports, hubfleet, running_fleet
    from oidc_helpers import new_identity, oidc_provider

    base = tmp_path_factory.mktemp("identity")
    with oidc_provider(base / "logs") as provider:
        root = copy_demo_fleet(base / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
        (root / "communities/uni-a/hubs/staging.yaml").unlink()
        key = base / "ada.txt"
        fleet_file = root / "fleet.yaml"
        fleet_file.write_text(
            fleet_file.read_text().replace(
                "      dummy: ada\n",
                f"      dummy: ada\n      oidc: ada-staff\n    age_recipient: {new_identity(key)}\n",
            )
        )
        (port,) = free_ports(1)
        url = f"http://127.0.0.1:{port}"
        client_id, client_secret = provider.register_client([url + "/hub/oauth_callback"])
        hub = {
            "name": OIDC_HUB,
            "community": "uni-a",
            "cluster": "local",
            "stage": "staging",
            "port": port,
            "culling": {"enabled": False},
            "auth": {
                "type": "oidc",
                "issuer": provider.url,
                "client_id": client_id,
                "client_secret": {"secret": "client_secret"},
                "username_claim": "preferred_username",
                "admin_users": ["grace"],
                "allowed_groups": ["physics"],
            },
            "environments": [
                {
                    "slug": "python",
                    "display_name": "Python 3",
                    "default": True,
                    "local": {"kernels": ["python3"]},
                    "resources": {"memory_limit": "2G", "cpu_limit": 0.5},
                },
                {
                    "slug": "small",
                    "display_name": "Python 3, small",
                    "local": {"kernels": ["python3"]},
                    "resources": {"memory_limit": "768M", "cpu_limit": 0.25},
                },
            ],
        }
        (root / "communities/uni-a/hubs/oidc.yaml").write_text(yaml.safe_dump(hub, sort_keys=False))
        env = {"HUBFLEET_AGE_IDENTITY": str(key)}
        hubfleet(
            "secrets", "set", OIDC_HUB, "client_secret", fleet=root, env=env, input=client_secret, check=True
        )
        with running_fleet(root, {**env, "HUBFLEET_COLLECT_INTERVAL": "1"}):
            yield root, provider, url


def stored(root: Path) -> dict[str, Any]:
    from hubfleet.store.models import HubUserGroup

    with open_store(root / ".hubfleet") as store, store.session() as session:
        return {
            "identities": {
                (r.username, r.identity, r.claim) for r in session.scalars(select(HubUserIdentity))
            },
            "sessions": [
                (
                    s.username,
                    s.environment,
                    s.cpu_request,
                    s.memory_request_bytes,
                    s.cpu_seconds_used,
                    s.memory_peak_bytes,
                )
                for s in session.scalars(select(ServerSession))
            ],
            "groups": {(g.hub, g.username, g.group) for g in session.scalars(select(HubUserGroup))},
        }


@pytest.mark.integration
def test_two_people_behind_one_username_on_a_real_hub(oidc_fleet: tuple[Path, Any, str]) -> None:
    import httpx

    from fleet_helpers import hubfleet, wait_for
    from oidc_helpers import browser, log_in, wait_for_server

    root, provider, url = oidc_fleet
    issuer = provider.url
    # jo of uni-a and jo of uni-b: one preferred_username, two subjects at the provider
    provider.set_user("sub-jo-a", preferred_username="jo", email="jo@uni-a.example", groups=["physics"])
    provider.set_user("sub-jo-b", preferred_username="jo", email="jo@uni-b.example", groups=["physics"])
    with browser(url, provider) as first:
        answer = log_in(first, provider, "sub-jo-a")
        assert answer.status_code == 302 and "jupyterhub-hub-login" in first.cookies, answer.text[-500:]
    token = hubfleet("token", OIDC_HUB, fleet=root, check=True).stdout.strip()
    with httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=60) as api:
        # not the default environment: what is recorded comes from the server's user_options
        api.post("/hub/api/users/jo/server", json={"environment": "small"})
        wait_for_server(api, "jo")
    with browser(url, provider) as second:
        answer = log_in(second, provider, "sub-jo-b")
        assert answer.status_code == 302, answer.text[-500:]

    jo_a, jo_b = f"oidc:{issuer}#sub-jo-a", f"oidc:{issuer}#sub-jo-b"

    def recorded() -> dict[str, Any] | None:
        seen = stored(root)
        measured = [s for s in seen["sessions"] if s[4] and s[5]]
        return seen if len(seen["identities"]) == 2 and measured and seen["groups"] else None

    seen = wait_for(recorded, timeout=90, interval=1)
    assert seen["identities"] == {("jo", jo_a, "sub"), ("jo", jo_b, "sub")}
    # the server's environment and requests from the hub file, and its control group's measured use
    ((username, environment, cpu, memory, cpu_used, peak),) = seen["sessions"]
    assert (username, environment, cpu, memory) == ("jo", "small", 0.25, 768 * 1024**2)
    assert cpu_used > 0 and peak > 10 * 1024**2  # a jupyter server holds tens of MiB
    assert seen["groups"] == {(OIDC_HUB, "jo", "physics")}

    month = datetime.now(UTC).strftime("%Y-%m")
    with open_store(root / ".hubfleet") as store:
        people = people_in_month(store, month, [OIDC_HUB])
    assert (people.people, people.accounts) == (2, 1)
    assert people.shared == [
        ((OIDC_HUB, "jo"), [jo_a, jo_b], f"username jo on hub {OIDC_HUB} was used by 2 people")
    ]

    # the hub kept the provider's word and nothing else: no token, no other claim
    data_dir = Path(json.loads((root / ".hubfleet" / "layout.json").read_text())["data_dir"])
    (db,) = data_dir.rglob("identities.sqlite")
    rows = sqlite3.connect(db).execute("SELECT username, provider, claim, subject FROM identities").fetchall()
    assert sorted(rows) == [("jo", issuer, "sub", "sub-jo-a"), ("jo", issuer, "sub", "sub-jo-b")]
    data = db.read_bytes()
    assert b"eyJ" not in data and b"jo@uni-" not in data and b"token" not in data.lower()

    # validate says why this hub can merge people
    check = hubfleet("validate", fleet=root, check=True)
    assert "username_claim preferred_username is not unique at the provider" in check.stderr
