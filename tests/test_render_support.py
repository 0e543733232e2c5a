"""The support desk's help button as rendered, on both backends, without running a hub: the local hub's
managed `support` service and the control role's scope; the Kubernetes hub's service code as a
hub.extraFile, its managed service in hub.extraConfig (executed here as z2jh runs it), the port on the hub
Service and the two network policies, validated and rendered by the real z2jh chart 4.4.0 (`helm template`, as
tests/test_chart_check.py does: no cluster); the page overrides rendered with Jinja as JupyterHub does, on
branded and unbranded hubs, signed in and not; and the control plane's second look at a hub's requests
(support.intake.checked_request), store-free.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_support import CATEGORIES, URGENCY_HELP
from hubfleet.config.validate import load_fleet
from hubfleet.render import support_hook
from hubfleet.render.branding import TEMPLATES, hub_pages
from hubfleet.render.chart_check import ChartCheckError, helm_binary, helm_template
from hubfleet.render.kubernetes import render_z2jh_values, secret_placeholders, to_yaml, values_yaml
from hubfleet.render.local import CONTROL_SCOPES, LocalRuntime, render_jupyterhub_config
from hubfleet.render.support_hub import attachment_kind, clean_page
from hubfleet.support.intake import checked_request

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "examples" / "demo-fleet"
K8S = HERE / "fixtures" / "k8s-fleet"
CHART = HERE.parent.parent / "shared" / "charts" / "jupyterhub-4.4.0.tgz"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.fixture(scope="module")
def demo() -> FleetConfig:
    return load_fleet(DEMO)


@pytest.fixture(scope="module")
def k8s() -> FleetConfig:
    return load_fleet(K8S)


def runtime(support_port: int | None = 40123) -> LocalRuntime:
    return LocalRuntime(
        data_dir=Path("/srv/hub-data"),
        homes_dir=Path("/srv/homes"),
        hub_port=40121,
        proxy_api_port=40122,
        bin_dir=Path("/opt/venv/bin"),
        as_root=False,
        support_port=support_port,
    )


def config_of(text: str) -> Any:
    """Run a rendered jupyterhub_config.py as JupyterHub does (with `c`), the tokens' variables set."""
    from traitlets.config import Config

    c = Config()
    env = {"HUBFLEET_CONTROL_TOKEN": "t1", "HUBFLEET_OPERATOR_TOKEN": "t2"}
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: c})  # noqa: S102
    except ModuleNotFoundError:
        pass  # a native hub's start-up code imports nativeauthenticator's templates; not needed here
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return c


# --------------------------------------------------------------------------- local


def test_local_hub_runs_the_support_service(demo: FleetConfig) -> None:
    hub = demo.hubs["uni-a-staging"]
    text = render_jupyterhub_config(demo, hub, runtime())
    # a vanished runtime.json is written back from the running config, the support port too
    from hubfleet.daemon.hub_files import _SUPPORT_PORT

    assert (found := _SUPPORT_PORT.search(text)) and found[1] == "40123"
    c = config_of(text)
    service = next(s for s in c.JupyterHub.services if s["name"] == "support")
    assert service["url"] == "http://127.0.0.1:40123"
    assert service["command"] == ["/opt/venv/bin/python", "-m", "hubfleet.render.support_hub"]
    assert service["oauth_no_confirm"] is True and service["display"] is False
    settings = json.loads(service["environment"][support_hook.ENV])
    assert settings["db"] == "/srv/hub-data/support-outbox.sqlite"
    assert settings["control_service"] == "hubfleet" and settings["bind"] == "127.0.0.1"
    assert settings["categories"] == [list(item) for item in CATEGORIES.items()]
    assert settings["urgency"] == [list(item) for item in URGENCY_HELP.items()]
    assert settings["max_attachment_bytes"] == demo.settings.support.max_attachment_bytes
    control = next(r for r in c.JupyterHub.load_roles if r["name"] == "hubfleet")
    assert control["scopes"] == [*CONTROL_SCOPES, support_hook.ACCESS_SCOPE]
    user = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")  # through the hub's OAuth
    assert user["scopes"] == ["self", support_hook.ACCESS_SCOPE]
    assert c.JupyterHub.template_vars["hubfleet_help"] is True
    assert c.JupyterHub.template_vars["hubfleet_branded"] is True  # uni-a's branding stays


