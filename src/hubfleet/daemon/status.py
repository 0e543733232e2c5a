"""`hubfleet status`: the daemon's view of each hub plus what each running hub says about itself.

Without a daemon, a local hub that still answers (a killed daemon's) is `unsupervised`: nothing restarts it,
and `hubfleet up` or `hubfleet down` stops it first. One hub's missing files never break the others' rows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from hubfleet.backends.local import hub_endpoint
from hubfleet.backup.status import backup_states
from hubfleet.clock import parse_time
from hubfleet.config.fleet import FleetConfig
from hubfleet.runtime.status_file import read_status
from hubfleet.settings import UserError
from hubfleet.store import open_store
from hubfleet.store.db import DB_FILENAME

UNSUPERVISED = "answers, but no hubfleet daemon runs: `hubfleet up` or `hubfleet down` stops it first"
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}


async def _hub_facts(client: httpx.AsyncClient, url: str, token: str) -> dict[str, Any]:
    """Version, user count and running servers from the hub's REST API (two cheap paginated calls)."""
    headers = {"Authorization": f"token {token}", **PAGINATED}
    try:
        info, users, active = await asyncio.gather(
            client.get(f"{url}/hub/api/", headers=headers),
            client.get(f"{url}/hub/api/users", params={"limit": 1}, headers=headers),
            client.get(f"{url}/hub/api/users", params={"limit": 1, "state": "active"}, headers=headers),
        )
        for response in (info, users, active):
            response.raise_for_status()
        return {
            "version": info.json().get("version"),
            "users": users.json()["_pagination"]["total"],
            "running_servers": active.json()["_pagination"]["total"],
        }
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return {"api_error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/hub/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def _row_facts(client: httpx.AsyncClient, state_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """What one hub says about itself, or why it cannot be asked (never an exception: one hub's missing
    files must not break the status of the fleet)."""
    try:
        endpoint = hub_endpoint(state_dir, row["name"])
    except (UserError, OSError) as exc:
        return {"api_error": str(exc)}
    return await _hub_facts(client, row["url"], endpoint.token)


async def _unsupervised(client: httpx.AsyncClient, state_dir: Path, row: dict[str, Any]) -> bool:
    """A local hub that answers while no daemon runs."""
    try:
        url = hub_endpoint(state_dir, row["name"]).url
    except (UserError, OSError):
        url = row["url"]
    return await _answers(client, url)


def backup_rows(fleet: FleetConfig, state_dir: Path, up_since: str | None) -> dict[str, dict[str, Any]]:
    """Each local hub's backup state (hubfleet.backup.status); a store that cannot be read says so."""
    names = [hub.name for hub in fleet.local_hubs()]
    if not (state_dir / DB_FILENAME).exists():  # never up: no store to make just for a status
        off = {name: fleet.backup_policy(fleet.hubs[name]) is None for name in names}
        return {
            name: {"state": "off" if off[name] else "never", "summary": "off" if off[name] else "never"}
            for name in names
        }
    try:
        with open_store(state_dir) as store:
            states = backup_states(fleet, store, names, up_since=parse_time(up_since))
    except UserError as exc:
        return {name: {"state": "unknown", "summary": f"unknown: {exc}"} for name in names}
    return {name: state.to_json() for name, state in states.items()}


async def collect_status(fleet: FleetConfig, state_dir: Path) -> dict[str, Any]:
    daemon = read_status(state_dir)
    recorded: dict[str, Any] = (daemon or {}).get("hubs", {})
    rows: list[dict[str, Any]] = []
    for hub in fleet.hubs.values():
        cluster = fleet.clusters[hub.cluster]
        entry = recorded.get(hub.name, {})
        rows.append(
            {
                "name": hub.name,
                "community": hub.community,
                "stage": hub.stage,
                "cluster": hub.cluster,
                "url": entry.get("url") or fleet.public_url(hub),
                "state": entry.get("state", "stopped") if cluster.kind == "local" else "not-managed-here",
                "pid": entry.get("pid"),
                "restarts": entry.get("restarts", 0),
                "started_at": entry.get("started_at"),
                "error": entry.get("error", ""),
                "warnings": entry.get("warnings", []),
                "version": None,
                "users": None,
                "running_servers": None,
            }
        )
    async with httpx.AsyncClient(timeout=5.0) as client:
        if daemon is None:
            local = [row for row in rows if row["state"] == "stopped"]
            answering = await asyncio.gather(*(_unsupervised(client, state_dir, row) for row in local))
            for row, answers in zip(local, answering, strict=True):
                if answers:
                    row["state"] = "unsupervised"
                    row["error"] = (
                        "answers, but no hubfleet daemon runs: `hubfleet up` or `hubfleet down` stops it"
                    )
        asked = [row for row in rows if row["state"] in ("running", "unsupervised")]
        facts = await asyncio.gather(*(_row_facts(client, state_dir, row) for row in asked))
    for row, fact in zip(asked, facts, strict=True):
        row.update(fact)
    backups = backup_rows(fleet, state_dir, daemon["started_at"] if daemon else None)
    for row in rows:
        row["backup"] = backups.get(row["name"])
    return {
        "daemon": {"pid": daemon["pid"], "started_at": daemon["started_at"]} if daemon else None,
        "console": daemon.get("console") if daemon else None,
        "front_door": daemon.get("front_door") if daemon else None,
        "hubs": rows,
    }
