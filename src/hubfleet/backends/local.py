"""Local backend: each hub is a JupyterHub process on this machine. The control plane's files about a hub
(tokens, runtime.json, hub.log) are under <state>/hubs/<hub>/; the hub's own (config, database, cookie secret)
under <data>/hubs/<hub>/ and its users' homes under <data>/homes/<hub>/ (runtime/layout.py)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jupyterhub
import psutil

from hubfleet.backends.base import ApplyResult, Backend, HubEndpoint
from hubfleet.checks.synthetic import Via
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.ports import free_port
from hubfleet.render.branding import local_files
from hubfleet.render.local import (
    CONTROL_TOKEN_ENV,
    OPERATOR_TOKEN_ENV,
    LocalRuntime,
    config_hash,
    render_jupyterhub_config,
    secret_env,
)
from hubfleet.runtime.control_client import request as control_request
from hubfleet.runtime.layout import Layout, layout, write_private
from hubfleet.runtime.status_file import read_recorded_status, read_status
from hubfleet.secrets.service_tokens import derive as derive_tokens
from hubfleet.secrets.service_tokens import token_key
from hubfleet.secrets.store import SecretResolver
from hubfleet.settings import Settings, UserError

BIN_DIR = Path(sys.executable).parent
PATH = f"{BIN_DIR}:/usr/local/bin:/usr/bin:/bin"
"""PATH of hubs and user servers: hubfleet's environment first, then the system's."""


@dataclass(frozen=True)
class PreparedHub:
    """Everything needed to start one hub process."""

    name: str
    url: str
    port: int
    data_dir: Path
    """Where the hub process runs: its own files, owned by its service account when there is one."""
    config_path: Path
    rendered: str
    log_path: Path
    config_hash: str
    command: list[str]
    env: dict[str, str]
    """What this hub needs beyond a plain environment (its secrets and tokens); nothing of the daemon's."""
    stage: str = "prod"
    resources: dict[str, Any] = field(default_factory=dict)
    """The hub's `resources`: the broker's limits for its user servers."""
    blocked: str = ""
    """Why this hub must not start in this mode (a prod hub without root and without the opt-in)."""
    public_host: str = ""
    """Where the fleet's front door serves it ('' without a front door), and at which path ('' or '/NAME')."""
    public_path: str = ""
    files: dict[str, str] = field(default_factory=dict)
    """Files the hub reads beside its config, relative to its data directory -> their bytes in base64 (the
    community's logo and page templates, render/branding.py); the supervisor writes them as the hub's."""
    user_database: bool = False
    """Each user gets their own PostgreSQL server, started by the broker (isolation/user_postgres.py)."""
    environments: list[dict[str, Any]] = field(default_factory=list)
    """The hub's environments (JSON): the broker resolves each start against them again."""
    spawner: str = "fork"
    """How the broker starts the hub's servers: `fork` from a template (forkserver.py) or `process`."""

    def __repr__(self) -> str:  # env holds secrets
        return f"PreparedHub(name={self.name!r}, url={self.url!r}, data_dir={str(self.data_dir)!r})"

    def to_wire(self) -> dict[str, Any]:
        """As JSON for the daemon's control socket."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PreparedHub:
        kinds = {f.name: f.type for f in fields(cls)}
        return cls(**{k: Path(v) if kinds[k] == "Path" else v for k, v in data.items() if k in kinds})


def fixed_ports(fleet: FleetConfig) -> set[int]:
    """Ports fleet.yaml names beyond the hubs' (the console's, the front door's): no hub's internal port."""
    door = fleet.settings.front_door
    ports = {door.http_port, door.https_port} if door is not None else set()
    if fleet.settings.monitoring.metrics_port:
        ports.add(fleet.settings.monitoring.metrics_port)
    return ports


def hub_dir(state_dir: Path, hub_name: str) -> Path:
    """The control plane's files about a hub (private to the daemon's account)."""
    return state_dir / "hubs" / hub_name


def isolation_mode() -> str:
    """`accounts` (root: a service account per hub, an OS account per hub user, cgroup limits) or `single`."""
    return "accounts" if os.geteuid() == 0 and Settings().isolation == "auto" else "single"


def _write_private(path: Path, data: dict[str, object]) -> None:
    write_private(path, json.dumps(data, indent=2))


def _read_json(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tokens(state_dir: Path, hub_name: str, key: str | None = None) -> dict[str, str]:
    """The hub's control-plane and operator service tokens, kept in tokens.json (mode 0600): derived from
    `key` (fleet.yaml service_token_key, the same on every machine; the file is then a cache, rewritten
    when it differs), else created at random once."""
    path = hub_dir(state_dir, hub_name) / "tokens.json"
    data = _read_json(path)
    if key is not None:
        derived = derive_tokens(key, hub_name)
        if data != derived:
            _write_private(path, dict(derived))
        return derived
    if not {"control", "operator"} <= data.keys():
        data = {"control": secrets.token_hex(32), "operator": secrets.token_hex(32)}
        _write_private(path, data)
    return {k: str(v) for k, v in data.items()}


def _is_ours(pid: int, program: str, directory: Path) -> bool:
    """A recorded pid still belongs to this hub: same program, working under the hub's directory.
    Guards against killing an unrelated process that reused a stale pid."""
    try:
        proc = psutil.Process(pid)
        return any(program in part for part in proc.cmdline()) and Path(proc.cwd()).is_relative_to(directory)
    except (psutil.Error, OSError, ValueError):
        return False


def owned_pids(where: Layout, hub_name: str, *, proxy_only: bool = False) -> list[int]:
    """Live processes a hub started that outlive it: its proxy and its user servers."""
    data, homes = where.hub_data(hub_name), where.homes(hub_name)
    pids = [
        pid
        for pid in [_read_pid(data / "proxy.pid")]
        if pid and _is_ours(pid, "configurable-http-proxy", data)
    ]
    if not proxy_only:
        pids += [pid for pid in user_server_pids(data) if _is_ours(pid, "jupyterhub-singleuser", homes)]
    return pids


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def user_server_pids(directory: Path) -> list[int]:
    """Pids of user servers recorded in the hub's database (LocalProcessSpawner state)."""
    db = directory / "jupyterhub.sqlite"
    if not db.exists():
        return []
    pids: list[int] = []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
            for (state,) in conn.execute("SELECT state FROM spawners WHERE state IS NOT NULL"):
                pid = (json.loads(state) or {}).get("pid") if isinstance(state, str) else None
                if isinstance(pid, int) and pid > 0:
                    pids.append(pid)
    except (sqlite3.Error, ValueError):
        return []
    return pids


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, fleet: FleetConfig, state_dir: Path, secrets: SecretResolver | None = None):
        super().__init__(fleet, state_dir)
        self._secrets = secrets
        self._isolation: str | None = None
        self._promised: set[int] | None = None

    @property
    def secrets(self) -> SecretResolver:
        """Decrypts `{secret: KEY}` values on first use (identity: $HUBFLEET_AGE_IDENTITY or the default)."""
        if self._secrets is None:
            self._secrets = SecretResolver(self.fleet)
        return self._secrets

    @property
    def layout(self) -> Layout:
        return layout(self.state_dir)

    def runtime(self, hub: Hub) -> LocalRuntime:
        """Internal ports are chosen once and kept, so user servers survive hub restarts."""
        path = hub_dir(self.state_dir, hub.name) / "runtime.json"
        stored = _read_json(path)
        data = dict(stored)
        if not (isinstance(data.get("hub_port"), int) and isinstance(data.get("proxy_api_port"), int)):
            taken = self._promised_ports()
            hub_port = free_port(taken)
            data = {"hub_port": hub_port, "proxy_api_port": free_port(taken | {hub_port})}
        if not isinstance(data.get("support_port"), int):  # the support service (render/support_hook.py)
            own = {data["hub_port"], data["proxy_api_port"]}
            data["support_port"] = free_port(self._promised_ports() | own)
        data["url"] = self.fleet.internal_url(hub)
        if data != stored:
            _write_private(path, data)
            if self._promised is not None:
                self._promised |= {int(data[k]) for k in ("hub_port", "proxy_api_port", "support_port")}
        where = self.layout
        return LocalRuntime(
            data_dir=where.hub_data(hub.name),
            homes_dir=where.homes(hub.name),
            hub_port=int(data["hub_port"]),  # type: ignore[arg-type]
            proxy_api_port=int(data["proxy_api_port"]),  # type: ignore[arg-type]
            support_port=int(data["support_port"]),  # type: ignore[arg-type]
            bin_dir=BIN_DIR,
            as_root=os.geteuid() == 0,
            broker_socket=where.broker_socket(hub.name) if self.isolation == "accounts" else None,
        )

    @property
    def isolation(self) -> str:
        """`isolation_mode()`, read once per backend: it builds Settings from the environment, which cost
        ≈ 2 ms a hub in a plan of 5,000 hubs."""
        if self._isolation is None:
            self._isolation = isolation_mode()
        return self._isolation

    def _promised_ports(self) -> set[int]:
        """Ports that new internal ports must avoid: the hubs' public ports, the fleet's fixed ones, and those
        written down for every hub (a stopped hub does not hold them now but will want them). Read once per
        backend and kept up to date as ports are chosen: reading every runtime.json for each new hub made a
        first plan of thousands of hubs quadratic."""
        if self._promised is None:
            ports = {h.port for h in self.fleet.hubs.values() if h.port} | set(fixed_ports(self.fleet))
            for path in (self.state_dir / "hubs").glob("*/runtime.json"):
                data = _read_json(path)
                ports |= {
                    data[k]
                    for k in ("hub_port", "proxy_api_port", "support_port")
                    if isinstance(data.get(k), int)
                }
            self._promised = ports
        return set(self._promised)

    def render(self, hub: Hub) -> str:
        return render_jupyterhub_config(self.fleet, hub, self.runtime(hub))

    def config_hash(self, hub: Hub) -> str:
        return self.render_and_hash(hub)[1]

    def render_and_hash(self, hub: Hub) -> tuple[str, str]:
        rendered = self.render(hub)
        return rendered, config_hash(
            f"jupyterhub=={jupyterhub.__version__}\n" + rendered, secret_env(hub, self.secrets)
        )

    def endpoint(self, hub_name: str) -> HubEndpoint:
        return hub_endpoint(self.state_dir, hub_name)

    def check_endpoint(self, hub_name: str) -> HubEndpoint:
        return check_endpoint(self.fleet, self.state_dir, hub_name)

    # Local hubs run under the `hubfleet up` daemon: deploy operations are requests to it.

    async def apply(self, hub: Hub) -> ApplyResult:
        wire = self.prepare(hub).to_wire()
        payload = {"op": "apply", "prepared": wire, "community": hub.community, "stage": hub.stage}
        return _result(await control_request(self.state_dir, payload))

    async def rollback(self, hub: Hub) -> ApplyResult:
        return _result(await control_request(self.state_dir, {"op": "rollback", "hub": hub.name}))

    async def remove(self, hub_name: str, *, purge: bool = False) -> ApplyResult:
        reply = await control_request(self.state_dir, {"op": "remove", "hub": hub_name, "purge": purge})
        where = "deleted" if purge else f"kept in {hub_dir(self.state_dir, hub_name)}"
        return ApplyResult(ok=bool(reply.get("ok")), message=reply.get("error") or f"stopped; data {where}")

    def prepare(self, hub: Hub) -> PreparedHub:
        """Everything needed to start the hub; the supervisor writes the config when it launches it."""
        assert hub.port is not None
        runtime = self.runtime(hub)
        directory = runtime.data_dir
        rendered = render_jupyterhub_config(self.fleet, hub, runtime)
        site = self.fleet.front_door_site(hub)
        hub_tokens = tokens(self.state_dir, hub.name, token_key(self.fleet, self.secrets))
        env = {
            **secret_env(hub, self.secrets),
            CONTROL_TOKEN_ENV: hub_tokens["control"],
            OPERATOR_TOKEN_ENV: hub_tokens["operator"],
            "PATH": PATH,
        }
        blocked = ""
        if (
            isolation_mode() == "single"
            and hub.stage == "prod"
            and not self.fleet.settings.isolation.single_account_prod
        ):
            blocked = (
                f"prod hub {hub.name} refused in single-account mode (hubfleet is not root, so every hub "
                "and user would share one OS account and no limit would hold): run `hubfleet up` as root, "
                "or accept this with `isolation: {single_account_prod: true}` in fleet.yaml"
            )
        if hub.user_database is not None and isolation_mode() == "single" and not blocked:
            blocked = (
                f"hub {hub.name} has `user_database`, which gives each user a PostgreSQL server running as "
                "their own OS account: that needs hubfleet running as root (per-user accounts, the broker); "
                "run `hubfleet up` as root, or remove `user_database` from the hub"
            )
        if not blocked:
            blocked = environment_problems(hub)
        return PreparedHub(
            name=hub.name,
            url=str(self.fleet.internal_url(hub)),
            port=hub.port,
            data_dir=directory,
            config_path=directory / "jupyterhub_config.py",
            rendered=rendered,
            log_path=hub_dir(self.state_dir, hub.name) / "hub.log",
            config_hash=config_hash(
                f"jupyterhub=={jupyterhub.__version__}\n" + rendered, secret_env(hub, self.secrets)
            ),
            command=[str(BIN_DIR / "jupyterhub"), "-f", str(directory / "jupyterhub_config.py")],
            env=env,
            stage=hub.stage,
            resources=hub.resources.model_dump(),
            blocked=blocked,
            public_host=site[0] if site else "",
            public_path=site[1] if site else "",
            files=local_files(self.fleet, hub),
            user_database=hub.user_database is not None,
            environments=[e.model_dump(mode="json") for e in hub.environments],
            spawner=hub.spawner,
        )


