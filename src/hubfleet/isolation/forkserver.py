"""The daemon's side of a fork template (forktemplate.py): start it, ask it for children, learn their ends.

A template has imported what its programs need once, so a child starts in a fraction of the seconds a
fresh Python spends importing (jupyter_server and its extensions, or JupyterHub itself). It is generic:
`entry` names the function a child runs ("jupyterhub.singleuser:main" for user servers,
"jupyterhub.app:main" for hubs).

The spec (launch.py's format, with the server's token in its env) never passes through the template: it goes
into a fresh pipe whose read end is handed over by SCM_RIGHTS; the template forks and only the child reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import psutil

from hubfleet.isolation.launch import SPEC_MAX

log = logging.getLogger("hubfleet.forkserver")

READY_TIMEOUT = 120.0
"""Importing a server's modules takes seconds of CPU; on a busy 2-core machine, many more."""
SPAWN_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
MESSAGE_MAX = 1 << 16

SERVER_PRELOAD = [
    "jupyterhub.singleuser",
    "jupyterhub.singleuser.extension",
    "jupyter_server.serverapp",
    "jupyter_server.services.kernels.kernelmanager",
    "jupyter_server.services.contents.largefilemanager",
    "jupyter_server.services.sessions.sessionmanager",
    "jupyter_server.gateway.managers",
    "jupyter_server_terminals",
    "jupyter_server_terminals.app",
    "jupyter_client.ioloop",
    "jupyter_client.provisioning",
    "jupyterlab",
    "jupyterlab.labapp",
    "jupyterlab_server",
    "notebook",
    "notebook.app",
    "notebook_shim",
    "nbclassic",
    "jupyter_lsp",
    "nbformat",
    "nbconvert",
    "terminado",
    # imported while the server initialises (its handlers, IPython for the kernel manager, httpx for
    # jupyterlab's extension manager): ≈ 0.2 s of CPU per server when not preloaded
    "IPython",
    "IPython.core.interactiveshell",
    "httpx",
    "httpcore",
    "httpcore._async.http11",
    "httpcore._async.connection_pool",
    "httpcore._sync.http11",
    "httpcore._sync.connection_pool",
    "httpcore._backends.anyio",
    "httpcore._backends.sync",
    "h11",
    "jinja2.ext",
    "tornado.platform.asyncio",
    "notebook_shim.nbserver",
    "jupyter_lsp.virtual_documents_shadow",
    "jupyterlab.extensions.pypi",
    "jupyter_server.kernelspecs.handlers",
    "jupyter_server.nbconvert.handlers",
    "jupyter_server.services.api.handlers",
    "jupyter_server.services.config.handlers",
    "jupyter_server.services.contents.handlers",
    "jupyter_server.services.events.handlers",
    "jupyter_server.services.kernels.handlers",
    "jupyter_server.services.kernelspecs.handlers",
    "jupyter_server.services.nbconvert.handlers",
    "jupyter_server.services.security.handlers",
    "jupyter_server.services.sessions.handlers",
    "jupyter_server.services.shutdown",
    "jupyter_server.view.handlers",
    "hubfleet.isolation.server_warmup",
]
"""What a user server imports at start (`python -X importtime jupyterhub-singleuser`, and the modules new in
sys.modules once a forked server has initialised): a missing optional package is skipped."""


class TemplateError(RuntimeError):
    """The template is not up, or refused a spawn."""


class Forked:
    """A child of the template, as the broker sees it: quacks like subprocess.Popen / asyncio's Process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.detached = False
        """The template went away: the child is init's now, and its end is learnt by looking at it."""
        self._done = asyncio.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._done.set()

    def poll(self) -> int | None:
        if self.returncode is None and self.detached:
            try:
                if psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE:
                    return None
            except psutil.Error:
                pass
            self._exited(0)  # its status went with the template
        return self.returncode

    async def wait(self) -> int:
        while self.poll() is None:
            if self.detached:
                await asyncio.sleep(0.2)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._done.wait(), timeout=1.0)
        assert self.returncode is not None
        return self.returncode

    def __repr__(self) -> str:
        return f"Forked(pid={self.pid}, returncode={self.returncode})"


