"""Branding and per-user databases on Kubernetes hubs (tests/fixtures/k8s-fleet: community bio is branded,
its native prod hub and dummy staging hub; bio-staging has `user_database`).

- The rendered values: the templates and the logo as hub.extraFiles (the logo's bytes in binaryData), the
  template variables, logo_file and template path (a native hub's after NativeAuthenticator's own); the
  postgres sidecar on 127.0.0.1 with requests and limits, its per-user PVC volume, the user's DATABASE_URL
  and PG* variables without a password, the pre_spawn_hook.
- `helm template` with the real chart (jupyterhub 4.4.0) renders them: the files are in the hub's Secret and
  mounted in the hub pod.
- The branding's template path on a native hub, executed as the hub would, reaches this machine's
  NativeAuthenticator templates, and Jinja renders the login page through it.
- The pre_spawn_hook's code compiles and runs on a real KubeSpawner (7.1.0) whose API client is a stand-in:
  no Kubernetes cluster runs here, so `spawner.api` records create calls and answers 409/403/500 as the API
  server would. It creates the PVC once and tolerates "already exists".
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader

from hubfleet.config.validate import load_fleet
from hubfleet.render import k8s_user_database as user_db
from hubfleet.render.chart_check import ChartCheckError, helm_binary, helm_template
from hubfleet.render.kubernetes import BRANDING_DIR, render_z2jh_values, to_yaml

HERE = Path(__file__).resolve().parent
FLEET = HERE / "fixtures" / "k8s-fleet"
CHART = HERE.parent.parent / "shared" / "charts" / "jupyterhub-4.4.0.tgz"
LOGO = FLEET / "communities" / "bio" / "logo.svg"


@pytest.fixture(scope="module")
def fleet():  # noqa: ANN201
    return load_fleet(FLEET)


def values_of(fleet: Any, hub: str) -> dict[str, Any]:
    return render_z2jh_values(fleet, fleet.hubs[hub])


# --------------------------------------------------------------------------- branding


@pytest.mark.parametrize("hub", ["bio", "bio-staging"])
def test_branding_values(fleet: Any, hub: str) -> None:
    values = values_of(fleet, hub)
    files = values["hub"]["extraFiles"]
    logo = files["hubfleet-branding-logo"]
    assert base64.b64decode(logo["binaryData"]) == LOGO.read_bytes()
    assert logo["mountPath"] == f"{BRANDING_DIR}/logo.svg"
    for name in ("page.html", "login.html", "native-login.html"):
        entry = files["hubfleet-branding-" + name.replace(".", "-")]
        assert entry["mountPath"] == f"{BRANDING_DIR}/templates/{name}" and entry["stringData"]
    config = values["hub"]["config"]["JupyterHub"]
    assert config["logo_file"] == f"{BRANDING_DIR}/logo.svg"
    tvars = config["template_vars"]
    assert tvars["hubfleet_display_name"] == "Bio"
    assert tvars["hubfleet_accent_color"] == "#2e7d32"
    assert tvars["hubfleet_funded_by"] == "Funded by the Bio Institute"
    assert len(tvars["hubfleet_logo_sha256"]) == 64
    extra = values["hub"].get("extraConfig", {})
    if hub == "bio":  # native: its template path after NativeAuthenticator's (extraConfig runs in key order)
        assert tvars["hubfleet_page_parent"] == "nativeauthenticator/templates/page.html"
        assert "template_paths" not in config
        keys = sorted(extra)
        assert keys.index("hubfleet-01-native-templates") < keys.index("hubfleet-02-branding-templates")
    else:
        assert tvars["hubfleet_page_parent"] == "templates/page.html"
        assert config["template_paths"] == [f"{BRANDING_DIR}/templates"]
        assert "hubfleet-02-branding-templates" not in extra


def test_unbranded_hubs_keep_jupyterhubs_look(fleet: Any) -> None:
    """Only the support desk's "Get help" link (support.help_button) brings the page overrides: no logo, and
    the templates keep JupyterHub's name, logo and colours (`hubfleet_branded` false)."""
    values = values_of(fleet, "lab")
    assert "hubfleet-branding-logo" not in values["hub"]["extraFiles"]
    assert "logo_file" not in values["hub"]["config"]["JupyterHub"]
    tvars = values["hub"]["config"]["JupyterHub"]["template_vars"]
    assert (tvars["hubfleet_branded"], tvars["hubfleet_help"]) == (False, True)


