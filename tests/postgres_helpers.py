"""A real PostgreSQL server on loopback for the store's tests: one per test session (per xdist worker that
needs it), a fresh database per test, stopped by its pid at the end.

The binaries come from PyPI's `pgserver` (a test dependency that bundles them), else from Debian's postgresql
(/usr/lib/postgresql/*/bin). PostgreSQL refuses to run as root, so as root initdb and the server run as
`nobody` in a data directory of their own. Only when no server can start are the tests skipped, saying why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hubfleet.ports import free_port

START_TIMEOUT_S = 60


@dataclass
class PostgresServer:
    port: int
    pid: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def find_bin_dir() -> Path | None:
    """pgserver's bundled binaries, else Debian's newest postgresql, else whatever is on PATH."""
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: p.parent.parent.name)
    if debian:
        return debian[-1].parent
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def _demote(uid: int, gid: int):  # noqa: ANN202 - a preexec_fn
    def run() -> None:
        os.setgid(gid)
        os.setgroups([])
        os.setuid(uid)

    return run


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer | str]:
    """Yield a running server, or a string saying why none could start (the caller skips with it)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield "psycopg is not installed (pip install -e '.[test]')"
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        yield "no PostgreSQL binaries: pgserver (PyPI) is not installed and Debian's postgresql is missing"
        return
    root = Path(tempfile.mkdtemp(prefix="hubfleet-pg-"))
    data = root / "data"
    preexec = None
    if os.geteuid() == 0:  # postgres will not run as root
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        preexec = _demote(nobody.pw_uid, nobody.pw_gid)
    proc: subprocess.Popen[bytes] | None = None
    try:
        init = subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            preexec_fn=preexec,
            cwd=root,
            timeout=120,
        )
        if init.returncode != 0:
            tail = (init.stderr or init.stdout).decode(errors="replace").strip().splitlines()[-3:]
            yield f"initdb ({bin_dir}) failed: {' | '.join(tail)}"
            return
        port = free_port()
        log = root / "server.log"
        with log.open("wb") as logf:
            proc = subprocess.Popen(
                [
                    bin_dir / "postgres",
                    "-D",
                    data,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
                cwd=root,
                start_new_session=True,
            )
        server = PostgresServer(port, proc.pid)
        if reason := _wait_ready(server, proc, log):
            yield reason
            return
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: PostgresServer, proc: subprocess.Popen[bytes], log: Path) -> str | None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            return f"postgres exited with code {proc.returncode}: {' | '.join(tail)}"
        try:
            with psycopg.connect(
                f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", connect_timeout=2
            ):
                return None
        except psycopg.OperationalError:
            time.sleep(0.2)
    return f"postgres did not accept connections within {START_TIMEOUT_S} s"
