"""`hubfleet ci state load|save`: a CI runner's state kept between jobs on a branch of the fleet's repository.

A runner starts empty and is thrown away, so without this a cloud fleet deployed from CI has no deploy
history, `hubfleet events apply` on the schedule finds no deployed hub, and ready-mode windows are never
recorded. The state (the store database and the hubs' small state files under <state>/hubs/<hub>/, but not
tokens.json when fleet.yaml `service_token_key` derives the tokens) is one tar file, age-encrypted to every
operator and `ci_recipients` key (`state.age`), committed to an orphan branch (default `hubfleet-state`), one
commit per save.

Saving is a compare-and-swap: the new commit's parent is the one `load` read, and the push is never forced,
so it fails when another job saved first. Then the other job's state is fetched and merged three ways with
what this job started from (kept in <state>/.ci-state/): the rows and files this job added or changed go on
top of theirs (a new row whose id they took gets the next free one), and the push is tried again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyrage

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.deploy.ci_state_git import (
    MAC_FILE,
    STATE_FILE,
    Remote,
    blob,
    fetch,
    make_commit,
    push,
    remote_for,
    repository,
)
from hubfleet.deploy.ci_state_merge import merge
from hubfleet.secrets import age
from hubfleet.secrets.service_tokens import token_key
from hubfleet.secrets.store import SecretResolver, fleet_recipients
from hubfleet.settings import UserError
from hubfleet.store.db import DB_FILENAME

BRANCH = "hubfleet-state"
MARKER_DIR = ".ci-state"
"""Inside the state directory: loaded.json (the branch and commit `load` read) and base/ (that snapshot, the
common ancestor of a merge). Never saved itself."""
FORMAT = 1
MAX_FILE = 1 << 20
"""Hub state files are small JSON; anything larger is not state (and a hostile archive is refused)."""
HUB_FILE = re.compile(r"hubs/[a-z0-9][a-z0-9-]{0,62}/[A-Za-z0-9_.-]{1,64}\.json")
RETRIES = 4


# --------------------------------------------------------------------------- authentication


def mac_key(fleet: FleetConfig, identity: Path | None) -> bytes | None:
    """The key that authenticates the state (HMAC), from fleet.yaml service_token_key: the recipients are
    public, so anyone who can push the branch could encrypt a state of their own to them; only holders of
    a fleet key can MAC one. None without a key (then the branch's protection is all there is)."""
    key = token_key(fleet, SecretResolver(fleet, identity))
    if key is None:
        return None
    return hmac.new(key.encode(), b"hubfleet ci state", hashlib.sha256).digest()


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).hexdigest().encode()


def _committed(
    repo: Path, remote: Remote, payload: bytes, parent: str | None, message: str, key: bytes | None
) -> str:
    return make_commit(
        repo, remote, payload, parent, message, _mac(key, payload) if key is not None else None
    )


def read_state(
    repo: Path, remote: Remote, commit: str, branch: str, identity: Path | None, key: bytes | None
) -> dict[str, bytes]:
    """The files of the state at `commit`, its MAC checked first when the fleet has a key."""
    where = f"branch {branch} at {commit[:12]}"
    payload = blob(repo, remote, commit, branch)
    if payload is None:
        raise UserError(
            f"{where} holds no {STATE_FILE}; it is not a hubfleet state branch (--branch NAME for another)"
        )
    if key is not None:
        mac = blob(repo, remote, commit, branch, MAC_FILE)
        if mac is None or not hmac.compare_digest(mac.strip(), _mac(key, payload)):
            raise UserError(
                f"the CI state on {where} is not authenticated by the fleet's service_token_key: someone "
                "without the key wrote it, or the key was set or changed without re-saving the state "
                "(docs/starting-a-fleet.md, Service tokens). Read the branch's history (`git log "
                "hubfleet-state`) before trusting any of it"
            )
    return decrypt(payload, identity, where)


# --------------------------------------------------------------------------- snapshot


def _state_files(state_dir: Path, skip_tokens: bool) -> dict[str, bytes]:
    """Relative path -> bytes of what is saved: a consistent copy of the store and hubs/<hub>/*.json."""
    found: dict[str, bytes] = {}
    database = state_dir / DB_FILENAME
    if database.is_file():
        with tempfile.TemporaryDirectory(prefix="hubfleet-state-") as scratch:
            copy = Path(scratch) / DB_FILENAME
            _sqlite_copy(database, copy)
            found[DB_FILENAME] = copy.read_bytes()
    hubs = state_dir / "hubs"
    for path in sorted(hubs.glob("*/*.json")) if hubs.is_dir() else []:
        relative = path.relative_to(state_dir).as_posix()
        if skip_tokens and path.name == "tokens.json":
            continue
        if HUB_FILE.fullmatch(relative) and path.is_file() and path.stat().st_size <= MAX_FILE:
            found[relative] = path.read_bytes()
    return found


