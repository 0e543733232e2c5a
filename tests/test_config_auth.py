# ruff: noqa: E501 - the expected error lines are kept whole, as the user sees them
"""Auth blocks of every type: exact `file:line:col` messages of the auth rules, and what valid blocks load as.

GitHub has no provider here: GitHub hubs are covered by validation (here) and rendering
(test_render_auth.py) only.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pyrage import x25519

from hubfleet.config.validate import validate_fleet
from hubfleet.secrets.store import set_secret

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-fleet"
PROD = "communities/uni-a/hubs/prod.yaml"
STAGING = "communities/uni-a/hubs/staging.yaml"
NATIVE_AUTH = "auth:\n  type: native\n  admin_users: [grace]\n"
IDP = "https://idp.uni.edu/idp/shibboleth"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo fleet with an age key for Ada and a `client_secret` set for hubs uni-a and uni-a-staging."""
    root = tmp_path_factory.mktemp("auth") / "fleet"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".hubfleet"))
    # the cases append to the hub files: without its `domain` (its last lines) a hub is served at a path of
    # the front door, which OAuth hubs need
    for path in root.glob("communities/*/hubs/*.yaml"):
        path.write_text(
            re.sub(r"(?m)^(# served by the fleet's front door.*\n)?domain: .*\n", "", path.read_text())
        )
    recipient = str(x25519.Identity.generate().to_public())
    fleet = root / "fleet.yaml"
    fleet.write_text(
        fleet.read_text().replace(
            "    email: ada@hubfleet.example\n",
            f"    email: ada@hubfleet.example\n    age_recipient: {recipient}\n",
        )
    )
    for hub in ("uni-a", "uni-a-staging"):
        set_secret(root, hub, "client_secret", "the-client-secret")
    return root


def errors_with_auth(template: Path, tmp_path: Path, auth: str, rel: str = PROD) -> list[str]:
    """Validate a copy of the template fleet whose hub `rel` has this `auth:` block (YAML, at the end)."""
    root = tmp_path / "fleet"
    shutil.copytree(template, root)
    path = root / rel
    text = path.read_text()
    if rel == PROD:
        assert NATIVE_AUTH in text
        text = text.replace(NATIVE_AUTH, "")
    else:
        text = text[: text.index("auth:\n")]
    path.write_text(text + auth)
    return [str(e) for e in validate_fleet(root)[1]]


OIDC = """auth:
  type: oidc
  issuer: https://id.uni.edu/realms/hub
  client_id: uni-a-hub
  client_secret: {secret: client_secret}
  admin_users: [grace]
"""
GITHUB = """auth:
  type: github
  client_id: Iv1.0123456789abcdef
  client_secret: {secret: client_secret}
  admin_users: [grace]
"""
CILOGON = f"""auth:
  type: cilogon
  client_id: cilogon:/client_id/0123456789
  client_secret: {{secret: client_secret}}
  admin_users: [grace]
  allowed_idps:
    {IDP}:
      username_claim: eppn
      allowed_domains: [uni.edu]
      strip_domain: uni.edu
"""

VALID = [
    pytest.param(OIDC + "  allowed_groups: [physics]\n", id="oidc with groups"),
    pytest.param(OIDC + "  allowed_users: [alice]\n", id="oidc with users"),
    pytest.param(OIDC + "  allow_existing_users: true\n", id="oidc with existing users"),
    pytest.param(
        OIDC.replace("https://id.uni.edu/realms/hub", "http://127.0.0.1:8080/realms/hub")
        + "  allow_all: true\n",
        id="oidc prod on loopback http",
    ),
    pytest.param(
        OIDC.replace("https://id.uni.edu/realms/hub", "http://[::1]:8080") + "  allow_all: true\n",
        id="oidc prod on ipv6 loopback",
    ),
    pytest.param(
        GITHUB + "  allowed_organizations: [physics-dept, astro:hub-users]\n  allowed_users: [alice]\n",
        id="github",
    ),
    pytest.param(CILOGON, id="cilogon"),
]


@pytest.mark.parametrize("auth", VALID)
def test_valid_auth(template: Path, tmp_path: Path, auth: str) -> None:
    assert errors_with_auth(template, tmp_path, auth) == []


def test_http_issuer_is_allowed_on_staging(template: Path, tmp_path: Path) -> None:
    auth = OIDC.replace("https://", "http://") + "  allow_all: true\n"
    assert errors_with_auth(template, tmp_path, auth, STAGING) == []


