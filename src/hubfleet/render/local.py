"""Fleet model -> jupyterhub_config.py for a hub on a local cluster.

Secrets never appear in the rendered text: the file reads them from environment variables that the
supervisor sets when it starts the hub, so the config can be printed, diffed and hashed safely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.quantities import spawner_memory
from hubfleet.render.branding import branding_lines
from hubfleet.render.common import (
    CHECK_USERNAME,
    CONTROL_SERVICE,
    auth_config,
    auth_secrets,
)
from hubfleet.render.identity_hook import local_identity_lines
from hubfleet.render.support_hook import ACCESS_SCOPE, USER_SCOPES, has_help, local_lines, local_service

if TYPE_CHECKING:
    from hubfleet.secrets.store import SecretResolver

# CHECK_USERNAME and CONTROL_SERVICE live in render/common.py: native hubs' start-up code needs them too.
OPERATOR_SERVICE = "hubfleet-operator"
CONTROL_TOKEN_ENV = "HUBFLEET_CONTROL_TOKEN"
OPERATOR_TOKEN_ENV = "HUBFLEET_OPERATOR_TOKEN"

# Least privilege for the control plane: look at users and servers, read metrics, and act only on the
# synthetic check user (create it, start/stop its server, talk to that server).
CONTROL_SCOPES = [
    "list:users",
    "read:users",
    "read:servers",
    "read:hub",
    "read:metrics",
    f"admin:users!user={CHECK_USERNAME}",
    f"servers!user={CHECK_USERNAME}",
    f"access:servers!user={CHECK_USERNAME}",
]
# What an operator's token may do (`hubfleet token HUB`): everything an admin can, and shut the hub down.
OPERATOR_SCOPES = [
    "admin:users",
    "admin:servers",
    "admin:groups",
    "admin:auth_state",
    "admin-ui",
    "tokens",
    "access:servers",
    "read:hub",
    "read:roles",
    "read:metrics",
    "read:services",
    "proxy",
    "shutdown",
]
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


@dataclass(frozen=True)
class LocalRuntime:
    """Where and how one local hub runs; the ports stay fixed for the hub's lifetime so that user
    servers that outlive a hub restart can still reach the hub API."""

    data_dir: Path
    """The hub's own files: config, database, cookie secret, proxy pid."""
    homes_dir: Path
    hub_port: int
    proxy_api_port: int
    bin_dir: Path
    as_root: bool
    broker_socket: Path | None = None
    """Set when user servers run as accounts of their own, started by hubfleet's broker; None: one account."""
    support_port: int | None = None
    """The support service's loopback port (support.help_button); None: no support service (exports)."""


def secret_env(hub: Hub, secrets: SecretResolver) -> dict[str, str]:
    """Environment variables carrying the hub's secrets into its process (`{secret: KEY}` values are
    decrypted here, in memory)."""
    return {
        secret.env: secrets.resolve(hub, secret.value) or ""
        for secret in auth_secrets(hub)
        if secret.value is not None
    }


def dummy_password(hub: Hub, secrets: SecretResolver) -> str | None:
    """A dummy-auth hub's shared password (decrypted in memory), so the synthetic check can sign in through
    the login form as a person does; None for other auth types."""
    password = getattr(hub.auth, "password", None) if hub.auth.type == "dummy" else None
    return (secrets.resolve(hub, password) or None) if password is not None else None


def _auth_lines(fleet: FleetConfig, hub: Hub) -> list[str]:
    auth = auth_config(fleet, hub)
    lines = [f"c.JupyterHub.authenticator_class = {auth.authenticator_class!r}"]
    lines += [
        f"c.{secret.class_name}.{secret.trait} = os.environ.get({secret.env!r}, '')"
        for secret in auth.secrets
    ]
    if auth.startup_code:
        lines.append(auth.startup_code.rstrip())
    lines += [f"c.{auth.class_name}.{name} = {value!r}" for name, value in auth.traits.items()]
    return lines