def _sqlite_copy(source: Path, target: Path) -> None:
    """The database as one file (WAL folded in), through SQLite's backup API: consistent while in use."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def pack(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        manifest = json.dumps({"format": FORMAT, "files": sorted(files)}).encode()
        for name, data in [("manifest.json", manifest), *sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(blob: bytes, where: str) -> dict[str, bytes]:
    """The files of a snapshot, refusing anything but the store and hub state files (the archive comes from
    a branch anyone with push access could write)."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    continue
                allowed = member.name == DB_FILENAME or HUB_FILE.fullmatch(member.name)
                limit = MAX_FILE if member.name != DB_FILENAME else 1 << 31
                if not member.isfile() or not allowed or member.size > limit:
                    raise UserError(f"{where}: unexpected entry {member.name!r} in the state; not loaded")
                extracted = tar.extractfile(member)
                files[member.name] = extracted.read() if extracted else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{where}: the state is not a hubfleet state archive ({exc})") from None
    return files


def encrypt(files: dict[str, bytes], fleet: FleetConfig) -> bytes:
    """ASCII-armored age ciphertext of the packed files (base64 inside), to every operator and CI key."""
    recipients = fleet_recipients(fleet.settings)
    if not recipients:
        raise UserError(
            "fleet.yaml names no age recipient (operators' age_recipient, ci_recipients): the state is "
            "encrypted to them; add yours (`hubfleet secrets keygen`)"
        )
    return age.encrypt(base64.b64encode(pack(files)).decode(), recipients).encode()


def decrypt(payload: bytes, identity_flag: Path | None, where: str) -> dict[str, bytes]:
    identity = age.load_identity(identity_flag)
    try:
        text = identity.decrypt(payload.decode("ascii", errors="replace"))
    except pyrage.DecryptError as exc:
        if "no matching keys" in str(exc).lower():
            raise UserError(
                f"cannot decrypt the CI state ({where}) with age identity {identity.path} (public key "
                f"{', '.join(identity.recipients)}): it was not encrypted to this key; add the key to "
                "fleet.yaml (an operator's age_recipient or ci_recipients), then someone whose key can read "
                "it runs `hubfleet ci state load` and `hubfleet ci state save` once to re-encrypt it"
            ) from None
        raise UserError(f"the CI state ({where}) is not valid age ciphertext") from None
    try:
        blob = base64.b64decode(text, validate=True)
    except ValueError:
        raise UserError(f"the CI state ({where}) is not a hubfleet state archive") from None
    return unpack(blob, where)


# --------------------------------------------------------------------------- the state directory


def _marker(state_dir: Path) -> Path:
    return state_dir / MARKER_DIR


def load_ran(state_dir: Path) -> bool:
    """`ci state load` ran for this directory (whether or not it found a state): the CI commands then plan
    and deploy against its store, recording the --base baseline there when the state was empty, so that
    the first save keeps it."""
    return (_marker(state_dir) / "loaded.json").is_file()


def loaded_commit(state_dir: Path) -> str | None:
    """The state commit `load` read into this state directory; None when nothing was loaded (no state yet,
    or `load` never ran): then CI plans and deploys against the fleet at a git base commit instead."""
    try:
        data = json.loads((_marker(state_dir) / "loaded.json").read_text())
    except (OSError, ValueError):
        return None
    commit = data.get("commit") if isinstance(data, dict) else None
    return commit if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def compared_with(state_dir: Path) -> str:
    """The plan's line saying what it compares with, when it plans against the state directory's store."""
    commit = loaded_commit(state_dir)
    if commit is not None:
        return f"compared with the CI state saved at {commit[:12]}"
    return f"compared with the store in {state_dir}"


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def _fingerprint(key: bytes | None) -> str | None:
    return hashlib.sha256(key).hexdigest()[:16] if key is not None else None


def _remember(
    state_dir: Path, branch: str, commit: str | None, files: dict[str, bytes], key: bytes | None
) -> None:
    """What this directory started from: the commit a save builds on, the snapshot a merge compares to, and
    which key authenticated it (a save under another key re-saves even an unchanged state)."""
    marker = _marker(state_dir)
    shutil.rmtree(marker / "base", ignore_errors=True)
    _write_files(marker / "base", files)
    data = {"branch": branch, "commit": commit, "mac": _fingerprint(key)}
    _write_files(marker, {"loaded.json": json.dumps(data).encode()})


def _loaded_mac(state_dir: Path) -> str | None:
    try:
        return json.loads((_marker(state_dir) / "loaded.json").read_text()).get("mac")
    except (OSError, ValueError, AttributeError):
        return None


