"""Start one user server as its OS account: the root daemon runs this, and it becomes the server.

Standard library only, run as `python -I -S launch.py`: it starts fast and trusts nothing in the environment
or site-packages. The spec comes on stdin, read to its end, never from argv or the environment: argv is
world-readable in /proc and the spec holds the server's API token.

    {"uid": int, "gid": int, "cgroup_procs": [path], "cwd": str, "env": {str: str}, "argv": [str],
     "umask": int}

Exit 126: the spec is refused or the account cannot be entered safely; 127: the program cannot be executed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, NoReturn

SPEC_MAX = 1 << 20
CGROUP_ROOT = "/sys/fs/cgroup/"
REFUSED = 126
NOT_EXECUTED = 127


def launcher_argv() -> list[str]:
    """How to run this launcher: the spec then goes to its stdin."""
    return [sys.executable, "-I", "-S", os.path.realpath(__file__)]


def _fail(code: int, message: str) -> NoReturn:
    sys.stderr.write(f"hubfleet-launch: {message}\n")
    sys.stderr.flush()
    os._exit(code)


def _id(spec: dict[str, Any], key: str) -> int:
    value = spec.get(key)
    if type(value) is not int or not 0 < value < 0xFFFFFFFF:  # -1 would mean "unchanged" to the kernel
        raise ValueError(f"{key} must be an integer id other than 0 (root), not {value!r}")
    return value


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
        raise ValueError(f"{key} must be a list of strings without NUL")
    return value


def parse_spec(data: bytes) -> dict[str, Any]:
    """The spec, checked whole before anything happens: a bad spec must not leave half a launch behind."""
    spec = json.loads(data)
    if not isinstance(spec, dict):
        raise ValueError("the spec must be a JSON object")
    unknown = set(spec) - {"uid", "gid", "cgroup_procs", "cwd", "env", "argv", "umask"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    _id(spec, "uid")
    _id(spec, "gid")
    for path in _strings(spec.get("cgroup_procs"), "cgroup_procs"):
        if not path.startswith(CGROUP_ROOT) or not path.endswith("/cgroup.procs") or "/../" in path:
            raise ValueError(f"cgroup_procs entry {path[:80]!r} is not a cgroup.procs under {CGROUP_ROOT}")
    cwd = spec.get("cwd")
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise ValueError("cwd must be an absolute path")
    env = spec.get("env")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in env.items()
    ):
        raise ValueError("env must map names (no '=', no NUL) to strings")
    if not _strings(spec.get("argv"), "argv"):
        raise ValueError("argv must not be empty")
    umask = spec.get("umask")
    if type(umask) is not int or not 0 <= umask <= 0o777:
        raise ValueError("umask must be an integer 0..0o777")
    return spec


def _drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid with no supplementary groups, then prove root cannot come back."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        _fail(REFUSED, "privileges could be regained after setuid; refusing to start")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        _fail(REFUSED, "credentials are not exactly the requested uid/gid; refusing to start")


def read_spec(fd: int) -> dict[str, Any]:
    """The spec from `fd`, read to its end and checked; a bad spec ends the process with REFUSED."""
    chunks, size = [], 0
    try:
        while size <= SPEC_MAX:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > SPEC_MAX:
            raise ValueError(f"the spec is larger than {SPEC_MAX} bytes")
        return parse_spec(b"".join(chunks))
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        _fail(REFUSED, f"bad spec: {error}")
    except OSError as error:
        _fail(REFUSED, f"cannot read the spec: {error.strerror}")


def enter(spec: dict[str, Any], *, exec_follows: bool = True) -> None:
    """Everything up to running the server, in this order: join the cgroups as root (the server and all it
    forks stay in them), become the account, enter the home, stdin from /dev/null, the umask, and SIGPIPE and
    SIGXFSZ as the program expects them. Shared by this launcher and the fork template's children
    (forktemplate.py), so both start a server the same way; a failure ends the process with REFUSED.

    Before an exec (`exec_follows`) those two get their default actions: Python ignores them, and an ignored
    signal survives exec. A forked child goes on running Python, which needs them ignored, as a fresh
    interpreter has them (a write to a closed socket must raise EPIPE, not kill the process); the programs
    it starts get the defaults from subprocess (restore_signals)."""
    pid = str(os.getpid())
    for path in spec["cgroup_procs"]:
        try:
            with open(path, "w") as procs:
                procs.write(pid)
        except OSError as error:
            _fail(REFUSED, f"cannot join cgroup {path}: {error.strerror}")
    try:
        _drop_privileges(spec["uid"], spec["gid"])
    except OSError as error:
        _fail(REFUSED, f"cannot become uid {spec['uid']} gid {spec['gid']}: {error.strerror}")
    try:
        os.chdir(spec["cwd"])
    except OSError as error:
        _fail(REFUSED, f"cannot enter {spec['cwd']}: {error.strerror}")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.umask(spec["umask"])
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL if exec_follows else signal.SIG_IGN)


def main() -> NoReturn:
    spec = read_spec(0)
    enter(spec)
    argv = spec["argv"]
    try:
        os.execve(argv[0], argv, spec["env"])
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        _fail(NOT_EXECUTED, f"cannot execute {argv[0][:200]!r}: {reason}")


if __name__ == "__main__":
    main()
