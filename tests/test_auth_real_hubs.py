"""Sign-in seen in real hubs: CILogon IdPs that admit only listed users or domains, anonymous workshop users
(`type: tmp`), and which staff username a hub uses when staff have several.

Who gets into the CILogon hub is decided by the real CILogonOAuthenticator (OAuthenticator 17) configured
from the values hubfleet renders, exactly as z2jh loads `hub.config`: the whole of JupyterHub's
`get_authenticated_user` runs (username derivation, allow checks, admin status) on CILogon user-info dicts.
Only the HTTP call to CILogon's userinfo endpoint is replaced (by the user-info dict itself). The tmp hub is
a real JupyterHub started by `hubfleet up` with the real TmpAuthenticator, opened over HTTP like a visitor.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado import web
from traitlets.config import Config

from fleet_helpers import copy_demo_fleet, daemon_status, edit, hubfleet, running_fleet, wait_for
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.render.common import auth_config, effective_admins
from hubfleet.render.kubernetes import render_z2jh_values

HERE = Path(__file__).resolve().parent
REAL = HERE / "fixtures" / "real-hubs"
UNI_IDP = "urn:mace:incommon:uni-west.example.edu"
GOOGLE = "http://google.com/accounts/o8/id"
UNI_HUB = "communities/uni-west/hubs/prod.yaml"


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(REAL)


def cilogon_from_values(values: dict[str, Any]) -> Any:
    """The hub's CILogonOAuthenticator built from its rendered `hub.config` (as z2jh's jupyterhub_config.py
    applies it), answering `token_to_user` with the user-info dict it is handed instead of calling CILogon."""
    from oauthenticator.cilogon import CILogonOAuthenticator

    class Offline(CILogonOAuthenticator):
        user_info: dict[str, Any] = {}

        async def token_to_user(self, token_info: dict[str, Any]) -> dict[str, Any]:
            return self.user_info

        async def authenticate(self, handler: Any, data: Any = None) -> dict[str, Any]:
            return await self._token_to_auth_model({"access_token": "t", "token_type": "Bearer"})

    config = Config(values["hub"]["config"])
    config.CILogonOAuthenticator.client_secret = "not-a-real-secret"
    return Offline(config=config)


def sign_in(authenticator: Any, user_info: dict[str, Any]) -> dict[str, Any] | None:
    """JupyterHub's whole decision on one CILogon identity: the auth model when admitted, else None."""
    authenticator.user_info = user_info
    return asyncio.run(authenticator.get_authenticated_user(None, {}))


def uni(eppn: str) -> dict[str, Any]:
    return {"idp": UNI_IDP, "eppn": eppn, "email": eppn, "sub": f"http://cilogon.org/serverA/users/{eppn}"}


def google(email: str) -> dict[str, Any]:
    return {"idp": GOOGLE, "email": email, "sub": f"http://cilogon.org/serverA/users/{email}"}


# --------------------------------------------------------------------------- CILogon


def test_cilogon_university_hub_admits_exactly_what_its_file_says(fleet: FleetConfig) -> None:
    """uni-west: the university IdP admits its own domain only; Google admits nobody but the staff (admins
    under their `cilogon:google` usernames, prefixed `staff:`)."""
    from oauthenticator.cilogon import _get_select_idp_param

    values = render_z2jh_values(fleet, fleet.hubs["uni-west"])
    auth = cilogon_from_values(values)
    # CILogon's page offers only the hub's IdPs, the first of the hub file pre-selected
    assert _get_select_idp_param(auth.idps) == f"{UNI_IDP},{GOOGLE}"

    student = sign_in(auth, uni("alice@uni-west.example.edu"))
    assert student is not None and student["name"] == "alice@uni-west.example.edu"
    assert not student["admin"]
    teacher = sign_in(auth, uni("sam@uni-west.example.edu"))
    assert teacher is not None and teacher["admin"] is True  # admin_users of the hub file
    # the university IdP asserting another domain's user: not of the allowed domain
    assert sign_in(auth, uni("mallory@elsewhere.example.edu")) is None

    staff = sign_in(auth, google("ada@service.example.org"))
    assert staff is not None and staff["name"] == "staff:ada@service.example.org" and staff["admin"] is True
    # anyone else with a Google account: refused, even with a university-looking address
    assert sign_in(auth, google("eve@gmail.com")) is None
    assert sign_in(auth, google("alice@uni-west.example.edu")) is None

    # an IdP the hub does not list: refused before anything else
    with pytest.raises(web.HTTPError) as refused:
        sign_in(auth, {"idp": "http://github.com/login/oauth/authorize", "email": "x@y.org"})
    assert refused.value.status_code == 403


