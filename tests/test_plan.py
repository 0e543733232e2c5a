"""Plan: actions, reasons, waves and file-based narrowing, against a real store (no hubs need to run)."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from fleet_helpers import copy_demo_fleet, edit, hubfleet, mark_deployed
from hubfleet.clock import utcnow
from hubfleet.config.validate import load_fleet
from hubfleet.deploy.plan import files_changed_since, make_plan, read_changed_files
from hubfleet.store import open_store
from hubfleet.store.retirements import record_retirement


def plan_of(root: Path, **kwargs):  # noqa: ANN003, ANN201
    fleet = load_fleet(root)
    with open_store(root / ".hubfleet") as store:
        return make_plan(fleet, root / ".hubfleet", store, **kwargs)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = copy_demo_fleet(tmp_path / "fleet")
    mark_deployed(root)
    return root


def test_new_fleet_plans_create_in_two_waves(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    result = json.loads(hubfleet("plan", "--json", fleet=root, check=True).stdout)
    assert {h["action"] for h in result["hubs"]} == {"create"}
    assert result["waves"] == [["hackweek-staging", "uni-a-staging"], ["hackweek", "uni-a"]]
    assert set(result["hubs"][0]) == {"name", "community", "stage", "cluster", "action", "reasons"}


def test_deployed_fleet_plans_nothing(fleet: Path) -> None:
    plan = plan_of(fleet)
    assert [h.action for h in plan.hubs] == ["unchanged"] * 4
    assert plan.waves() == [[], []]


def test_hub_change_names_the_setting_and_only_that_hub(fleet: Path) -> None:
    edit(fleet / "communities/uni-a/hubs/prod.yaml", "max_users: 100", "max_users: 150")
    plan = plan_of(fleet)
    [change] = plan.changes
    assert (change.name, change.action) == ("uni-a", "update")
    assert change.reasons == ["max_users: 100 → 150"]
    assert "-c.JupyterHub.active_server_limit = 100" in change.diff
    assert "+c.JupyterHub.active_server_limit = 150" in change.diff
    assert plan.waves() == [[], ["uni-a"]]


def test_fleet_default_change_reaches_only_the_hubs_that_inherit_it(fleet: Path) -> None:
    # uni-a (prod) sets its own memory limit; the other three inherit the fleet default
    edit(fleet / "fleet.yaml", "memory_limit: 1G", "memory_limit: 3G")
    plan = plan_of(fleet)
    assert sorted(h.name for h in plan.changes) == ["hackweek", "hackweek-staging", "uni-a-staging"]
    assert all(h.reasons == ["resources.memory_limit: 1G → 3G"] for h in plan.changes)


def test_comment_only_change_to_a_shared_file_changes_nothing(fleet: Path) -> None:
    path = fleet / "fleet.yaml"
    path.write_text(path.read_text() + "# a comment\n")
    assert plan_of(fleet).changes == []


def test_operator_change_is_a_reason_on_every_hub(fleet: Path) -> None:
    edit(fleet / "fleet.yaml", "dummy: ada", "dummy: ada2")
    plan = plan_of(fleet)
    staging = {h.name: h for h in plan.changes}
    assert set(staging) == {"uni-a-staging", "hackweek-staging"}  # only dummy-auth hubs use that username
    assert any(r.startswith("admins") for r in staging["uni-a-staging"].reasons)


def test_removed_hub_is_planned_for_removal(fleet: Path) -> None:
    (fleet / "communities/hackweek/hubs/prod.yaml").unlink()
    plan = plan_of(fleet)
    [change] = plan.changes
    assert (change.name, change.action, change.stage) == ("hackweek", "remove", "prod")
    assert "not retired: run `hubfleet retire hackweek`" in change.reasons[1]
    assert change.to_json()["data"]["retirement"] is None


def test_retired_hubs_are_never_deployed_and_say_where_their_data_is(fleet: Path) -> None:
    """A retired hub still in the files is `retired` (in no wave); a removed one says when it is purged."""
    now = utcnow()
    with open_store(fleet / ".hubfleet") as store:
        for hub in ("uni-a-staging", "hackweek"):
            record_retirement(
                store,
                hub,
                "c",
                retired_at=now,
                purge_after=now + timedelta(days=90),
                archive_dir="/a",
                snapshot_id=None,
            )
    (fleet / "communities/hackweek/hubs/prod.yaml").unlink()
    plan = plan_of(fleet)
    hubs = {h.name: h for h in plan.hubs}
    assert (
        hubs["uni-a-staging"].action == "retired"
        and "remove its hub file" in hubs["uni-a-staging"].reasons[0]
    )
    assert hubs["hackweek"].action == "remove" and "archives at /a" in hubs["hackweek"].reasons[1]
    assert plan.waves() == [[], ["hackweek"]]
    shown = hubfleet("plan", fleet=fleet, check=True).stdout
    assert "retired   uni-a-staging" in shown and "purged after" in shown


def test_changed_files_narrow_the_plan(fleet: Path, tmp_path: Path) -> None:
    edit(fleet / "communities/uni-a/hubs/prod.yaml", "max_users: 100", "max_users: 150")
    edit(fleet / "communities/hackweek/hubs/prod.yaml", "max_users: 200", "max_users: 250")
    listing = tmp_path / "changed.txt"
    listing.write_text("communities/uni-a/hubs/prod.yaml\nREADME.md\n")
    changed = read_changed_files(fleet, listing)
    assert changed == {"communities/uni-a/hubs/prod.yaml", "README.md"}
    assert [h.name for h in plan_of(fleet, changed_files=changed).hubs] == ["uni-a"]
    # a shared file brings every hub into the plan, and the hashes decide which change
    assert [h.name for h in plan_of(fleet, changed_files={"fleet.yaml"}).changes] == ["hackweek", "uni-a"]
    cli = hubfleet("plan", "--json", "--changed-files", str(listing), fleet=fleet, check=True)
    assert [h["name"] for h in json.loads(cli.stdout)["hubs"]] == ["uni-a"]


def test_a_cluster_file_of_any_name_narrows_to_its_hubs(fleet: Path) -> None:
    # the cluster `local` lives in a file named for the machine, not for the cluster
    (fleet / "clusters/local.yaml").rename(fleet / "clusters/this-machine.yaml")
    narrowed = plan_of(fleet, changed_files={"clusters/this-machine.yaml"}).hubs
    assert sorted(h.name for h in narrowed) == ["hackweek", "hackweek-staging", "uni-a", "uni-a-staging"]
    assert plan_of(fleet, changed_files={"clusters/local.yaml"}).hubs == []


def test_since_uses_git_to_find_changed_files(fleet: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=fleet, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "base")
    git("add", "-A")
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "-m", "fleet")
    edit(fleet / "communities/hackweek/hubs/staging.yaml", "timeout: 1800", "timeout: 900")
    assert files_changed_since(fleet, "HEAD") == {"communities/hackweek/hubs/staging.yaml"}
    result = json.loads(hubfleet("plan", "--json", "--since", "HEAD", fleet=fleet, check=True).stdout)
    assert [(h["name"], h["action"]) for h in result["hubs"]] == [("hackweek-staging", "update")]
    bad = hubfleet("plan", "--since", "no-such-ref", fleet=fleet)
    assert bad.returncode == 1 and "git diff" in bad.stderr and "Traceback" not in bad.stderr


def test_github_matrix_format(fleet: Path) -> None:
    edit(fleet / "communities/uni-a/hubs/staging.yaml", "admin_users: [grace]", "admin_users: [grace, ian]")
    out = hubfleet("plan", "--format", "github-matrix", fleet=fleet, check=True).stdout.splitlines()
    values = dict(line.split("=", 1) for line in out)
    assert json.loads(values["staging"])["include"] == [
        {"hub": "uni-a-staging", "community": "uni-a", "cluster": "local", "action": "update"}
    ]
    assert json.loads(values["prod"]) == {"include": []} and values["prod-count"] == "0"


def test_plan_never_shows_a_secret(fleet: Path) -> None:
    edit(fleet / "communities/uni-a/hubs/staging.yaml", "password: demo-staging", "password: n3w-s3cret-pw")
    out = hubfleet("plan", fleet=fleet, check=True)
    assert "uni-a-staging" in out.stdout and "auth.password" not in out.stdout
    assert "secret values changed" in out.stdout
    assert "n3w-s3cret-pw" not in out.stdout + out.stderr
    assert "n3w-s3cret-pw" not in hubfleet("plan", "--json", fleet=fleet, check=True).stdout


def test_plan_command_uses_the_cache_in_the_state_dir(fleet: Path, tmp_path: Path) -> None:
    """`hubfleet plan` keeps its cache in the state directory it was given, and plans the same with it."""
    first = hubfleet("plan", "--json", fleet=fleet, check=True).stdout
    cache = fleet / ".hubfleet/cache"
    assert sorted({p.name.split("-")[0] for p in cache.glob("*.json")}) == ["files", "hubs"]
    assert hubfleet("plan", "--json", fleet=fleet, check=True).stdout == first
    edit(fleet / "communities/uni-a/hubs/prod.yaml", "max_users: 100", "max_users: 150")
    changed = json.loads(hubfleet("plan", "--json", fleet=fleet, check=True).stdout)
    assert [(h["name"], h["reasons"]) for h in changed["hubs"] if h["action"] == "update"] == [
        ("uni-a", ["max_users: 100 → 150"])
    ]
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    hubfleet("validate", "--state-dir", str(elsewhere), fleet=fleet, check=True)
    assert list((elsewhere / "cache").glob("files-*.json"))