CASES = [
    pytest.param(
        OIDC.replace("  client_secret: {secret: client_secret}\n", "") + "  allow_all: true\n",
        [
            "communities/uni-a/hubs/prod.yaml:11:1: auth.client_secret: oidc hub 'uni-a' needs the client secret of 'uni-a-hub'; add `client_secret: {secret: client_secret}` under auth and run `hubfleet secrets set uni-a client_secret`"
        ],
        id="missing client secret",
    ),
    pytest.param(
        OIDC.replace("{secret: client_secret}", "s3cr3t-value") + "  allow_all: true\n",
        [
            "communities/uni-a/hubs/prod.yaml:15:18: auth.client_secret: must be a secret reference such as {secret: KEY}, never the value itself; write `client_secret: {secret: client_secret}`, store the value with `hubfleet secrets set HUB client_secret` and, as it was in plain text, rotate it at the provider"
        ],
        id="plain-text client secret",
    ),
    pytest.param(
        OIDC.replace("{secret: client_secret}", "{secret: other_secret}") + "  allow_all: true\n",
        [
            "communities/uni-a/hubs/prod.yaml:15:3: auth.client_secret: secret 'other_secret' is not set for hub 'uni-a'; run `hubfleet secrets set uni-a other_secret`"
        ],
        id="client secret not set",
    ),
    pytest.param(
        CILOGON.replace("username_claim: eppn", "username_claim: upn"),
        [
            "communities/uni-a/hubs/prod.yaml:18:23: auth.allowed_idps.'https://idp.uni.edu/idp/shibboleth'.username_claim: 'upn' is not one of: email, eppn, eptid, oidc, sub, preferred_username"
        ],
        id="unknown username claim",
    ),
    pytest.param(
        CILOGON[: CILOGON.index("  allowed_idps:")],
        [
            "communities/uni-a/hubs/prod.yaml:11:1: auth.allowed_idps: cilogon hub 'uni-a' allows no identity provider; add one, keyed by its CILogon entity ID (https://cilogon.org/idplist), e.g. `https://idp.uni.edu/idp/shibboleth: {username_claim: eppn}`"
        ],
        id="cilogon without idps",
    ),
    pytest.param(
        GITHUB + "  allowed_organizations: [physics-dept]\n  allowed_users: [alice, Physics-Dept]\n",
        [
            "communities/uni-a/hubs/prod.yaml:17:26: auth.allowed_users[1]: 'Physics-Dept' is also in `allowed_organizations`; GitHub users and organizations share one namespace, so it cannot be both: keep it in one list"
        ],
        id="github name is user and org",
    ),
    pytest.param(
        GITHUB + "  allowed_users: [physics-dept:hub-users]\n",
        [
            "communities/uni-a/hubs/prod.yaml:16:19: auth.allowed_users[0]: 'physics-dept:hub-users' is an organization team (org:team), not a GitHub login; move it to `allowed_organizations`"
        ],
        id="github team in allowed_users",
    ),
    pytest.param(
        GITHUB + "  allowed_organizations: [physics-dept, physics-dept:hub-users]\n",
        [
            "communities/uni-a/hubs/prod.yaml:16:41: auth.allowed_organizations[1]: team 'physics-dept:hub-users' restricts nothing: every member of 'physics-dept' is already allowed; remove 'physics-dept:hub-users' or 'physics-dept'"
        ],
        id="github team next to its org",
    ),
    pytest.param(
        GITHUB + "  allow_all: true\n  allowed_organizations: [physics-dept]\n  allowed_users: [alice]\n",
        [
            "communities/uni-a/hubs/prod.yaml:16:3: auth.allow_all: true lets every github account into hub 'uni-a', so `allowed_users` and `allowed_organizations` would restrict nothing; remove `allow_all` or the list"
        ],
        id="github allow_all with lists",
    ),
    pytest.param(
        OIDC.replace("https://id.uni.edu", "http://id.uni.edu") + "  allow_all: true\n",
        [
            "communities/uni-a/hubs/prod.yaml:13:3: auth.issuer: prod hub 'uni-a' must reach its identity provider over https, not 'http://id.uni.edu/realms/hub' (http only for 127.0.0.1, localhost or ::1)"
        ],
        id="http issuer on prod",
    ),
    pytest.param(
        OIDC,
        [
            "communities/uni-a/hubs/prod.yaml:11:1: auth: nobody but the admins can log in to oidc hub 'uni-a'; add `allowed_users`, `allowed_groups`, `allow_existing_users: true` (admins add users on the admin page) or `allow_all: true`"
        ],
        id="oidc nobody can log in",
    ),
    pytest.param(
        GITHUB,
        [
            "communities/uni-a/hubs/prod.yaml:11:1: auth: nobody but the admins can log in to github hub 'uni-a'; add `allowed_users`, `allowed_organizations`, `allow_existing_users: true` (admins add users on the admin page) or `allow_all: true`"
        ],
        id="github nobody can log in",
    ),
    pytest.param(
        "auth:\n  type: dummy\n  admin_users: [grace]\n",
        [
            "communities/uni-a/hubs/prod.yaml:12:3: auth.type: dummy auth is refused on prod hub 'uni-a'; use `type: native`"
        ],
        id="dummy on prod",
    ),
]


@pytest.mark.parametrize(("auth", "expected"), CASES)
def test_auth_errors(template: Path, tmp_path: Path, auth: str, expected: list[str]) -> None:
    assert errors_with_auth(template, tmp_path, auth) == expected
