"""The GitHub Actions workflows `hubfleet init` writes (scaffold/ci_github.py) and the `hubfleet ci` steps.

For each cluster kind the workflows pass the real `actionlint` and `zizmor` (offline: its online audits need
GitHub's API) with no findings, and every action is pinned by commit. The workflows' own shell steps (read
from the generated YAML, run with bash) run against a copy of the demo fleet with a fake $GITHUB_OUTPUT,
$GITHUB_STEP_SUMMARY and $GITHUB_ENV, as the runner provides them; the matrices are read back as the deploy
jobs' `fromJSON` reads them. GitHub itself cannot run here: the `gh` CLI the comment step calls is a fake
that records its arguments and answers like GitHub's API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet_helpers import HUBFLEET, copy_demo_fleet, edit, hubfleet, hubfleet_env, mark_deployed, new_identity
from hubfleet.scaffold.ci_github import CLUSTERS, files

BIN = Path(sys.executable).parent
SECRET = "Sup3r-s3cret-VALUE-never-shown"
STAGING = "communities/uni-a/hubs/staging.yaml"
PROD = "communities/uni-a/hubs/prod.yaml"
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", re.M)


def write_workflows(root: Path, cluster: str) -> dict[str, str]:
    generated = files(cluster)
    for relative, text in generated.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return generated


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_workflows_pass_actionlint_and_zizmor(tmp_path: Path, cluster: str) -> None:
    root = tmp_path / "repo"
    generated = write_workflows(root, cluster)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    lint = subprocess.run(
        [str(BIN / "actionlint"), "-no-color"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    audit = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", "--format", "json", ".github/workflows"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout) == []
    workflows = {path: text for path, text in generated.items() if path.startswith(".github/workflows/")}
    assert len(workflows) == 3


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_every_action_is_pinned_by_commit_and_says_its_version(cluster: str) -> None:
    for path, text in files(cluster).items():
        found = USES.findall(text)
        if path.endswith("actionlint.yaml"):
            continue
        assert found, path
        for ref, comment in found:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), (path, ref)
            assert re.fullmatch(r"\s+# v\d+(\.\d+)*", comment), (path, ref, comment)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_least_privilege_and_no_expressions_in_shell(cluster: str) -> None:
    for path, text in files(cluster).items():
        if not path.endswith(".yml"):
            continue
        workflow = yaml.safe_load(text)
        assert workflow["permissions"] == {}, path
        for name, job in workflow["jobs"].items():
            granted = {k: v for k, v in job["permissions"].items()}
            runs = [step.get("run", "") for step in job["steps"]]
            # only the jobs that save the CI state may push (contents: write), and they do save it
            saves = "hubfleet ci state save" in runs
            assert granted.get("contents") == ("write" if saves else "read"), (path, name)
            cloud_job = cluster != "local" and (
                name in ("staging", "prod", "scheduled") or (name == "plan" and path.endswith("deploy.yml"))
            )
            assert saves == cloud_job, (path, name)
            if cloud_job:  # loaded before anything plans or deploys, saved after, also after a failure
                assert runs.index("hubfleet ci state load") < runs.index("hubfleet ci state save")
                assert job["steps"][-1]["if"] == "${{ !cancelled() }}"
            writes = {k for k, v in granted.items() if v == "write"}
            allowed = {"id-token", "contents"} if cloud_job and name != "plan" else set()
            allowed |= {"contents"} if cloud_job else set()
            if name == "plan" and path.endswith("pull-request.yml"):
                allowed = {"pull-requests"}
            assert writes == allowed, (path, name, writes)
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), (path, name, step)
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False


def test_cloud_login_is_oidc_for_each_provider() -> None:
    expected = {
        "gcp": ("google-github-actions/auth@", {"workload_identity_provider", "service_account"}),
        "aws": ("aws-actions/configure-aws-credentials@", {"role-to-assume", "aws-region"}),
        "azure": ("azure/login@", {"client-id", "tenant-id", "subscription-id"}),
    }
    for cluster, (action, inputs) in expected.items():
        deploy = yaml.safe_load(files(cluster)[".github/workflows/hubfleet-deploy.yml"])
        for name in ("staging", "prod"):
            [login] = [s for s in deploy["jobs"][name]["steps"] if s.get("uses", "").startswith(action)]
            assert set(login["with"]) == inputs  # no stored key, no client secret
        assert deploy["concurrency"] == {"group": "hubfleet-deploy", "cancel-in-progress": False}
        assert {deploy["jobs"][stage]["environment"] for stage in ("staging", "prod")} == {"staging", "prod"}
    for cluster in CLUSTERS:
        # the hourly run has a group of its own: in the deploys' it would replace a pending deploy
        scheduled = yaml.safe_load(files(cluster)[".github/workflows/hubfleet-scheduled.yml"])
        assert scheduled["concurrency"]["group"] == "hubfleet-scheduled"
    # AKS with Entra ID: kubelogin installed and told to use the azure/login session, in every job that
    # reaches the cluster
    azure = {path: yaml.safe_load(text) for path, text in files("azure").items() if path.endswith(".yml")}
    for path, name in [("deploy", "staging"), ("deploy", "prod"), ("scheduled", "scheduled")]:
        job = azure[f".github/workflows/hubfleet-{path}.yml"]["jobs"][name]
        assert job["env"]["AAD_LOGIN_METHOD"] == "azurecli", (path, name)
        uses = [step.get("uses", "") for step in job["steps"]]
        assert any(u.startswith("azure/use-kubelogin@") for u in uses), (path, name)
        login = next(i for i, u in enumerate(uses) if u.startswith("azure/login@"))
        assert uses[login + 1].startswith("azure/use-kubelogin@")
    local = yaml.safe_load(files("local")[".github/workflows/hubfleet-deploy.yml"])
    assert local["jobs"]["staging"]["runs-on"] == ["self-hosted", "hubfleet"]
    pr = yaml.safe_load(files("local")[".github/workflows/hubfleet-pull-request.yml"])
    assert all(job["runs-on"] == "ubuntu-24.04" for job in pr["jobs"].values())  # never self-hosted


def test_unknown_cluster_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="local, gcp, aws, azure"):
        files("openstack")


# ------------------------------------------------------------------ the workflows' steps, run locally


class Runner:
    """What a GitHub runner gives one job: the files behind $GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY and
    $GITHUB_ENV (whose lines reach the job's later steps), and the values of the `${{ }}` expressions."""

    def __init__(self, tmp: Path, fleet: Path, expressions: dict[str, str]):
        self.dir = tmp / "runner"
        self.dir.mkdir(parents=True)
        self.fleet = fleet
        self.expressions = expressions
        self.output = self.dir / "output"
        self.summary = self.dir / "summary.md"
        self.github_env = self.dir / "env"
        for path in (self.output, self.summary, self.github_env):
            path.write_text("")

    def expand(self, value: Any) -> str:
        def one(match: re.Match[str]) -> str:
            expression = match.group(1).strip()
            assert expression in self.expressions, f"no value for ${{{{ {expression} }}}}"
            return self.expressions[expression]

        return re.sub(r"\$\{\{(.*?)\}\}", one, str(value))

    def run(self, step: dict[str, Any], path: Path | None = None) -> subprocess.CompletedProcess[str]:
        carried = dict(line.split("=", 1) for line in self.github_env.read_text().splitlines() if "=" in line)
        env = hubfleet_env() | {
            "PATH": ":".join([*([str(path)] if path else []), str(HUBFLEET.parent), os.environ["PATH"]]),
            "HUBFLEET_FLEET": str(self.fleet),
            "GITHUB_OUTPUT": str(self.output),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_ENV": str(self.github_env),
            "RUNNER_TEMP": str(self.dir),
            "GITHUB_REPOSITORY": "example/fleet",
        }
        env |= carried | {key: self.expand(value) for key, value in step.get("env", {}).items()}
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
            cwd=self.fleet,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def outputs(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.output.read_text().splitlines() if "=" in line)


def step(workflow: str, job: str, name_part: str, cluster: str = "gcp") -> dict[str, Any]:
    parsed = yaml.safe_load(files(cluster)[f".github/workflows/{workflow}"])
    return next(s for s in parsed["jobs"][job]["steps"] if name_part in s.get("name", ""))


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def keyed_fleet(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the demo fleet whose uni-a-staging password is a secret set with `hubfleet secrets set`,
    Ada holding the age key; returns (fleet root, identity file)."""
    root = copy_demo_fleet(tmp_path / "fleet")
    identity = tmp_path / "ci-age-identity.txt"
    recipient = new_identity(identity)
    edit(
        root / "fleet.yaml",
        "    email: ada@hubfleet.example\n",
        f"    email: ada@hubfleet.example\n    age_recipient: {recipient}\n",
    )
    edit(root / STAGING, "  password: demo-staging", "  password: {secret: dummy_password}")
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    hubfleet(
        "secrets",
        "set",
        "uni-a-staging",
        "dummy_password",
        fleet=root,
        env=env,
        input=SECRET + "\n",
        check=True,
    )
    return root, identity


def read_matrix(outputs: dict[str, str], stage: str) -> list[dict[str, Any]]:
    """As `strategy.matrix: ${{ fromJSON(needs.plan.outputs.STAGE) }}` reads it, after the count check."""
    matrix = json.loads(outputs[stage])
    assert set(matrix) == {"include"}
    assert int(outputs[f"{stage}-count"]) == len(matrix["include"])
    return matrix["include"]


def test_push_plan_step_against_the_commit_before_gives_the_deploy_matrices(
    tmp_path: Path, keyed_fleet: tuple[Path, Path]
) -> None:
    root, identity = keyed_fleet
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    before = git(root, "rev-parse", "HEAD")
    edit(root / PROD, "max_users: 100", "max_users: 150")
    hubfleet(
        "secrets",
        "set",
        "uni-a-staging",
        "dummy_password",
        fleet=root,
        env={"HUBFLEET_AGE_IDENTITY": str(identity)},
        input=SECRET + "-rotated\n",
        check=True,
    )
    git(root, "commit", "-q", "-am", "uni-a: 150 users, new staging password")

    runner = Runner(
        tmp_path,
        root,
        {
            "secrets.HUBFLEET_AGE_IDENTITY": identity.read_text(),
            "github.event.before": before,
        },
    )
    for name in ("Age identity", "Plan"):
        done = runner.run(step("hubfleet-deploy.yml", "plan", name))
        assert done.returncode == 0, done.stdout + done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert "AGE-SECRET-KEY" not in done.stdout + done.stderr
    outputs = runner.outputs()
    assert [e["hub"] for e in read_matrix(outputs, "staging")] == ["uni-a-staging"]
    [prod] = read_matrix(outputs, "prod")
    assert (prod["hub"], prod["community"], prod["action"]) == ("uni-a", "uni-a", "update")

    summary = runner.summary.read_text()
    assert "| `uni-a` | uni-a | prod | update | max_users: 100 → 150 |" in summary
    assert "| `uni-a-staging` | uni-a | staging | update | secret values changed |" in summary
    assert "+c.JupyterHub.active_server_limit = 150" in summary  # the diff
    assert SECRET not in summary
    assert f"compared with the fleet at {before}" in summary
    assert git(root, "worktree", "list").count("\n") == 0  # the baseline's worktree is gone

    # the pull request's plan job: the same plan against its base, also written for the comment step
    pr = Runner(
        tmp_path / "pr",
        root,
        {
            "secrets.HUBFLEET_AGE_IDENTITY": identity.read_text(),
            "github.event.pull_request.base.sha": before,
        },
    )
    for name in ("Age identity", "Plan against the base branch"):
        done = pr.run(step("hubfleet-pull-request.yml", "plan", name))
        assert done.returncode == 0, done.stdout + done.stderr
    comment = (pr.dir / "plan.md").read_text()
    assert comment == pr.summary.read_text() == summary
    assert comment.startswith("<!-- hubfleet-plan -->\n")


def test_first_push_plans_every_hub_as_new(tmp_path: Path, keyed_fleet: tuple[Path, Path]) -> None:
    root, identity = keyed_fleet
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    runner = Runner(
        tmp_path,
        root,
        {
            "secrets.HUBFLEET_AGE_IDENTITY": identity.read_text(),
            "github.event.before": "0" * 40,
        },
    )
    runner.github_env.write_text(f"HUBFLEET_AGE_IDENTITY={identity}\n")  # as `ci identity` does
    done = runner.run(step("hubfleet-deploy.yml", "plan", "Plan"))
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = runner.outputs()
    assert {e["hub"] for e in read_matrix(outputs, "staging")} == {"uni-a-staging", "hackweek-staging"}
    assert {e["action"] for e in read_matrix(outputs, "prod")} == {"create"}
    assert SECRET not in runner.summary.read_text()


def test_local_fleet_plan_step_reads_the_daemons_store(
    tmp_path: Path, keyed_fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local kind's deploy workflow runs on the fleet's machine: it plans against the real store, where
    every hub was deployed; one prod hub changed since."""
    root, identity = keyed_fleet
    monkeypatch.setenv("HUBFLEET_AGE_IDENTITY", str(identity))
    mark_deployed(root)
    edit(root / "communities/hackweek/hubs/prod.yaml", "max_users:", "max_users: 700\n#")
    runner = Runner(
        tmp_path,
        root,
        {
            "secrets.HUBFLEET_AGE_IDENTITY": identity.read_text(),
            "vars.HUBFLEET_STATE_DIR": str(root / ".hubfleet"),
        },
    )
    runner.github_env.write_text(f"HUBFLEET_AGE_IDENTITY={identity}\n")  # as `ci identity` does
    done = runner.run(step("hubfleet-deploy.yml", "plan", "Plan", cluster="local"))
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = runner.outputs()
    assert read_matrix(outputs, "staging") == []
    assert [e["hub"] for e in read_matrix(outputs, "prod")] == ["hackweek"]
    assert SECRET not in runner.summary.read_text()


def fake_gh(tmp_path: Path, existing: list[dict[str, Any]]) -> tuple[Path, Path]:
    """A `gh` that logs each call and answers `gh api ... --jq QUERY` by running the query on `existing`
    comments with Python (GitHub's API and gh's jq cannot run here)."""
    bindir = tmp_path / "fake-bin"
    bindir.mkdir()
    log = tmp_path / "gh.log"
    data = tmp_path / "comments.json"
    data.write_text(json.dumps(existing))
    script = bindir / "gh"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if '--jq' in sys.argv:\n"
        f"    for c in json.load(open({str(data)!r})):\n"
        "        bot = c['user']['login'] == 'github-actions[bot]'\n"
        "        if bot and c['body'].startswith('<!-- hubfleet-plan -->'):\n"
        "            print(c['id'])\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir, log


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([{"id": 5, "user": {"login": "someone"}, "body": "<!-- hubfleet-plan -->quoted"}], "created"),
        (
            [{"id": 9, "user": {"login": "github-actions[bot]"}, "body": "<!-- hubfleet-plan -->\nold"}],
            "updated",
        ),
    ],
)
def test_comment_step_updates_its_own_comment_or_adds_one(
    tmp_path: Path, existing: list[dict[str, Any]], expected: str
) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    bindir, log = fake_gh(tmp_path, existing)
    runner = Runner(
        tmp_path, root, {"github.token": "ghs_faketoken", "github.event.pull_request.number": "42"}
    )
    (runner.dir / "plan.md").write_text("<!-- hubfleet-plan -->\n## plan\n")
    done = runner.run(step("hubfleet-pull-request.yml", "plan", "comment"), path=bindir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"plan comment {expected} on example/fleet#42" in done.stdout
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0][:3] == ["api", "--paginate", "repos/example/fleet/issues/42/comments"]
    body = f"body=@{runner.dir / 'plan.md'}"
    if expected == "updated":
        assert calls[1] == ["api", "--method", "PATCH", "repos/example/fleet/issues/comments/9", "-F", body]
    else:
        assert calls[1] == ["api", "--method", "POST", "repos/example/fleet/issues/42/comments", "-F", body]
    assert len(calls) == 2


