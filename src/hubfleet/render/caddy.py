"""The front door's Caddy configuration (JSON, loaded through Caddy's admin API) from fleet.yaml `front_door`.

Pure: the daemon passes in where Caddy keeps its files and the certificate PEMs it read. Only `Site`s and the
front door settings decide the config: adding a hub changes one route, and Caddy's reload keeps open
connections (websockets to kernels too: `stream_close_delay`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_front_door import FrontDoor

ACCESS_LOGGER = "door"
STREAM_CLOSE_DELAY = "24h"
"""How long a websocket (a kernel's) that a reload replaced keeps running: a workday and its night; browsers
reconnect after that."""
CREDENTIAL_PARAMETERS = (
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "code",
    "state",
    "_xsrf",
    "password",
    "client_secret",
)
"""Query parameters that can carry a credential (API tokens, OAuth codes): removed from access logs."""


@dataclass(frozen=True, order=True)
class Site:
    """One address of the front door and where it goes."""

    host: str
    path: str
    """'' for the whole host, '/NAME' for a hub served at a path of the fleet's domain."""
    upstream_port: int
    hub: str = ""
    """The hub served ('' for the console)."""


@dataclass(frozen=True)
class CaddyFiles:
    """Where Caddy keeps its state; absolute paths."""

    storage: Path
    """Certificates, ACME accounts, the local CA (kept across restarts: ACME CAs limit how often they issue).
    """
    admin_socket: Path
    access_log: Path
    ca_root: Path | None = None
    """A private ACME CA's root, copied where Caddy can read it."""


def fleet_sites(
    fleet: FleetConfig, hubs: list[str] | None = None, console_port: int | None = None
) -> list[Site]:
    """The sites of the given local hubs (default: all) and the console's (with a domain and a port)."""
    sites = []
    for name in sorted(hubs if hubs is not None else [h.name for h in fleet.local_hubs()]):
        hub = fleet.hubs.get(name)
        site = fleet.front_door_site(hub) if hub is not None else None
        if hub is not None and site is not None and hub.port:
            sites.append(Site(site[0], site[1], hub.port, hub.name))
    door = fleet.settings.front_door
    if door is not None and door.console_domain and console_port:
        sites.append(Site(door.console_domain, "", console_port))
    return sites


def admin_only(admin_socket: Path) -> dict[str, Any]:
    """What Caddy starts with: its admin API on a unix socket only (never the default TCP port 2019, which
    every local user could reach), and no config saved to disk (it may hold a private key)."""
    return {"admin": {"listen": f"unix/{admin_socket}", "config": {"persist": False}}}


def render_caddy_config(
    door: FrontDoor, sites: list[Site], files: CaddyFiles, pems: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The whole Caddy config. `pems` are the (certificate chain, key) PEMs of `certificates.files`."""
    config = admin_only(files.admin_socket)
    config["storage"] = {"module": "file_system", "root": str(files.storage)}
    config["logging"] = _logging(door, files)
    https_server: dict[str, Any] = {
        "listen": [_listen(door.address, door.https_port)],
        "routes": _routes(door, sites),
        "read_header_timeout": "10s",
        "idle_timeout": "5m",
        "automatic_https": {"disable_redirects": True},
    }
    if door.access_log:
        https_server["logs"] = {"default_logger_name": ACCESS_LOGGER}
    tls: dict[str, Any] = {}
    source = door.certificates.source
    if source == "files":
        https_server["automatic_https"]["disable_certificates"] = True
        tls["certificates"] = {
            "load_pem": [{"certificate": cert, "key": key, "tags": ["hubfleet"]} for cert, key in pems or []]
        }
    else:
        tls["automation"] = {"policies": [{"issuers": [_issuer(door, files)]}]}
    config["apps"] = {
        "http": {
            "http_port": door.http_port,
            "https_port": door.https_port,
            "servers": {
                "door": https_server,
                "redirect": {
                    "listen": [_listen(door.address, door.http_port)],
                    "routes": [_to_https(door.https_port)],
                    "automatic_https": {"disable": True},
                },
            },
        },
        "tls": tls,
        "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
    }
    return config


def config_digest(config: dict[str, Any]) -> str:
    """A stable hash of a config (for `plan` and the daemon's status); hashing keeps PEM keys out of files."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _listen(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _issuer(door: FrontDoor, files: CaddyFiles) -> dict[str, Any]:
    if door.certificates.source == "internal":
        return {"module": "internal"}
    acme = door.certificates.acme_settings
    issuer: dict[str, Any] = {"module": "acme", "ca": acme.directory}
    if acme.email:
        issuer["email"] = acme.email
    if files.ca_root is not None:
        issuer["trusted_roots_pem_files"] = [str(files.ca_root)]
    return issuer


def _routes(door: FrontDoor, sites: list[Site]) -> list[dict[str, Any]]:
    """One route per host; the hubs under the fleet's domain share one with a subroute per path."""
    hsts = (
        [
            {
                "handler": "headers",
                "response": {"set": {"Strict-Transport-Security": [f"max-age={door.hsts_max_age}"]}},
            }
        ]
        if door.hsts_max_age
        else []
    )
    by_host: dict[str, list[Site]] = {}
    for site in sorted(sites):
        by_host.setdefault(site.host, []).append(site)
    routes = []
    for host, host_sites in by_host.items():
        whole = next((s for s in host_sites if not s.path), None)
        if whole is not None:
            handlers = [_proxy(whole.upstream_port)]
            if not whole.hub:  # the console: its /metrics stays on loopback, for Prometheus
                handlers = [
                    {
                        "handler": "subroute",
                        "routes": [
                            {"match": [{"path": ["/metrics", "/metrics/*"]}], "handle": [_not_found()]},
                            {"handle": [_proxy(whole.upstream_port)]},
                        ],
                    }
                ]
        else:
            sub = []
            for site in host_sites:
                sub.append({"match": [{"path": [f"{site.path}/*"]}], "handle": [_proxy(site.upstream_port)]})
                sub.append({"match": [{"path": [site.path]}], "handle": [_redirect(f"{site.path}/", 301)]})
            sub.append({"handle": [_not_found()]})
            handlers = [{"handler": "subroute", "routes": sub}]
        routes.append({"match": [{"host": [host]}], "handle": [*hsts, *handlers], "terminal": True})
    routes.append({"handle": [_not_found()]})
    return routes


def _proxy(port: int) -> dict[str, Any]:
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"127.0.0.1:{port}"}],
        "transport": {"protocol": "http", "dial_timeout": "5s"},
        "stream_close_delay": STREAM_CLOSE_DELAY,
    }