def test_native_template_path_reaches_nativeauthenticator(fleet: Any, tmp_path: Path) -> None:
    """The hub's extraConfig, run here as z2jh runs it (with `c`), then Jinja set up as JupyterHub 6 does
    (app.py: a `templates/` prefix for JupyterHub's own, then template_paths): the login page renders."""
    from traitlets.config import Config

    values = values_of(fleet, "bio")
    branding = tmp_path / "templates"
    branding.mkdir()
    for entry in values["hub"]["extraFiles"].values():
        if "stringData" in entry:
            (branding / Path(entry["mountPath"]).name).write_text(entry["stringData"])
    code = values["hub"]["extraConfig"]["hubfleet-02-branding-templates"]
    c = Config()
    exec(code.replace(f"{BRANDING_DIR}/templates", str(branding)), {"c": c})  # noqa: S102
    paths = list(c.JupyterHub.template_paths)
    assert paths[0] == str(branding) and Path(paths[1], "native-login.html").is_file()
    from jupyterhub._data import DATA_FILES_PATH

    default = Path(DATA_FILES_PATH) / "templates"
    assert (default / "page.html").is_file()
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([str(default)])}, "/"),
            FileSystemLoader([*paths, str(default)]),
        ]
    )
    env = Environment(loader=loader, autoescape=True)
    tvars = values["hub"]["config"]["JupyterHub"]["template_vars"]
    page = env.get_template("native-login.html").render(
        **tvars,
        base_url="/hub/",
        static_url=lambda *a, **k: "",
        login_url="/hub/login",
        next="",
        xsrf="x",
        user=None,
        enable_signup=True,
        announcement=None,
        parsed_scopes=[],
        services=[],
    )
    assert (
        'id="hubfleet-login-title"' in page and 'id="eye"' in page and "Funded by the Bio Institute" in page
    )


# --------------------------------------------------------------------------- user database


def test_user_database_values(fleet: Any) -> None:
    singleuser = values_of(fleet, "bio-staging")["singleuser"]
    [sidecar] = singleuser["extraContainers"]
    assert sidecar["image"] == "docker.io/library/postgres:15.10"
    assert sidecar["args"] == ["-c", "listen_addresses=127.0.0.1"]
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["POSTGRES_HOST_AUTH_METHOD"] == "trust" and "POSTGRES_PASSWORD" not in env
    assert sidecar["resources"] == {
        "requests": {"memory": "256M", "cpu": 0.05},
        "limits": {"memory": "256M", "cpu": 0.5},
    }
    assert sidecar["volumeMounts"] == [{"name": "hubfleet-user-db", "mountPath": "/var/lib/postgresql/data"}]
    assert singleuser["storage"]["extraVolumes"] == [
        {"name": "hubfleet-user-db", "persistentVolumeClaim": {"claimName": "db-{username}"}}
    ]
    assert singleuser["extraEnv"]["DATABASE_URL"] == "postgresql://jovyan@127.0.0.1:5432/jovyan"
    assert {"PGHOST", "PGPORT", "PGUSER", "PGDATABASE"} <= singleuser["extraEnv"].keys()
    assert "password" not in to_yaml(singleuser).lower()
    # the sidecar is the only container with the volume: the user's server reaches the data over SQL only
    assert "extraVolumeMounts" not in singleuser["storage"]
    assert "db-{username}" not in to_yaml(values_of(fleet, "bio"))  # only where the hub file asks


@pytest.mark.parametrize("hub", ["bio", "bio-staging"])
def test_helm_template_with_the_real_chart(fleet: Any, hub: str, tmp_path: Path) -> None:
    try:
        helm = helm_binary()
    except ChartCheckError as exc:
        pytest.fail(str(exc))
    if helm is None:
        pytest.fail("no helm: run scripts/install-helm.sh")
    values = tmp_path / "values.yaml"
    values.write_text(to_yaml(values_of(fleet, hub)))
    out = helm_template(CHART, [values], release=hub, namespace=hub)
    docs = [d for d in yaml.safe_load_all(out) if d]
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "hub")
    assert secret["data"]["hubfleet-branding-logo"] == base64.b64encode(LOGO.read_bytes()).decode()
    assert "hubfleet-branding-page-html" in secret["stringData"]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub")
    mounts = {m["mountPath"] for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert f"{BRANDING_DIR}/logo.svg" in mounts and f"{BRANDING_DIR}/templates/page.html" in mounts
    chart_values = yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))
    if hub == "bio-staging":
        assert chart_values["singleuser"]["extraContainers"][0]["name"] == "postgres"
        assert "hubfleet-20-user-database" in chart_values["hub"]["extraConfig"]


