"""Kubernetes hubs against the real Zero to JupyterHub chart: real helm (.cache/helm/helm, from
scripts/install-helm.sh: helm 4.1.4) and the real chart (../shared/charts/jupyterhub-4.4.0.tgz), nothing
faked.

- Every Kubernetes hub of every fixture fleet under tests/fixtures/ passes `helm template` (the fleets are
  globbed, so fixture fleets added later are checked too).
- `hubfleet validate --chart` through the real CLI: OK lines, a misspelt key in `extra_values` failing at the
  hub file's line, a chart version missing from the charts directory, the cache (a wrapper script in
  HUBFLEET_HELM counts helm's runs: none the second time), a changed hub checked again, no helm.
- helm's schema errors in the formats of helm 4 (and 3.18+) and of older helm 3 (that text is written here
  from helm 3's documented output; no helm 3 binary is on these machines).
- The helm commands of the Kubernetes backend are accepted by the real helm 4 (no unknown or deprecated flag)
  and use only flags helm 3 documents. helm runs them against a kube config naming a closed port, so each
  fails at connecting, after parsing its flags; no cluster is involved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hubfleet.backends.kubernetes import (
    helm_rollback_command,
    helm_status_command,
    helm_uninstall_command,
    helm_upgrade_command,
)
from hubfleet.config.models import KubernetesCluster
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.render import chart_check
from hubfleet.render.chart_check import (
    ChartCheckError,
    helm_binary,
    helm_template,
    kubernetes_hubs,
    schema_problems,
    template_command,
)
from hubfleet.render.kubernetes import secret_placeholders, to_yaml, values_yaml

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
CHARTS = HERE.parent.parent / "shared" / "charts"
CHART = CHARTS / "jupyterhub-4.4.0.tgz"
K8S_FLEET = FIXTURES / "k8s-fleet"
HUBFLEET = str(Path(sys.executable).parent / "hubfleet")


def _helm() -> Path:
    try:
        helm = helm_binary()
    except ChartCheckError as exc:
        pytest.fail(str(exc))
    if helm is None:
        pytest.skip("no helm: run scripts/install-helm.sh (make test does)")
    if not CHART.is_file():
        pytest.skip(f"{CHART} is missing (the real z2jh chart, from the shared directory)")
    return helm


def _fixture_hubs() -> list[tuple[str, str]]:
    """(fleet directory, hub) for every Kubernetes hub of every fixture fleet; a fleet that does not
    validate is one entry with hub '' (its test fails naming the errors)."""
    found = []
    for fleet_file in sorted(FIXTURES.glob("*/fleet.yaml")):
        config, errors = validate_fleet(fleet_file.parent)
        if config is None:
            found.append((fleet_file.parent.name, ""))
            continue
        found += [(fleet_file.parent.name, hub.name) for hub, _ in kubernetes_hubs(config)]
    return found


@pytest.mark.parametrize(("fleet_name", "hub_name"), _fixture_hubs())
def test_every_fixture_kubernetes_hub_passes_helm_template(
    fleet_name: str, hub_name: str, tmp_path: Path
) -> None:
    """Each hub's public values plus its secret placeholders (the whole shape helm gets at deploy) rendered
    by the real chart 4.4.0: the only chart here, used for every hub whatever its cluster's chart_version."""
    helm = _helm()
    config, errors = validate_fleet(FIXTURES / fleet_name)
    assert config is not None and hub_name, "\n".join(map(str, errors))
    hub = config.hubs[hub_name]
    values, secrets = tmp_path / "values.yaml", tmp_path / "secret-placeholders.yaml"
    values.write_text(values_yaml(config, hub))
    secrets.write_text(to_yaml(secret_placeholders(config, hub)))
    manifests = helm_template(CHART, [values, secrets], release=hub.name, namespace=hub.name, helm=helm)
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("Deployment", "hub"), ("Deployment", "proxy"), ("Ingress", "jupyterhub")} <= kinds