def environment_problems(hub: Hub) -> str:
    """Why the hub's environments cannot run on this machine (a missing directory or kernel), or ''."""
    from hubfleet.isolation.environments import missing

    problems = [p for e in hub.environments for p in missing(e.model_dump(mode="json"))]
    return "; ".join(f"hub {hub.name}: {p}" for p in problems)


def _result(reply: dict[str, Any]) -> ApplyResult:
    state = reply.get("state") or {}
    message = reply.get("error") or state.get("error", "")
    return ApplyResult(ok=bool(reply.get("ok")), message=message, log_tail=state.get("log_tail", []))


def hub_endpoint(state_dir: Path, hub_name: str, *, operator: bool = False) -> HubEndpoint:
    """URL and token of a hub that hubfleet has started at least once."""
    directory = hub_dir(state_dir, hub_name)
    runtime = _read_json(directory / "runtime.json")
    hub_tokens = _read_json(directory / "tokens.json")
    if "url" not in runtime or "control" not in hub_tokens:
        recorded = (read_recorded_status(state_dir) or {}).get("hubs", {}).get(hub_name)
        if recorded or directory.is_dir():
            missing = [f for f in ("tokens.json", "runtime.json") if not (directory / f).is_file()]
            what = ", ".join(missing) or "damaged"
            raise UserError(
                f"hub {hub_name}: its state files in {directory} are missing ({what}),"
                " so hubfleet cannot reach it; they are made again when it restarts: `hubfleet down`, then "
                "`hubfleet up` (which says what else was lost)"
            )
        raise UserError(f"hub {hub_name}: never started in {state_dir}; run `hubfleet up` first")
    return HubEndpoint(
        name=hub_name, url=str(runtime["url"]), token=str(hub_tokens["operator" if operator else "control"])
    )


