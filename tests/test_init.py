"""`hubfleet init`: the scaffolded fleet of each cluster kind validates (and passes the real chart where helm
is here), a second init changes nothing, a non-empty directory is refused, the age identity stays out of git,
the generated identity reads the scaffold's secrets, and the local scaffold runs (the one test of issue 20
that starts a fleet). Everything is the real CLI, real git and real pyrage; no cloud is touched (the
Kubernetes scaffolds are only validated and rendered)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from fleet_helpers import HUBFLEET, free_ports, hubfleet, hubfleet_env, running_fleet, wait_for
from hubfleet.render.chart_check import helm_binary
from hubfleet.scaffold import ci

CHARTS = Path(__file__).resolve().parent.parent.parent / "shared" / "charts"
KINDS = ("local", "gcp", "aws", "azure")


def init(target: Path, *args: str, identity: Path) -> subprocess.CompletedProcess[str]:
    """The real `hubfleet init TARGET ...` with HUBFLEET_AGE_IDENTITY at `identity` (never the real home)."""
    return subprocess.run(
        [str(HUBFLEET), "init", str(target), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=hubfleet_env() | {"HUBFLEET_AGE_IDENTITY": str(identity)},
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", KINDS)
def test_each_cluster_kind_scaffolds_a_valid_fleet(kind: str, tmp_path: Path) -> None:
    fleet, identity = tmp_path / "my-fleet", tmp_path / "keys" / "age-identity.txt"
    result = init(fleet, "--cluster", kind, identity=identity)
    assert result.returncode == 0, result.stderr
    files = set(snapshot(fleet))
    expected = {
        "fleet.yaml",
        "communities/example/community.yaml",
        "communities/example/hubs/staging.yaml",
        "communities/example/hubs/prod.yaml",
        "communities/example/secrets/example-staging.yaml",
        ".gitignore",
        ".pre-commit-config.yaml",
        ".vscode/settings.json",
        "README.md",
        *(f"schema/{k}.schema.json" for k in ("fleet", "cluster", "community", "hub")),
        *ci.files(kind),
    }
    assert expected <= files, expected - files
    assert len([f for f in files if f.startswith("clusters/")]) == 1
    # a Kubernetes fleet's hub tokens are derived from a key init makes (tests/test_control_token_key.py)
    assert ("secrets/fleet.yaml" in files) == (kind != "local")
    assert ("service_token_key:" in (fleet / "fleet.yaml").read_text()) == (kind != "local")
    assert "name: my-fleet" in (fleet / "fleet.yaml").read_text()
    # the editor's schema comments are relative, so they keep working wherever the fleet is moved
    for path in fleet.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        if first.startswith("# yaml-language-server"):
            schema = first.split("$schema=")[1]
            assert (path.parent / schema).resolve().is_file(), (path, schema)
    assert identity.stat().st_mode & 0o077 == 0
    # .vscode/settings.json maps every schema to files that exist, by paths relative to the fleet
    mapped = json.loads((fleet / ".vscode" / "settings.json").read_text())["yaml.schemas"]
    for schema, globs in mapped.items():
        assert (fleet / schema).is_file() and all(list(fleet.glob(g)) for g in globs), (schema, globs)
    # the fleet validates, through the pre-commit hook run as pre-commit runs it (in the fleet's directory)
    (hook,) = yaml.safe_load((fleet / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    command = [str(HUBFLEET), *hook["entry"].split()[1:]]
    ran = subprocess.run(command, cwd=fleet, capture_output=True, text=True, env=hubfleet_env(), timeout=120)
    assert ran.returncode == 0 and "is valid" in ran.stdout, ran.stderr

    if kind != "local":
        assert "domain:" in (fleet / "communities/example/hubs/prod.yaml").read_text()
        helm = helm_binary()
        if helm is None or not (CHARTS / "jupyterhub-4.4.0.tgz").is_file():
            pytest.skip("no helm or no chart here: run scripts/install-helm.sh for the chart check")
        checked = hubfleet("validate", "--chart", "--charts-dir", str(CHARTS), fleet=fleet, check=True)
        assert checked.stdout.count("helm template passed") == 2, checked.stdout


def test_second_init_changes_nothing_and_add_missing_only_adds(tmp_path: Path) -> None:
    fleet, identity = tmp_path / "fleet", tmp_path / "age-identity.txt"
    assert init(fleet, identity=identity).returncode == 0
    before, key = snapshot(fleet), identity.read_bytes()

    again = init(fleet, "--add-missing", identity=identity)
    assert again.returncode == 0, again.stderr
    assert "nothing to add" in again.stdout
    assert snapshot(fleet) == before and identity.read_bytes() == key  # byte-identical, no new identity

    # an edited file is kept as it is; a deleted repository file comes back, and only it; on an existing
    # fleet (its fleet.yaml there) the fleet's own files never do: no example community, cluster or README
    (fleet / "fleet.yaml").write_text(before["fleet.yaml"].decode().replace("Your Name", "Ada"))
    (fleet / ".gitlab-ci.yml").unlink()
    (fleet / ".vscode" / "settings.json").unlink()
    (fleet / "README.md").unlink()
    shutil.rmtree(fleet / "communities")
    shutil.rmtree(fleet / "clusters")
    third = init(fleet, "--add-missing", identity=identity)
    assert third.returncode == 0, third.stderr
    assert "created .gitlab-ci.yml" in third.stdout and "created .vscode/settings.json" in third.stdout
    assert "fleet.yaml exists" in third.stderr
    after = snapshot(fleet)
    assert after[".gitlab-ci.yml"] == before[".gitlab-ci.yml"]
    assert "Ada" in after["fleet.yaml"].decode()
    assert not (fleet / "communities").exists() and not (fleet / "clusters").exists()
    gone = ("communities/", "clusters/", "README.md", "fleet.yaml")
    assert {k: v for k, v in after.items() if k != "fleet.yaml"} == {
        k: v for k, v in before.items() if not k.startswith(gone)
    }


def test_non_empty_directory_is_refused_and_add_missing_keeps_what_is_there(tmp_path: Path) -> None:
    fleet, identity = tmp_path / "fleet", tmp_path / "age-identity.txt"
    fleet.mkdir()
    (fleet / "notes.txt").write_text("mine\n")
    refused = init(fleet, identity=identity)
    assert refused.returncode == 1
    assert "notes.txt" in refused.stderr and "--add-missing" in refused.stderr
    assert [p.name for p in fleet.iterdir()] == ["notes.txt"] and not identity.exists()

    assert init(fleet, "--add-missing", identity=identity).returncode == 0
    assert (fleet / "notes.txt").read_text() == "mine\n" and (fleet / "fleet.yaml").is_file()

    # a file where init needs a directory: refused before anything is written (no identity made either)
    other, other_identity = tmp_path / "other", tmp_path / "other-identity.txt"
    other.mkdir()
    (other / "clusters").write_text("not a directory\n")
    blocked = init(other, "--add-missing", identity=other_identity)
    assert blocked.returncode == 1 and "clusters is a file where init writes the directory" in blocked.stderr
    assert [p.name for p in other.iterdir()] == ["clusters"] and not other_identity.exists()

    bad = init(tmp_path / "x", "--name", "Uni A", identity=identity)
    assert bad.returncode == 1 and "--name 'Uni A' is not a valid fleet name" in bad.stderr
    bad = init(tmp_path / "y", "--cluster", "openstack", identity=identity)
    assert bad.returncode == 2 and "openstack" in bad.stderr


@pytest.mark.parametrize("where", [".hubfleet/age-identity.txt", "keys/operator.txt"])
def test_identity_inside_the_fleet_is_ignored_by_git(where: str, tmp_path: Path) -> None:
    """The default identity lives outside the repository (~/.config/hubfleet); one kept inside it anyway is
    ignored, as are the state directories."""
    fleet = tmp_path / "fleet"
    assert init(fleet, identity=fleet / where).returncode == 0
    for state in (".hubfleet/hubfleet.db", ".hubfleet-data/x/home", ".hubfleet-backups/config"):
        (fleet / state).parent.mkdir(parents=True, exist_ok=True)
        (fleet / state).write_text("state\n")
    git = shutil.which("git")
    assert git, "git is needed"
    subprocess.run([git, "init", "-q"], cwd=fleet, check=True)
    subprocess.run([git, "add", "-A"], cwd=fleet, check=True)
    status = subprocess.run(
        [git, "status", "--porcelain", "--untracked-files=all", "--ignored=no"],
        cwd=fleet,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = {line[3:] for line in status.splitlines()}
    assert "fleet.yaml" in listed and "communities/example/secrets/example-staging.yaml" in listed
    assert not {p for p in listed if p.startswith((".hubfleet", "keys/")) or "identity" in p}, listed
    assert (fleet / where).read_text().count("AGE-SECRET-KEY-1") == 1


def test_the_generated_identity_reads_the_scaffolds_secrets(tmp_path: Path) -> None:
    fleet, identity = tmp_path / "fleet", tmp_path / "age-identity.txt"
    assert init(fleet, identity=identity).returncode == 0
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    hubfleet(
        "secrets", "set", "example-staging", "extra_key", fleet=fleet, env=env, input="s3cret\n", check=True
    )
    shown = hubfleet(
        "secrets", "show", "example-staging", "--reveal", fleet=fleet, env=env, check=True
    ).stdout
    assert "extra_key: s3cret" in shown
    password = re.search(r"^staging_password: (\S+)", shown, re.M)
    assert password and len(password.group(1)) >= 20, shown  # made by init, readable only with the key
    assert password.group(1) not in (fleet / "communities/example/secrets/example-staging.yaml").read_text()
    assert password.group(1) not in init(fleet, "--add-missing", identity=identity).stdout


def test_ci_files_skip_a_provider_module_that_is_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ci, "PROVIDERS", ("hubfleet.scaffold.no_such_ci",))
    assert ci.files("local") == {}
    # a provider that is there but imports what is not is a bug, not a missing provider
    monkeypatch.setattr(ci, "PROVIDERS", ("no_such_package_x.ci_github",))
    with pytest.raises(ModuleNotFoundError, match="no_such_package_x"):
        ci.files("local")


@pytest.mark.integration
def test_local_scaffold_runs_both_hubs(tmp_path: Path) -> None:
    """`hubfleet up --detach` on the local scaffold (on free ports; up decrypts the staging hub's password
    with the generated identity first): both hubs answer /hub/health, then `hubfleet down`."""
    fleet, identity = tmp_path / "fleet", tmp_path / "age-identity.txt"
    assert init(fleet, identity=identity).returncode == 0
    staging_port, prod_port, console_port = free_ports(3)
    for name, port in (("staging", staging_port), ("prod", prod_port)):
        hub = fleet / "communities/example/hubs" / f"{name}.yaml"
        hub.write_text(re.sub(r"(?m)^port: \d+", f"port: {port}", hub.read_text()))
    fleet_yaml = fleet / "fleet.yaml"
    fleet_yaml.write_text(
        re.sub(r"metrics_port: \d+", f"metrics_port: {console_port}", fleet_yaml.read_text())
    )
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    with running_fleet(fleet, env=env):
        for port in (staging_port, prod_port):
            url = f"http://127.0.0.1:{port}/hub/health"
            wait_for(lambda url=url: _answers(url), timeout=60)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