def _base_files(state_dir: Path) -> dict[str, bytes]:
    base = _marker(state_dir) / "base"
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def job_message(environ: dict[str, str] | None = None) -> str:
    """The commit message: which CI job saved (GitHub's workflow, job and run; GitLab's job and pipeline)."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS"):
        return (
            f"hubfleet state: {env.get('GITHUB_WORKFLOW', '')} / {env.get('GITHUB_JOB', '')} "
            f"(run {env.get('GITHUB_RUN_ID', '')}, commit {env.get('GITHUB_SHA', '')[:12]})"
        )
    if env.get("GITLAB_CI"):
        return (
            f"hubfleet state: job {env.get('CI_JOB_NAME', '')} (pipeline {env.get('CI_PIPELINE_ID', '')}, "
            f"commit {env.get('CI_COMMIT_SHORT_SHA', '')})"
        )
    return "hubfleet state: saved by hand"


@dataclass
class Loaded:
    commit: str | None
    files: int
    message: str


def load(
    fleet: FleetConfig | Path,
    state_dir: Path,
    *,
    branch: str = BRANCH,
    remote: Remote | None = None,
    identity: Path | None = None,
) -> Loaded:
    """Fetch and decrypt the state branch into `state_dir` (a CI runner's, empty). No branch yet: nothing
    is written but the marker, and the CI commands fall back to the git baseline."""
    remote = remote or remote_for(None)
    fleet = load_fleet(fleet) if isinstance(fleet, Path) else fleet
    repo = repository(fleet.root)
    database = state_dir / DB_FILENAME
    if database.exists() and not load_ran(state_dir):
        raise UserError(
            f"{state_dir} already holds a store that `ci state load` did not write; loading would replace "
            "it: give an empty directory with --state-dir (on a CI runner the state directory starts empty)"
        )
    commit = fetch(repo, remote, branch)
    state_dir.mkdir(parents=True, exist_ok=True)
    if commit is None:
        _remember(state_dir, branch, None, {}, None)
        return Loaded(None, 0, f"no state branch {branch} on {remote.where} yet: the first save creates it")
    where = f"branch {branch} at {commit[:12]}"
    key = mac_key(fleet, identity)
    files = read_state(repo, remote, commit, branch, identity, key)
    for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        stale.unlink(missing_ok=True)
    _write_files(state_dir, files)
    _remember(state_dir, branch, commit, files, key)
    return Loaded(commit, len(files), f"loaded {len(files)} file(s) of the CI state from {where}")


def save(
    fleet: FleetConfig,
    state_dir: Path,
    *,
    branch: str = BRANCH,
    remote: Remote | None = None,
    identity: Path | None = None,
    message: str = "hubfleet state",
    retries: int = RETRIES,
    fresh: bool = False,
) -> str:
    """Encrypt the state and push it as a new commit on top of the one `load` read; when another job saved
    first, merge with theirs and try again (`retries` times). Returns the new commit.

    `fresh`: a commit with no history that replaces the branch, only while it is still at the commit loaded
    (an operator starting the branch afresh; a job that saved meanwhile makes it fail, nothing lost)."""
    remote = remote or remote_for(None)
    repo = repository(fleet.root)
    if not load_ran(state_dir):
        raise UserError(
            f"{state_dir}: no `hubfleet ci state load` ran here; load first (it records which state this "
            "job starts from, so that a save never overwrites another job's)"
        )
    parent = loaded_commit(state_dir)
    skip_tokens = fleet.settings.service_token_key is not None
    ours = _state_files(state_dir, skip_tokens)
    base = _base_files(state_dir)
    key = mac_key(fleet, identity)
    if fresh:
        if parent is None:
            raise UserError(f"--fresh: nothing was loaded from {branch}; a plain save starts the branch")
        commit = _committed(repo, remote, encrypt(ours, fleet), None, message, key)
        if not push(repo, remote, commit, branch, lease=parent):
            raise UserError(f"{branch} moved since the load (a job saved): load again, then save --fresh")
        _remember(state_dir, branch, commit, ours, key)
        return commit
    if parent is not None and ours == base and _loaded_mac(state_dir) == _fingerprint(key):
        return parent  # nothing changed since load (a plan that found the state): no empty commit
    for attempt in range(retries + 1):
        commit = _committed(repo, remote, encrypt(ours, fleet), parent, message, key)
        if push(repo, remote, commit, branch):
            _remember(state_dir, branch, commit, ours, key)
            if attempt:  # what runs now includes the other jobs' work: keep this directory in step
                _write_files(state_dir, {k: v for k, v in ours.items() if k != DB_FILENAME})
                _replace_database(state_dir, ours.get(DB_FILENAME))
            return commit
        if attempt == retries:
            break
        time.sleep(0.5 * (attempt + 1))
        theirs_commit = fetch(repo, remote, branch)
        if theirs_commit is None:
            raise UserError(f"the push to {branch} was refused but the branch is not there; try again")
        theirs = read_state(repo, remote, theirs_commit, branch, identity, key)
        ours, base, parent = merge(base, ours, theirs), theirs, theirs_commit
    raise UserError(
        f"another job saved the state on {branch} each of {retries + 1} times this one tried; run `hubfleet "
        "ci state save` again (nothing was lost: this directory still holds this job's state)"
    )


def _replace_database(state_dir: Path, data: bytes | None) -> None:
    if data is None:
        return
    database = state_dir / DB_FILENAME
    for stale in (Path(f"{database}-wal"), Path(f"{database}-shm")):
        stale.unlink(missing_ok=True)
    _write_files(state_dir, {DB_FILENAME: data})
