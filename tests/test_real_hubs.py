"""Three real hubs of a managed JupyterHub service, written as hubfleet files (tests/fixtures/real-hubs/),
rendered to golden z2jh values and run through `helm template` with the real chart (jupyterhub 4.4.0).

Which real hub each models (2i2c's infrastructure repository, config/clusters/2i2c/*.values.yaml):

- `uni-west` models **ucmerced** (CILogonOAuthenticator, `urn:mace:incommon:ucmerced.edu` with
  `username_claim: eppn`, and the service's staff through `http://google.com/accounts/o8/id` added as admins
  by `add_staff_user_ids_of_type: google`). Here the university IdP is limited to its domain
  (`allowed_domains`), the Google IdP admits nobody but the staff (`allow_all: false`, staff usernames picked
  with `staff_username_key: cilogon:google` and prefixed `staff:` so no other account can pose as them).
  Written with NO extra_values or extra_config. Left out: the homepage template variables (org name, logo,
  funded_by), which are the service's custom chart, not z2jh.
- `eddy` models **jackeddy** (GitHubOAuthenticator, `allowed_organizations: [2i2c-org:tech-team,
  jack-eddy-symposium]` with the read:org scope, admin_users, a four-size profileList, a community node
  selector, pangeo image). Its environments are the four sizes, each with its instance type's node selector,
  the community pool's toleration, the scratch-bucket variables (`extraEnv` there) and an image option (the
  Pangeo images, or another `pangeo/` image checked by a regex). Not modelled: named servers
  (`allowNamedServers`) and the network policy opened for dask-gateway.
- `ocean-workshop` models **ephemeral-demo** (TmpAuthenticator, no home storage, short culling) and the
  workshop hubs of the service. Left to the next issue: the per-user database. Its nginx basic-auth
  annotations are not modelled (a per-hub ingress annotation): the hub is public by design here, with
  `max_users` and culling, and tmp auth needs `allow_on_prod: true` on a prod hub.

`service-staging` is the cluster's staging hub (uni-cloud `staging_hub`), gating uni-west and ocean-workshop;
eddy has its community's own staging hub on its own cluster. Regenerate the golden files with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
import yaml

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.render.chart_check import ChartCheckError, helm_binary, helm_template
from hubfleet.render.kubernetes import render_z2jh_values, secret_placeholders, to_yaml, values_yaml

HERE = Path(__file__).resolve().parent
REAL = HERE / "fixtures" / "real-hubs"
GOLDEN = HERE / "golden" / "real-hubs"
CHART = HERE.parent.parent / "shared" / "charts" / "jupyterhub-4.4.0.tgz"
HUBS = ["eddy", "eddy-staging", "ocean-workshop", "service-staging", "uni-west"]


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(REAL)


def test_the_real_hubs_need_no_escape_hatch(fleet: FleetConfig) -> None:
    assert sorted(fleet.hubs) == HUBS
    for hub in fleet.hubs.values():
        assert not hub.extra_config, hub.name
        assert not (hub.kubernetes and hub.kubernetes.extra_values), hub.name
    for path in REAL.rglob("*.yaml"):
        assert not re.search(r"(?m)^\s*extra_(values|config):", path.read_text()), path


@pytest.mark.parametrize("hub_name", HUBS)
def test_values_match_golden_file(fleet: FleetConfig, hub_name: str) -> None:
    rendered = values_yaml(fleet, fleet.hubs[hub_name])
    golden = GOLDEN / f"{hub_name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text(), (
        f"re-run with UPDATE_GOLDEN=1 if the change to {golden} is intended"
    )


@pytest.mark.parametrize("hub_name", HUBS)
def test_real_chart_renders_them(fleet: FleetConfig, hub_name: str, tmp_path: Path) -> None:
    """`helm template` of the real chart on the public values plus the secret placeholders (the whole shape
    helm gets at deploy); the ingress carries the cluster's class, cert-manager issuer and `<hub>-tls`."""
    helm = helm_binary()
    if helm is None or not CHART.is_file():
        pytest.skip("no helm or no chart: run scripts/install-helm.sh; the chart is in ../shared/charts")
    hub = fleet.hubs[hub_name]
    values, secrets = tmp_path / "values.yaml", tmp_path / "secrets.yaml"
    values.write_text(values_yaml(fleet, hub))
    secrets.write_text(to_yaml(secret_placeholders(fleet, hub)))
    try:
        manifests = helm_template(CHART, [values, secrets], release=hub.name, namespace=hub.name, helm=helm)
    except ChartCheckError as exc:
        pytest.fail(f"{hub_name}: {exc}")
    documents = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(manifests) if d}
    ingress = documents[("Ingress", "jupyterhub")]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": [hub.domain], "secretName": f"{hub_name}-tls"}]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [hub.domain]
    assert documents[("Service", "proxy-public")]["spec"]["type"] == "ClusterIP"