def _not_found() -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": 404,
        "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
        "body": "No hub is served at this address.\n",
    }


def _redirect(location: str, status: int) -> dict[str, Any]:
    return {"handler": "static_response", "status_code": status, "headers": {"Location": [location]}}


def _to_https(https_port: int) -> dict[str, Any]:
    port = "" if https_port == 443 else f":{https_port}"
    return {"handle": [_redirect(f"https://{{http.request.host}}{port}{{http.request.uri}}", 308)]}


def _without_credentials() -> dict[str, Any]:
    """A JSON log encoder that drops what could carry a credential: request and response headers (cookies,
    Authorization) and credential query parameters."""
    return {
        "format": "filter",
        "wrap": {"format": "json"},
        "fields": {
            "request>headers": {"filter": "delete"},
            "resp_headers": {"filter": "delete"},
            "request>uri": {
                "filter": "query",
                "actions": [{"type": "delete", "parameter": p} for p in CREDENTIAL_PARAMETERS],
            },
        },
    }


def _logging(door: FrontDoor, files: CaddyFiles) -> dict[str, Any]:
    """Caddy's own log to stderr (the daemon's front-door log) and requests to access.log, both without what
    could carry a credential (Caddy's error entries, e.g. for a hub that is down, hold the request too)."""
    logs: dict[str, Any] = {
        "default": {"writer": {"output": "stderr"}, "encoder": _without_credentials(), "level": "INFO"}
    }
    if door.access_log:
        logs["default"]["exclude"] = [f"http.log.access.{ACCESS_LOGGER}"]
        logs["access"] = {
            "writer": {
                "output": "file",
                "filename": str(files.access_log),
                "roll_size_mb": 50,
                "roll_keep": 5,
                "mode": "0600",
            },
            "encoder": _without_credentials(),
            "include": [f"http.log.access.{ACCESS_LOGGER}"],
        }
    return {"logs": logs}
