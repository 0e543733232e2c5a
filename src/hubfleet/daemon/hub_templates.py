"""Hubs forked from one template process that has imported JupyterHub once (isolation/forkserver.py).

A fresh `jupyterhub` spends ≈ 2.5 s of CPU importing itself (half of it building the IRI grammar of
`rfc3987_syntax`, which jsonschema loads for jupyter_events); four hubs starting at once on two cores spend
≈ 5 s of `up` on that alone. The template imports it once, while the daemon gets ready, and each hub is a
fork of it that then does exactly what the `jupyterhub` command would: its own session, the hub's service
account (no supplementary groups), its data directory as cwd, the same environment, `jupyterhub.app:main`
with the same argv, its output appended to hub.log.

The hub's secrets (its environment: control and operator tokens, decrypted secrets) are in the spec, which
only the forked child reads (a pipe handed over by SCM_RIGHTS): they never enter the template's memory, so
no later hub forked from it can find them. A hub the template cannot serve (no service account in
single-account mode, a PYTHONPATH the template did not start with, the template failing) starts as a fresh
`jupyterhub` process, as before; the caller decides by `reason_to_exec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from hubfleet.isolation.accounts import Account
from hubfleet.isolation.forkserver import Forked, ForkServer, TemplateError, unforkable

log = logging.getLogger("hubfleet.supervisor")

HUB_ENTRY = "jupyterhub.app:main"
"""What the `jupyterhub` console script runs (its entry point in jupyterhub's metadata)."""

HUB_PRELOAD = [
    "jupyterhub.app",
    "jupyterhub.alembic",
    "sqlalchemy.dialects.sqlite",
    "sqlite3",
    "tornado.platform.asyncio",
    "hubfleet.isolation.spawner",
    "nativeauthenticator.nativeauthenticator",
    "oauthenticator.generic",
    "oauthenticator.github",
    "oauthenticator.google",
    "oauthenticator.bitbucket",
    "oauthenticator.cilogon",
    "hubfleet.daemon.hub_preload",
]
"""What a hub imports by the time it runs (`python -X importtime jupyterhub -f ...` of the demo's hubs):
JupyterHub loads every installed authenticator's entry point when it resolves its classes. A package that
is not installed is skipped by the template. Last, hub_preload.py configures the ORM's mappers once."""


def current_umask() -> int:
    """The daemon's umask, which a hub started with exec inherits (read without a window: one thread)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def hub_spec(command: list[str], cwd: Path, env: dict[str, str], account: Account) -> dict[str, Any]:
    """The launch spec (isolation/launch.py's format) of a hub: what exec would have been given."""
    return {
        "uid": account.uid,
        "gid": account.gid,
        "cgroup_procs": [],  # hubs run in the daemon's control group, as with exec
        "cwd": str(cwd),
        "env": env,
        "argv": list(command),
        "umask": current_umask(),
    }


def reason_to_exec(account: Account | None, env: dict[str, str]) -> str:
    """Why this hub must start as a fresh process ('' when a fork of the template serves it)."""
    if account is None:
        return "no service account (single-account mode)"
    if account.uid == 0 or account.gid == 0:
        return "the hub would run as root"
    return unforkable(env)


class HubTemplate:
    """The fleet's one JupyterHub template: started as soon as the daemon starts its hubs (`begin`), shared by
    every hub start, restarted when it has gone away, stopped with the fleet."""

    def __init__(self, state_dir: Path) -> None:
        self.server = ForkServer(
            # the label puts the fleet's state directory in its command line: a leak is found by that
            f"hubs:{state_dir}",
            HUB_PRELOAD,
            log_path=state_dir / "hub-template.log",
        )
        self._starting: asyncio.Task[None] | None = None
        self.failure = ""
        """Why the template could not start the last time (hubs then start as fresh processes)."""

    def begin(self) -> None:
        """Start importing now, in the background: the hubs' own preparation goes on meanwhile."""
        if self._starting is None or (self._starting.done() and not self.server.running):
            self._starting = asyncio.create_task(self._start(), name="hub-template")

    async def _start(self) -> None:
        try:
            await self.server.start()
            self.failure = ""
        except (TemplateError, OSError) as exc:
            self.failure = str(exc)
            log.warning("hubs start as fresh processes: %s", exc)

    async def spawn(self, spec: dict[str, Any], log_path: Path) -> Forked | None:
        """A hub forked from the template, or None when the template cannot serve (said in the log)."""
        self.begin()
        assert self._starting is not None
        await asyncio.shield(self._starting)
        if not self.server.running:
            return None
        try:
            return await self.server.spawn(spec, HUB_ENTRY, log_path=log_path)
        except (TemplateError, OSError) as exc:
            log.warning("the hub template could not fork a hub (%s): it starts as a fresh process", exc)
            return None

    async def stop(self) -> None:
        """Stop the template (its hubs are stopped by the supervisor, by pid and process group)."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        await self.server.stop()

    def snapshot(self) -> dict[str, Any]:
        """For daemon.json: whether hubs are forked, from which process, and its import time."""
        if self.server.running:
            seconds = self.server.info.get("seconds")
            return {"state": "running", "pid": self.server.pid, "import_seconds": seconds}
        return {"state": "failed" if self.failure else "stopped", "error": self.failure}