def test_workshop_hub_values(fleet: FleetConfig) -> None:
    values = render_z2jh_values(fleet, fleet.hubs["ocean-workshop"])
    config = dict(values["hub"]["config"]["JupyterHub"])
    config.pop("template_paths"), config.pop("template_vars")  # the "Get help" link's page overrides
    assert config == {
        "authenticator_class": "tmpauthenticator.TmpAuthenticator",
        "active_server_limit": 150,
    }
    assert values["singleuser"]["storage"] == {"type": "none"}
    assert values["cull"] == {"enabled": True, "timeout": 1800, "every": 300, "maxAge": 14400}
    # the cluster's defaults reach the hubs on it; the community's cluster is the hub's
    assert values["singleuser"]["nodeSelector"] == {"hub.jupyter.org/node-purpose": "user"}


def test_research_hub_values(fleet: FleetConfig) -> None:
    values = render_z2jh_values(fleet, fleet.hubs["eddy"])
    github = values["hub"]["config"]["GitHubOAuthenticator"]
    assert github["allowed_organizations"] == ["eddy-symposium", "service-org:tech-team"]
    assert github["scope"] == ["read:org"]
    assert [p["slug"] for p in values["singleuser"]["profileList"]] == ["small", "medium", "large", "huge"]
    assert values["singleuser"]["image"] == {"name": "pangeo/pangeo-notebook", "tag": "2024.05.10"}
    assert values["singleuser"]["nodeSelector"] == {"service.example.org/community": "eddy"}


def test_issuer_kind_and_extra_annotations(fleet: FleetConfig) -> None:
    """A namespaced Issuer and extra cluster annotations; no issuer: no cert-manager annotation (the
    `<hub>-tls` secret is then provided some other way) and no class: the controller's default class."""
    hub = fleet.hubs["uni-west"]
    cluster = fleet.clusters["uni-cloud"]
    body_size = {"nginx.ingress.kubernetes.io/proxy-body-size": "64m"}
    ingress = cluster.ingress.model_copy(  # type: ignore[union-attr]
        update={"issuer_kind": "Issuer", "annotations": body_size}
    )
    clusters = {**fleet.clusters, "uni-cloud": cluster.model_copy(update={"ingress": ingress})}
    values = render_z2jh_values(dataclasses.replace(fleet, clusters=clusters), hub)
    assert values["ingress"]["annotations"] == {
        "cert-manager.io/issuer": "letsencrypt-prod",
        "nginx.ingress.kubernetes.io/proxy-body-size": "64m",
    }
    bare = cluster.model_copy(update={"ingress": type(ingress)()})
    values = render_z2jh_values(dataclasses.replace(fleet, clusters={**clusters, "uni-cloud": bare}), hub)
    assert values["ingress"] == {
        "enabled": True,
        "hosts": ["hub.uni-west.example.edu"],
        "tls": [{"hosts": ["hub.uni-west.example.edu"], "secretName": "uni-west-tls"}],
    }
