"""Each user's own PostgreSQL server on a local cluster (a hub's `user_database`).

Debian's `postgresql-15` binaries (/usr/lib/postgresql/15/bin: a system package with security updates, the
same major version as the Kubernetes sidecar image, readable by every account). The server runs as the user's
own OS account, in the user's group (its memory counts within the user's limit), with peer authentication over
a unix socket only (`listen_addresses=''`: no TCP, no password anywhere).

Where things are, and why:

- data: `<data dir>/userdbs/<hub>/<home>/pgdata`, in a 0700 directory owned by the user's account. Not in the
  home: restic copies homes as files, which is no consistent copy of a running database (the backup takes a
  `pg_dump` instead), and a user who empties their home must not break their database;
- socket: `/run/hubfleet/db/<account>/`, 0700 and the account's: a socket path must fit in 107 bytes, which
  a data directory deep in a fleet's tree may not;
- lock: `<state dir>/userdbs/<hub>/<home>.lock` (root's), held by whoever starts or stops the server (the
  broker, a backup, `hubfleet user-db`), so two postmasters never race for one data directory.

Every command runs as the user's account through isolation/launch.py, as the broker starts servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from hubfleet.isolation.accounts import home_dirname, user_account
from hubfleet.isolation.launch import launcher_argv

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 5432
SOCKET_ROOT = Path("/run/hubfleet/db")
DUMP_MAGIC = b"PGDMP"
"""The first bytes of pg_dump's custom format."""
START_TIMEOUT = 60
_PATH = f"{PG_BIN}:/usr/bin:/bin"


class UserDbError(Exception):
    """A per-user database could not be made, started, dumped or restored; the message says why."""