def test_helm_template_raises_helm_message(tmp_path: Path) -> None:
    helm = _helm()
    bad = tmp_path / "bad.yaml"
    bad.write_text("singleuser:\n  extraEnvv: {A: b}\n")
    with pytest.raises(ChartCheckError, match="extraEnvv") as error:
        helm_template(CHART, [bad], release="x", namespace="x", helm=helm, kube_version="1.30.0")
    assert "level=" not in str(error.value)
    old = tmp_path / "old.yaml"
    old.write_text("{}\n")
    with pytest.raises(ChartCheckError, match="kubeVersion|incompatible"):  # the chart wants >= 1.28
        helm_template(CHART, [old], release="x", namespace="x", helm=helm, kube_version="1.27.0")


def test_no_helm_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HUBFLEET_HELM", raising=False)
    monkeypatch.setattr(chart_check, "REPO_HELM", tmp_path / "no-helm")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert helm_binary() is None
    with pytest.raises(ChartCheckError, match="scripts/install-helm.sh"):
        helm_template(CHART, [], release="x", namespace="x")
    monkeypatch.setenv("HUBFLEET_HELM", str(tmp_path / "typo"))
    with pytest.raises(ChartCheckError, match="HUBFLEET_HELM=.*typo: no executable file there"):
        helm_binary()


# --------------------------------------------------------------------------- helm's error formats


HELM4_ERROR = """\
Error: values don't meet the specifications of the schema(s) in the following chart(s):
jupyterhub:
- at '/singleuser': validation failed
  - at '/singleuser/memory': additional properties 'limitt' not allowed
  - at '/singleuser': additional properties 'extraEnvv', 'cpuu' not allowed
- at '/hub/config': got number, want object
- at '/singleuser/nodeSelector/hub.jupyter.org~1node-purpose': got number, want string
"""

HELM3_ERROR = """\
Error: values don't meet the specifications of the schema(s) in the following chart(s):
jupyterhub:
- singleuser: Additional property extraEnvv is not allowed
- hub.config: Invalid type. Expected: object, given: integer
- (root): Additional property hubb is not allowed
"""


def test_schema_problems_of_helm_4_and_helm_3() -> None:
    four = schema_problems(HELM4_ERROR)
    assert [(p.path, p.unknown_key) for p in four] == [
        (("singleuser", "memory", "limitt"), True),
        (("singleuser", "extraEnvv"), True),
        (("singleuser", "cpuu"), True),
        (("hub", "config"), False),
        (("singleuser", "nodeSelector", "hub.jupyter.org/node-purpose"), False),
    ]
    assert four[3].message == "got number, want object"
    three = schema_problems(HELM3_ERROR)
    assert [(p.path, p.unknown_key) for p in three] == [
        (("singleuser", "extraEnvv"), True),
        (("hub", "config"), False),
        (("hubb",), True),
    ]
    assert three[1].message == "Invalid type. Expected: object, given: integer"
    dropped = schema_problems(f"- dropped 'hub.config.JupyterHub': {chart_check.DROPPED_MESSAGE}")
    assert [(p.path, p.unknown_key) for p in dropped] == [(("hub", "config", "JupyterHub"), False)]


# --------------------------------------------------------------------------- the backend's helm commands


HELM3_FLAGS = {
    # From helm 3's command reference (helm.sh/docs/helm/helm_<command>/, helm 3.13): the flags of each
    # command plus the global ones hubfleet uses (--namespace, --kube-context).
    "upgrade": {
        "--install",
        "--repo",
        "--version",
        "--create-namespace",
        "-f",
        "--namespace",
        "--kube-context",
    },
    "status": {"--namespace", "--kube-context", "-o"},
    "rollback": {"--namespace", "--kube-context"},
    "uninstall": {"--namespace", "--kube-context"},
    "template": {"-f", "--namespace", "--kube-version"},
}