def render_jupyterhub_config(fleet: FleetConfig, hub: Hub, runtime: LocalRuntime) -> str:
    """The complete jupyterhub_config.py for one local hub."""
    data_dir = runtime.data_dir
    singleuser_args = ["--allow-root"] if runtime.as_root and runtime.broker_socket is None else []
    culler: list[str] = []
    services = [
        {"name": CONTROL_SERVICE, "api_token": f"@env:{CONTROL_TOKEN_ENV}"},
        {"name": OPERATOR_SERVICE, "api_token": f"@env:{OPERATOR_TOKEN_ENV}"},
    ]
    support = has_help(fleet) and runtime.support_port is not None
    control_scopes = [*CONTROL_SCOPES, ACCESS_SCOPE] if support else CONTROL_SCOPES
    roles = [
        {"name": CONTROL_SERVICE, "scopes": control_scopes, "services": [CONTROL_SERVICE]},
        {"name": OPERATOR_SERVICE, "scopes": OPERATOR_SCOPES, "services": [OPERATOR_SERVICE]},
    ]
    if hub.culling.enabled:
        culler = [
            str(runtime.bin_dir / "python"),
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={hub.culling.timeout}",
            f"--cull-every={min(300, max(30, hub.culling.timeout // 4))}",
        ]
        if hub.culling.max_age:
            culler.append(f"--max-age={hub.culling.max_age}")
        services.append({"name": "idle-culler", "command": culler})
        roles.append({"name": "idle-culler", "scopes": CULLER_SCOPES, "services": ["idle-culler"]})

    if support:
        assert runtime.support_port is not None
        roles.append({"name": "user", "scopes": USER_SCOPES})
        services.append(local_service(fleet, hub, data_dir, runtime.bin_dir / "python", runtime.support_port))
    services_src = ",\n    ".join(_service_literal(s) for s in services)
    lines = [
        f"# Generated by hubfleet for hub {hub.name!r} (community {hub.community!r}, stage {hub.stage!r}).",
        "# Do not edit: change the fleet files and redeploy. Secrets come from the environment.",
        "import os",
        "",
        "c = get_config()  # noqa: F821",
        "",
        "# network: loopback only",
        "c.JupyterHub.ip = '127.0.0.1'",
        f"c.JupyterHub.port = {hub.port!r}",
        *_front_door_lines(fleet, hub),
        "c.JupyterHub.hub_ip = '127.0.0.1'",
        f"c.JupyterHub.hub_port = {runtime.hub_port!r}",
        f"c.ConfigurableHTTPProxy.command = {_proxy_command(fleet, hub, runtime)!r}",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{runtime.proxy_api_port}'",
        f"c.ConfigurableHTTPProxy.pid_file = {str(data_dir / 'proxy.pid')!r}",
        "",
        "# state: this hub's own database and cookie secret",
        f"c.JupyterHub.db_url = {'sqlite:///' + str(data_dir / 'jupyterhub.sqlite')!r}",
        f"c.JupyterHub.cookie_secret_file = {str(data_dir / 'jupyterhub_cookie_secret')!r}",
        "# user servers outlive a hub restart; `hubfleet down` stops them through the shutdown API",
        "c.JupyterHub.cleanup_servers = False",
        "",
        "# authentication",
        *_auth_lines(fleet, hub),
        *local_identity_lines(hub, data_dir),
        *branding_lines(fleet, hub, data_dir, help=support),
        "",
        "# user servers",
        *_spawner_lines(hub, runtime),
        f"c.Spawner.cmd = [{str(runtime.bin_dir / 'jupyterhub-singleuser')!r}]",
        f"c.Spawner.args = {singleuser_args!r}",
        "c.Spawner.ip = '127.0.0.1'",
        f"c.Spawner.default_url = {'/lab' if hub.default_ui == 'lab' else '/tree'!r}",
        f"c.Spawner.environment = {{'PATH': {str(runtime.bin_dir) + ':/usr/local/bin:/usr/bin:/bin'!r}}}",
        "c.Spawner.start_timeout = 120",
        "c.Spawner.http_timeout = 120",
    ]
    if hub.resources.memory_limit:
        lines.append(f"c.Spawner.mem_limit = {spawner_memory(hub.resources.memory_limit)!r}")
    if hub.resources.cpu_limit:
        lines.append(f"c.Spawner.cpu_limit = {hub.resources.cpu_limit!r}")
    if hub.max_users:
        lines.append(f"c.JupyterHub.active_server_limit = {hub.max_users!r}")
    lines += [
        "",
        "# services: the control plane, operators, the idle culler and the support desk's form",
        *(local_lines() if support else []),
        f"c.JupyterHub.services = [\n    {services_src},\n]",
        f"c.JupyterHub.load_roles = {roles!r}",
    ]
    if hub.extra_config.strip():
        lines += ["", "# ---- extra_config from the hub file ----", hub.extra_config.rstrip()]
    return "\n".join(lines) + "\n"