def test_cilogon_idp_for_listed_users_only(fleet: FleetConfig) -> None:
    """`allow_all: false` on an IdP admits the hub's `allowed_users` of it and nobody else of it."""
    hub = fleet.hubs["uni-west"]
    assert hub.auth is not None
    listed = hub.model_copy(
        update={"auth": hub.auth.model_copy(update={"allowed_users": ["staff:guest@partner.example.org"]})}
    )
    auth = cilogon_from_values(render_z2jh_values(fleet, listed))
    guest = sign_in(auth, google("guest@partner.example.org"))
    assert guest is not None and guest["name"] == "staff:guest@partner.example.org" and not guest["admin"]
    assert sign_in(auth, google("other@partner.example.org")) is None
    assert sign_in(auth, uni("alice@uni-west.example.edu")) is not None  # the domain rule still holds


def test_cilogon_idp_that_admits_everyone_of_it(fleet: FleetConfig) -> None:
    hub = fleet.hubs["uni-west"]
    assert hub.auth is not None
    idps = dict(hub.auth.allowed_idps)
    idps[UNI_IDP] = idps[UNI_IDP].model_copy(update={"allowed_domains": [], "allow_all": True})
    everyone = hub.model_copy(update={"auth": hub.auth.model_copy(update={"allowed_idps": idps})})
    values = render_z2jh_values(fleet, everyone)
    assert values["hub"]["config"]["CILogonOAuthenticator"]["allowed_idps"][UNI_IDP]["allow_all"] is True
    auth = cilogon_from_values(values)
    assert sign_in(auth, uni("mallory@elsewhere.example.edu")) is not None
    assert sign_in(auth, google("eve@gmail.com")) is None


def hub_file_errors(tmp_path: Path, old: str, new: str) -> str:
    root = tmp_path / "fleet"
    shutil.copytree(REAL, root)
    edit(root / UNI_HUB, old, new)
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 1
    return result.stdout + result.stderr


def test_cilogon_idp_must_say_whom_it_admits(tmp_path: Path) -> None:
    out = hub_file_errors(tmp_path, "      allow_all: false          # nobody", "      # nobody")
    assert (
        f"{UNI_HUB}:14:3: auth.allowed_idps['{GOOGLE}']: say whom of this IdP hub 'uni-west' admits: "
        "`allowed_domains: [uni.edu]` (users of those domains), `allow_all: true` (every user of the IdP) or "
        "`allow_all: false` (only auth.allowed_users and the admins)"
    ) in out, out


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "      allowed_domains: [uni-west.example.edu]\n",
            "      allowed_domains: [uni-west.example.edu]\n      allow_all: true\n",
            "allow_all: true admits every user of this IdP, so allowed_domains would restrict nothing",
        ),
        (
            "      username_prefix: staff\n",
            "      username_prefix: staff\n      strip_domain: service.example.org\n",
            "strip_domain and username_prefix both change the username",
        ),
        (
            "  staff_username_key: cilogon:google\n",
            "  staff_username_key: cilogon:gogle\n",
            "auth.staff_username_key: no operator has a username under 'cilogon:gogle' in fleet.yaml "
            "(operators have: cilogon:google)",
        ),
        (
            "  staff_username_key: cilogon:google\n",
            "  staff_username_key: github\n",
            "auth.staff_username_key: 'github' is not a key of cilogon usernames",
        ),
        (
            "  staff_username_key: cilogon:google\n",
            "  staff_username_key: cilogon:google\n  allow_all: true\n",
            "auth.allow_all: true admits every user of every IdP into hub 'uni-west', so the restrictions of "
            f"IdP '{UNI_IDP}' would restrict nothing",
        ),
    ],
)
def test_cilogon_contradictions_are_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    out = hub_file_errors(tmp_path, old, new)
    assert UNI_HUB in out and message in out, out


# --------------------------------------------------------------------------- staff usernames


def test_each_hub_picks_its_staff_username(fleet: FleetConfig) -> None:
    """Staff have a GitHub login and a CILogon-through-Google username: each hub's admins are the ones of its
    key (the auth type unless `staff_username_key` says otherwise)."""
    assert effective_admins(fleet, fleet.hubs["uni-west"]) == [
        "sam@uni-west.example.edu",
        "staff:ada@service.example.org",
        "staff:ben@service.example.org",
    ]
    assert effective_admins(fleet, fleet.hubs["eddy"]) == ["colliand", "dan800", "ada-service", "ben-service"]
    assert effective_admins(fleet, fleet.hubs["service-staging"]) == ["ada", "ben"]
    # no operator has a `tmp` username: the workshop's admins are its own
    assert effective_admins(fleet, fleet.hubs["ocean-workshop"]) == ["omar"]
    # usage counts leave the same staff usernames out
    from hubfleet.monitor.collector import excluded_usernames

    assert excluded_usernames(fleet, fleet.hubs["uni-west"]) == {
        "hubfleet-check",
        "staff:ada@service.example.org",
        "staff:ben@service.example.org",
    }


