"""`hubfleet ci state load|save`: the CI runners' state, age-encrypted on an orphan branch of the fleet's
repository. Real git (a bare repository in tmp stands in for GitHub/GitLab), real age keys (pyrage), real
SQLite stores; no CI service is involved (the job tokens' part, `remote_for`, is checked on its own)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from fleet_helpers import hubfleet
from hubfleet.backends.local import tokens
from hubfleet.config.validate import load_fleet
from hubfleet.deploy import ci_state
from hubfleet.deploy.state import record
from hubfleet.scaffold import scaffold
from hubfleet.secrets import age
from hubfleet.secrets.service_tokens import token_key
from hubfleet.secrets.store import SecretResolver, set_fleet_secret
from hubfleet.settings import UserError
from hubfleet.store import open_store


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repos(tmp_path: Path) -> dict[str, Path]:
    """A scaffolded GKE fleet pushed to a bare "remote", and two more clones of it (other runners)."""
    identity = tmp_path / "age-identity.txt"
    work = tmp_path / "work"
    scaffold(work, cluster="gcp", identity=identity)
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    git(work, "add", "-A")
    git(work, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "fleet")
    git(tmp_path, "clone", "-q", "--bare", str(work), str(tmp_path / "remote.git"))
    git(work, "remote", "add", "origin", str(tmp_path / "remote.git"))
    for name in ("runner-a", "runner-b"):
        git(tmp_path, "clone", "-q", str(tmp_path / "remote.git"), str(tmp_path / name))
    return {
        "identity": identity,
        "remote": tmp_path / "remote.git",
        "a": tmp_path / "runner-a",
        "b": tmp_path / "runner-b",
        "c": tmp_path / "work",
    }


def plain_remote() -> ci_state.Remote:
    """origin, as on a laptop: no job token (the CI variables of whoever runs the tests are left out)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI_"))}
    return ci_state.remote_for(None, environ)


def deploy_record(fleet_dir: Path, state: Path, hub: str, digest: str) -> None:
    config = load_fleet(fleet_dir)
    with open_store(state) as store:
        record(store, config, config.hubs[hub], config_hash=digest, rendered="r", result="ok", actor="t")


def history(state: Path) -> list[tuple[str, str]]:
    with open_store(state) as store:
        return sorted((d.hub, d.config_hash) for d in store.deployments(limit=1000))


