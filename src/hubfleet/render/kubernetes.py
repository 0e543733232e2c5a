"""Fleet model -> Zero to JupyterHub (z2jh) chart values for a hub on a kubernetes cluster.

Two documents per hub, passed to `helm upgrade` as two `-f` files:
- `render_z2jh_values`: everything public. It never holds a secret value, so it can be printed, diffed,
  hashed, committed and exported.
- `secret_values`: only the secrets (the dummy password, the control-plane service tokens). Built at deploy
  time, written to a 0600 temporary file and deleted once helm has run.

Each concern is one small `_update_*` function on the values dict (like TLJH's configurer); the hub's
`kubernetes.extra_values` are deep-merged last, as z2jh users expect of their own values files.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import yaml

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub, KubernetesSettings
from hubfleet.config.quantities import spawner_memory
from hubfleet.config.values_secrets import secret_paths, without_secrets
from hubfleet.render import k8s_user_database as user_db
from hubfleet.render import support_hook
from hubfleet.render.branding import hub_pages, native_template_paths
from hubfleet.render.common import auth_config, auth_secrets
from hubfleet.render.environments_k8s import EXTRA_CONFIG_KEY as ENVIRONMENTS_CONFIG_KEY
from hubfleet.render.environments_k8s import gate_config, load_groups, profile_list
from hubfleet.render.identity_hook import EXTRA_CONFIG_KEY as IDENTITY_CONFIG_KEY
from hubfleet.render.identity_hook import KUBERNETES_DB, identity_config
from hubfleet.render.local import (
    CONTROL_SCOPES,
    CONTROL_SERVICE,
    OPERATOR_SCOPES,
    OPERATOR_SERVICE,
)
from hubfleet.render.ready_mode import READY_MARK, ReadySeats, scheduled_ready

HUB_PORT = 8081
METRICS_PATH = "/hub/metrics"
PROMETHEUS_LABELS = {"app.kubernetes.io/name": "prometheus"}
"""Pods allowed through the hub's network policy to scrape /hub/metrics (any namespace)."""


class SecretResolver(Protocol):
    """What the secrets module provides: the plain value of a secret field of a hub, or None."""

    def resolve(self, hub: Hub, value: Any) -> str | None: ...


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, recursively for mappings (lists and scalars are replaced whole, like helm)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def kubernetes_settings(hub: Hub) -> KubernetesSettings:
    return hub.kubernetes or KubernetesSettings()


# --------------------------------------------------------------------------- public values


def render_z2jh_values(
    fleet: FleetConfig,
    hub: Hub,
    *,
    secrets: SecretResolver | None = None,
    now: datetime | None = None,
    ready: ReadySeats | None = None,
) -> dict[str, Any]:
    """The public z2jh values of one hub: no secret value in them.

    `secrets` is accepted so that callers can pass one resolver everywhere; the public document never uses
    it (secret values go to `secret_values`). `ready` is the hub's ready mode (the user placeholders of an
    event's window); None: what the schedule says at `now` (default: the clock), so the same inputs always
    render the same values.
    """
    del secrets
    values: dict[str, Any] = {}
    for update in (
        _update_auth,
        _update_hub,
        _update_services,
        _update_metrics,
        _update_support,
        _update_singleuser,
        _update_profiles,
        _update_culling,
        _update_scheduling,
        _update_ingress,
        _update_branding,
        _update_user_database,
    ):
        update(values, fleet, hub)
    _update_ready_mode(values, fleet, hub, ready or scheduled_ready(fleet, hub, now))
    # a {secret: KEY} of extra_values is only in secret_values (at the same path)
    return deep_merge(values, without_secrets(kubernetes_settings(hub).extra_values))


def _at(values: dict[str, Any], *path: str) -> dict[str, Any]:
    node = values
    for key in path:
        node = node.setdefault(key, {})
    return node


