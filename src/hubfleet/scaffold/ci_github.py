"""The GitHub Actions workflows `hubfleet init` writes (`files(cluster)`), one per trigger:

- `hubfleet-pull-request.yml`: validate (with the real chart for Kubernetes hubs), plan against the pull
  request's base, the plan with its diffs in the job summary and as one pull-request comment, kept updated;
- `hubfleet-deploy.yml`: on a push to main, plan against the commit before it, then one job per changed
  staging hub, then one per changed prod hub once the staging wave passed; one deploy of the fleet at a time;
- `hubfleet-scheduled.yml`: ready mode for events (`hubfleet events apply`) and the cluster inventory.

Every step is a `hubfleet` command (`hubfleet ci ...` for what the workflows alone need), so it runs the same
locally (tests/test_ci_github.py). Values from the event reach a shell only through `env:`, never `${{ }}`
inside `run:`. Cloud access is OIDC federation: no stored cloud key. Kubernetes clusters deploy from
GitHub-hosted runners; a local cluster's hubs run under the `hubfleet up` daemon, so its deploys run on a
self-hosted runner on that machine (label `hubfleet`), which pull requests never reach.
"""

from __future__ import annotations

from hubfleet import __version__

CLUSTERS = ("local", "gcp", "aws", "azure")
RUNNER = "ubuntu-24.04"
PYTHON = "3.12"
HELM_VERSION = "v3.16.0"
KUBE_VERSION = "1.33.0"
"""What `validate --chart` renders for: helm 3's default is below the z2jh 4 chart's `kubeVersion`."""

# Every action pinned by full commit SHA, its release in the comment. Where each SHA was confirmed: the
# public-code index of ../.library (find_string), in public workflows and pinning guides pairing SHA and tag:
# - actions/checkout 11bd719… v4.2.2: many workflows and SHA-pinning guides (e.g. index ids 68833985420,
#   53875023545, 59982953375);
# - actions/setup-python 0b93645… v5.3.0: workflows 69242521460, 54062953072, 51810176527;
# - google-github-actions/auth 6fc4af4… v2.1.7 and aws-actions/configure-aws-credentials e3dd6a4… v4.0.2 and
#   azure/login a65d910… v2.2.0: one design document pinning all three side by side (id 34293552316), the
#   first two also in workflows 53411638913, 66117191852 and 68833985420;
# - google-github-actions/setup-gcloud 6189d56… v2.1.2: workflows 66591113649, 31788870541;
# - azure/setup-helm fe7b79c… v4.2.0: workflows 53431761584, 51852320971, 52770495043;
# - azure/use-kubelogin 0ce7c36… v1.3 (kubelogin v0.1.6): workflows 53794840747, 54184977739 and a workflow
#   test asserting the same pin, 55910877915.
CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2"
SETUP_PYTHON = "actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90a2b # v5.3.0"
SETUP_HELM = "azure/setup-helm@fe7b79cd5ee1e45176fcad797de68ecaf3ca4814 # v4.2.0"
GCP_AUTH = "google-github-actions/auth@6fc4af4b145ae7821d527454aa9bd537d1f2dc5f # v2.1.7"
GCP_SETUP = "google-github-actions/setup-gcloud@6189d56e4096ee891640bb02ac264be376592d6a # v2.1.2"
AWS_AUTH = "aws-actions/configure-aws-credentials@e3dd6a429d7300a6a4c196c26e071d42e0343502 # v4.0.2"
AZURE_LOGIN = "azure/login@a65d910e8af852a8061c627c456678983e180302 # v2.2.0"
AZURE_KUBELOGIN = "azure/use-kubelogin@0ce7c36141aa27d4934872cf00b0120804c98a29 # v1.3"
KUBELOGIN_VERSION = "v0.1.6"

HEADER = """\
# Written by `hubfleet init --cluster {cluster}` (hubfleet {version}); edit freely, init never overwrites it.
# Set up once (README.md "Continuous deployment"):
# - repository secret HUBFLEET_AGE_IDENTITY: the text of the CI age identity (`hubfleet secrets keygen`),
#   whose public key is in fleet.yaml `ci_recipients` (then `hubfleet secrets rekey`);
# - repository variable HUBFLEET_PACKAGE (optional): what pip installs, default hubfleet=={version}.
{extra}"""

