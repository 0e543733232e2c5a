"""`hubfleet ci ...`: the steps of the generated CI workflows, as commands (so each step is one line that
runs the same on a laptop with a fake $GITHUB_OUTPUT)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, StateDirOption, console, friendly_errors, load_or_explain
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

ci_app = typer.Typer(help="Steps of the CI workflows `hubfleet init` writes.", no_args_is_help=True)
app.add_typer(ci_app, name="ci")

IDENTITY_TEXT_ENV = "HUBFLEET_AGE_IDENTITY_TEXT"
"""The workflow passes the repository secret's text here (the file path goes to HUBFLEET_AGE_IDENTITY)."""


def _append(variable: str, text: str) -> bool:
    """Append to the file GitHub names in $VARIABLE; False when it is unset (not in a workflow)."""
    path = os.environ.get(variable)
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as out:
        out.write(text if text.endswith("\n") else text + "\n")
    return True


@ci_app.command("plan")
@friendly_errors
def plan(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Git ref the change is compared with (the pull request's base, the commit before a push): "
            "its fleet is recorded as deployed in a throw-away store. Unset, or the CI state loaded "
            "(`ci state load`): the state directory's store.",
        ),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option("--summary", help="Also write the Markdown plan here (for the pull-request comment)."),
    ] = None,
) -> None:
    """Plan, then append the staging/prod matrices to $GITHUB_OUTPUT and the Markdown plan (reasons and
    diffs, never a secret value) to $GITHUB_STEP_SUMMARY; outside a workflow both are printed."""
    from hubfleet.deploy.ci import record_baseline, summary_markdown
    from hubfleet.deploy.ci_state import compared_with, load_ran, loaded_commit
    from hubfleet.deploy.plan import make_plan
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state_path = resolve_state_dir(fleet_dir, state_dir)
    with tempfile.TemporaryDirectory(prefix="hubfleet-ci-") as scratch:
        # after `ci state load`: its store (the baseline goes there when it was empty, for the save)
        state = Path(scratch) if base is not None and not load_ran(state_path) else state_path
        with open_store(state) as store:
            if base is not None and loaded_commit(state_path) is None:
                compared = record_baseline(fleet_dir, base, state, store)
            else:
                compared = compared_with(state_path)
            result = make_plan(config, state, store)
    markdown = summary_markdown(result, config.settings.name, compared)
    matrices = result.github_matrix()
    if not _append("GITHUB_OUTPUT", matrices):
        typer.echo(matrices)
    if not _append("GITHUB_STEP_SUMMARY", markdown) and summary is None:
        typer.echo(markdown)
    if summary is not None:
        summary.write_text(markdown, encoding="utf-8")
    console.print(f"{len(result.changes)} hub(s) to change ({compared})", highlight=False, markup=False)


@ci_app.command("identity")
@friendly_errors
def identity(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write it (default: $RUNNER_TEMP/hubfleet-age-identity.txt)."),
    ] = None,
) -> None:
    """Write the age identity from $HUBFLEET_AGE_IDENTITY_TEXT (the repository secret) to a 0600 file and
    point HUBFLEET_AGE_IDENTITY at it for the job's later steps ($GITHUB_ENV). The key is never printed."""
    from hubfleet.secrets.age import load_identity

    text = os.environ.get(IDENTITY_TEXT_ENV, "")
    if not text.strip():
        raise UserError(
            f"${IDENTITY_TEXT_ENV} is empty: add the CI identity as the repository secret "
            "HUBFLEET_AGE_IDENTITY (Settings → Secrets and variables → Actions; its recipient is in "
            "fleet.yaml `ci_recipients`); pull requests from forks get no secrets"
        )
    target = out or Path(os.environ.get("RUNNER_TEMP") or tempfile.gettempdir()) / "hubfleet-age-identity.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text.strip() + "\n")
    os.chmod(target, 0o600)
    load_identity(target)  # a malformed secret fails here, naming the file, never the key
    if not _append("GITHUB_ENV", f"HUBFLEET_AGE_IDENTITY={target}"):
        typer.echo(f"export HUBFLEET_AGE_IDENTITY={target}")
    console.print(f"age identity written to {target} (mode 0600)", highlight=False, markup=False)


