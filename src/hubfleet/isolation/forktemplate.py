"""The fork template: a root process that has imported what a program needs and forks a child per start.

Run by forkserver.ForkServer as `python -s -P -m hubfleet.isolation.forktemplate --fd N MODULE...`, with a
unix SOCK_SEQPACKET socket to the daemon on fd N. It imports the MODULEs (and warms what is not
user-specific), says `ready`, then serves three messages (JSON, one per packet):

- `{"op": "spawn", "id": n, "entry": "module:function"}` with two descriptors passed by SCM_RIGHTS: the read
  end of a pipe holding the spec (launch.py's format) and the log file. The template forks at once and closes
  both unread; the CHILD reads the spec, so no server's token ever enters the template's memory, where a later
  child (another user's server) could find it. Answer `{"id": n, "pid": p}` or `{"id": n, "error": why}`.
- `{"op": "exit"}`: the template exits; its children keep running.
- end of file (the daemon went away): the same.

It reports each child's end as `{"exit": pid, "code": c}` (negative: killed by that signal), so no zombie
stays. Before each fork it checks that it runs one thread, no event loop and no ZeroMQ context: a fork copies
only the calling thread, and a loop's selector or a context's sockets would be shared by every child.

The child does what launch.py does, in the same order and with the same checks (launch.enter): its own
session, the log as stdout/stderr, the spec, cgroups, the account with no supplementary groups, the home,
umask, SIGPIPE/SIGXFSZ ignored as in any Python (an exec'd server's interpreter ignores them too); then the
spec's environment replaces os.environ wholly (kernels inherit it), every other descriptor is closed, the
user's own site-packages are appended to sys.path, the process is marked dumpable again, and the entry runs
with sys.argv from the spec. Python's `random` reseeds itself in a forked child (os.fork's
at-fork hook); the string-hash seed and the address layout are the template's (docs/fork-spawner.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

from hubfleet.isolation.launch import REFUSED, enter, read_spec

MESSAGE_MAX = 1 << 16


def _send(ctl: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the daemon is gone: the loop sees the end of file next
        ctl.send(json.dumps(message).encode())


def fork_problem() -> str:
    """Why forking now would be unsafe ('' when it is safe): threads, an event loop, a ZeroMQ context."""
    if threading.active_count() != 1:
        return f"{threading.active_count()} Python threads"
    try:
        tasks = len(os.listdir("/proc/self/task"))
    except OSError:
        tasks = 1
    if tasks != 1:
        return f"{tasks} OS threads"
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        if asyncio.events._get_running_loop() is not None:
            return "a running asyncio loop"
        policy = asyncio.events._event_loop_policy
        local = getattr(policy, "_local", None)
        if getattr(local, "_loop", None) is not None:
            return "an asyncio event loop"
    zmq = sys.modules.get("zmq")
    if zmq is not None and getattr(zmq.Context, "_instance", None) is not None:
        return "a ZeroMQ context"
    return ""


def preload(modules: list[str]) -> dict[str, str]:
    """Import each module (a missing one is skipped: optional extras), then warm the caches that do not
    depend on any user: the installed distributions' entry points. Returns the modules that failed."""
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional package is not installed, or fails to import
            failed[name] = f"{type(exc).__name__}: {exc}"[:200]
    try:
        from importlib.metadata import entry_points

        entry_points()
    except Exception as exc:
        failed["entry_points"] = str(exc)[:200]
    return failed


_PR_SET_NAME, _PR_SET_DUMPABLE = 15, 4