def test_identity_step_writes_a_private_file_and_never_prints_the_key(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    source = tmp_path / "source.txt"
    new_identity(source)
    key = next(line for line in source.read_text().splitlines() if line.startswith("AGE-SECRET-KEY"))
    runner = Runner(tmp_path, root, {"secrets.HUBFLEET_AGE_IDENTITY": source.read_text()})
    done = runner.run(step("hubfleet-deploy.yml", "plan", "Age identity"))
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr
    written = runner.dir / "hubfleet-age-identity.txt"
    assert runner.github_env.read_text() == f"HUBFLEET_AGE_IDENTITY={written}\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert key in written.read_text()

    empty = Runner(tmp_path / "second", root, {"secrets.HUBFLEET_AGE_IDENTITY": ""})
    done = empty.run(step("hubfleet-deploy.yml", "plan", "Age identity"))
    assert done.returncode == 1
    assert "repository secret HUBFLEET_AGE_IDENTITY" in done.stderr
    garbage = Runner(tmp_path / "third", root, {"secrets.HUBFLEET_AGE_IDENTITY": "not-a-key-but-secret"})
    done = garbage.run(step("hubfleet-deploy.yml", "plan", "Age identity"))
    assert done.returncode == 1
    assert "not an age identity" in done.stderr
    assert "not-a-key-but-secret" not in done.stdout + done.stderr


def test_chart_step_pulls_each_clusters_chart_once(tmp_path: Path) -> None:
    """`hubfleet ci charts` with a fake helm (the chart repository is on the internet): one `helm pull` per
    chart version the fleet's Kubernetes clusters use, none for a chart already there."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "k8s-fleet"
    root = tmp_path / "fleet"
    shutil.copytree(fixture, root)
    log = tmp_path / "helm.log"
    helm = tmp_path / "helm"
    helm.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        'out=${@: -1}; version=$(echo "$*" | sed -E "s/.*--version ([^ ]+).*/\\1/")\n'
        'touch "$out/jupyterhub-$version.tgz"\n'
    )
    helm.chmod(0o755)
    env = {"HUBFLEET_HELM": str(helm)}
    charts = tmp_path / "charts"
    first = hubfleet("ci", "charts", "--out", str(charts), fleet=root, env=env, check=True)
    pulled = log.read_text().splitlines()
    assert pulled == [
        f"pull jupyterhub --repo https://hub.jupyter.org/helm-chart/ --version {version} -d {charts}"
        for version in ("4.3.5", "4.4.0")  # the fixture's two clusters run two chart versions
    ]
    assert "chart jupyterhub 4.4.0" in first.stdout
    assert sorted(p.name for p in charts.iterdir()) == ["jupyterhub-4.3.5.tgz", "jupyterhub-4.4.0.tgz"]
    hubfleet("ci", "charts", "--out", str(charts), fleet=root, env=env, check=True)
    assert len(log.read_text().splitlines()) == 2


CHART = Path(__file__).resolve().parent.parent.parent / "shared" / "charts" / "jupyterhub-4.4.0.tgz"


def test_pull_request_validate_steps_check_a_new_gcp_fleet_with_the_real_chart(tmp_path: Path) -> None:
    """The pull-request workflow's validate job on a fleet from `scaffold(cluster="gcp")`: its `hubfleet ci
    charts` and `hubfleet validate --chart` steps with the real helm and z2jh chart (the chart is put where
    the step downloads it to: the chart repository is on the internet)."""
    from hubfleet.render.chart_check import helm_binary
    from hubfleet.scaffold.scaffold import scaffold

    helm = helm_binary()
    if helm is None or not CHART.is_file():
        pytest.skip("no helm or no z2jh chart here: run scripts/install-helm.sh (make test does)")
    root = tmp_path / "fleet"
    scaffold(root, cluster="gcp", identity=tmp_path / "operator-age-identity.txt")
    runner = Runner(tmp_path, root, {})
    (runner.dir / "charts").mkdir()
    shutil.copy(CHART, runner.dir / "charts")
    validate = yaml.safe_load(files("gcp")[".github/workflows/hubfleet-pull-request.yml"])["jobs"]["validate"]
    steps = [s for s in validate["steps"] if "run" in s and "pip install" not in s["run"]]
    assert [s["name"] for s in steps] == ["Z2JH chart", "Validate"]
    for one in steps:
        done = runner.run(one | {"env": {"HUBFLEET_HELM": str(helm)}})
        assert done.returncode == 0, done.stdout + done.stderr
    assert "helm template passed" in done.stdout
    assert "FAILED" not in done.stdout


def test_kubernetes_plan_summary_never_shows_a_secret_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes fleet (tests/fixtures/k8s-fleet) whose hub values take a secret from `extra_values`: the
    rotated secret is `secret values changed` in the summary and neither value is in it."""
    fixture = Path(__file__).resolve().parent / "fixtures"
    root = tmp_path / "fleet"
    shutil.copytree(fixture / "k8s-fleet", root)
    identity = fixture / "k8s-fleet.age-identity.txt"
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    prod = root / "communities/physics/hubs/prod.yaml"
    edit(
        prod,
        "extra_config: |",
        "  extra_values:\n    singleuser:\n      extraEnv:\n"
        "        DB_PASSWORD: {secret: db_password}\nextra_config: |",
    )
    hubfleet("secrets", "set", "physics", "db_password", fleet=root, env=env, input=SECRET + "\n", check=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    before = git(root, "rev-parse", "HEAD")
    monkeypatch.setenv("HUBFLEET_AGE_IDENTITY", str(identity))
    mark_deployed(root)  # so that `hubfleet plan` below has a deployed configuration to diff against
    hubfleet(
        "secrets",
        "set",
        "physics",
        "db_password",
        fleet=root,
        env=env,
        input="Rotated-" + SECRET + "\n",
        check=True,
    )
    git(root, "commit", "-q", "-am", "rotate")
    runner = Runner(tmp_path, root, {"github.event.before": before})
    done = runner.run(step("hubfleet-deploy.yml", "plan", "Plan") | {"env": {"BEFORE_SHA": before} | env})
    plain = hubfleet("plan", fleet=root, env=env, check=True)
    assert "secret values changed" in plain.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    [prod_hub] = read_matrix(runner.outputs(), "prod")
    assert (prod_hub["hub"], prod_hub["cluster"]) == ("physics", "gke")
    summary = runner.summary.read_text()
    assert "| `physics` | physics | prod | update | secret values changed |" in summary
    assert SECRET not in summary + done.stdout + done.stderr
    assert SECRET not in plain.stdout + plain.stderr  # `hubfleet plan` itself, with its diffs


def test_deploy_step_takes_a_removed_hub_to_the_rollout(
    tmp_path: Path, keyed_fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub whose file was deleted is a `remove` entry of the prod matrix; the matrix job's deploy step
    hands it to the rollout (which `hubfleet deploy --hub` would refuse as an unknown hub). No daemon runs
    here, so the removal itself fails, saying so; a hub nobody knows is one clear line."""
    root, identity = keyed_fleet
    monkeypatch.setenv("HUBFLEET_AGE_IDENTITY", str(identity))
    mark_deployed(root)
    (root / "communities/hackweek/hubs/prod.yaml").unlink()
    runner = Runner(tmp_path, root, {"secrets.HUBFLEET_AGE_IDENTITY": identity.read_text()})
    runner.expressions["vars.HUBFLEET_STATE_DIR"] = str(root / ".hubfleet")
    runner.github_env.write_text(f"HUBFLEET_AGE_IDENTITY={identity}\n")  # as `ci identity` does
    done = runner.run(step("hubfleet-deploy.yml", "plan", "Plan", cluster="local"))
    assert done.returncode == 0, done.stdout + done.stderr
    [entry] = read_matrix(runner.outputs(), "prod")
    assert (entry["hub"], entry["action"]) == ("hackweek", "remove")

    runner.expressions["matrix.hub"] = entry["hub"]
    deploy = step("hubfleet-deploy.yml", "prod", "Deploy", cluster="local")
    done = runner.run(deploy)
    assert done.returncode == 1
    assert "hackweek: failed:" in done.stdout, done.stdout + done.stderr
    assert "no hub named" not in done.stdout + done.stderr

    runner.expressions["matrix.hub"] = "nobody"
    done = runner.run(deploy)
    assert done.returncode == 1
    assert "hub nobody is not in the fleet files and" in done.stderr


FAKE_CLOUD = r"""#!{python}
# Fake {name} (no cluster or cloud here): logs its argv; `helm status` says revision 3 runs; `helm upgrade`
# and `helm rollback` fail, so the deploy's failure handling shows whether it rolls back or uninstalls.
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["{name}", *argv]) + "\n")
if "{name}" == "helm" and argv[:1] == ["status"]:
    print(json.dumps({{"name": argv[1], "version": 3}}))
elif "{name}" == "helm" and argv[:1] in (["upgrade"], ["rollback"]):
    print("Error: something went wrong", file=sys.stderr)
    sys.exit(1)
elif "{name}" == "gcloud":
    open(os.environ["KUBECONFIG"], "w").write("apiVersion: v1\n")
"""


def _gke_fleet_one_commit_on(tmp_path: Path) -> tuple[Path, Path, str]:
    """The GKE test fleet in a git repository with one commit on top of its first (physics' prod hub gets 999
    users), and fake helm, kubectl and gcloud (no cluster here) in a directory for PATH: (fleet, fake bin
    directory, the first commit)."""
    fixture = Path(__file__).resolve().parent / "fixtures"
    root = tmp_path / "fleet"
    shutil.copytree(fixture / "k8s-fleet", root)
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name in ("helm", "kubectl", "gcloud"):
        (bindir / name).write_text(FAKE_CLOUD.format(python=sys.executable, name=name))
        (bindir / name).chmod(0o755)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    sha = git(root, "rev-parse", "HEAD")
    edit(root / "communities/physics/hubs/prod.yaml", "max_users:", "max_users: 999\n#")
    git(root, "commit", "-q", "-am", "physics: 999 users")
    return root, bindir, sha


@pytest.mark.parametrize("before", ["commit", ""])
def test_cloud_deploy_step_rolls_a_failed_hub_back_and_never_uninstalls_it(
    tmp_path: Path, before: str
) -> None:
    """The deploy job of a GKE fleet on a runner with no store: `ci deploy --base` records the fleet at the
    commit before the push, so the changed hub is an update and a failed upgrade rolls back. Without a
    commit before (a run started by hand) the hub is treated the same way, not as a new hub to uninstall.
    helm, kubectl and gcloud are fakes (no cluster here) that log their calls."""
    fixture = Path(__file__).resolve().parent / "fixtures"
    root, bindir, sha = _gke_fleet_one_commit_on(tmp_path)

    log = tmp_path / "calls.jsonl"
    runner = Runner(tmp_path, root, {"matrix.hub": "physics", "github.event.before": sha if before else ""})
    deploy = step("hubfleet-deploy.yml", "prod", "Deploy")
    identity = str(fixture / "k8s-fleet.age-identity.txt")
    done = runner.run(
        deploy | {"env": deploy["env"] | {"HUBFLEET_AGE_IDENTITY": identity, "FAKE_LOG": str(log)}},
        path=bindir,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    expected = (
        "physics: failed: helm upgrade failed (exit 1); rollback failed too: helm rollback to revision 3"
    )
    assert expected in done.stdout, done.stdout + done.stderr
    helm = [call[1] for call in map(json.loads, log.read_text().splitlines()) if call[0] == "helm"]
    assert helm == ["status", "upgrade", "rollback"]  # rolled back to revision 3; never `helm uninstall`


def test_plan_against_a_base_whose_fleet_is_invalid_says_so_and_plans_every_hub(
    tmp_path: Path, keyed_fleet: tuple[Path, Path]
) -> None:
    """A push that fixes a broken main: the fleet before it does not load, so nothing counts as deployed (and
    the summary says why) rather than the plan failing until someone runs it by hand."""
    root, identity = keyed_fleet
    edit(root / PROD, "max_users: 100", "max_users: lots")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "broken")
    broken = git(root, "rev-parse", "HEAD")
    edit(root / PROD, "max_users: lots", "max_users: 100")
    git(root, "commit", "-q", "-am", "fixed")
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    done = hubfleet("ci", "plan", "--base", broken, fleet=root, env=env, check=True)
    assert f"compared with nothing deployed: the fleet at {broken} has 1 error(s)" in done.stdout
    assert '"action":"create"' in done.stdout and '"action":"update"' not in done.stdout


def test_scheduled_inventory_steps_write_the_table_to_the_summary(tmp_path: Path) -> None:
    """The scheduled workflow's two inventory steps on the demo fleet (a local cluster: no Kubernetes rows),
    then `hubfleet ci inventory` on what `hubfleet clusters --json` prints for a GKE cluster (no cluster to
    read here: the row is written out as the command prints one)."""
    root = copy_demo_fleet(tmp_path / "fleet")
    runner = Runner(tmp_path, root, {"vars.HUBFLEET_STATE_DIR": str(root / ".hubfleet")})
    parsed = yaml.safe_load(files("local")[".github/workflows/hubfleet-scheduled.yml"])
    steps = [s for s in parsed["jobs"]["scheduled"]["steps"] if s.get("name", "").startswith("Cluster")]
    for one in steps:
        done = runner.run(one)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "No Kubernetes clusters in this fleet." in runner.summary.read_text()

    row = {
        "cluster": "gke",
        "provider": "gcp",
        "region": "europe-west1",
        "control_plane": "1.31.4",
        "chart_version": "4.4.0",
        "hub_count": 4,
        "support": "standard",
        "end_of_standard": "2026-12-20",
        "days_left": 19,
        "extra_monthly_cost": None,
        "warnings": ["node pool default is 1.29.2, three minors behind the control plane"],
    }
    (runner.dir / "clusters.json").write_text(json.dumps({"today": "2026-12-01", "clusters": [row]}))
    done = runner.run(steps[-1])
    assert done.returncode == 0, done.stderr
    summary = runner.summary.read_text()
    assert "| gke | gcp | europe-west1 | 1.31.4 | 4.4.0 | 4 | standard | 2026-12-20 | 19 |  |" in summary
    assert "- cluster gke: node pool default is 1.29.2, three minors behind the control plane" in summary


def test_cloud_deploy_job_loads_the_ci_state_and_saves_a_failed_deploy(tmp_path: Path) -> None:
    """The prod job's state steps around its deploy, as the runner runs them, with a bare repository as the
    fleet's GitHub remote (the job token is not needed for a local path) and fake helm, kubectl and gcloud:
    the plan job's save is stood in for by `ci state load` + `ci plan` + `ci state save`; the deploy fails
    and rolls back, and the save after it keeps its record and the revision to roll back to."""
    from hubfleet.deploy import ci_state
    from hubfleet.store import open_store

    fixture = Path(__file__).resolve().parent / "fixtures"
    root, bindir, sha = _gke_fleet_one_commit_on(tmp_path)
    git(tmp_path, "clone", "-q", "--bare", str(root), str(tmp_path / "remote.git"))
    git(root, "remote", "add", "origin", str(tmp_path / "remote.git"))

    identity = str(fixture / "k8s-fleet.age-identity.txt")
    log = tmp_path / "calls.jsonl"
    expressions = {"matrix.hub": "physics", "github.event.before": sha, "github.token": ""}
    extra = {"HUBFLEET_AGE_IDENTITY": identity, "FAKE_LOG": str(log)}

    def run_steps(job: str, names: list[str], workdir: Path) -> list[subprocess.CompletedProcess[str]]:
        runner = Runner(workdir, root, expressions)
        found = []
        for name in names:
            chosen = step("hubfleet-deploy.yml", job, name)
            found.append(runner.run(chosen | {"env": chosen.get("env", {}) | extra}, path=bindir))
        shutil.rmtree(root / ".hubfleet")  # the next job's runner starts empty
        return found

    load, plan, save = run_steps("plan", ["CI state", "Plan", "Save the CI state"], tmp_path / "plan-job")
    assert load.returncode == plan.returncode == save.returncode == 0, plan.stdout + plan.stderr + save.stderr
    load, deploy, save = run_steps("prod", ["CI state", "Deploy", "Save the CI state"], tmp_path / "prod-job")
    assert load.returncode == 0 and "loaded" in load.stdout + load.stderr, load.stderr
    expected = (
        "physics: failed: helm upgrade failed (exit 1); rollback failed too: helm rollback to revision 3"
    )
    assert deploy.returncode == 1 and expected in deploy.stdout, deploy.stdout + deploy.stderr
    assert save.returncode == 0, save.stderr

    check = tmp_path / "check"
    remote = ci_state.remote_for(None, {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "")})
    ci_state.load(root, check, remote=remote, identity=Path(identity))
    with open_store(check) as store:
        physics = store.deployments("physics", limit=10)
    assert physics[0].result != "ok" and any(d.actor.startswith("baseline") for d in physics)
    assert json.loads((check / "hubs/physics/kubernetes.json").read_text())["previous_revision"] == 3
    helm = [call[1] for call in map(json.loads, log.read_text().splitlines()) if call[0] == "helm"]
    assert helm == ["status", "upgrade", "rollback"]