class ForkServer:
    """One template process and its children; asyncio, daemon side."""

    def __init__(
        self,
        name: str,
        preload: list[str],
        *,
        log_path: Path | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.preload = list(preload)
        self.log_path = log_path
        self.python = python
        self.env = env
        self.pid: int | None = None
        self.info: dict[str, Any] = {}
        """The template's ready message: its pid, preload failures, seconds spent importing."""
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._children: dict[int, Forked] = {}
        self._early_exits: dict[int, int] = {}
        self._next_id = 0
        self._starting: asyncio.Lock | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return (
            self._proc is not None
            and self._proc.returncode is None
            and self._ready is not None
            and self._ready.done()
            and not self._ready.exception()
            and self._reader is not None
            and not self._reader.done()
        )

    def children(self) -> list[Forked]:
        return list(self._children.values())

    async def start(self) -> None:
        """Start the template (if it is not running) and wait until it has imported everything."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.running:
                return
            await self._close_quietly()
            self._stopping = False
            await self._launch()

    async def _launch(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = self.env if self.env is not None else _template_env()
        try:
            logf = self.log_path.open("ab") if self.log_path else None
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    self.python, "-s", "-P", "-m", "hubfleet.isolation.forktemplate",
                    "--fd", str(theirs.fileno()), "--label", self.name, *self.preload,
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf or asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd="/",
                    start_new_session=True,  # a signal to the daemon's group is not the template's
                )  # fmt: skip
            finally:
                if logf is not None:
                    logf.close()
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self.pid = self._proc.pid
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._reader = asyncio.create_task(self._read(ours, self._ready))
        try:
            self.info = await asyncio.wait_for(asyncio.shield(self._ready), timeout=READY_TIMEOUT)
        except (TimeoutError, TemplateError) as exc:
            await self._close_quietly()
            raise TemplateError(f"fork template {self.name} did not get ready: {exc}") from None
        if self.info.get("failed"):
            log.info("fork template %s: not preloaded: %s", self.name, ", ".join(self.info["failed"]))
        log.info(
            "fork template %s ready (pid %s, %.1f s of imports)",
            self.name,
            self.pid,
            self.info.get("seconds", 0),
        )

    async def _read(self, sock: socket.socket, ready: asyncio.Future[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    data = await loop.sock_recv(sock, MESSAGE_MAX)
                except OSError:
                    break
                if not data:
                    break
                try:
                    message = json.loads(data)
                except ValueError:
                    continue
                if "ready" in message and not ready.done():
                    if message["ready"]:
                        ready.set_result(message)
                    else:
                        ready.set_exception(TemplateError(message.get("problem") or "not safe to fork"))
                elif "exit" in message:
                    pid, code = int(message["exit"]), int(message["code"])
                    child = self._children.pop(pid, None)
                    if child is not None:
                        child._exited(code)
                    else:
                        self._early_exits[pid] = code
                elif "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if "pid" in message:
                        pid = int(message["pid"])
                        child = Forked(pid)
                        self._children[pid] = child
                        if pid in self._early_exits:
                            self._children.pop(pid)
                            child._exited(self._early_exits.pop(pid))
                        message["child"] = child
                    if future is not None and not future.done():
                        future.set_result(message)
        finally:
            gone = TemplateError(f"fork template {self.name} went away")
            if not ready.done():
                ready.set_exception(gone)
                ready.exception()  # retrieved: start() reports it
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)
            self._pending.clear()
            for child in self._children.values():
                child.detached = True
            self._children.clear()
            if self._sock is sock and not self._stopping:
                log.warning("fork template %s (pid %s) went away", self.name, self.pid)

    async def spawn(self, spec: dict[str, Any], entry: str, *, log_path: Path | None = None) -> Forked:
        """A child of the template that becomes `spec`'s process (launch.py's spec: account, cgroups, home,
        env, argv) and runs `entry` ("module:function"), its stdout and stderr appended to `log_path`."""
        if not self.running or self._sock is None:
            raise TemplateError(f"fork template {self.name} is not running")
        data = json.dumps(spec).encode()
        if len(data) > SPEC_MAX:
            raise TemplateError(f"the spec is larger than {SPEC_MAX} bytes")
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        log_fd = -1
        try:
            # the whole spec fits in the pipe: written now, read by the child alone
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, max(len(data), 4096))
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view) :]
            os.close(write_end)
            write_end = -1
            log_fd = (
                os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                if log_path
                else os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            )
            self._next_id += 1
            ident = self._next_id
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending[ident] = future
            request = json.dumps({"op": "spawn", "id": ident, "entry": entry}).encode()
            await _sendmsg(self._sock, request, [read_end, log_fd])
        finally:
            for fd in (read_end, write_end, log_fd):
                if fd >= 0:
                    os.close(fd)
        try:
            reply = await asyncio.wait_for(future, timeout=SPAWN_TIMEOUT)
        except TimeoutError:
            self._pending.pop(ident, None)
            raise TemplateError(f"fork template {self.name} did not answer a spawn") from None
        if "error" in reply:
            raise TemplateError(f"fork template {self.name}: {reply['error']}")
        return reply["child"]

    async def stop(self) -> None:
        """Stop the template only: its children keep running (init's now; the broker still knows them)."""
        proc, sock = self._proc, self._sock
        if proc is None:
            return
        self._stopping = True
        if sock is not None and proc.returncode is None:
            with contextlib.suppress(OSError):
                await _sendmsg(sock, json.dumps({"op": "exit"}).encode(), [])
        try:
            await asyncio.wait_for(proc.wait(), timeout=STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # the template's pid only, never its group: the servers are its children
            await proc.wait()
        await self._close_quietly()

    async def _close_quietly(self) -> None:
        sock, reader, proc = self._sock, self._reader, self._proc
        self._sock = None
        if sock is not None:
            sock.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        self._reader = None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), timeout=STOP_TIMEOUT)
        self._proc = None


