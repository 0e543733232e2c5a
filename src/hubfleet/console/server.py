"""Serve the daemon's HTTP app with uvicorn inside the daemon's own event loop (no thread, no process)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from hubfleet.settings import UserError


class _LoopServer(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the daemon (uvicorn would replace its handlers)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ConsoleServer:
    """A running HTTP server: `url`, `port`, and `stop()`."""

    def __init__(self, server: _LoopServer, task: asyncio.Task[None], host: str, port: int):
        self._server = server
        self._task = task
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def bind(
    host: str, port: int | None, port_setting: str = "fleet.yaml monitoring.metrics_port"
) -> socket.socket:
    """A listening socket on host:port (a free port when None); a port in use is one clear error."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket says it is TCP (proto 0 does not), and without it every response with a body waits ~40 ms
    # for Nagle's algorithm on a kept-alive connection
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port or 0))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} on {host} ({port_setting}) is already in use; "
                "stop what holds it or choose another port"
            ) from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start_console(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 10.0,
    port_setting: str = "fleet.yaml monitoring.metrics_port",
) -> ConsoleServer:
    """Serve `app` on host:port (free port when None) as a task of the running loop, once listening;
    `port_setting` names where the port came from, for the error when it is taken."""
    sock = bind(host, port, port_setting)
    actual = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = _LoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="hubfleet-console")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not server.started:
        if task.done():
            sock.close()
            exc = task.exception()
            raise UserError(f"the daemon's HTTP server on {host}:{actual} did not start: {exc}")
        if loop.time() > deadline:
            server.should_exit = True
            raise UserError(
                f"the daemon's HTTP server on {host}:{actual} did not start within {timeout:.0f} s"
            )
        await asyncio.sleep(0.02)
    return ConsoleServer(server, task, host, actual)