def test_backend_helm_commands_are_valid_for_helm_4_and_helm_3(tmp_path: Path) -> None:
    helm = _helm()
    fleet = load_fleet(K8S_FLEET)
    hub = fleet.hubs["physics"]
    cluster = fleet.cluster_of(hub)
    assert isinstance(cluster, KubernetesCluster)
    values = tmp_path / "values.yaml"
    values.write_text(values_yaml(fleet, hub))
    commands = [
        helm_upgrade_command(hub, cluster, values, values),
        helm_status_command(hub, cluster),
        helm_rollback_command(hub, cluster, 3),
        helm_uninstall_command(hub.name, cluster),
        [
            "helm",
            *template_command(CHART, [values], release=hub.name, namespace=hub.name, kube_version="1.30.0"),
        ],
    ]
    kubeconfig = tmp_path / "kubeconfig"
    context = commands[1][commands[1].index("--kube-context") + 1]
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "closed", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": context, "context": {"cluster": "closed", "user": "none"}}],
                "current-context": context,
            }
        )
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
        # the chart repository is not reachable from here: fail at once rather than wait on the network
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    for argv in commands:
        command = argv[1]
        flags = {a for a in argv if a.startswith("-")}
        assert flags <= HELM3_FLAGS[command], (
            f"{command}: not in helm 3's reference: {flags - HELM3_FLAGS[command]}"
        )
        result = subprocess.run(
            [str(helm), *argv[1:]], capture_output=True, text=True, timeout=60, env=env, check=False
        )
        said = result.stderr.lower()
        assert "unknown flag" not in said and "unknown shorthand" not in said, (command, result.stderr)
        assert "deprecated" not in said, (command, result.stderr)  # helm 4 warns of renamed flags (--atomic)
        if command == "template":
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode != 0 and "127.0.0.1:9" in result.stderr, (command, result.stderr)


def test_revision_is_read_from_helm_4_output(tmp_path: Path) -> None:
    """`_parse_revision` reads `helm status -o json` (its `version`) and `helm upgrade`'s table (REVISION:):
    helm 4's own output of both, from an install that only renders (--dry-run=client, no cluster)."""
    from hubfleet.backends.commands import CommandResult
    from hubfleet.backends.kubernetes import _parse_revision

    helm = _helm()
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none"), "HELM_CACHE_HOME": str(tmp_path / "cache")}
    for output in (["-o", "json"], []):
        argv = [str(helm), "install", "x", str(CHART), "--dry-run=client", *output]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
        assert result.returncode == 0, result.stderr
        parsed = _parse_revision(
            CommandResult(argv=argv, returncode=0, stdout=result.stdout, stderr="", seconds=0.0)
        )
        assert parsed == 1


# --------------------------------------------------------------------------- validate --chart, the real CLI


def _counting_helm(tmp_path: Path, helm: Path) -> tuple[Path, Path]:
    """A helm wrapper that writes down each run, then runs the real helm."""
    log = tmp_path / "helm-runs.log"
    wrapper = tmp_path / "helm-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{helm}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def _runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _validate(fleet: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUBFLEET, "validate", "--fleet", str(fleet), "--chart", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