def _proxy_command(fleet: FleetConfig, hub: Hub, runtime: LocalRuntime) -> list[str]:
    """The hub's proxy. Behind the front door it passes on the front door's X-Forwarded-Proto (https) instead
    of appending its own (http), which the hub would read last: its cookies are then Secure."""
    proxy = [str(runtime.bin_dir / "configurable-http-proxy")]
    return [*proxy, "--no-x-forward"] if fleet.front_door_site(hub) else proxy


def _front_door_lines(fleet: FleetConfig, hub: Hub) -> list[str]:
    """Behind the fleet's front door: the hub's path under the fleet's domain, and the public address."""
    site = fleet.front_door_site(hub)
    if site is None:
        return []
    lines = [f"# the front door serves this hub at {fleet.public_url(hub)}/"]
    if site[1]:
        lines.append(f"c.JupyterHub.base_url = {site[1] + '/'!r}")
    return lines


def _spawner_lines(hub: Hub, runtime: LocalRuntime) -> list[str]:
    environments = [e.model_dump(mode="json") for e in hub.environments]
    if runtime.broker_socket is not None:
        lines = [
            "# each user's server runs as their own OS account, started by hubfleet's broker",
            "c.JupyterHub.spawner_class = 'hubfleet.isolation.spawner.BrokerSpawner'",
            f"c.BrokerSpawner.socket_path = {str(runtime.broker_socket)!r}",
            "# the broker forks each server from a template that has imported it (spawner: fork)"
            if hub.spawner == "fork"
            else "# the broker starts each server as a fresh process (spawner: process)",
        ]
    elif environments:
        lines = [
            "# single-account mode: every user's server runs as the account that runs hubfleet",
            "c.JupyterHub.spawner_class = 'hubfleet.isolation.spawner.LocalEnvironmentSpawner'",
            f"c.LocalEnvironmentSpawner.home_dir_template = {str(runtime.homes_dir / '{username}')!r}",
        ]
    else:
        lines = [
            "# single-account mode: every user's server runs as the account that runs hubfleet",
            "c.JupyterHub.spawner_class = 'simple'",
            f"c.SimpleLocalProcessSpawner.home_dir_template = {str(runtime.homes_dir / '{username}')!r}",
        ]
    if environments:
        lines += [
            "# environments: the options form, user_options through the API, groups enforced at start",
            f"c.EnvironmentsMixin.environments = {environments!r}",
        ]
    if loaded := _load_groups(hub):
        lines += [
            "# the hub file's groups (auth.groups), for environments and choices limited to groups;",
            "# the check user is in each, so that the synthetic check can start every environment",
            f"c.JupyterHub.load_groups = {loaded!r}",
        ]
    return lines


def _load_groups(hub: Hub) -> dict[str, dict[str, list[str]]]:
    groups = getattr(hub.auth, "groups", None) or {}
    return {name: {"users": sorted({*members, CHECK_USERNAME})} for name, members in sorted(groups.items())}


def _service_literal(service: dict[str, object]) -> str:
    """A service dict as Python source, with `@env:NAME` values read from the environment."""
    parts = []
    for key, value in service.items():
        if isinstance(value, str) and value.startswith("@env:"):
            parts.append(f"{key!r}: os.environ[{value[5:]!r}]")
        else:
            parts.append(f"{key!r}: {value!r}")
    return "{" + ", ".join(parts) + "}"


def config_hash(rendered: str, secrets: dict[str, str]) -> str:
    """Desired-state hash: the rendered text plus the secrets' hashes (never the secrets themselves)."""
    digest = hashlib.sha256(rendered.encode())
    for key in sorted(secrets):
        digest.update(key.encode() + b"=" + hashlib.sha256(secrets[key].encode()).digest())
    return digest.hexdigest()