def test_no_help_button_no_service_and_unbranded_pages_untouched(demo: FleetConfig, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".hubfleet", ".hubfleet-data"))
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(
        fleet_yaml.read_text().replace("\nsupport:\n", "\nsupport:\n  help_button: false\n", 1)
    )
    community = root / "communities" / "uni-a" / "community.yaml"  # unbranded
    community.write_text(re.sub(r"(?m)^  branding:\n(    .*\n)+", "", community.read_text()))
    fleet = load_fleet(root)
    hub = fleet.hubs["uni-a-staging"]
    assert fleet.settings.support.help_button is False
    text = render_jupyterhub_config(fleet, hub, runtime())
    assert "support" not in {s["name"] for s in config_of(text).JupyterHub.services}
    assert support_hook.ACCESS_SCOPE not in text and "template_paths" not in text
    assert hub_pages(fleet, hub, help=False) is None
    # an export (no support port) has no service and no link either
    exported = render_jupyterhub_config(demo, demo.hubs["uni-a-staging"], runtime(None))
    assert "'name': 'support'" not in exported and "'hubfleet_help': False" in exported


# --------------------------------------------------------------------------- kubernetes


def test_kubernetes_values_carry_the_service(k8s: FleetConfig) -> None:
    values = render_z2jh_values(k8s, k8s.hubs["lab"])
    hub = values["hub"]
    code = hub["extraFiles"][support_hook.EXTRA_FILES_KEY]
    assert code == {
        "mountPath": support_hook.KUBERNETES_CODE,
        "stringData": support_hook.HUB_CODE.read_text(),
    }
    assert support_hook.ACCESS_SCOPE in hub["loadRoles"]["hubfleet"]["scopes"]
    assert hub["loadRoles"]["user"] == {"scopes": ["self", support_hook.ACCESS_SCOPE]}
    assert {"name": "support", "port": 10101, "targetPort": 10101, "protocol": "TCP"} in hub["service"][
        "extraPorts"
    ]
    assert {
        "ports": [{"port": 10101, "protocol": "TCP"}],
        "from": [{"podSelector": {"matchLabels": {"component": "proxy"}}}],
    } in hub["networkPolicy"]["ingress"]
    assert values["proxy"]["chp"]["networkPolicy"]["egress"] == [
        {
            "to": [{"podSelector": {"matchLabels": {"component": "hub"}}}],
            "ports": [{"port": 10101, "protocol": "TCP"}],
        }
    ]
    assert hub["config"]["JupyterHub"]["template_vars"]["hubfleet_help"] is True
    # the extraConfig as z2jh runs it: `c` with the chart's services, and its get_name
    from traitlets.config import Config

    c = Config()
    c.JupyterHub.services = [{"name": "hubfleet"}]
    exec(hub["extraConfig"][support_hook.EXTRA_CONFIG_KEY], {"c": c, "get_name": lambda name: name})  # noqa: S102
    service = c.JupyterHub.services[-1]
    assert service["name"] == "support" and service["url"] == "http://hub:10101"
    assert service["command"] == ["python3", support_hook.KUBERNETES_CODE]
    settings = json.loads(service["environment"][support_hook.ENV])
    assert settings["db"] == support_hook.KUBERNETES_DB and settings["bind"] == "0.0.0.0"
    assert settings["api_url"] == "http://127.0.0.1:8081/hub/api"