@pytest.fixture
def chart_fleet(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A copy of the k8s fixture fleet whose fleet.yaml names the charts directory (a link to the shared
    charts, relative to the fleet); the environment runs helm through a counting wrapper."""
    helm = _helm()
    fleet = tmp_path / "fleet"
    shutil.copytree(K8S_FLEET, fleet)
    (fleet / "charts").symlink_to(CHARTS)
    settings = fleet / "fleet.yaml"
    settings.write_text(settings.read_text() + "kubernetes:\n  charts_dir: charts\n")
    wrapper, log = _counting_helm(tmp_path, helm)
    env = {k: v for k, v in os.environ.items() if k != "HUBFLEET_FLEET"}
    env.update(HUBFLEET_HELM=str(wrapper), HUBFLEET_STATE_DIR=str(tmp_path / "state"))
    return fleet, env, log


def test_validate_chart_checks_every_kubernetes_hub_and_caches(
    chart_fleet: tuple[Path, dict[str, str], Path],
) -> None:
    fleet, env, log = chart_fleet
    config = load_fleet(fleet)
    hubs = [hub.name for hub, _ in kubernetes_hubs(config)]
    missing = {
        h.name
        for h, c in kubernetes_hubs(config)
        if not (CHARTS / f"jupyterhub-{c.chart_version}.tgz").exists()
    }
    assert missing == {"chem-staging"}  # its cluster pins chart 4.3.5, which is not in the charts directory

    first = _validate(fleet, env)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[1].startswith("chart check (v4.") and "charts from" in lines[1]
    for hub in hubs:
        line = next(line for line in lines if line.startswith(f"  {hub}: "))
        if hub in missing:
            assert line == f"  {hub}: not checked: chart jupyterhub-4.3.5.tgz is not in {fleet / 'charts'}"
        else:
            assert line == f"  {hub}: OK: chart 4.4.0, helm template passed"
    runs = _runs(log)
    assert runs[0] == "version --short"
    assert sorted(r.split()[1] for r in runs[1:]) == sorted(set(hubs) - missing)

    second = _validate(fleet, env)
    assert second.returncode == 0, second.stderr
    assert _runs(log) == runs, "an unchanged fleet ran helm again"
    assert second.stdout.count("OK: chart 4.4.0, unchanged since it passed") == len(hubs) - len(missing)
    assert "chem-staging: not checked" in second.stdout

    hub_file = fleet / "communities/physics/hubs/prod.yaml"
    hub_file.write_text(hub_file.read_text().replace("max_users: 300", "max_users: 301"))
    third = _validate(fleet, env)
    assert third.returncode == 0, third.stderr
    assert [r.split()[1] for r in _runs(log)[len(runs) :]] == ["physics"]
    assert "  physics: OK: chart 4.4.0, helm template passed" in third.stdout.splitlines()


def test_validate_chart_names_the_hub_file_and_line_of_a_misspelt_key(
    chart_fleet: tuple[Path, dict[str, str], Path],
) -> None:
    fleet, env, _ = chart_fleet
    hub_file = fleet / "communities/bio/hubs/prod.yaml"
    text = hub_file.read_text()
    assert "extraEnv:" in text
    hub_file.write_text(text.replace("extraEnv:", "extraEnvv:", 1))
    line = next(n for n, row in enumerate(hub_file.read_text().splitlines(), 1) if "extraEnvv:" in row)
    col = hub_file.read_text().splitlines()[line - 1].index("extraEnvv") + 1

    result = _validate(fleet, env)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "  bio: FAILED" in result.stdout.splitlines()
    assert (
        f"communities/bio/hubs/prod.yaml:{line}:{col}: kubernetes.extra_values.singleuser.extraEnvv: "
        "the z2jh chart 4.4.0 has no key 'extraEnvv' under singleuser; did you mean 'extraEnv'?"
    ) in result.stdout.splitlines()
    assert "1 hub(s) failed the chart check: bio" in result.stderr
    assert "  physics: OK: chart 4.4.0, helm template passed" in result.stdout.splitlines()


def test_validate_chart_without_helm_or_charts_says_what_to_do(
    chart_fleet: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    fleet, env, _ = chart_fleet
    no_helm = _validate(fleet, {**env, "HUBFLEET_HELM": str(tmp_path / "nowhere" / "helm")})
    assert no_helm.returncode == 1
    assert "HUBFLEET_HELM=" in no_helm.stderr and "no executable file there" in no_helm.stderr

    settings = fleet / "fleet.yaml"
    settings.write_text(settings.read_text().replace("kubernetes:\n  charts_dir: charts\n", ""))
    no_dir = _validate(fleet, env)
    assert no_dir.returncode == 1
    assert "--chart needs the charts" in no_dir.stderr and "--charts-dir" in no_dir.stderr
    flag = _validate(fleet, env, "--charts-dir", str(CHARTS))
    assert flag.returncode == 0, flag.stderr
    assert f"charts from {CHARTS}" in flag.stdout
    old_kube = _validate(fleet, env, "--charts-dir", str(CHARTS), "--kube-version", "1.27.0")
    assert old_kube.returncode == 1  # the chart wants >= 1.28; the cached passes were for helm's default
    assert "incompatible with Kubernetes v1.27.0" in old_kube.stdout
