"""What the CI workflows' steps need beyond `plan` and `deploy`: a baseline store and the plan as Markdown.

A CI runner starts with an empty state directory, so a plain `hubfleet plan` there would call every hub
`create`. The baseline is the fleet as it was at a git ref (the pull request's base, the commit before a
push), recorded as deployed in a throw-away store: planning against it says exactly what the change does,
with the real reasons and diffs. Rendered configurations and settings snapshots hold no secret values (the
plan's own rule), so the Markdown written from them holds none either.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubfleet.backends import backends_for
from hubfleet.config.fleet import FleetInvalid
from hubfleet.config.validate import load_fleet
from hubfleet.deploy.plan import Plan
from hubfleet.deploy.state import record
from hubfleet.settings import UserError
from hubfleet.store.api import Store

NO_COMMIT = re.compile(r"^0+$")
"""`github.event.before` on the first push of a branch: no commit came before."""
COMMENT_MARK = "<!-- hubfleet-plan -->"
"""First line of the pull-request comment, so the workflow finds and updates its own comment."""
SUMMARY_LIMIT = 60_000
"""GitHub refuses comments over 65,536 characters; longer diffs are cut with a note."""


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UserError("git is not installed; the baseline of a plan is read from git") from None


@contextlib.contextmanager
def fleet_at(fleet_root: Path, ref: str) -> Iterator[Path | None]:
    """The fleet directory as it was at `ref` (a detached git worktree, removed afterwards); None when the
    fleet did not exist there. Needs the ref in the clone: check out with `fetch-depth: 0`."""
    top = _git(fleet_root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UserError(f"{fleet_root} is not in a git repository; --base needs the fleet's git history")
    repo = Path(top.stdout.strip())
    if _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise UserError(
            f"--base {ref}: no such commit in this clone; fetch the history (actions/checkout with "
            "`fetch-depth: 0`) or pass a ref that exists"
        )
    work = Path(tempfile.mkdtemp(prefix="hubfleet-base-"))
    tree = work / "tree"
    try:
        added = _git(repo, "worktree", "add", "--detach", str(tree), ref)
        if added.returncode != 0:
            raise UserError(f"git worktree add {ref} failed: {added.stderr.strip()}")
        base = tree / fleet_root.resolve().relative_to(repo.resolve())
        yield base if (base / "fleet.yaml").is_file() else None
    finally:
        _git(repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(work, ignore_errors=True)


def record_baseline(fleet_root: Path, ref: str | None, state_dir: Path, store: Store) -> str:
    """Record every hub of the fleet at `ref` as deployed in `store` (an empty one); returns a line saying
    what the plan is compared with. No ref, the all-zero ref of a first push, or a fleet that cannot be read
    there (invalid, or secrets this identity cannot decrypt): nothing is recorded, and the line says why."""
    if not ref or NO_COMMIT.match(ref):
        return "compared with nothing deployed (no base commit): every hub is new"
    with fleet_at(fleet_root, ref) as base_root:
        if base_root is None:
            return f"compared with {ref}, which has no fleet here: every hub is new"
        try:
            base = load_fleet(base_root)
            backends = backends_for(base, state_dir)
            found = [
                (hub, backends[base.clusters[hub.cluster].kind].config_hash(hub))
                for hub in base.hubs.values()
            ]
            rendered = {hub.name: backends[base.clusters[hub.cluster].kind].render(hub) for hub, _ in found}
        except FleetInvalid as exc:
            return f"compared with nothing deployed: the fleet at {ref} has {len(exc.errors)} error(s)"
        except UserError as exc:
            return f"compared with nothing deployed: the fleet at {ref} cannot be read ({exc})"
        for hub, digest in found:
            record(
                store,
                base,
                hub,
                config_hash=digest,
                rendered=rendered[hub.name],
                result="ok",
                actor=f"baseline {ref}",
            )
    return f"compared with the fleet at {ref}"


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in the text, so a diff line cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def summary_markdown(plan: Plan, fleet_name: str, compared: str, *, limit: int = SUMMARY_LIMIT) -> str:
    """The plan for the job summary and the pull-request comment: a table of changed hubs, their
    reasons, then each diff (a new hub's full rendering is left out: it is all additions)."""
    changes = plan.changes
    waves = plan.waves()
    lines = [
        COMMENT_MARK,
        f"## hubfleet plan: fleet `{fleet_name}`",
        "",
        f"{len(changes)} of {len(plan.hubs)} hub(s) change ({compared}); "
        f"staging wave: {len(waves[0])}, prod wave: {len(waves[1])}.",
        "",
    ]
    if changes:
        lines += ["| hub | community | stage | action | why |", "| --- | --- | --- | --- | --- |"]
        for entry in changes:
            why = "; ".join(entry.reasons).replace("|", "\\|").replace("\n", " ")
            gate = f" (gated by `{entry.cluster_gate}`)" if entry.cluster_gate else ""
            lines.append(
                f"| `{entry.name}` | {entry.community} | {entry.stage}{gate} | {entry.action} | {why} |"
            )
        lines.append("")
    for entry in plan.retired:
        lines.append(f"- `{entry.name}`: {entry.reasons[0]}")
    body = "\n".join(lines)
    for entry in changes:
        if not entry.diff or entry.action == "create":
            continue
        fence = _fence(entry.diff)
        block = (
            f"\n<details><summary>diff of <code>{entry.name}</code></summary>\n\n{fence}diff\n"
            f"{entry.diff.rstrip()}\n{fence}\n</details>\n"
        )
        if len(body) + len(block) > limit:
            body += "\n(further diffs left out: run `hubfleet plan` locally to see them all)\n"
            break
        body += block
    return body + "\n"


BOT = "github-actions[bot]"
"""Who writes the comment with the workflow's GITHUB_TOKEN: only its comments are edited."""


def _gh(*args: str) -> str:
    """Run the GitHub CLI (on every GitHub-hosted runner; it reads GH_TOKEN)."""
    try:
        done = subprocess.run(["gh", *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UserError("the GitHub CLI `gh` is not installed (GitHub-hosted runners have it)") from None
    if done.returncode != 0:
        raise UserError(f"gh {' '.join(args[:3])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def upsert_comment(repo: str, number: int, body_file: Path) -> str:
    """Update the pull request's plan comment (the one this workflow wrote, found by COMMENT_MARK), or
    add it: one comment per pull request however often it is pushed to. Returns `updated` or `created`.
    API: https://docs.github.com/en/rest/issues/comments (list, update, create an issue comment)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
        raise UserError(f"--repo {repo!r}: expected OWNER/NAME (the workflow passes $GITHUB_REPOSITORY)")
    if not body_file.is_file():
        raise UserError(f"{body_file}: no plan to post; run `hubfleet ci plan --summary {body_file}` first")
    query = f'.[] | select(.user.login == "{BOT}" and (.body | startswith("{COMMENT_MARK}"))) | .id'
    found = _gh("api", "--paginate", f"repos/{repo}/issues/{number}/comments", "--jq", query).split()
    if found:
        _gh(
            "api", "--method", "PATCH", f"repos/{repo}/issues/comments/{found[0]}", "-F", f"body=@{body_file}"
        )
        return "updated"
    _gh("api", "--method", "POST", f"repos/{repo}/issues/{number}/comments", "-F", f"body=@{body_file}")
    return "created"


def creates_as_updates(plan: Plan) -> None:
    """With no baseline (a run started by hand, a first push) a runner's empty store calls every hub
    `create`, and a `create` that fails is uninstalled: a running prod hub would go down for a failed check.
    As `update`, a failure rolls back to the release's previous revision, which the Kubernetes backend reads
    from `helm status` at apply; a release that is new has none, and stays for inspection."""
    for entry in plan.hubs:
        if entry.action == "create":
            entry.action = "update"
            entry.reasons.append("no baseline commit: deployed as an update, rolled back on failure")


INVENTORY_COLUMNS = (
    ("cluster", "cluster"),
    ("provider", "provider"),
    ("region", "region"),
    ("control plane", "control_plane"),
    ("chart", "chart_version"),
    ("hubs", "hub_count"),
    ("support", "support"),
    ("standard ends", "end_of_standard"),
    ("days left", "days_left"),
    ("extra/month", "extra_monthly_cost"),
)


def inventory_markdown(data: dict[str, Any]) -> str:
    """`hubfleet clusters --json` as a Markdown table for the scheduled job's summary, with its warnings."""
    head = [label for label, _ in INVENTORY_COLUMNS]
    lines = [
        f"## Cluster inventory on {data.get('today', '')}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    if not data.get("clusters"):
        lines[2:] = ["No Kubernetes clusters in this fleet."]
    for row in data.get("clusters", []):
        cells = ["" if row.get(key) is None else str(row.get(key)) for _, key in INVENTORY_COLUMNS]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    warnings = [*data.get("warnings", [])]
    for row in data.get("clusters", []):
        warnings += [f"cluster {row.get('cluster')}: {line}" for line in row.get("warnings", [])]
    warnings += [f"could not read: {line}" for line in data.get("read_errors", {}).values()]
    if warnings:
        lines += ["", *(f"- {line}" for line in warnings)]
    return "\n".join(lines) + "\n"
