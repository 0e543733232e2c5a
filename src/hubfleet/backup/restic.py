"""The restic command, run with the fleet's repository and password in its environment (never on a command
line, never in a message), and its failures turned into one line an operator can act on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hubfleet.config.models_backup import Keep
from hubfleet.settings import UserError

RESTIC = "restic"
TIMEOUT = 6 * 3600
"""A backup of a large hub to a slow bucket takes hours; a hung one still ends."""

_UNREACHABLE = re.compile(
    r"connection refused|no such host|dial tcp|i/o timeout|network is unreachable", re.I
)
_REFUSED = re.compile(
    r"access denied|forbidden|signature.*does not match|invalidaccesskeyid|does not exist in our records",
    re.I,
)

_running: dict[int, subprocess.Popen[str]] = {}
_stopped: set[int] = set()
_running_lock = threading.Lock()


def stop_running() -> int:
    """Ask every restic this process runs to stop (SIGTERM: restic ends its snapshot cleanly; a stale lock
    is removed by the next backup's `unlock`). The daemon calls this when it stops, since a backup runs in a
    thread that asyncio cannot cancel. Returns how many were asked."""
    with _running_lock:
        procs = list(_running.values())
        _stopped.update(proc.pid for proc in procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    return len(procs)


class ResticError(UserError):
    """restic failed; the message says why in words (wrong password, no repository, disk full...)."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    tags: tuple[str, ...]
    paths: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "short_id": self.short_id,
            "time": self.time.isoformat(),
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    size_bytes: int
    added_bytes: int
    files: int


@dataclass(frozen=True)
class Repository:
    """One restic repository: where it is, its password and (for S3) the credentials, plus where restic may
    keep its local cache (inside the fleet's private state directory)."""

    location: str
    password: str
    cache_dir: Path
    s3_key_id: str | None = None
    s3_secret: str | None = None
    s3_region: str = ""

    def __repr__(self) -> str:  # the password and keys never reach a log through a repr
        return f"Repository({self.location!r})"

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3:")

    def env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
        env = {key: os.environ[key] for key in keep if key in os.environ}
        env.update(RESTIC_REPOSITORY=self.location, RESTIC_PASSWORD=self.password, HOME=str(self.cache_dir))
        if self.is_s3:
            env.update(AWS_ACCESS_KEY_ID=self.s3_key_id or "", AWS_SECRET_ACCESS_KEY=self.s3_secret or "")
            if self.s3_region:
                env["AWS_DEFAULT_REGION"] = self.s3_region
        return env

    # -- commands --------------------------------------------------------------------------------
    def run(self, *args: str, cwd: Path | None = None, timeout: float = TIMEOUT) -> str:
        """restic ARGS; its stdout, or ResticError with the reason in words."""
        if shutil.which(RESTIC) is None:
            raise ResticError(
                "restic is not installed; install Debian's restic package (make setup does, as root)"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        command = [
            RESTIC,
            "--no-lock" if args[:1] == ("snapshots",) else "",
            "--cache-dir",
            str(self.cache_dir),
        ]
        command = [part for part in command if part] + list(args)
        result = _run(command, cwd, self.env(), timeout)
        if result is None:
            raise ResticError(f"restic {args[0]} did not finish within {timeout:.0f} s")
        with _running_lock:
            stopped = result.pid in _stopped
            _stopped.discard(result.pid)
        if stopped:
            raise ResticError(f"restic {args[0]} was stopped: hubfleet stopped (the next backup runs again)")
        if result.returncode == 3 and args[0] == "backup":
            raise ResticError(
                "backup incomplete: some files could not be read "
                f"({_first_line(self._scrub(result.stderr))}); hubfleet must run as the account that owns "
                "the homes (root on a fleet with an account per user)"
            )
        if result.returncode != 0:
            raise ResticError(self.explain(args[0], result.stderr))
        return result.stdout

    def explain(self, command: str, stderr: str) -> str:
        """restic's error output in one line: the known causes named, the rest quoted (secrets removed)."""
        text = self._scrub(stderr)
        where = f"backup repository {self.location}"
        if "wrong password" in text or "no key found" in text:
            return (
                f"{where}: wrong password (backups.password does not open it); set the password the "
                "repository was made with, or point backups.repository at a new location"
            )
        # before the missing repository: restic asks "Is there a repository...?" whenever it cannot open
        # one, also when the network or the credentials are the cause
        if _UNREACHABLE.search(text):
            return f"{where}: not reachable ({_first_line(text)}); check the address and the network"
        if _REFUSED.search(text):
            return f"{where}: the storage refused the credentials ({_first_line(text)}); check backups.s3"
        if "no space left on device" in text.lower() or "disk quota exceeded" in text.lower():
            return f"{where}: the disk holding it is full; free space there or move the repository"
        if "already locked" in text:
            return f"{where}: locked by another restic ({_first_line(text)}); wait for it, or `restic unlock`"
        opening = "Is there a repository at the following location" in text
        if opening and re.search(r"(no such file or directory|does not exist)", text, re.I):
            return (
                f"{where}: no repository there (it is missing or was moved); restore it, or start a new, "
                "empty one with `hubfleet backup --new-repository`"
            )
        if opening:
            return f"{where}: cannot be opened ({_first_line(text)})"
        return f"restic {command} failed: {_first_line(text) or 'no message'}"

    def _scrub(self, text: str) -> str:
        for secret in (self.password, self.s3_secret, self.s3_key_id):
            if secret:
                text = text.replace(secret, "***")
        return text

    def exists(self) -> bool:
        """Whether a repository is there (and opens with this password: a wrong one raises)."""
        try:
            self.run("cat", "config")
        except ResticError as exc:
            if "no repository there" in str(exc):
                return False
            raise
        return True

    def init(self) -> None:
        if not self.is_s3:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        self.run("init")

    def unlock(self) -> None:
        """Remove stale locks (a restic killed mid-backup leaves one); live locks stay."""
        self.run("unlock")

    def backup(self, cwd: Path, paths: list[str], *, host: str, tags: list[str]) -> BackupSummary:
        args = ["backup", "--json", "--host", host]
        for tag in tags:
            args += ["--tag", tag]
        out = self.run(*args, *paths, cwd=cwd)
        summary = next(
            (m for m in map(_json_line, out.splitlines()) if m and m.get("message_type") == "summary"), None
        )
        if summary is None:
            raise ResticError("restic backup printed no summary; the snapshot may not have been written")
        return BackupSummary(
            snapshot_id=summary["snapshot_id"],
            size_bytes=int(summary.get("total_bytes_processed", 0)),
            added_bytes=int(summary.get("data_added", 0)),
            files=int(summary.get("total_files_processed", 0)),
        )

    def snapshots(self, *, host: str, tag: str) -> list[Snapshot]:
        """Oldest first."""
        out = self.run("snapshots", "--json", "--host", host, "--tag", tag)
        found = [
            Snapshot(
                id=s["id"],
                short_id=s.get("short_id", s["id"][:8]),
                time=datetime.fromisoformat(_trim_nanoseconds(s["time"])),
                tags=tuple(s.get("tags") or ()),
                paths=tuple(s.get("paths") or ()),
            )
            for s in json.loads(out or "[]")
        ]
        return sorted(found, key=lambda s: s.time)

    def restore(self, snapshot_id: str, target: Path, includes: list[str]) -> None:
        args = ["restore", snapshot_id, "--target", str(target)]
        for include in includes:
            args += ["--include", include]
        self.run(*args)

    def forget(self, *, host: str, tag: str, keep: Keep | None, prune: bool = True) -> None:
        """Drop this tag's snapshots beyond `keep` (None: all of them), then free their space."""
        args = ["forget", "--host", host, "--tag", tag, "--group-by", "host,tags"]
        if keep is None:
            snapshots = self.snapshots(host=host, tag=tag)
            if not snapshots:
                return
            args = ["forget", *(s.id for s in snapshots)]
        else:
            args += [
                f"--keep-daily={keep.daily}",
                f"--keep-weekly={keep.weekly}",
                f"--keep-monthly={keep.monthly}",
            ]
            # never forget the newest backup, whatever the policy says; and every backup of the last day
            # stays, or `keep.daily` (the newest of each day) would drop this morning's before a restore of
            # a file deleted since then could use it
            args += ["--keep-last=1", "--keep-within=1d"]
        if prune:
            args.append("--prune")
        self.run(*args)


def _run(command: list[str], cwd: Path | None, env: dict[str, str], timeout: float) -> _Result | None:
    """Run restic, known to stop_running while it runs; None when it timed out (and was killed)."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        with _running_lock:
            _running[proc.pid] = proc
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None
        finally:
            with _running_lock:
                _running.pop(proc.pid, None)
    return _Result(proc.pid, proc.returncode, stdout, stderr)


@dataclass(frozen=True)
class _Result:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def _json_line(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _trim_nanoseconds(text: str) -> str:
    """restic prints nanoseconds; Python's fromisoformat takes at most microseconds."""
    return re.sub(r"(\.\d{6})\d+", r"\1", text)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if line.lower().startswith("fatal")]
    return (fatal or lines or [""])[0][:300]