def test_the_real_chart_takes_the_values(k8s: FleetConfig, tmp_path: Path) -> None:
    helm = helm_binary()
    if helm is None or not CHART.exists():
        pytest.skip("no helm or no chart: run scripts/install-helm.sh; the chart is in the shared directory")
    hub = k8s.hubs["physics"]
    values, secrets = tmp_path / "values.yaml", tmp_path / "secrets.yaml"
    values.write_text(values_yaml(k8s, hub))
    secrets.write_text(to_yaml(secret_placeholders(k8s, hub)))
    try:
        manifests = helm_template(CHART, [values, secrets], release=hub.name, namespace=hub.name, helm=helm)
    except ChartCheckError as exc:  # pragma: no cover - the failure is the message
        pytest.fail(f"the chart refused the values: {exc}")
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(manifests) if d}
    ports = docs[("Service", "hub")]["spec"]["ports"]
    assert {"name": "support", "port": 10101, "targetPort": 10101, "protocol": "TCP"} in ports
    hub_policy = docs[("NetworkPolicy", "hub")]["spec"]["ingress"]
    assert any(rule.get("ports") == [{"port": 10101, "protocol": "TCP"}] for rule in hub_policy)
    proxy_policy = docs[("NetworkPolicy", "proxy")]["spec"]["egress"]
    assert any(rule.get("ports") == [{"port": 10101, "protocol": "TCP"}] for rule in proxy_policy)
    secret = docs[("Secret", "hub")]
    seen = yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))
    assert support_hook.EXTRA_CONFIG_KEY in seen["hub"]["extraConfig"]
    files = seen["hub"]["extraFiles"][support_hook.EXTRA_FILES_KEY]
    assert files["mountPath"] == support_hook.KUBERNETES_CODE


# --------------------------------------------------------------------------- the page overrides


def render_page(template: str, tvars: dict[str, Any], user: Any) -> str:
    from jupyterhub._data import DATA_FILES_PATH

    default = Path(DATA_FILES_PATH) / "templates"
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([str(default)])}, "/"),
            FileSystemLoader([str(TEMPLATES), str(default)]),
        ]
    )
    env = Environment(loader=loader, autoescape=True)
    return env.get_template(template).render(
        **tvars,
        base_url="/hub/",
        prefix="/",
        static_url=lambda *a, **k: "",
        login_url="/hub/login",
        logout_url="/hub/logout",
        next="",
        xsrf="x",
        user=user,
        announcement=None,
        authenticator=type("A", (), {"request_otp": False})(),
        login_service="",
        parsed_scopes=[],
        services=[],
    )


class _User:
    name = "ada"
    json_escaped_name = "ada"
    admin = False
    spawner = type("S", (), {"options_form": None})()


@pytest.mark.parametrize("branded", [True, False])
def test_pages_show_the_help_link(k8s: FleetConfig, branded: bool) -> None:
    hub = k8s.hubs["bio" if branded else "lab"]
    pages = hub_pages(k8s, hub, help=True)
    assert pages is not None and pages.branded is branded
    tvars = pages.template_vars() | {"hubfleet_page_parent": "templates/page.html"}
    login = render_page("login.html", tvars, None)
    assert 'id="hubfleet-help"' in login and 'href="/services/support/"' in login
    assert "location.pathname + window.location.search" in login
    assert ('id="hubfleet-login-title"' in login) is branded and ('id="hubfleet-name"' in login) is branded
    home = render_page("page.html", tvars, _User())
    assert 'href="/services/support/?signin=1"' in home  # signed in: the form asks the hub's OAuth


# --------------------------------------------------------------------------- checks on both sides


