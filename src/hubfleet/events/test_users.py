"""Removing a readiness test's simulated attendees (hubfleet.events.readiness) without a trace: from the hub
(server stopped, user deleted with its tokens, a native sign-up discarded) and, on local hubs with an OS
account per user, from this machine (the account's processes, its own database, home and account). Also the
leftovers of a test that was killed outright, once they are an hour old.
"""

from __future__ import annotations

import asyncio
import contextlib
import pwd
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from hubfleet.checks.synthetic import TEST_USER_PREFIX, is_test_user
from hubfleet.clock import parse_time, utcnow

if TYPE_CHECKING:
    from hubfleet.config.fleet import FleetConfig
    from hubfleet.config.models import Hub

CLEANUP_SECONDS = 120.0
"""Budget for removing the test users once the attendees are done (or the test was stopped)."""
STALE_SECONDS = 3600.0
"""Test users older than this, of another run, are leftovers of a test that was killed: removed."""


async def _remove_user(operator: httpx.AsyncClient, name: str, native: bool) -> str | None:
    """Stop the user's server and delete the user (and its native sign-up); None, or what is left.

    A spawn under way is left to finish before the server is stopped: stopping a pending spawn makes
    JupyterHub interrupt it, which on local hubs could leave the starting server behind."""
    quoted = quote(name, safe="")
    deadline = time.monotonic() + CLEANUP_SECONDS - 10
    status = 0
    while time.monotonic() < deadline:
        model = await operator.get(f"/hub/api/users/{quoted}")
        status = model.status_code
        if status == 404:
            break
        server = (model.json().get("servers") or {}).get("") if status == 200 else None
        if server and server.get("pending") == "spawn":
            await asyncio.sleep(0.5)
            continue
        if server and server.get("ready") and not server.get("pending"):
            with contextlib.suppress(httpx.HTTPError):
                await operator.delete(f"/hub/api/users/{quoted}/server")
            continue
        if not server or not server.get("pending"):  # no server (any more): the user can go
            deleted = await operator.delete(f"/hub/api/users/{quoted}")
            if deleted.status_code in (204, 404):
                break
            status = deleted.status_code
        await asyncio.sleep(0.5)
    else:
        return f"{name}: still on the hub (its server still starting or stopping, last answer HTTP {status})"
    if native:  # a sign-up whose user never signed in is not a hub user yet
        gone = await operator.delete(f"/hub/api/native/users/{quoted}")
        if gone.status_code not in (204, 404):
            return f"{name}: its native sign-up is left (HTTP {gone.status_code})"
    return None


def _kill_account_processes(account: str) -> None:
    """Whatever still runs as the test user's own account (it is about to be deleted): a server the hub
    lost track of must not outlive its user."""
    import psutil

    try:
        uid = pwd.getpwnam(account).pw_uid
    except KeyError:
        return
    found = []
    for proc in psutil.process_iter(["uids"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["uids"] and proc.info["uids"].real == uid:
                proc.kill()
                found.append(proc)
    psutil.wait_procs(found, timeout=5)


def _remove_os_traces(state_dir: Path, hub: Hub, name: str) -> str | None:
    """A local hub with an OS account per user: the test user's database, home and account."""
    from hubfleet.isolation import user_postgres
    from hubfleet.isolation.accounts import home_dirname, remove_account, user_account
    from hubfleet.runtime.layout import layout

    where = layout(state_dir)
    try:
        if hub.user_database is not None:
            db = user_postgres.UserDb.at(where.data_dir, where.state_dir, where.instance, hub.name, name)
            user_postgres.remove(db)
            db.lock_path.unlink(missing_ok=True)
        account = user_account(where.instance, hub.name, name)
        _kill_account_processes(account)
        home = where.homes(hub.name) / home_dirname(name)
        if home.is_symlink():
            home.unlink()
        elif home.is_dir():
            shutil.rmtree(home)
        for attempt in range(10):  # userdel refuses while the account's last processes are going
            try:
                remove_account(account)
                break
            except Exception:
                if attempt == 9:
                    raise
                time.sleep(0.5)
    except Exception as exc:
        return f"{name}: OS account, home or database left: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def _os_accounts(config: FleetConfig, hub: Hub) -> bool:
    if config.clusters[hub.cluster].kind != "local":
        return False
    from hubfleet.backends.local import isolation_mode

    return isolation_mode() == "accounts"


async def _stale(operator: httpx.AsyncClient, keep: list[str]) -> list[str]:
    """Test users of earlier runs older than STALE_SECONDS: left by a test killed outright (SIGKILL, a
    crash), whose own clean-up never ran. A run still going is never that old (its hard timeout and
    clean-up are far shorter), so two tests at once never remove each other's users."""
    try:
        response = await operator.get(
            "/hub/api/users", params={"name_filter": TEST_USER_PREFIX, "limit": 200}
        )
        users = response.json() if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return []
    now = utcnow()
    found = []
    for user in users if isinstance(users, list) else []:
        name, created = str(user.get("name") or ""), parse_time(user.get("created"))
        if (
            is_test_user(name)
            and name not in keep
            and created
            and (now - created).total_seconds() > STALE_SECONDS
        ):
            found.append(name)
    return sorted(found)


async def remove_test_users(
    config: FleetConfig, state_dir: Path, hub: Hub, operator: httpx.AsyncClient, names: list[str]
) -> tuple[list[str], list[str]]:
    """Remove the run's test users `names`, and stale ones of earlier runs, from the hub (and this machine),
    within CLEANUP_SECONDS: what could not be removed (one line each), and the stale users removed."""
    problems: list[str] = []
    limit = asyncio.Semaphore(8)
    os_traces = _os_accounts(config, hub)
    native = hub.auth is not None and hub.auth.type == "native"

    async def one(name: str) -> None:
        async with limit:
            try:
                problem = await _remove_user(operator, name, native)
            except Exception as exc:  # an unreachable hub, an answer that is not JSON: reported, not raised
                problem = f"{name}: not removed from the hub: {type(exc).__name__}"
            if problem:
                problems.append(problem)
                return
            if os_traces and (left := await asyncio.to_thread(_remove_os_traces, state_dir, hub, name)):
                problems.append(left)

    stale: list[str] = []
    try:
        async with asyncio.timeout(CLEANUP_SECONDS):
            await asyncio.gather(*(one(name) for name in names))
            stale = await _stale(operator, names)
            await asyncio.gather(*(one(name) for name in stale))
    except TimeoutError:
        problems.append(
            f"clean-up took longer than {CLEANUP_SECONDS:.0f}s; the next test removes what is left once it "
            "is an hour old"
        )
    return sorted(problems), stale