CLOUD_SETUP = {
    "local": """\
# - a self-hosted runner with the label `hubfleet` on the machine that runs `hubfleet up`, and the repository
#   variable HUBFLEET_STATE_DIR: that fleet's state directory (the deploys go to its running daemon).
""",
    "gcp": """\
# - OIDC to Google Cloud (https://github.com/google-github-actions/auth#workload-identity-federation):
#   repository variables GCP_WORKLOAD_IDENTITY_PROVIDER (projects/N/locations/global/workloadIdentityPools/
#   POOL/providers/PROVIDER) and GCP_SERVICE_ACCOUNT (an account allowed to get the cluster's credentials).
""",
    "aws": """\
# - OIDC to AWS (https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-
#   deployments/configuring-openid-connect-in-amazon-web-services): repository variables AWS_ROLE_ARN (a role
#   trusting token.actions.githubusercontent.com for this repository) and AWS_REGION (the cluster's region).
""",
    "azure": """\
# - OIDC to Azure (a federated credential on an app registration, https://github.com/Azure/login#login-with-
#   openid-connect-oidc-recommended): repository variables AZURE_CLIENT_ID, AZURE_TENANT_ID and
#   AZURE_SUBSCRIPTION_ID.
""",
}


ACTIONLINT_CONFIG = """\
# actionlint (https://github.com/rhysd/actionlint/blob/main/docs/config.md): the label of the self-hosted
# runner on the machine that runs `hubfleet up`, where the deploy workflows of a local fleet run.
self-hosted-runner:
  labels:
    - hubfleet
"""


