"""The spawner a hub uses when hubfleet runs as root: the hub runs as its own unprivileged service account, so
it cannot create accounts or switch users; it asks the broker (the privileged part of the hubfleet daemon)
over a unix socket that only this hub's account may open. The broker decides which account, home, command and
limits a server gets; the spawner only names the user and passes JupyterHub's environment and arguments.

A hub with `environments` offers them through EnvironmentsMixin (the options form, `user_options`, groups
enforced at start); the broker resolves the pick again itself. LocalEnvironmentSpawner does the same in
single-account mode, where there is no broker.

Imported by the hub process (`c.JupyterHub.spawner_class`), never by the daemon.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner, Spawner
from tornado import web
from traitlets import Integer, List, Unicode, default
from traitlets.config import LoggingConfigurable

from hubfleet.environment_choice import ChoiceRefused, form_html, options_from_form, resolve
from hubfleet.isolation.environments import CHOICE_REFUSED, server_settings
from hubfleet.ports import free_port

REPLY_LIMIT = 1 << 16


class BrokerError(RuntimeError):
    """The broker refused a request or could not be reached."""


class EnvironmentsMixin(LoggingConfigurable):
    """The hub's environments: JupyterHub's own options form, the same choices as `user_options` through the
    REST API, the user's last choice preselected, and groups enforced when the server starts (a forbidden
    choice is refused with HTTP 400 and a message that says what to pick)."""

    environments = List(config=True, help="The hub's environments as JSON (environment_choice's spec).")

    def _groups(self) -> list[str]:
        return [group.name for group in self.user.groups]

    def _options_form(self, spawner: Any) -> str:
        if not self.environments:
            return ""
        return form_html(self.environments, self._groups(), self.orm_spawner.user_options or {})

    @default("options_form")
    def _default_options_form(self):  # type: ignore[no-untyped-def]
        return self._options_form if self.environments else ""

    def options_from_form(self, form_data: dict[str, list[str]]) -> dict[str, Any]:
        options = options_from_form(self.environments, form_data)
        try:
            resolve(self.environments, self._groups(), options)
        except ChoiceRefused as exc:  # the spawn page shows the form again with this message
            raise web.HTTPError(400, str(exc)) from None
        return options

    def resolved(self) -> dict[str, Any]:
        """The picked environment, or HTTP 400 naming what the user may pick instead."""
        try:
            return resolve(self.environments, self._groups(), self.user_options or {})
        except ChoiceRefused as exc:
            raise web.HTTPError(400, str(exc)) from None

    def run_pre_spawn_hook(self):  # type: ignore[no-untyped-def]
        self.resolved()  # refuse before anything starts
        return super().run_pre_spawn_hook()


class BrokerSpawner(EnvironmentsMixin, Spawner):
    socket_path = Unicode(config=True, help="The broker's unix socket for this hub.")
    stop_timeout = Integer(40, config=True, help="Seconds to wait for the broker to stop a server.")

    pid = Integer(0)
    _start_call: asyncio.Future[dict[str, Any]] | None = None

    async def _call(self, payload: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path, limit=REPLY_LIMIT), timeout=5
            )
        except (OSError, TimeoutError) as exc:
            raise BrokerError(f"hubfleet broker unreachable at {self.socket_path}: {exc}") from exc
        try:
            writer.write(json.dumps({**payload, "user": self.user.name}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), timeout=timeout) or b"{}")
        except (OSError, TimeoutError, ValueError) as exc:
            raise BrokerError(f"hubfleet broker did not answer {payload['op']!r}: {exc}") from exc
        finally:
            writer.close()
        if not reply.get("ok"):
            raise BrokerError(reply.get("error") or f"hubfleet broker refused {payload['op']!r}")
        return reply

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.pid = int(state.get("pid") or 0)

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.pid:
            state["pid"] = self.pid
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.pid = 0

    async def start(self) -> tuple[str, int]:
        if not self.port:
            self.port = free_port()
        request = {"op": "start", "env": self.get_env(), "args": self.get_args()}
        if self.environments:  # the broker resolves it again against its own policy
            request["user_options"] = self.user_options or {}
        # shielded: when the hub interrupts a pending spawn (a stop while starting), the broker may still
        # start the server; stop() then waits for this answer to learn the pid instead of leaving it running
        self._start_call = asyncio.ensure_future(self._call(request))
        try:
            reply = await asyncio.shield(self._start_call)
        except BrokerError as exc:
            if str(exc).startswith(CHOICE_REFUSED):
                raise web.HTTPError(400, str(exc)[len(CHOICE_REFUSED) :]) from None
            raise
        self.pid = int(reply["pid"])
        self.log.info(
            "hubfleet broker started %s's server as %s (pid %d)", self.user.name, reply["account"], self.pid
        )
        return (self.ip or "127.0.0.1", self.port)

    async def poll(self) -> int | None:
        await self._interrupted_start()
        if not self.pid:
            return 0
        try:
            reply = await self._call({"op": "poll", "pid": self.pid})
        except BrokerError as exc:  # the daemon is restarting: keep the server, ask again at the next poll
            self.log.warning("%s; assuming %s's server still runs", exc, self.user.name)
            return None
        if reply["running"]:
            return None
        self.clear_state()
        return int(reply.get("exit_status") or 0)

    async def _interrupted_start(self) -> None:
        """A spawn the hub interrupted while the broker was starting the server: wait for the broker's
        answer, so that the hub's poll and stop see that server (JupyterHub stops only what poll finds)."""
        call, self._start_call = self._start_call, None
        if self.pid or call is None:
            return
        try:
            reply = await asyncio.wait_for(asyncio.shield(call), timeout=self.stop_timeout)
            self.pid = int(reply["pid"])
        except (BrokerError, TimeoutError, KeyError, ValueError):
            pass

    async def stop(self, now: bool = False) -> None:
        await self._interrupted_start()
        if not self.pid:
            return
        await self._call({"op": "stop", "pid": self.pid, "now": now}, timeout=self.stop_timeout)
        self.clear_state()


class LocalEnvironmentSpawner(EnvironmentsMixin, SimpleLocalProcessSpawner):
    """Single-account mode with environments: the spawner applies the picked environment itself (no broker;
    in this mode every server runs as the account that runs hubfleet, so the hub is the only gate)."""

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        settings = server_settings(self.resolved())
        if settings.path_head:
            env["PATH"] = f"{settings.path_head}:{env['PATH']}" if env.get("PATH") else settings.path_head
        return {**env, **settings.env}

    def get_args(self) -> list[str]:
        return [*super().get_args(), *server_settings(self.resolved()).args]
