"""`hubfleet ci state load|save`: a CI runner's store and hub state files, age-encrypted on a branch of the
fleet's repository (hubfleet.deploy.ci_state), so that deploy history, ready-mode windows and the hubs'
rollback revisions survive the runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hubfleet.cli.ci_cmds import ci_app
from hubfleet.cli.common import FleetOption, StateDirOption, console, friendly_errors, load_or_explain
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir

state_app = typer.Typer(
    help="The CI runners' state on a branch of the fleet's repository (load before, save after).",
    no_args_is_help=True,
)
ci_app.add_typer(state_app, name="state")

BranchOption = Annotated[
    str, typer.Option("--branch", help="The state branch (an orphan branch of the fleet's repository).")
]
RemoteOption = Annotated[
    str | None,
    typer.Option(
        "--remote",
        help="Remote name or URL (default: this repository on GitHub/GitLab with the job token, else "
        "origin).",
        show_default=False,
    ),
]
IdentityOption = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        help="age identity file (default: $HUBFLEET_AGE_IDENTITY, else ~/.config/hubfleet/age-identity.txt).",
        show_default=False,
    ),
]


@state_app.command("load")
@friendly_errors
def load(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    branch: BranchOption = "hubfleet-state",
    remote: RemoteOption = None,
    identity: IdentityOption = None,
    unless_merge_request: Annotated[
        bool,
        typer.Option(
            "--unless-merge-request",
            help="Do nothing in a GitLab merge-request pipeline: its plan compares with its base commit.",
        ),
    ] = False,
) -> None:
    """Fetch and decrypt the state branch into the (empty) state directory. No branch yet: nothing is
    loaded, and `ci plan`/`ci deploy` compare with the fleet at --base instead."""
    from hubfleet.deploy.ci_state import load as load_state
    from hubfleet.deploy.ci_state import remote_for

    if unless_merge_request and os.environ.get("CI_PIPELINE_SOURCE") == "merge_request_event":
        console.print("a merge request: the plan compares with its base, no CI state loaded", highlight=False)
        return
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    done = load_state(config, state, branch=branch, remote=remote_for(remote), identity=identity)
    console.print(done.message, highlight=False, markup=False)


@state_app.command("save")
@friendly_errors
def save(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    branch: BranchOption = "hubfleet-state",
    remote: RemoteOption = None,
    identity: IdentityOption = None,
    message: Annotated[
        str | None, typer.Option("--message", help="Commit message (default: names the CI job).")
    ] = None,
    unless_merge_request: Annotated[
        bool,
        typer.Option("--unless-merge-request", help="Do nothing in a GitLab merge-request pipeline."),
    ] = False,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Replace the branch by one commit without history (its size grows with every save), only if "
            "no job saved since the load.",
        ),
    ] = False,
    after_failure: Annotated[
        bool,
        typer.Option(
            "--after-failure",
            help="In GitLab's after_script: save only when the job failed ($CI_JOB_STATUS), since the "
            "script's own last line saved a job that passed.",
        ),
    ] = False,
) -> None:
    """Encrypt the state directory's store and hub state files to every operator and CI key and push them
    as one commit on the state branch; when another job saved first, merge and try again."""
    from hubfleet.deploy.ci_state import job_message, remote_for
    from hubfleet.deploy.ci_state import save as save_state

    if after_failure and os.environ.get("CI_JOB_STATUS") != "failed":
        return
    if unless_merge_request and os.environ.get("CI_PIPELINE_SOURCE") == "merge_request_event":
        return
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    commit = save_state(
        config,
        state,
        branch=branch,
        remote=remote_for(remote),
        identity=identity,
        message=message or job_message(),
        fresh=fresh,
    )
    console.print(f"state on {branch}: {commit[:12]}", highlight=False, markup=False)