async def _sendmsg(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(_ints(fds))))] if fds else []
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock.sendmsg([data], ancillary)
            return
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock.fileno(), _set_done, writable)
            try:
                await writable
            finally:
                loop.remove_writer(sock.fileno())


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _ints(values: list[int]) -> bytes:
    import array

    return array.array("i", values).tobytes()


def _template_env() -> dict[str, str]:
    """A template's environment: nothing of the daemon's but the locale (Python fixes its encodings at start,
    so the servers forked from it must start with the locale they would get), and no real HOME: a module that
    reads HOME at import would otherwise carry root's into every user's server."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}
    for key in ("LANG", "LC_ALL", "LC_CTYPE", "TZ"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


FORK_BLOCKERS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "PYTHONUTF8")


def unforkable(env: dict[str, str]) -> str:
    """Why a server with this environment must start as a fresh process ('' when a fork serves it): variables
    that act when an interpreter starts or when jupyterhub.singleuser is imported, which a template that has
    already started and imported cannot honour."""
    for key in FORK_BLOCKERS:
        if env.get(key):
            return f"{key} is set"
    if env.get("JUPYTERHUB_SINGLEUSER_APP", "") not in ("", "jupyter_server", "jupyter-server", "extension"):
        return "JUPYTERHUB_SINGLEUSER_APP picks another application"
    if env.get("JUPYTERHUB_SINGLEUSER_EXTENSION", "") not in ("", "1"):
        return "JUPYTERHUB_SINGLEUSER_EXTENSION is set"
    return ""


__all__ = ["SERVER_PRELOAD", "ForkServer", "Forked", "TemplateError", "unforkable"]