def test_the_form_and_the_intake_check_attachments_by_their_bytes(demo: FleetConfig) -> None:
    assert attachment_kind(PNG) == "image/png" and attachment_kind(b"%PDF-1.7") == "application/pdf"
    assert attachment_kind(b"MZ\x90") is None and attachment_kind(b"RIFF....AVI ") is None
    assert clean_page("https://evil.example/hub/home?x=1") == "/hub/home?x=1"
    assert clean_page("//evil.example/") == "" and clean_page("javascript:alert(1)") == ""
    item = {
        "ref": "20261201-abcd",
        "username": "ada",
        "verified": True,
        "email": "ada@example.org",
        "page": "/hub/home",
        "category": "data",
        "urgency": "low",
        "description": "x" * 60_000,
        "include_log": True,
        "attachment": {"filename": "../../etc/passwd.png", "data": base64.b64encode(PNG).decode()},
    }
    new, log_asked, dropped = checked_request(demo, "uni-a-staging", item)
    assert (new.hub, new.username, new.verified, new.intake_ref, log_asked) == (
        "uni-a-staging",
        "ada",
        True,
        "20261201-abcd",
        True,
    )
    assert [a.filename for a in new.attachments] == ["passwd.png"]
    assert len(new.description) == 50_000 and dropped == [
        "the description beyond 50,000 of its 60,000 characters"
    ]
    bad = {**item, "verified": True, "username": None, "category": "x", "urgency": "now", "description": ""}
    bad["attachment"] = {"filename": "a.pdf", "data": "%%% not base64"}
    new, log_asked, dropped = checked_request(demo, "uni-a-staging", bad)
    assert (new.verified, new.category, new.urgency, log_asked) == (False, "other", "normal", False)
    assert new.attachments == [] and new.description.startswith("(The request")
    assert len(dropped) == 4 and "the attachment a.pdf (not readable)" in dropped


@pytest.mark.parametrize("template", ["native-login.html", "signup.html"])
def test_native_hub_pages_show_the_help_link(k8s: FleetConfig, template: str) -> None:
    """An unbranded native hub (physics): NativeAuthenticator's own sign-in and sign-up pages, on the template
    path as render/branding.py's native_template_paths sets it, carry the link and keep their look."""
    import nativeauthenticator
    from jupyterhub._data import DATA_FILES_PATH

    native = Path(nativeauthenticator.__file__).parent
    pages = hub_pages(k8s, k8s.hubs["physics"], help=True)
    assert pages is not None and pages.native and not pages.branded
    default = Path(DATA_FILES_PATH) / "templates"
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([str(default)])}, "/"),
            FileSystemLoader([str(TEMPLATES), str(native / "templates"), str(native.parent), str(default)]),
        ]
    )
    page = (
        Environment(loader=loader, autoescape=True)
        .get_template(template)
        .render(
            **pages.template_vars(),
            base_url="/hub/",
            prefix="/",
            static_url=lambda *a, **k: "",
            login_url="/hub/login",
            logout_url="/hub/logout",
            next="",
            xsrf="x",
            user=None,
            enable_signup=True,
            ask_email=False,
            two_factor_auth=False,
            recaptcha_key=None,
            tos="",
            announcement=None,
            authenticator=type("A", (), {"request_otp": False})(),
            login_service="",
            parsed_scopes=[],
            services=[],
        )
    )
    assert 'id="hubfleet-help"' in page and 'href="/services/support/"' in page
    assert 'id="hubfleet-name"' not in page and "JupyterHub logo" in page  # JupyterHub's own look


def test_the_daemon_round_skips_hubs_it_cannot_ask(
    demo: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local hub not running is not asked; one never started from this state directory is skipped (its
    requests wait in its outbox) without stopping the round."""
    import asyncio

    from hubfleet.daemon.support_intake import interval, pull_all
    from hubfleet.store import open_store

    with open_store(tmp_path) as store:
        assert asyncio.run(pull_all(demo, store, tmp_path, running_local=[])) == []
        assert asyncio.run(pull_all(demo, store, tmp_path, running_local=list(demo.hubs))) == []
    monkeypatch.delenv("HUBFLEET_SUPPORT_PULL_INTERVAL", raising=False)
    assert interval() == 10.0