def make_dumpable() -> None:
    """As after an exec: the kernel marks a process that changed its uid without exec as not dumpable (its
    /proc files root's, no core dumps), which an exec'd server is not. Safe here because the child holds
    nothing the user may not see: the template read no secret (no spec, no daemon memory), and the spec is
    the user's own."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)


def set_cmdline(argv: list[str]) -> bool:
    """Show `argv` as the process's command line (/proc/PID/cmdline, ps, psutil) instead of the template's,
    so the tools that look for `jupyterhub-singleuser` find the server: written over the template's own
    argument area, as setproctitle(3) does (the kernel then shows it up to its first NUL; arguments are joined
    by spaces and cut to the area's size). The short name (comm) becomes argv[0]'s base name."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    name = ctypes.create_string_buffer(os.path.basename(argv[0]).encode()[:15])
    libc.prctl(_PR_SET_NAME, ctypes.addressof(name), 0, 0, 0)
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
    except (OSError, ValueError, IndexError):
        return False
    size = end - start
    if size < 2:
        return False
    title = " ".join(argv).encode()[: size - 2] + b"\0"
    ctypes.memmove(start, title + b"\0" * (size - 1 - len(title)) + b" ", size)  # last byte not NUL
    return True


def _user_site() -> None:
    """The account's own site-packages (~/.local/lib/pythonX.Y/site-packages), as a fresh interpreter started
    as that user with this HOME would add it: the template itself runs with -s (never root's)."""
    import site

    site.ENABLE_USER_SITE = True
    site.USER_BASE = None
    site.USER_SITE = None
    user_site = site.getusersitepackages()
    if os.path.isdir(user_site):
        site.addsitedir(user_site)


def _run_child(spec_fd: int, log_fd: int, entry: str) -> NoReturn:
    """In the forked child: become the user's server (see the module docstring); never returns."""
    code = REFUSED
    try:
        os.setsid()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        spec = read_spec(spec_fd)
        os.close(spec_fd)
        if not set_cmdline(spec["argv"]):
            sys.stderr.write("hubfleet fork template: the command line could not be set\n")
        enter(spec, exec_follows=False)
        make_dumpable()
        os.environ.clear()  # unsetenv each: the kernels this server starts inherit only the spec's
        os.environ.update(spec["env"])
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        sys.argv = list(spec["argv"])
        del spec
        _user_site()
        importlib.invalidate_caches()
        module, _, function = entry.partition(":")
        target = getattr(importlib.import_module(module), function)
        result = target()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _spawn(ctl: socket.socket, wake: tuple[int, int], request: dict[str, Any], fds: list[int]) -> None:
    ident = request.get("id")
    entry = request.get("entry")
    if len(fds) != 2 or not isinstance(entry, str) or ":" not in entry:
        for fd in fds:
            os.close(fd)
        _send(ctl, {"id": ident, "error": "a spawn needs an entry 'module:function' and two descriptors"})
        return
    problem = fork_problem()
    if problem:
        for fd in fds:
            os.close(fd)
        _send(ctl, {"id": ident, "error": f"not safe to fork: the template runs {problem}"})
        return
    spec_fd, log_fd = fds
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        ctl.close()
        os.close(wake[0])
        os.close(wake[1])
        _run_child(spec_fd, log_fd, entry)
    os.close(spec_fd)  # unread: the spec is the child's alone
    os.close(log_fd)
    _send(ctl, {"id": ident, "pid": pid})


def _reap(ctl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(ctl, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(ctl: socket.socket) -> None:
    """Answer the daemon until it says exit or goes away."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the wakeup fd
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(ctl, selectors.EVENT_READ, "ctl")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _ in selector.select():
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    _reap(ctl)
                    continue
                try:
                    data, ancdata, _flags, _addr = ctl.recvmsg(MESSAGE_MAX, socket.CMSG_SPACE(2 * 4))
                except InterruptedError:
                    continue
                except OSError:
                    return
                fds: list[int] = []
                for level, kind, payload in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        usable = len(payload) - len(payload) % 4
                        fds += list(memoryview(payload[:usable]).cast("i"))
                if not data:
                    for fd in fds:
                        os.close(fd)
                    return
                try:
                    request = json.loads(data)
                except ValueError:
                    request = {}
                op = request.get("op") if isinstance(request, dict) else None
                if op == "spawn":
                    _spawn(ctl, (wake_r, wake_w), request, fds)
                    _reap(ctl)
                    continue
                for fd in fds:
                    os.close(fd)
                if op == "exit":
                    return
                _send(ctl, {"error": f"unknown op {op!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fd", type=int, required=True, help="the control socket's descriptor")
    parser.add_argument("--label", default="", help="shown in the command line only (whose template)")
    parser.add_argument("modules", nargs="*", help="modules to import before forking")
    args = parser.parse_args()
    ctl = socket.socket(fileno=args.fd)
    started = time.monotonic()
    failed = preload(["ctypes", *args.modules])
    problem = fork_problem()
    _send(
        ctl,
        {
            "ready": not problem,
            "pid": os.getpid(),
            "problem": problem,
            "failed": failed,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    if problem:
        sys.exit(f"hubfleet fork template: not safe to fork after preloading: {problem}")
    serve(ctl)


if __name__ == "__main__":
    main()