def daemon_front_door(state_dir: Path | None) -> dict[str, Any] | None:
    """daemon.json's `front_door` of the daemon running for `state_dir` (None: no daemon or no front door)."""
    daemon = read_status(state_dir) if state_dir is not None else None
    door = (daemon or {}).get("front_door")
    return door if isinstance(door, dict) else None


def front_door_connect(fleet: FleetConfig, port: int | None = None) -> str:
    """HOST:PORT at which the prober reaches the front door: its listen address (loopback for a wildcard)
    and `port` (default: its https_port)."""
    door = fleet.settings.front_door
    if door is None:
        return ""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(door.address, door.address)
    port = port or door.https_port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def front_door_cafiles(fleet: FleetConfig, door: Mapping[str, Any] | None) -> tuple[str, ...]:
    """What the prober trusts besides the system CAs at the front door: its local CA's root (daemon.json
    `local_ca`) and a private ACME CA's root (`certificates.acme.ca_root`)."""
    settings = fleet.settings.front_door
    found: list[str] = []
    if door is not None and door.get("local_ca"):
        found.append(str(door["local_ca"]))
    acme = settings.certificates.acme if settings is not None else None
    if settings is not None and settings.certificates.source == "acme" and acme and acme.ca_root:
        found.append(str(fleet.file(acme.ca_root)))
    return tuple(found)


def check_endpoint(fleet: FleetConfig, state_dir: Path, hub_name: str) -> HubEndpoint:
    """Where the synthetic check reaches a local hub: at its public URL through the fleet's front door while
    that serves it (what its users open), else at its internal address."""
    endpoint = hub_endpoint(state_dir, hub_name)
    door = daemon_front_door(state_dir)
    if door is None or door.get("state") != "running":
        return endpoint
    public = next((url for url, hub in (door.get("sites") or {}).items() if hub == hub_name), None)
    if public is None:
        return endpoint
    port = urlsplit(public).port or 443
    via = Via(front_door_connect(fleet, port), front_door_cafiles(fleet, door))
    return HubEndpoint(name=hub_name, url=public.rstrip("/"), token=endpoint.token, via=via)
