"""`hubfleet ci gitlab-child`: the plan job of the GitLab pipeline (`.gitlab-ci.yml` from `hubfleet init`).

It plans against the base commit (as `hubfleet ci plan` does for GitHub) and writes the plan for the merge
request and the two dynamic child pipelines the parent's trigger jobs run."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from hubfleet.cli.ci_cmds import ci_app
from hubfleet.cli.common import FleetOption, StateDirOption, console, friendly_errors, load_or_explain
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

NO_IDENTITY = (
    "in GitLab: the plan hashes the fleet's secrets, so it needs the CI identity, the File variable "
    "HUBFLEET_AGE_IDENTITY; a protected variable reaches only the pipelines of protected branches, so "
    "protect the branches merge requests come from (e.g. a wildcard rule `fleet/*`) rather than unprotect it "
    "(docs/starting-a-fleet.md, GitLab CI)"
)


def matrices(lines: str) -> dict[str, list[dict[str, Any]]]:
    """The `include` rows per wave from `Plan.github_matrix()` (`staging={...}` / `prod={...}` lines)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in lines.splitlines():
        key, _, value = line.partition("=")
        if key in ("staging", "prod"):
            found[key] = json.loads(value)["include"]
    return found


@ci_app.command("gitlab-child")
@friendly_errors
def gitlab_child(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            help="Where to write plan.md, plan.json and the child pipelines staging.yml, prod.yml.",
        ),
    ],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Git ref the change is compared with (the merge request's base, the commit before a push; "
            "empty or all zeros: every hub is new).",
        ),
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Plan against --base, print the plan, and write into --out-dir the plan as Markdown (the merge
    request's "hubfleet plan" report; never a secret value), the plan as JSON, and a GitLab child pipeline per
    wave with a deploy job per changed hub."""
    from hubfleet.deploy.ci import record_baseline, summary_markdown
    from hubfleet.deploy.ci_state import compared_with, load_ran, loaded_commit
    from hubfleet.deploy.plan import make_plan
    from hubfleet.scaffold.ci_gitlab import child_pipeline
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir} is a file: give a directory for the plan and child pipelines")
    state_path = resolve_state_dir(fleet_dir, state_dir)
    try:
        with tempfile.TemporaryDirectory(prefix="hubfleet-ci-") as scratch:
            # after `ci state load`: its store (an empty one gets the baseline, which the save keeps)
            state = state_path if load_ran(state_path) else Path(scratch)
            with open_store(state) as store:
                if loaded_commit(state_path) is None:
                    compared = record_baseline(fleet_dir, base, state, store)
                else:
                    compared = compared_with(state_path)
                result = make_plan(config, state, store)
    except UserError as exc:
        if "age identity" in str(exc) and not os.environ.get("HUBFLEET_AGE_IDENTITY"):
            raise UserError(f"{exc}\n{NO_IDENTITY}") from None
        raise
    providers = {
        name: cluster.credentials.provider if cluster.kind == "kubernetes" else "local"
        for name, cluster in config.clusters.items()
    }
    markdown = summary_markdown(result, config.settings.name, compared)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "plan.md": markdown,
        "plan.json": json.dumps(result.to_json(), indent=2) + "\n",
    }
    # what runs is the fleet at the base commit (none on a first push, whose base is all zeros)
    sha = base if base and base.strip("0") and re.fullmatch(r"[0-9a-fA-F]{7,40}", base) else None
    for stage, rows in matrices(result.github_matrix()).items():
        written[f"{stage}.yml"] = child_pipeline(stage, rows, providers, sha)
    for name, text in written.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    typer.echo(markdown)
    waves = result.waves()
    console.print(
        f"{len(result.changes)} hub(s) to change ({compared}); staging wave: {len(waves[0])}, prod wave: "
        f"{len(waves[1])}; child pipelines in {out_dir}",
        highlight=False,
        markup=False,
    )