def _update_auth(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    auth = auth_config(fleet, hub)
    config = _at(values, "hub", "config")
    config.setdefault("JupyterHub", {})["authenticator_class"] = auth.authenticator_class
    config[auth.class_name] = dict(auth.traits)
    if auth.startup_code:
        name = "hubfleet-01-native-templates" if hub.auth.type == "native" else f"hubfleet-01-{hub.auth.type}"
        _at(values, "hub", "extraConfig")[name] = auth.startup_code
    if identity := identity_config(hub, KUBERNETES_DB):
        _at(values, "hub", "extraConfig")[IDENTITY_CONFIG_KEY] = identity


def _update_hub(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    # The hub database outlives `helm uninstall` (users' home volumes are not helm's and stay anyway).
    _at(values, "hub", "db", "pvc")["annotations"] = {"helm.sh/resource-policy": "keep"}
    if hub.max_users:
        _at(values, "hub", "config", "JupyterHub")["active_server_limit"] = hub.max_users
    if hub.extra_config.strip():
        _at(values, "hub", "extraConfig")["hubfleet-99-extra-config"] = hub.extra_config.rstrip() + "\n"


def _update_services(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    """The control plane and the operators as hub services with least-privilege roles (as on local hubs).

    Their apiTokens are secret: they are only in `secret_values`."""
    services = _at(values, "hub", "services")
    roles = _at(values, "hub", "loadRoles")
    for name, scopes in ((CONTROL_SERVICE, CONTROL_SCOPES), (OPERATOR_SERVICE, OPERATOR_SCOPES)):
        services[name] = {"name": name}
        roles[name] = {"scopes": list(scopes), "services": [name]}
    if support_hook.has_help(fleet):  # the control plane pulls the support outbox (render/support_hook.py)
        roles[CONTROL_SERVICE]["scopes"].append(support_hook.ACCESS_SCOPE)
        roles["user"] = {"scopes": list(support_hook.USER_SCOPES)}


def _update_metrics(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    """Prometheus scrape annotations on the hub service, and a network policy letting Prometheus in."""
    _at(values, "hub", "service")["annotations"] = {
        "prometheus.io/scrape": "true",
        "prometheus.io/path": METRICS_PATH,
        "prometheus.io/port": str(HUB_PORT),
    }
    _at(values, "hub")["networkPolicy"] = {
        "enabled": True,
        "ingress": [
            {
                "ports": [{"port": HUB_PORT, "protocol": "TCP"}],
                "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(PROMETHEUS_LABELS)}}],
            }
        ],
    }


def _update_support(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    """The support service in the hub pod (render/support_hook.py): its code as a hub.extraFile, the managed
    service in hub.extraConfig, its port on the hub's Service, and the two network policies opened for
    exactly proxy -> hub on that port (the chart's own allow only 8081)."""
    if not support_hook.has_help(fleet):
        return
    port = support_hook.SERVICE_PORT
    _at(values, "hub", "extraFiles")[support_hook.EXTRA_FILES_KEY] = {
        "mountPath": support_hook.KUBERNETES_CODE,
        "stringData": support_hook.HUB_CODE.read_text(),
    }
    code = support_hook.kubernetes_config(fleet, hub)
    _at(values, "hub", "extraConfig")[support_hook.EXTRA_CONFIG_KEY] = code
    service = _at(values, "hub", "service")
    service.setdefault("extraPorts", []).append(
        {"name": "support", "port": port, "targetPort": port, "protocol": "TCP"}
    )
    policy = _at(values, "hub", "networkPolicy")
    policy.setdefault("ingress", []).append(
        {
            "ports": [{"port": port, "protocol": "TCP"}],
            "from": [{"podSelector": {"matchLabels": {"component": "proxy"}}}],
        }
    )
    _at(values, "proxy", "chp", "networkPolicy").setdefault("egress", []).append(
        {
            "to": [{"podSelector": {"matchLabels": {"component": "hub"}}}],
            "ports": [{"port": port, "protocol": "TCP"}],
        }
    )


def _update_singleuser(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    settings = kubernetes_settings(hub)
    singleuser = _at(values, "singleuser")
    if settings.image is not None:
        singleuser["image"] = {"name": settings.image.name, "tag": settings.image.tag}
    res = hub.resources
    # KubeSpawner reads memory as JupyterHub's ByteSpecification does: `4Gi` is written `4G` (quantities.py)
    sizes = (("limit", res.memory_limit), ("guarantee", res.memory_guarantee))
    memory = {k: spawner_memory(v) for k, v in sizes if v}
    cpu = {k: v for k, v in (("limit", res.cpu_limit), ("guarantee", res.cpu_guarantee)) if v}
    if memory:
        singleuser["memory"] = memory
    if cpu:
        singleuser["cpu"] = cpu
    singleuser["defaultUrl"] = "/lab" if hub.default_ui == "lab" else "/tree"
    if settings.storage == "none":
        singleuser["storage"] = {"type": "none"}
    else:
        singleuser["storage"] = {"type": "dynamic", "capacity": settings.storage}
    if settings.node_selector:
        singleuser["nodeSelector"] = dict(settings.node_selector)


def _update_profiles(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    """`environments` as KubeSpawner's profile list, with the gate that enforces their groups
    (render/environments_k8s.py); a dummy or native hub's `auth.groups` as JupyterHub groups."""
    groups = load_groups(hub)
    if groups:
        _at(values, "hub", "config", "JupyterHub")["load_groups"] = groups
    if hub.environments:
        _at(values, "singleuser")["profileList"] = profile_list(hub)
        _at(values, "hub", "extraConfig")[ENVIRONMENTS_CONFIG_KEY] = gate_config(hub)


def _update_culling(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    culling = hub.culling
    cull: dict[str, Any] = {"enabled": culling.enabled}
    if culling.enabled:
        cull["timeout"] = culling.timeout
        cull["every"] = min(300, max(30, culling.timeout // 4))
        cull["maxAge"] = culling.max_age
    values["cull"] = cull


def _update_scheduling(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    replicas = kubernetes_settings(hub).placeholders
    if replicas > 0:
        _at(values, "scheduling")["userPlaceholder"] = {"enabled": True, "replicas": replicas}


def _update_ready_mode(values: dict[str, Any], fleet: FleetConfig, hub: Hub, ready: ReadySeats) -> None:
    """In an event's ready-mode window the user placeholders are the event's seats (never fewer than the
    fixed `kubernetes.placeholders`). Each placeholder is a pause pod with a user pod's requests at a lower
    priority: it holds a seat on a node, and a cluster autoscaler adds nodes for those that do not fit, so
    the nodes are there before the rush (z2jh has no separate node placeholders)."""
    if ready.event is None:
        return
    replicas = max(ready.seats, kubernetes_settings(hub).placeholders)
    _at(values, "scheduling")["userPlaceholder"] = {"enabled": True, "replicas": replicas}


CERT_MANAGER_ANNOTATIONS = {
    "ClusterIssuer": "cert-manager.io/cluster-issuer",
    "Issuer": "cert-manager.io/issuer",
}
"""cert-manager's ingress-shim reads one of these on an Ingress and keeps a certificate for each of its `tls`
entries in the secret that entry names."""


def tls_secret_name(hub: Hub) -> str:
    """The secret holding the hub's certificate, in the hub's namespace (cert-manager writes it)."""
    return f"{hub.name}-tls"


def _update_ingress(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    """Traffic reaches the proxy through an Ingress on the hub's domain, with TLS: the certificate is in
    `<hub>-tls`, issued by cert-manager when the cluster file names an issuer (`ingress.cert_manager_issuer`),
    and the ingress class is the cluster's (`ingress.class_name`). Validation requires a domain on
    kubernetes hubs (a host-less ingress would take every name the controller serves); `.invalid` is only
    seen by models built in code."""
    _at(values, "proxy", "service")["type"] = "ClusterIP"
    domain = hub.domain or f"{hub.name}.invalid"
    ingress: dict[str, Any] = {"enabled": True}
    cluster = fleet.clusters.get(hub.cluster)
    settings = getattr(cluster, "ingress", None)
    annotations: dict[str, str] = {}
    if settings is not None:
        annotations.update(settings.annotations)
        if settings.cert_manager_issuer:
            annotations[CERT_MANAGER_ANNOTATIONS[settings.issuer_kind]] = settings.cert_manager_issuer
        if settings.class_name:
            ingress["ingressClassName"] = settings.class_name
    if annotations:
        ingress["annotations"] = dict(sorted(annotations.items()))
    ingress["hosts"] = [domain]
    ingress["tls"] = [{"hosts": [domain], "secretName": tls_secret_name(hub)}]
    values["ingress"] = ingress


BRANDING_DIR = "/usr/local/etc/jupyterhub/hubfleet-branding"
"""Where the hub pod finds the branding templates and logo (hub.extraFiles, from the hub's Secret)."""


def _update_branding(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    """The community's look, as on local hubs (render/branding.py): the templates and the logo as
    `hub.extraFiles`, JupyterHub's template_vars, logo_file and template_paths. A native hub's template
    path is set in hub.extraConfig after NativeAuthenticator's own (hub.extraConfig runs after hub.config)."""
    branding = hub_pages(fleet, hub, help=support_hook.has_help(fleet))
    if branding is None:
        return
    files = _at(values, "hub", "extraFiles")
    for name, text in branding.templates().items():
        key = "hubfleet-branding-" + name.replace(".", "-")
        files[key] = {"mountPath": f"{BRANDING_DIR}/templates/{name}", "stringData": text}
    config = _at(values, "hub", "config", "JupyterHub")
    config["template_vars"] = branding.template_vars()
    if branding.logo is not None and branding.logo_name is not None:
        files["hubfleet-branding-logo"] = {
            "mountPath": f"{BRANDING_DIR}/{branding.logo_name}",
            "binaryData": base64.b64encode(branding.logo).decode(),
        }
        config["logo_file"] = f"{BRANDING_DIR}/{branding.logo_name}"
    templates = f"{BRANDING_DIR}/templates"
    if branding.native:
        code = "import os\n\n" + native_template_paths(templates)
        _at(values, "hub", "extraConfig")["hubfleet-02-branding-templates"] = code
    else:
        config["template_paths"] = [templates]


def _update_user_database(values: dict[str, Any], fleet: FleetConfig, hub: Hub) -> None:
    """`user_database`: a postgres sidecar in the user pod on its own per-user PVC, created before the spawn
    by a pre_spawn_hook (render/k8s_user_database.py says why trust auth on loopback is safe)."""
    database = hub.user_database
    if database is None:
        return
    singleuser = _at(values, "singleuser")
    singleuser.setdefault("extraContainers", []).append(user_db.sidecar(database))
    _at(values, "singleuser", "storage").setdefault("extraVolumes", []).append(user_db.volume())
    _at(values, "singleuser", "extraEnv").update(user_db.user_env())
    _at(values, "hub", "extraConfig")[user_db.HOOK_KEY] = user_db.hook_code(database)


# --------------------------------------------------------------------------- secret values


def secret_text(hub: Hub, value: Any, resolver: SecretResolver | None) -> str | None:
    """The plain text of a secret field: through the resolver when given, else a SecretStr's value."""
    if value is None:
        return None
    if resolver is not None:
        return resolver.resolve(hub, value)
    getter = getattr(value, "get_secret_value", None)
    if getter is not None:
        return str(getter())
    return value if isinstance(value, str) else None


def secret_values(
    fleet: FleetConfig,
    hub: Hub,
    resolver: SecretResolver | None = None,
    *,
    tokens: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The secret values document of one hub (deploy time only; never printed, logged or exported).

    tokens: the control-plane service tokens {"control": ..., "operator": ...}; left out (for hashing)
    when None.
    """
    values: dict[str, Any] = {}
    for secret in auth_secrets(hub):
        text = secret_text(hub, secret.value, resolver)
        if text:
            _at(values, "hub", "config", secret.class_name)[secret.trait] = text
    for path, ref in secret_paths(kubernetes_settings(hub).extra_values):
        text = secret_text(hub, ref, resolver)
        if text:
            _at(values, *path[:-1])[path[-1]] = text
    if tokens is not None:
        services = _at(values, "hub", "services")
        for name, key in ((CONTROL_SERVICE, "control"), (OPERATOR_SERVICE, "operator")):
            if tokens.get(key):
                services[name] = {"apiToken": tokens[key]}
    return values


def secret_placeholders(fleet: FleetConfig, hub: Hub) -> dict[str, Any]:
    """The shape of `secret_values`, a placeholder naming each secret instead of its value (exports)."""
    values: dict[str, Any] = {}
    for secret in auth_secrets(hub):
        if secret.value is not None:
            _at(values, "hub", "config", secret.class_name)[secret.trait] = f"<set: {secret.label}>"
    for path, ref in secret_paths(kubernetes_settings(hub).extra_values):
        _at(values, *path[:-1])[path[-1]] = f"<set: secret '{ref.secret}' of hub {hub.name}>"
    services = _at(values, "hub", "services")
    for name in (CONTROL_SERVICE, OPERATOR_SERVICE):
        services[name] = {
            "apiToken": f"<set: {name} service token, e.g. the output of `openssl rand -hex 32`>"
        }
    return values


def flatten_secrets(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"hub.config.DummyAuthenticator.password": value, ...}: for hashing and redaction."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_secrets(value, path))
        else:
            flat[path] = str(value)
    return flat


# --------------------------------------------------------------------------- YAML


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(values: Mapping[str, Any]) -> str:
    """Values as YAML in the order they were built; multi-line strings (extraConfig) as literal blocks."""
    return yaml.dump(dict(values), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def values_yaml(
    fleet: FleetConfig,
    hub: Hub,
    *,
    secrets: SecretResolver | None = None,
    now: datetime | None = None,
    ready: ReadySeats | None = None,
) -> str:
    """The public values as a YAML document, with a header saying where it comes from (and, in ready mode,
    for which event: `hubfleet plan` names it as the reason of the change)."""
    ready = ready or scheduled_ready(fleet, hub, now)
    header = (
        f"# z2jh values generated by hubfleet for hub {hub.name!r} "
        f"(community {hub.community!r}, stage {hub.stage!r}).\n"
        "# Secrets are not in this file: they are passed to helm as a second values file at deploy time.\n"
    )
    if ready.event is not None:
        until = f" until {ready.until.isoformat()}" if ready.until else ""
        header += f"# {READY_MARK} event {ready.event}, {ready.seats} seats{until}\n"
    return header + to_yaml(render_z2jh_values(fleet, hub, secrets=secrets, ready=ready))