@ci_app.command("charts")
@friendly_errors
def charts(
    out: Annotated[Path, typer.Option("--out", help="Directory for jupyterhub-<version>.tgz.")],
    fleet: FleetOption = None,
) -> None:
    """Download the Zero to JupyterHub chart of every Kubernetes cluster (`helm pull`) into --out, for
    `hubfleet validate --chart --charts-dir`; charts already there are kept."""
    from hubfleet.render.chart_check import INSTALL_HINT, chart_file, helm_binary, kubernetes_hubs

    config = load_or_explain(resolve_fleet_dir(fleet))
    wanted = {(c.chart_repo, c.chart_version): c for _hub, c in kubernetes_hubs(config)}
    if not wanted:
        console.print("no Kubernetes hubs: no chart needed", highlight=False, markup=False)
        return
    helm = helm_binary()
    if helm is None:
        raise UserError(f"hubfleet ci charts: {INSTALL_HINT}")
    out.mkdir(parents=True, exist_ok=True)
    import subprocess

    for (repo, version), cluster in sorted(wanted.items()):
        if chart_file(out, cluster).is_file():
            continue
        argv = [str(helm), "pull", "jupyterhub", "--repo", repo, "--version", version, "-d", str(out)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise UserError(f"helm pull jupyterhub {version} from {repo} failed: {done.stderr.strip()}")
        console.print(f"chart jupyterhub {version} from {repo}", highlight=False, markup=False)


@ci_app.command("comment")
@friendly_errors
def comment(
    pr: Annotated[int, typer.Option("--pr", help="Pull request number.")],
    body_file: Annotated[Path, typer.Option("--body-file", help="The Markdown plan (`ci plan --summary`).")],
    repo: Annotated[
        str | None, typer.Option("--repo", help="OWNER/NAME (default: $GITHUB_REPOSITORY).")
    ] = None,
) -> None:
    """Put the plan on the pull request as one comment, updated on every push (gh CLI, $GH_TOKEN)."""
    from hubfleet.deploy.ci import upsert_comment

    target = repo or os.environ.get("GITHUB_REPOSITORY", "")
    if not target:
        raise UserError("no repository: pass --repo OWNER/NAME or set GITHUB_REPOSITORY")
    done = upsert_comment(target, pr, body_file)
    console.print(f"plan comment {done} on {target}#{pr}", highlight=False, markup=False)


@ci_app.command("deploy")
@friendly_errors
def deploy(
    hub: Annotated[str, typer.Option("--hub", help="The hub of one deploy-matrix entry.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Git ref of what runs now (the commit before the push), recorded in a throw-away store: "
            "for a runner without the fleet's state. Unset, or the CI state loaded (`ci state load`): the "
            "state directory's store.",
        ),
    ] = None,
) -> None:
    """One entry of a deploy matrix: `hubfleet deploy --hub HUB`, also for a hub removed from the fleet
    files (which `deploy --hub` refuses as unknown), and with --base on a runner that has no store."""
    from hubfleet.deploy.ci_state import load_ran, loaded_commit

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state_path = resolve_state_dir(fleet_dir, state_dir)
    loaded = loaded_commit(state_path) is not None  # the CI state knows what runs: no baseline to record
    if base is None and hub in config.hubs:
        from hubfleet.cli import deploy_cmds

        deploy_cmds.deploy(fleet=fleet_dir, state_dir=state_dir, hub=[hub])
        return
    import asyncio

    from hubfleet.backends import backends_for
    from hubfleet.deploy.audit import deploy_actor, fleet_commit
    from hubfleet.deploy.ci import creates_as_updates, record_baseline
    from hubfleet.deploy.plan import make_plan
    from hubfleet.deploy.rollout import Deployer
    from hubfleet.store import open_store

    with tempfile.TemporaryDirectory(prefix="hubfleet-ci-") as scratch:
        # a load that found no state: the baseline and this deploy go to its store, for the save
        state = Path(scratch) if base is not None and not load_ran(state_path) else state_path
        with open_store(state) as store:
            if base is not None and not loaded:
                console.print(record_baseline(fleet_dir, base, state, store), highlight=False, markup=False)
            baseline = bool(store.deployed())
            if hub not in config.hubs and hub not in store.deployed():
                where = f"the fleet at {base}" if base is not None and not loaded else str(state)
                raise UserError(
                    f"hub {hub} is not in the fleet files and {where} has no record of deploying it; if it "
                    "was removed from the files, remove it where the fleet's state is (`hubfleet deploy` "
                    "there), or uninstall it by hand"
                )
            plan = make_plan(config, state, store, hubs={hub})
            if base is not None and not baseline:  # nothing known to run: never uninstall on failure
                creates_as_updates(plan)
            deployer = Deployer(
                config,
                store,
                backends_for(config, state),
                actor=deploy_actor(config.root),
                commit=fleet_commit(config.root),
            )
            rollout = asyncio.run(deployer.run(plan))
    for outcome in rollout.outcomes.values():
        console.print(f"{outcome.name}: {outcome.result}: {outcome.message}", highlight=False, markup=False)
    if not rollout.outcomes:
        console.print(f"{hub}: nothing to deploy (it runs what {base or 'the store'} says)", highlight=False)
    if not rollout.ok:
        raise typer.Exit(1)


@ci_app.command("inventory")
@friendly_errors
def inventory(
    source: Annotated[Path, typer.Argument(help="The output of `hubfleet clusters --json`.")],
) -> None:
    """The cluster inventory as a Markdown table in $GITHUB_STEP_SUMMARY (printed outside a workflow)."""
    import json

    from hubfleet.deploy.ci import inventory_markdown

    try:
        data = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{source}: not the JSON of `hubfleet clusters --json` ({exc})") from None
    markdown = inventory_markdown(data)
    if not _append("GITHUB_STEP_SUMMARY", markdown):
        typer.echo(markdown)