@dataclass(frozen=True)
class UserDb:
    """One user's database server of one hub."""

    hub: str
    user: str
    account: str
    root: Path
    socket_dir: Path
    lock_path: Path

    @classmethod
    def at(cls, data_dir: Path, state_dir: Path, instance: str, hub: str, user: str) -> UserDb:
        home = home_dirname(user)
        return cls(
            hub=hub,
            user=user,
            account=user_account(instance, hub, user),
            root=data_dir / "userdbs" / hub / home,
            socket_dir=SOCKET_ROOT / user_account(instance, hub, user),
            lock_path=state_dir / "userdbs" / hub / f"{home}.lock",
        )

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def database(self) -> str:
        """Role and database are named after the account: peer authentication maps one to the other."""
        return self.account

    def exists(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def env(self) -> dict[str, str]:
        """What the user's server gets: where the database is, no password (peer authentication)."""
        return {
            "DATABASE_URL": f"postgresql://{self.account}@/{self.database}?host={self.socket_dir}&port={PORT}",
            "PGHOST": str(self.socket_dir),
            "PGPORT": str(PORT),
            "PGUSER": self.account,
            "PGDATABASE": self.database,
        }


def missing_binaries() -> str | None:
    """Why per-user databases cannot run on this machine, or None."""
    if (PG_BIN / "postgres").is_file() and os.access(PG_BIN / "postgres", os.X_OK):
        return None
    return (
        f"PostgreSQL 15 is not installed ({PG_BIN}/postgres is missing): install Debian's postgresql-15 "
        "(scripts/install-debian-deps.sh does it without creating a default cluster)"
    )


@contextlib.contextmanager
def locked(db: UserDb) -> Iterator[None]:
    """Hold the database's start/stop lock (blocking)."""
    db.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(db.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- running commands as the user


def _ids(db: UserDb) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(db.account)
    except KeyError:
        raise UserDbError(
            f"user {db.user} of hub {db.hub} has no OS account yet (never started a server)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def run_as(
    db: UserDb,
    argv: Sequence[str],
    *,
    cgroup_procs: Sequence[str] = (),
    stdout: int | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` as the user's account (through the launcher, which takes no stdin), with the libpq
    variables of the user's database set."""
    uid, gid = _ids(db)
    spec = {
        "uid": uid,
        "gid": gid,
        "cgroup_procs": list(cgroup_procs),
        "cwd": str(db.root),
        "env": {**db.env(), "PATH": _PATH, "LANG": "C.UTF-8", "HOME": str(db.root)},
        "argv": list(argv),
        "umask": 0o077,
    }
    proc = subprocess.run(
        launcher_argv(),
        input=json.dumps(spec).encode(),
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE if stdout is not None else subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin"},
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        output = (proc.stderr if stdout is not None else proc.stdout) or b""
        tail = output.decode(errors="replace").strip().splitlines()[-3:]
        raise UserDbError(f"{Path(argv[0]).name} failed for {db.user} of hub {db.hub}: {' / '.join(tail)}")
    return proc


def _private_dir(path: Path, uid: int, gid: int) -> None:
    """A 0700 directory owned by the account; a link planted in its place is refused."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        raise UserDbError(f"{path} is not a directory")
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, 0o700, follow_symlinks=False)


# ---------------------------------------------------------------------- the server


def postmaster_pid(db: UserDb) -> int | None:
    """The running postmaster of the database (as the user's account), or None."""
    try:  # the directory is the user's: never follow a link or block on a fifo planted there
        fd = os.open(db.data / "postmaster.pid", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            first = os.read(fd, 64).decode().split("\n", 1)[0]
        finally:
            os.close(fd)
        proc = psutil.Process(int(first))
        if proc.uids().real != pwd.getpwnam(db.account).pw_uid or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.pid
    except (OSError, ValueError, KeyError, psutil.Error):
        return None


def server_pids(db: UserDb) -> set[int]:
    """The postmaster and its backends: what a group holds beyond the user's server."""
    pid = postmaster_pid(db)
    if pid is None:
        return set()
    with contextlib.suppress(psutil.Error):
        return {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
    return set()


def _ensure_dirs(db: UserDb) -> None:
    uid, gid = _ids(db)
    for parent in (db.root.parent.parent, db.root.parent, SOCKET_ROOT.parent, SOCKET_ROOT):
        parent.mkdir(parents=True, exist_ok=True)
        os.chmod(parent, 0o711)  # passable, not listable
    _private_dir(db.root, uid, gid)
    _private_dir(db.socket_dir, uid, gid)


def _start_unlocked(db: UserDb, cgroup_procs: Sequence[str]) -> bool:
    """Start the server (initdb first when there is none); True when it was started here."""
    if (problem := missing_binaries()) is not None:
        raise UserDbError(problem)
    _ensure_dirs(db)
    if not db.exists():
        if db.data.exists():  # a half-made data directory from a failed initdb
            shutil.rmtree(db.data)
        run_as(
            db,
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(db.data),
                "--auth-local=peer",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                f"--username={db.account}",
            ],
            cgroup_procs=cgroup_procs,
        )
    if postmaster_pid(db) is not None:
        return False
    options = f"-k {db.socket_dir} -c listen_addresses='' -p {PORT}"
    run_as(
        db,
        [
            str(PG_BIN / "pg_ctl"),
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-D",
            str(db.data),
            "-l",
            str(db.log_path),
            "-o",
            options,
        ],
        cgroup_procs=cgroup_procs,
        timeout=START_TIMEOUT + 10,
    )
    made = run_as(db, [str(PG_BIN / "createdb"), db.database], check=False)  # fails once it exists
    if made.returncode != 0 and b"already exists" not in (made.stdout or b""):
        run_as(db, [str(PG_BIN / "psql"), "-qAtc", "SELECT 1", db.database])  # the real error
    return True


def _stop_unlocked(db: UserDb, mode: str = "fast") -> None:
    if postmaster_pid(db) is None:
        return
    proc = run_as(
        db, [str(PG_BIN / "pg_ctl"), "stop", "-w", "-t", "30", "-m", mode, "-D", str(db.data)], check=False
    )
    if proc.returncode != 0 and (pid := postmaster_pid(db)) is not None:  # stuck: immediate shutdown
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 3)  # SIGQUIT
    with contextlib.suppress(OSError):  # made again at the next start; none left behind by gone accounts
        db.socket_dir.rmdir()


def start(db: UserDb, cgroup_procs: Sequence[str] = ()) -> dict[str, str]:
    """Make (first time) and start the user's database in their group; the server's libpq variables."""
    with locked(db):
        _start_unlocked(db, cgroup_procs)
        db.lock_path.with_suffix(".json").write_text(json.dumps({"user": db.user}))
    return db.env()


def stop(db: UserDb) -> None:
    """A fast shutdown (sessions ended, a checkpoint written): a clean stop before the group is killed."""
    with locked(db):
        _stop_unlocked(db)


@contextlib.contextmanager
def running(db: UserDb) -> Iterator[None]:
    """The database up for the block: started briefly (and stopped after) when it was not running; the lock
    is held throughout, so the broker's start waits and finds it stopped again."""
    if not db.exists():
        raise UserDbError(
            f"user {db.user} of hub {db.hub} has no database yet (it is made at their first start)"
        )
    with locked(db):
        started = _start_unlocked(db, ())
        try:
            yield
        finally:
            if started:
                _stop_unlocked(db)


# ---------------------------------------------------------------------- dumps


def dump(db: UserDb, dest: Path) -> None:
    """A consistent `pg_dump` (custom format) of the user's database into `dest` (0600, root's)."""
    with running(db):
        tmp = dest.with_name(f".{dest.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            run_as(db, [str(PG_BIN / "pg_dump"), "-Fc", "--no-owner", db.database], stdout=fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)


def check_dump(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(len(DUMP_MAGIC))
    except OSError as exc:
        raise UserDbError(f"cannot read {path}: {exc.strerror}") from None
    if head != DUMP_MAGIC:
        raise UserDbError(
            f"{path} is not a database dump (pg_dump's custom format, as `hubfleet user-db backup` writes)"
        )


def _recreate(db: UserDb) -> None:
    sql = f'DROP DATABASE IF EXISTS "{db.database}" WITH (FORCE)'
    run_as(db, [str(PG_BIN / "psql"), "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql, "postgres"])
    run_as(db, [str(PG_BIN / "createdb"), db.database])


def restore(db: UserDb, source: Path) -> None:
    """Replace the user's database with the dump in `source` (open sessions are ended)."""
    check_dump(source)
    with running(db):
        uid, gid = _ids(db)
        fd, name = tempfile.mkstemp(prefix=".restore-", suffix=".pgdump", dir=db.root)
        try:
            os.fchown(fd, uid, gid)  # through the descriptor: the user may swap the name for a link
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out)
            _recreate(db)
            run_as(
                db,
                [str(PG_BIN / "pg_restore"), "--no-owner", "--exit-on-error", "-d", db.database, name],
            )
        finally:
            Path(name).unlink(missing_ok=True)


def reset(db: UserDb) -> None:
    """An empty database in place of the user's."""
    with running(db):
        _recreate(db)


def remove(db: UserDb) -> None:
    """Stop the server and delete its data (after its last dump)."""
    with locked(db):
        _stop_unlocked(db)
        shutil.rmtree(db.root, ignore_errors=True)
        shutil.rmtree(db.socket_dir, ignore_errors=True)
        db.lock_path.with_suffix(".json").unlink(missing_ok=True)


def size_bytes(root: Path) -> int:
    """Bytes of a user's database directory (what it holds on disk)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_blocks * 512
    return total


def hub_users(data_dir: Path, state_dir: Path, hub: str) -> dict[str, Path]:
    """Every user of the hub with a database, and its directory (the user's name is recorded at the start)."""
    base = data_dir / "userdbs" / hub
    found: dict[str, Path] = {}
    for root in sorted(base.iterdir()) if base.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            record = json.loads((state_dir / "userdbs" / hub / f"{root.name}.json").read_text())
            found[str(record["user"])] = root
    return found
