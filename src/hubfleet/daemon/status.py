"""`hubfleet status`: the daemon's view of each hub plus what each running hub says about itself."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from hubfleet.backends.local import hub_endpoint
from hubfleet.config.fleet import FleetConfig
from hubfleet.runtime.status_file import read_status

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
                "version": None,
                "users": None,
                "running_servers": None,
            }
        )
    async with httpx.AsyncClient(timeout=5.0) as client:
        running = [row for row in rows if row["state"] == "running"]
        facts = await asyncio.gather(
            *(_hub_facts(client, row["url"], hub_endpoint(state_dir, row["name"]).token) for row in running)
        )
    for row, fact in zip(running, facts, strict=True):
        row.update(fact)
    return {
        "daemon": {"pid": daemon["pid"], "started_at": daemon["started_at"]} if daemon else None,
        "console": daemon.get("console") if daemon else None,
        "hubs": rows,
    }