class StandInApi:
    """Stands in for KubeSpawner's CoreV1Api (kubernetes_asyncio): no cluster runs here. It keeps the PVCs
    created and answers a second create of the same name with 409, as the API server does."""

    def __init__(self, fail: int | None = None) -> None:
        self.pvcs: dict[str, Any] = {}
        self.creates = 0
        self.reads = 0
        self.fail = fail

    async def create_namespaced_persistent_volume_claim(self, namespace: str, body: Any) -> Any:
        from kubernetes_asyncio.client.rest import ApiException

        self.creates += 1
        if self.fail is not None:
            raise ApiException(status=self.fail)
        if body.metadata.name in self.pvcs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.pvcs[body.metadata.name] = (namespace, body)
        return body

    async def read_namespaced_persistent_volume_claim(self, name: str, namespace: str) -> Any:
        from kubernetes_asyncio.client.rest import ApiException

        self.reads += 1
        if name not in self.pvcs:
            raise ApiException(status=404)
        return self.pvcs[name][1]


KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: closed
clusters: [{name: closed, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: nobody, user: {token: not-a-token}}]
contexts: [{name: closed, context: {cluster: closed, user: nobody}}]
"""


def _spawner(mp: pytest.MonkeyPatch, tmp: Path, api: StandInApi, name: str = "Alice.Smith") -> Any:
    from kubespawner import KubeSpawner

    # a kube config naming a closed port: KubeSpawner loads one when it is made; nothing connects to it
    kubeconfig = tmp / "kubeconfig.yaml"
    kubeconfig.write_text(KUBECONFIG)
    import kubernetes_asyncio.config.kube_config as kube_config

    mp.setattr(
        kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
    )  # read at import, not $KUBECONFIG
    user = SimpleNamespace(name=name, id=1, url=f"/user/{name}/")
    spawner = KubeSpawner(_mock=True, user=user, namespace="bio-staging", storage_class="standard")
    spawner.api = api
    return spawner


def _hook(fleet: Any, previous: Any = None) -> Any:
    from traitlets.config import Config

    code = values_of(fleet, "bio-staging")["hub"]["extraConfig"][user_db.HOOK_KEY]
    c = Config()
    if previous is not None:
        c.KubeSpawner.pre_spawn_hook = previous
    exec(compile(code, user_db.HOOK_KEY, "exec"), {"c": c})  # noqa: S102
    return c.KubeSpawner.pre_spawn_hook


def test_hook_creates_the_pvc_once(fleet: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    api = StandInApi()
    hook = _hook(fleet)

    async def spawns() -> Any:
        spawner = _spawner(monkeypatch, tmp_path, api)  # KubeSpawner is made in the hub's event loop
        await hook(spawner)
        await hook(spawner)  # the second spawn: 409, tolerated
        return spawner

    spawner = asyncio.run(spawns())
    assert api.creates == 2 and len(api.pvcs) == 1
    [(name, (namespace, pvc))] = api.pvcs.items()
    assert name == spawner._expand_user_properties("db-{username}") and name.startswith("db-alice")
    assert namespace == "bio-staging"
    assert pvc.spec.resources.requests == {"storage": "2Gi"}
    assert pvc.spec.access_modes == ["ReadWriteOnce"] and pvc.spec.storage_class_name == "standard"
    assert pvc.metadata.labels["component"] == "hubfleet-user-database"


def test_hook_tolerates_a_quota_403_only_when_the_pvc_exists(
    fleet: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kubernetes_asyncio.client.rest import ApiException

    api = StandInApi(fail=403)
    hook = _hook(fleet)

    async def spawns() -> None:
        spawner = _spawner(monkeypatch, tmp_path, api)
        with pytest.raises(ApiException):
            await hook(spawner)  # 403 and no such PVC: the quota error stands
        api.pvcs[spawner._expand_user_properties("db-{username}")] = ("bio-staging", None)
        await hook(spawner)  # 403 but it exists: fine
        assert api.reads == 2
        api.fail = 500
        with pytest.raises(ApiException):
            await hook(spawner)

    asyncio.run(spawns())


def test_hook_runs_an_earlier_pre_spawn_hook(
    fleet: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []

    async def earlier(spawner: Any) -> None:
        seen.append(spawner.user.name)

    api = StandInApi()
    hook = _hook(fleet, earlier)

    async def spawn() -> None:
        await hook(_spawner(monkeypatch, tmp_path, api, "bob"))

    asyncio.run(spawn())
    assert seen == ["bob"] and len(api.pvcs) == 1
