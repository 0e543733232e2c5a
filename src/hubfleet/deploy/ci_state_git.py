"""The git side of the CI state (`hubfleet.deploy.ci_state`): where the state branch lives and how a job
authenticates to it (`remote_for`), fetching it into a private ref, and a commit of the state pushed without
force (a compare-and-swap: `push` says False when another save came first)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hubfleet.settings import UserError

STATE_FILE = "state.age"
MAC_FILE = "state.mac"
README = """\
# hubfleet state

This branch is written by `hubfleet ci state save`: `state.age` holds the CI runners' store (deploy
history, ready-mode windows) and the hubs' small state files, age-encrypted to the fleet's operators and
`ci_recipients`. Read it with `hubfleet ci state load --state-dir DIR` (an empty DIR). Do not merge this
branch into another: it shares no history with the fleet's files.
"""
COMMITTER = {
    "GIT_AUTHOR_NAME": "hubfleet",
    "GIT_AUTHOR_EMAIL": "hubfleet@localhost",
    "GIT_COMMITTER_NAME": "hubfleet",
    "GIT_COMMITTER_EMAIL": "hubfleet@localhost",
}
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" "$HUBFLEET_GIT_USER" '
    '"$HUBFLEET_GIT_TOKEN"; }; f'
)
"""Gives git the token from the environment: never on a command line, in .git/config or in a URL."""


@dataclass
class Remote:
    """Where the state branch lives: a remote name or URL, and the environment git runs with."""

    where: str
    env: dict[str, str]


def remote_for(remote: str | None, environ: dict[str, str] | None = None) -> Remote:
    """--remote, else this repository on GitHub or GitLab when a job token is there, else `origin`.

    GitHub: $HUBFLEET_GIT_TOKEN (the workflow passes `github.token`). GitLab: $HUBFLEET_GIT_TOKEN, else
    $HUBFLEET_STATE_TOKEN (a project access token with write_repository), else $CI_JOB_TOKEN (reads; pushes
    only where the project allows job-token pushes)."""
    environ = dict(os.environ if environ is None else environ)
    env = environ | COMMITTER | {"GIT_TERMINAL_PROMPT": "0"}
    token, user = environ.get("HUBFLEET_GIT_TOKEN", ""), environ.get("HUBFLEET_GIT_USER", "")
    where = remote
    if environ.get("GITLAB_CI"):
        if not token and environ.get("HUBFLEET_STATE_TOKEN"):
            token, user = environ["HUBFLEET_STATE_TOKEN"], user or "oauth2"
        elif not token:
            token, user = environ.get("CI_JOB_TOKEN", ""), user or "gitlab-ci-token"
        if where is None and environ.get("CI_SERVER_URL") and environ.get("CI_PROJECT_PATH"):
            where = f"{environ['CI_SERVER_URL']}/{environ['CI_PROJECT_PATH']}.git"
    elif environ.get("GITHUB_ACTIONS") and token and where is None:
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        where = f"{server}/{environ.get('GITHUB_REPOSITORY', '')}.git"
    if token:
        env |= {
            "HUBFLEET_GIT_TOKEN": token,
            "HUBFLEET_GIT_USER": user or "x-access-token",
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": "",
            "GIT_CONFIG_KEY_1": "credential.helper",
            "GIT_CONFIG_VALUE_1": CREDENTIAL_HELPER,
        }
    return Remote(where or "origin", env)


def _git(
    repo: Path, remote: Remote, *args: str, data: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, input=data, capture_output=True, env=remote.env, timeout=300
        )
    except FileNotFoundError:
        raise UserError("git is not installed; the CI state is kept on a git branch") from None


def _out(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stdout.decode().strip()


def _err(done: subprocess.CompletedProcess[bytes]) -> str:
    """git's last lines; the token never reaches git's arguments or URLs, so it cannot be in them."""
    return " ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])


def repository(fleet_root: Path) -> Path:
    done = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=fleet_root, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise UserError(f"{fleet_root} is not in a git repository; the CI state is kept on a branch of it")
    return Path(done.stdout.strip())


def _local_ref(branch: str) -> str:
    return f"refs/hubfleet/{branch}"


def fetch(repo: Path, remote: Remote, branch: str) -> str | None:
    """Fetch the state branch into a private ref (no branch of the clone changes); its commit, or None
    when the remote has no such branch yet."""
    if not re.fullmatch(r"[A-Za-z0-9._/-]{1,100}", branch) or ".." in branch:
        raise UserError(f"--branch {branch!r}: not a branch name (letters, digits, '.', '_', '-', '/')")
    listed = _git(repo, remote, "ls-remote", "--heads", remote.where, f"refs/heads/{branch}")
    if listed.returncode != 0:
        raise UserError(
            f"cannot read the remote {remote.where}: {_err(listed)}; check the job's token (GitHub: "
            "HUBFLEET_GIT_TOKEN; GitLab: CI_JOB_TOKEN or HUBFLEET_STATE_TOKEN) or pass --remote"
        )
    if not _out(listed):
        return None
    ref = _local_ref(branch)
    done = _git(repo, remote, "fetch", "--quiet", "--no-tags", remote.where, f"+refs/heads/{branch}:{ref}")
    if done.returncode != 0:
        raise UserError(f"git fetch of the state branch {branch} from {remote.where} failed: {_err(done)}")
    return _out(_git(repo, remote, "rev-parse", ref))


def blob(repo: Path, remote: Remote, commit: str, branch: str, name: str = STATE_FILE) -> bytes | None:
    done = _git(repo, remote, "cat-file", "blob", f"{commit}:{name}")
    return done.stdout if done.returncode == 0 else None


def make_commit(
    repo: Path, remote: Remote, payload: bytes, parent: str | None, message: str, mac: bytes | None
) -> str:
    """A commit whose tree is README.md, state.age and (with a MAC) state.mac, on top of `parent` (None: a
    root commit)."""
    blobs = {}
    entries = [(STATE_FILE, payload), ("README.md", README.encode())]
    for name, data in entries + ([(MAC_FILE, mac + b"\n")] if mac is not None else []):
        done = _git(repo, remote, "hash-object", "-w", "--stdin", data=data)
        if done.returncode != 0:
            raise UserError(f"git hash-object failed: {_err(done)}")
        blobs[name] = _out(done)
    tree_text = "".join(f"100644 blob {sha}\t{name}\n" for name, sha in sorted(blobs.items()))
    tree = _git(repo, remote, "mktree", data=tree_text.encode())
    if tree.returncode != 0:
        raise UserError(f"git mktree failed: {_err(tree)}")
    args = ["commit-tree", _out(tree), "-m", message] + (["-p", parent] if parent else [])
    done = _git(repo, remote, *args)
    if done.returncode != 0:
        raise UserError(f"git commit-tree failed: {_err(done)}")
    return _out(done)


REJECTED = ("rejected", "non-fast-forward", "fetch first", "stale info", "failed to update ref")


def push(repo: Path, remote: Remote, commit: str, branch: str, lease: str | None = None) -> bool:
    """True when pushed; False when another save came first (not a fast-forward, or with `lease` the branch
    is no longer at that commit); UserError otherwise."""
    force = [f"--force-with-lease=refs/heads/{branch}:{lease}"] if lease else []
    ref = f"{commit}:refs/heads/{branch}"
    done = _git(repo, remote, "push", "--quiet", "--porcelain", *force, remote.where, ref)
    if done.returncode == 0:
        return True
    said = (done.stdout + done.stderr).decode(errors="replace").lower()
    if any(word in said for word in REJECTED):
        return False
    raise UserError(
        f"cannot push the state branch {branch} to {remote.where}: {_err(done)}; the job needs write access "
        "(GitHub: `permissions: contents: write`; GitLab: HUBFLEET_STATE_TOKEN, a project access token with "
        "write_repository, or job-token pushes allowed)"
    )