def _steps(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def checkout(full_history: bool = False) -> list[str]:
    """The repository, without leaving the token in .git/config for later steps (zizmor: artipacked)."""
    lines = [f"      - uses: {CHECKOUT}", "        with:", "          persist-credentials: false"]
    if full_history:  # the plan's baseline is the fleet at an earlier commit
        lines.append("          fetch-depth: 0")
    return lines


def install(cluster: str) -> list[str]:
    """Python and hubfleet; the self-hosted runner of a local fleet uses the hubfleet its daemon runs."""
    if cluster == "local":
        return []
    return [
        f"      - uses: {SETUP_PYTHON}",
        "        with:",
        f'          python-version: "{PYTHON}"',
        "      - name: Install hubfleet",
        "        env:",
        f"          HUBFLEET_PACKAGE: ${{{{ vars.HUBFLEET_PACKAGE || 'hubfleet=={__version__}' }}}}",
        '        run: python -m pip install "$HUBFLEET_PACKAGE"',
    ]


def identity() -> list[str]:
    """The age identity from the repository secret to a 0600 file (`hubfleet ci identity`), never echoed."""
    return [
        "      - name: Age identity (decrypts the fleet's secrets)",
        "        env:",
        "          HUBFLEET_AGE_IDENTITY_TEXT: ${{ secrets.HUBFLEET_AGE_IDENTITY }}",
        "        run: hubfleet ci identity",
    ]


def cloud_login(cluster: str) -> list[str]:
    """OIDC federation to the cluster's cloud (the job has `id-token: write`), and helm."""
    if cluster == "local":
        return []
    login = {
        "gcp": [
            f"      - uses: {GCP_AUTH}",
            "        with:",
            "          workload_identity_provider: ${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
            "          service_account: ${{ vars.GCP_SERVICE_ACCOUNT }}",
            f"      - uses: {GCP_SETUP}",
            "        with:",
            "          install_components: gke-gcloud-auth-plugin",
        ],
        "aws": [
            f"      - uses: {AWS_AUTH}",
            "        with:",
            "          role-to-assume: ${{ vars.AWS_ROLE_ARN }}",
            "          aws-region: ${{ vars.AWS_REGION }}",
        ],
        "azure": [
            f"      - uses: {AZURE_LOGIN}",
            "        with:",
            "          client-id: ${{ vars.AZURE_CLIENT_ID }}",
            "          tenant-id: ${{ vars.AZURE_TENANT_ID }}",
            "          subscription-id: ${{ vars.AZURE_SUBSCRIPTION_ID }}",
            # an AKS cluster with Microsoft Entra ID: the kubeconfig `az aks get-credentials` writes runs
            # kubelogin, which signs in with the azure/login session (AAD_LOGIN_METHOD in the job's env)
            f"      - uses: {AZURE_KUBELOGIN}",
            "        with:",
            f"          kubelogin-version: {KUBELOGIN_VERSION}",
        ],
    }[cluster]
    return login + helm()


def helm() -> list[str]:
    return [f"      - uses: {SETUP_HELM}", "        with:", f"          version: {HELM_VERSION}"]


def runs_on(cluster: str) -> str:
    return "[self-hosted, hubfleet]" if cluster == "local" else RUNNER


def state_env(cluster: str) -> list[str]:
    """A local fleet's deploys use its daemon's state directory; a cloud runner starts empty."""
    if cluster != "local":
        return []
    return ["    env:", "      HUBFLEET_STATE_DIR: ${{ vars.HUBFLEET_STATE_DIR }}"]


def job_env(cluster: str) -> list[str]:
    """The `env:` of a job that reaches the hubs: a local fleet's state directory; on Azure, kubelogin's
    login method (https://azure.github.io/kubelogin/, AAD_LOGIN_METHOD overrides the kubeconfig's --login),
    so that an Entra ID cluster's kubeconfig uses the azure/login session instead of a device-code prompt."""
    if cluster == "azure":
        return ["    env:", "      AAD_LOGIN_METHOD: azurecli"]
    return state_env(cluster)


def _job_env_text(cluster: str) -> str:
    lines = job_env(cluster)
    return "".join(line + "\n" for line in lines)


STATE_TOKEN = "          HUBFLEET_GIT_TOKEN: ${{ github.token }}"


def state_load(cluster: str) -> list[str]:
    """A cloud runner's store and hub state files from the hubfleet-state branch (`hubfleet ci state load`);
    a local fleet's runner has the daemon's own."""
    if cluster == "local":
        return []
    return [
        "      - name: CI state (deploy history, from the hubfleet-state branch)",
        "        env:",
        STATE_TOKEN,
        "        run: hubfleet ci state load",
    ]


def state_save(cluster: str) -> str:
    """Save the state, also after a failed deploy (its record and rollback revision matter most)."""
    if cluster == "local":
        return ""
    return _steps(
        [
            "      - name: Save the CI state (one commit on the hubfleet-state branch)",
            "        if: ${{ !cancelled() }}",
            "        env:",
            STATE_TOKEN,
            "        run: hubfleet ci state save",
        ]
    )


def contents(cluster: str) -> str:
    """`contents: write` only where the CI state is saved (a cloud fleet's deploy and scheduled jobs)."""
    if cluster == "local":
        return "      contents: read  # to check out the fleet\n"
    return "      contents: write  # to check out the fleet and push the CI state (hubfleet-state branch)\n"


def header(cluster: str) -> str:
    return HEADER.format(cluster=cluster, version=__version__, extra=CLOUD_SETUP[cluster])


def pull_request(cluster: str) -> str:
    """Validate, plan against the base, the plan in the summary and as one updated comment. Runs on
    GitHub-hosted runners only (never a pull request's code on the self-hosted runner of a local fleet)."""
    validate = "hubfleet validate"
    chart: list[str] = []
    if cluster != "local":
        chart = helm() + [
            "      - name: Z2JH chart",
            '        run: hubfleet ci charts --out "$RUNNER_TEMP/charts"',
        ]
        validate += f' --chart --charts-dir "$RUNNER_TEMP/charts" --kube-version {KUBE_VERSION}'
    install_here = install("gcp")  # GitHub-hosted: always installs hubfleet
    text = header(cluster) + (
        "name: hubfleet pull request\n"
        "on:\n"
        "  pull_request:\n"
        "    branches: [main]\n"
        "permissions: {}\n"
        "concurrency:\n"
        "  group: hubfleet-pr-${{ github.event.pull_request.number }}\n"
        "  cancel-in-progress: true\n"
        "jobs:\n"
        "  validate:\n"
        "    name: Validate the fleet\n"
        f"    runs-on: {RUNNER}\n"
        "    permissions:\n"
        "      contents: read  # to check out the fleet\n"
        "    steps:\n"
        + _steps(checkout() + install_here + chart)
        + "      - name: Validate\n"
        + f"        run: {validate}\n"
        + "  plan:\n"
        "    name: Plan (summary and pull-request comment)\n"
        "    needs: validate\n"
        f"    runs-on: {RUNNER}\n"
        "    permissions:\n"
        "      contents: read  # to check out the fleet\n"
        "      pull-requests: write  # to post and update the plan comment\n"
        "    steps:\n"
        + _steps(checkout(full_history=True) + install_here + identity())
        + "      - name: Plan against the base branch\n"
        "        env:\n"
        "          BASE_SHA: ${{ github.event.pull_request.base.sha }}\n"
        '        run: hubfleet ci plan --base "$BASE_SHA" --summary "$RUNNER_TEMP/plan.md"\n'
        "      - name: Plan comment (one per pull request, updated)\n"
        "        env:\n"
        "          GH_TOKEN: ${{ github.token }}\n"
        "          PR_NUMBER: ${{ github.event.pull_request.number }}\n"
        '        run: hubfleet ci comment --pr "$PR_NUMBER" --body-file "$RUNNER_TEMP/plan.md"\n'
    )
    return text


def _deploy_job(cluster: str, stage: str, needs: str, condition: str) -> str:
    return (
        f"  {stage}:\n"
        f"    name: Deploy ${{{{ matrix.hub }}}} ({stage})\n"
        f"    needs: {needs}\n"
        f"    if: {condition}\n"
        f"    runs-on: {runs_on(cluster)}\n"
        f"    environment: {stage}  # required reviewers, secrets and OIDC trust per stage (Settings)\n"
        "    permissions:\n"
        + contents(cluster)
        + ("" if cluster == "local" else "      id-token: write  # OIDC token for the cloud login\n")
        + _job_env_text(cluster)
        + "    strategy:\n"
        "      fail-fast: false\n"
        f"      matrix: ${{{{ fromJSON(needs.plan.outputs.{stage}) }}}}\n"
        "    steps:\n"
        + _steps(
            checkout(full_history=cluster != "local")
            + install(cluster)
            + identity()
            + state_load(cluster)
            + cloud_login(cluster)
        )
        + "      - name: Deploy\n"
        "        env:\n"
        "          HUB: ${{ matrix.hub }}\n"
        + (
            '        run: hubfleet ci deploy --hub "$HUB"\n'
            if cluster == "local"  # the daemon's store knows what runs
            else "          BEFORE_SHA: ${{ github.event.before }}\n"
            '        run: hubfleet ci deploy --hub "$HUB" --base "$BEFORE_SHA"\n'
        )
        + state_save(cluster)
    )


def deploy(cluster: str) -> str:
    """Plan against the commit before the push, then the staging wave, then the prod wave.

    `plan --format github-matrix` (Plan.github_matrix) gives `staging`/`prod` matrices of changed hubs, each
    entry with its community and, for a prod hub of a cluster with a `staging_hub`, its `cluster_gate`
    (that gate is in the staging matrix when it changed, and `hubfleet deploy` checks it when it did not).
    A cloud runner has no store: each deploy job records the fleet at the commit before the push as what
    runs (`ci deploy --base`), so a changed hub is an `update` that rolls back on failure, never a `create`
    that would be uninstalled. The prod wave waits for the whole staging wave: a failed staging job holds
    back every prod hub of the push (never less strict than the community and cluster gates)."""
    base = (
        "        env:\n"
        "          BEFORE_SHA: ${{ github.event.before }}\n"
        '        run: hubfleet ci plan --base "$BEFORE_SHA"\n'
    )
    if cluster == "local":  # the daemon's own store knows what runs: no baseline needed
        base = "        run: hubfleet ci plan\n"
    staging_if = "needs.plan.outputs.staging-count != '0'"
    prod_if = (
        "${{ !cancelled() && needs.plan.result == 'success' && needs.plan.outputs.prod-count != '0' && "
        "(needs.staging.result == 'success' || needs.staging.result == 'skipped') }}"
    )
    return (
        header(cluster) + "name: hubfleet deploy\n"
        "on:\n"
        "  push:\n"
        "    branches: [main]\n"
        "  workflow_dispatch: {}\n"
        "permissions: {}\n"
        "# one deploy of the fleet at a time; a newer push waits rather than cancelling one under way.\n"
        "# GitHub keeps one pending run: a third push replaces the second while it waits, and loses\n"
        "# nothing, since the plan compares with what was deployed (the "
        + ("CI state" if cluster != "local" else "daemon's store")
        + "), not only with the push\n"
        + "concurrency:\n"
        "  group: hubfleet-deploy\n"
        "  cancel-in-progress: false\n"
        "jobs:\n"
        "  plan:\n"
        "    name: Plan\n"
        f"    runs-on: {runs_on(cluster)}\n"
        "    permissions:\n"
        + contents(cluster)
        + "\n".join(state_env(cluster))
        + ("\n" if cluster == "local" else "")
        + "    outputs:\n"
        "      staging: ${{ steps.plan.outputs.staging }}\n"
        "      staging-count: ${{ steps.plan.outputs.staging-count }}\n"
        "      prod: ${{ steps.plan.outputs.prod }}\n"
        "      prod-count: ${{ steps.plan.outputs.prod-count }}\n"
        "    steps:\n"
        + _steps(
            checkout(full_history=cluster != "local") + install(cluster) + identity() + state_load(cluster)
        )
        + "      - name: Plan (matrices to $GITHUB_OUTPUT, the plan to the job summary)\n"
        "        id: plan\n"
        + base
        + state_save(cluster)  # the first run's baseline, once, before the deploy jobs load it
        + _deploy_job(cluster, "staging", "plan", staging_if)
        + _deploy_job(cluster, "prod", "[plan, staging]", prod_if)
    )


def scheduled(cluster: str) -> str:
    """Ready mode for events and the cluster inventory, hourly. A local fleet's daemon applies ready mode
    itself, so there only the inventory runs."""
    events = ""
    if cluster != "local":
        events = "      - name: Ready mode for events\n        run: hubfleet events apply\n"
    return (
        header(cluster) + "name: hubfleet scheduled\n"
        "on:\n"
        "  schedule:\n"
        '    - cron: "17 * * * *"\n'
        "  workflow_dispatch: {}\n"
        "permissions: {}\n"
        "# a group of its own: in the deploys' group this hourly run would replace a push's pending deploy\n"
        "# (GitHub keeps one pending run per group). A deploy and `events apply` upgrading the same release\n"
        "# at once: helm refuses the second (another operation is in progress), which fails and the next\n"
        "# hour retries; the CI state saves of both are merged.\n"
        "concurrency:\n"
        "  group: hubfleet-scheduled\n"
        "  cancel-in-progress: false\n"
        "jobs:\n"
        "  scheduled:\n"
        "    name: Events and cluster inventory\n"
        f"    runs-on: {runs_on(cluster)}\n"
        "    permissions:\n"
        + contents(cluster)
        + ("" if cluster == "local" else "      id-token: write  # OIDC token for the cloud login\n")
        + _job_env_text(cluster)
        + "    steps:\n"
        + _steps(checkout() + install(cluster) + identity() + state_load(cluster) + cloud_login(cluster))
        + events
        + "      - name: Cluster inventory\n"
        '        run: hubfleet clusters --json > "$RUNNER_TEMP/clusters.json"\n'
        + "      - name: Cluster inventory to the job summary\n"
        "        if: ${{ !cancelled() }}\n"
        '        run: hubfleet ci inventory "$RUNNER_TEMP/clusters.json"\n' + state_save(cluster)
    )


def files(cluster: str) -> dict[str, str]:
    """Relative path -> text of the GitHub Actions workflows for a fleet on a cluster of kind `cluster`."""
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster kind must be one of {', '.join(CLUSTERS)}, not {cluster!r}")
    found = {
        ".github/workflows/hubfleet-pull-request.yml": pull_request(cluster),
        ".github/workflows/hubfleet-deploy.yml": deploy(cluster),
        ".github/workflows/hubfleet-scheduled.yml": scheduled(cluster),
    }
    if cluster == "local":  # actionlint knows GitHub's runner labels; this one is the fleet's own
        found[".github/actionlint.yaml"] = ACTIONLINT_CONFIG
    return found
