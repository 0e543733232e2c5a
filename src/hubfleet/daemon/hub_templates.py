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
import importlib.util
import logging
import os
import re
import time
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


WATCHED_PACKAGES = (
    "jupyterhub",
    "sqlalchemy",
    "alembic",
    "tornado",
    "traitlets",
    "jupyter_events",
    "jsonschema",
    "nativeauthenticator",
    "oauthenticator",
    "hubfleet",
)
"""The code a template holds imported: when any of it changes on disk (an upgrade, a new hubfleet), the next
hub start gets a new template, as a fresh `jupyterhub` would run the new code."""
TEMPLATE_WAIT = 60.0
"""How long a hub start waits for a template still importing before it starts as a fresh process instead
(≈ 2.5 s on an idle machine; 12 s seen with the two cores shared by four test suites)."""
STAMP_FRESH = 10.0
"""Seconds after a stamp during which it is not taken again (`up` starts every hub at once)."""


def code_stamp(packages: tuple[str, ...] = WATCHED_PACKAGES) -> tuple[tuple[str, int, int], ...]:
    """Per package: how many .py files it has and the newest one's mtime (≈ 10 ms for these; no import)."""
    stamp = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        count = newest = 0
        for top in (spec.submodule_search_locations or []) if spec is not None else []:
            for directory, subdirs, files in os.walk(top):
                subdirs[:] = [d for d in subdirs if d != "__pycache__"]
                for file in files:
                    if file.endswith(".py"):
                        with contextlib.suppress(OSError):
                            newest = max(newest, os.stat(os.path.join(directory, file)).st_mtime_ns)
                            count += 1
        stamp.append((name, count, newest))
    return tuple(stamp)


def current_umask() -> int:
    """The daemon's umask, which a hub started with exec inherits (read from /proc, never set: the daemon's
    threads create files meanwhile)."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text()
        return int(next(m for m in re.finditer(r"(?m)^Umask:\s*([0-7]+)$", status)).group(1), 8)
    mask = os.umask(0o077)  # kernels before 4.7 do not show it
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
        self._stamp: tuple[tuple[str, int, int], ...] = ()
        self._stamped_at = 0.0
        self.failure = ""
        """Why the template could not start the last time (hubs then start as fresh processes)."""

    def begin(self) -> None:
        """Start importing now, in the background: the hubs' own preparation goes on meanwhile."""
        if self._starting is None or (self._starting.done() and not self.server.running):
            self._starting = asyncio.create_task(self._start(), name="hub-template")

    async def _start(self) -> None:
        try:
            # the stamp is taken while the template starts importing (≈ 10 ms against seconds of imports)
            self._stamp, _ = await asyncio.gather(asyncio.to_thread(code_stamp), self.server.start())
            self._stamped_at = time.monotonic()
            self.failure = ""
        except (TemplateError, OSError) as exc:
            self.failure = str(exc)
            log.warning("hubs start as fresh processes: %s", exc)

    async def spawn(self, spec: dict[str, Any], log_path: Path) -> Forked | None:
        """A hub forked from the template, or None when the template cannot serve (said in the log)."""
        await self._renew_if_stale()
        self.begin()
        assert self._starting is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._starting), timeout=TEMPLATE_WAIT)
        except TimeoutError:
            log.warning(
                "the hub template is not ready after %.0f s: the hub starts as a fresh process", TEMPLATE_WAIT
            )
            return None
        if not self.server.running:
            return None
        try:
            return await self.server.spawn(spec, HUB_ENTRY, log_path=log_path)
        except (TemplateError, OSError) as exc:
            log.warning("the hub template could not fork a hub (%s): it starts as a fresh process", exc)
            return None

    async def _renew_if_stale(self) -> None:
        """A template whose code changed on disk since it imported it is replaced (its hubs keep running)."""
        if not self.server.running or time.monotonic() - self._stamped_at < STAMP_FRESH:
            return
        stamp = await asyncio.to_thread(code_stamp)
        self._stamped_at = time.monotonic()
        if stamp == self._stamp:
            return
        changed = ", ".join(new[0] for old, new in zip(self._stamp, stamp, strict=False) if old != new)
        log.info("the code the hub template imported changed on disk (%s): starting a new template", changed)
        await self.server.stop()

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