def test_save_then_load_elsewhere_keeps_history_and_leaves_nothing_readable(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    identity, remote = repos["identity"], plain_remote()
    state_a = tmp_path / "state-a"
    assert ci_state.load(repos["a"], state_a, remote=remote, identity=identity).commit is None
    deploy_record(repos["a"], state_a, "example-staging", "hash-1")
    revision = state_a / "hubs" / "example-staging" / "kubernetes.json"
    revision.parent.mkdir(parents=True)
    revision.write_text(json.dumps({"previous_revision": 2, "revision": 3}))
    config = load_fleet(repos["a"])
    key = token_key(config, SecretResolver(config, identity))
    assert key is not None
    derived = tokens(state_a, "example-staging", key)  # a cache: the key derives them, never saved
    first = ci_state.save(config, state_a, remote=remote, identity=identity, message="first")

    state_b = tmp_path / "state-b"
    loaded = ci_state.load(repos["b"], state_b, remote=remote, identity=identity)
    assert loaded.commit == first
    assert history(state_b) == [("example-staging", "hash-1")]
    assert json.loads((state_b / "hubs/example-staging/kubernetes.json").read_text())["revision"] == 3
    assert not (state_b / "hubs/example-staging/tokens.json").exists()
    assert (state_b / ci_state.DB_FILENAME).stat().st_mode & 0o077 == 0

    deploy_record(repos["b"], state_b, "example", "hash-2")
    second = ci_state.save(load_fleet(repos["b"]), state_b, remote=remote, identity=identity)
    branch = f"refs/heads/{ci_state.BRANCH}"
    assert git(repos["remote"], "rev-list", branch).split() == [second, first]  # one commit per save
    assert git(repos["remote"], "rev-parse", "main") != second  # the fleet's branch is untouched

    # nothing on the branch, in any commit, is readable without a key
    secrets_ = [key, *derived.values(), "hash-1", "hash-2", "example-staging"]
    for line in git(repos["remote"], "rev-list", "--objects", branch).splitlines():
        sha = line.split()[0]
        if git(repos["remote"], "cat-file", "-t", sha) != "blob":
            continue
        text = subprocess.run(
            ["git", "cat-file", "blob", sha], cwd=repos["remote"], capture_output=True
        ).stdout
        assert b"SQLite format 3" not in text and not [s for s in secrets_ if s.encode() in text]
    payload = git(repos["remote"], "cat-file", "blob", f"{branch}:{ci_state.STATE_FILE}")
    assert payload.startswith("-----BEGIN AGE ENCRYPTED FILE-----")


def test_a_concurrent_save_loses_the_race_merges_and_retries(repos: dict[str, Path], tmp_path: Path) -> None:
    identity, remote = repos["identity"], plain_remote()
    seed = tmp_path / "seed"
    ci_state.load(repos["c"], seed, remote=remote, identity=identity)
    deploy_record(repos["c"], seed, "example-staging", "before")
    base = ci_state.save(load_fleet(repos["c"]), seed, remote=remote, identity=identity)

    # two jobs start from the same state; each deploys a different hub (the same new row id in each store)
    state_a, state_b = tmp_path / "job-a", tmp_path / "job-b"
    for runner, state in ((repos["a"], state_a), (repos["b"], state_b)):
        assert ci_state.load(runner, state, remote=remote, identity=identity).commit == base
    deploy_record(repos["a"], state_a, "example-staging", "from-a")
    (state_a / "hubs" / "example-staging").mkdir(parents=True, exist_ok=True)
    (state_a / "hubs" / "example-staging" / "kubernetes.json").write_text('{"revision": 5}')
    deploy_record(repos["b"], state_b, "example", "from-b")
    (state_b / "hubs" / "example").mkdir(parents=True, exist_ok=True)
    (state_b / "hubs" / "example" / "kubernetes.json").write_text('{"revision": 7}')
    saved_a = ci_state.save(load_fleet(repos["a"]), state_a, remote=remote, identity=identity)
    saved_b = ci_state.save(load_fleet(repos["b"]), state_b, remote=remote, identity=identity)

    branch = f"refs/heads/{ci_state.BRANCH}"
    assert git(repos["remote"], "rev-list", branch).split() == [saved_b, saved_a, base]  # b built on a
    after = tmp_path / "after"
    ci_state.load(repos["c"], after, remote=remote, identity=identity)
    expected = [("example", "from-b"), ("example-staging", "before"), ("example-staging", "from-a")]
    assert history(after) == expected
    assert history(state_b) == expected  # the job that merged holds the merged state too
    assert json.loads((after / "hubs/example-staging/kubernetes.json").read_text()) == {"revision": 5}
    assert json.loads((after / "hubs/example/kubernetes.json").read_text()) == {"revision": 7}


def test_a_wrong_identity_and_an_unloaded_directory_are_clear_errors(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    identity, remote = repos["identity"], plain_remote()
    state = tmp_path / "state"
    ci_state.load(repos["a"], state, remote=remote, identity=identity)
    ci_state.save(load_fleet(repos["a"]), state, remote=remote, identity=identity)

    stranger = tmp_path / "stranger.txt"
    stranger.write_text(age.generate()[0])
    with pytest.raises(UserError, match="not encrypted to this key"):
        ci_state.load(repos["b"], tmp_path / "elsewhere", remote=remote, identity=stranger)
    with pytest.raises(UserError, match="no `hubfleet ci state load` ran here"):
        ci_state.save(load_fleet(repos["a"]), tmp_path / "never-loaded", remote=remote, identity=identity)
    own = tmp_path / "operator-state"
    deploy_record(repos["a"], own, "example", "mine")  # an operator's own store is never overwritten
    with pytest.raises(UserError, match="already holds a store"):
        ci_state.load(repos["a"], own, remote=remote, identity=identity)
    assert history(own) == [("example", "mine")]


def test_the_first_run_saves_its_baseline_and_later_plans_compare_with_the_state(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    """The deploy workflow's plan job as it runs it: load (no state yet), plan against the commit before
    the push (recorded in the loaded directory's store), save; the next run plans against that state."""
    identity, remote = repos["identity"], plain_remote()
    state = tmp_path / "state"
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    head = git(repos["a"], "rev-parse", "HEAD")

    def run(*args: str, runner: Path, where: Path) -> str:
        done = hubfleet(*args, "--state-dir", str(where), fleet=runner, env=env, check=True)
        return done.stdout + done.stderr

    assert "no state branch" in run("ci", "state", "load", runner=repos["a"], where=state)
    assert f"compared with the fleet at {head}" in run(
        "ci", "plan", "--base", head, runner=repos["a"], where=state
    )
    assert "state on hubfleet-state: " in run("ci", "state", "save", runner=repos["a"], where=state)

    fresh = tmp_path / "fresh"
    ci_state.load(repos["b"], fresh, remote=remote, identity=identity)
    assert history(fresh) == [("example", history(fresh)[0][1]), ("example-staging", history(fresh)[1][1])]
    planned = run("ci", "plan", "--base", head, runner=repos["b"], where=fresh)
    assert "compared with the CI state saved at" in planned and "0 hub(s) to change" in planned
    # nothing changed: a save makes no empty commit
    saved = ci_state.loaded_commit(fresh)
    assert ci_state.save(load_fleet(repos["b"]), fresh, remote=remote, identity=identity) == saved
    assert len(git(repos["remote"], "rev-list", f"refs/heads/{ci_state.BRANCH}").split()) == 1


def test_fresh_replaces_the_history_by_one_commit_only_if_nobody_saved(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    identity, remote = repos["identity"], plain_remote()
    first = tmp_path / "first"
    ci_state.load(repos["a"], first, remote=remote, identity=identity)
    for digest in ("one", "two"):
        deploy_record(repos["a"], first, "example", digest)
        ci_state.save(load_fleet(repos["a"]), first, remote=remote, identity=identity)
    operator, job = tmp_path / "operator", tmp_path / "job"
    for state in (operator, job):
        ci_state.load(repos["b"], state, remote=remote, identity=identity)
    deploy_record(repos["b"], job, "example", "three")
    ci_state.save(load_fleet(repos["b"]), job, remote=remote, identity=identity)  # a job saves meanwhile
    with pytest.raises(UserError, match="moved since the load"):
        ci_state.save(load_fleet(repos["b"]), operator, remote=remote, identity=identity, fresh=True)

    again = tmp_path / "again"
    ci_state.load(repos["b"], again, remote=remote, identity=identity)
    fresh = ci_state.save(load_fleet(repos["b"]), again, remote=remote, identity=identity, fresh=True)
    assert git(repos["remote"], "rev-list", f"refs/heads/{ci_state.BRANCH}").split() == [fresh]
    check = tmp_path / "check"
    ci_state.load(repos["c"], check, remote=remote, identity=identity)
    assert history(check) == [("example", "one"), ("example", "three"), ("example", "two")]


def test_a_state_forged_without_the_key_is_refused_and_a_new_key_is_taken_over(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    """The recipients are public (fleet.yaml), so anyone who can push could encrypt a state to them; only a
    holder of service_token_key can authenticate one (state.mac)."""
    identity, remote = repos["identity"], plain_remote()
    state = tmp_path / "state"
    ci_state.load(repos["a"], state, remote=remote, identity=identity)
    deploy_record(repos["a"], state, "example", "real")
    saved = ci_state.save(load_fleet(repos["a"]), state, remote=remote, identity=identity)
    assert git(repos["remote"], "cat-file", "-t", f"{saved}:{ci_state.MAC_FILE}") == "blob"

    # someone with push access but no key: a state of their own, encrypted to the public recipients
    forged = ci_state.encrypt(
        {"hubs/example/kubernetes.json": b'{"previous_revision": 1}'}, load_fleet(repos["b"])
    )
    git(repos["b"], "fetch", "-q", "origin", ci_state.BRANCH)
    blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=repos["b"],
            input=forged,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    tree = subprocess.run(
        ["git", "mktree"], cwd=repos["b"], input=f"100644 blob {blob}\tstate.age\n", capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    commit = git(
        repos["b"], "-c", "user.name=m", "-c", "user.email=m@x", "commit-tree", tree, "-p", saved, "-m", "x"
    )
    git(repos["b"], "push", "-q", "origin", f"{commit}:refs/heads/{ci_state.BRANCH}")
    with pytest.raises(UserError, match="not authenticated by the fleet's service_token_key"):
        ci_state.load(repos["c"], tmp_path / "victim", remote=remote, identity=identity)

    # rotation: the state loaded with the old key, saved with the new one (before the key change is pushed)
    git(repos["b"], "push", "-q", "--force", "origin", f"{saved}:refs/heads/{ci_state.BRANCH}")
    operator = tmp_path / "operator"
    ci_state.load(repos["a"], operator, remote=remote, identity=identity)
    recipients = age.load_identity(identity).recipients
    set_fleet_secret(repos["a"], "service_token_key", "n" * 64, recipients)
    with pytest.raises(UserError, match="not authenticated"):
        ci_state.load(repos["a"], tmp_path / "too-early", remote=remote, identity=identity)
    resaved = ci_state.save(load_fleet(repos["a"]), operator, remote=remote, identity=identity)
    assert resaved != saved  # unchanged, yet saved again: under the new key
    after = tmp_path / "after"
    ci_state.load(repos["a"], after, remote=remote, identity=identity)
    assert history(after) == [("example", "real")]


def test_a_hostile_archive_is_refused() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../home/runner/.bashrc")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    with pytest.raises(UserError, match="unexpected entry"):
        ci_state.unpack(buffer.getvalue(), "test")
    assert ci_state.unpack(ci_state.pack({"hubs/a/kubernetes.json": b"{}"}), "t") == {
        "hubs/a/kubernetes.json": b"{}"
    }


def test_job_tokens_reach_git_only_through_the_environment() -> None:
    github = ci_state.remote_for(
        None, {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "org/fleet", "HUBFLEET_GIT_TOKEN": "ghs_x"}
    )
    assert github.where == "https://github.com/org/fleet.git" and "ghs_x" not in github.where
    assert (
        github.env["HUBFLEET_GIT_USER"] == "x-access-token"
        and "ghs_x" not in github.env["GIT_CONFIG_VALUE_1"]
    )
    gitlab = ci_state.remote_for(
        None,
        {"GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.example", "CI_PROJECT_PATH": "g/f",
         "CI_JOB_TOKEN": "job", "HUBFLEET_STATE_TOKEN": "glpat"},
    )  # fmt: skip
    assert gitlab.where == "https://gitlab.example/g/f.git"
    assert (gitlab.env["HUBFLEET_GIT_USER"], gitlab.env["HUBFLEET_GIT_TOKEN"]) == ("oauth2", "glpat")
    assert ci_state.remote_for(None, {}).where == "origin"