def test_operator_username_key_that_is_no_auth_type(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    shutil.copytree(REAL, root)
    edit(root / "fleet.yaml", "      dummy: ada\n", "      gitlab: ada\n")
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 1
    assert (
        "operators[0].usernames: 'gitlab' is not an auth type: write one of dummy, native, cilogon, github, "
        "oidc, tmp, or TYPE:LABEL such as cilogon:google"
    ) in result.stdout + result.stderr, result.stdout


# --------------------------------------------------------------------------- tmp


def test_tmp_renders_tmpauthenticator_admitting_everyone(fleet: FleetConfig) -> None:
    from tmpauthenticator import TmpAuthenticator

    config = auth_config(fleet, fleet.hubs["ocean-workshop"])
    assert config.authenticator_class == "tmpauthenticator.TmpAuthenticator"
    values = render_z2jh_values(fleet, fleet.hubs["ocean-workshop"])
    assert values["hub"]["config"]["TmpAuthenticator"] == {"admin_users": ["omar"], "allow_all": True}
    authenticator = TmpAuthenticator(config=Config(values["hub"]["config"]))
    visitor = asyncio.run(authenticator.get_authenticated_user(None, {}))
    assert visitor is not None and re.fullmatch(r"[0-9a-f-]{36}", visitor["name"])
    assert authenticator.auto_login is True and authenticator.login_url("/hub/") == "/hub/tmplogin"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "  allow_on_prod: true\n",
            "",
            "auth.type: tmp auth gives anyone who opens prod hub 'ocean-workshop' a server; set "
            "`allow_on_prod: true` under auth",
        ),
        (
            "  admin_users: [omar]\n",
            "  admin_users: [omar]\n  allowed_users: [alice]\n",
            "auth.allowed_users: tmp hub 'ocean-workshop' logs every visitor in as a new random user, so "
            "`allowed_users` would restrict nothing; remove it",
        ),
    ],
)
def test_tmp_refused_on_prod_unless_allowed(tmp_path: Path, old: str, new: str, message: str) -> None:
    root = tmp_path / "fleet"
    shutil.copytree(REAL, root)
    edit(root / "communities/ocean-workshop/hubs/prod.yaml", old, new)
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 1 and message in result.stdout + result.stderr, result.stdout


def test_tmp_hub_without_admins_is_valid(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    shutil.copytree(REAL, root)
    edit(root / "communities/ocean-workshop/hubs/prod.yaml", "  admin_users: [omar]\n", "")
    assert hubfleet("validate", fleet=root).returncode == 0


@pytest.mark.integration
def test_visitor_of_a_local_tmp_hub_gets_a_user_and_a_server(tmp_path: Path) -> None:
    """One real local hub with `type: tmp`: a visitor opening /hub/tmplogin is logged in as a new user and
    sent to a server of their own, which starts; a second visitor is another user."""
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/hackweek/hubs/staging.yaml"})
    path = root / "communities/hackweek/hubs/staging.yaml"
    text = re.sub(r"(?ms)^auth:\n(  .*\n)+", "auth:\n  type: tmp\n", path.read_text())
    path.write_text(text)
    with running_fleet(root):
        url = daemon_status(root)["hubs"]["hackweek-staging"]["url"]
        names = []
        for _ in range(2):
            with httpx.Client(base_url=url, follow_redirects=True, timeout=60) as browser:
                landing = browser.get("/hub/tmplogin")
                assert landing.status_code == 200, landing.text[:300]
                cookie_user = browser.get("/hub/api/user")
                assert cookie_user.status_code == 200, cookie_user.text[:300]
                name = cookie_user.json()["name"]
                assert re.fullmatch(r"[0-9a-f-]{36}", name)

                def ready(browser: httpx.Client = browser) -> bool:
                    model = browser.get("/hub/api/user").json()
                    return bool(model["servers"].get("", {}).get("ready"))

                wait_for(ready, timeout=120)
                # the server's own page, through its OAuth handshake with the hub, as a browser opens it
                assert browser.get(f"/user/{name}/lab").status_code == 200
                assert browser.get(f"/user/{name}/api/status").status_code == 200
                names.append(name)
        assert names[0] != names[1]
