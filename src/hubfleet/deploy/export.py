"""Right to replicate: a standalone bundle of one hub that its community can run without hubfleet.

- kubernetes hub: values.yaml (the public z2jh values hubfleet deploys), secret-values.example.yaml (the
  same shape as the secret values, each secret replaced by a `<set: ...>` placeholder naming it) and a
  README.md with the exact helm and kubectl commands.
- local hub: jupyterhub_config.py (the config hubfleet runs, rewritten to keep its state next to itself
  and to read ports and secrets from environment variables), requirements.txt pinning the versions
  installed here, and a README.md with the exact commands.

No secret value is ever written: secrets are named, never copied.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from hubfleet import __version__
from hubfleet.backends.kubernetes import helm_upgrade_command, rollout_commands
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub, KubernetesCluster
from hubfleet.config.models_auth import OAUTH_TYPES
from hubfleet.render.common import (
    AUTH_PACKAGES,
    CLIENT_SECRET_ENV,
    DUMMY_PASSWORD_ENV,
    auth_secrets,
    oauth_callback_url,
)
from hubfleet.render.kubernetes import secret_placeholders, to_yaml, values_yaml
from hubfleet.render.local import (
    CONTROL_TOKEN_ENV,
    OPERATOR_TOKEN_ENV,
    LocalRuntime,
    render_jupyterhub_config,
)
from hubfleet.settings import UserError

PORT_ENV = "JUPYTERHUB_PORT"
HUB_PORT_ENV = "JUPYTERHUB_HUB_PORT"
PROXY_API_PORT_ENV = "JUPYTERHUB_PROXY_API_PORT"
DEFAULT_HUB_PORT = 8081
DEFAULT_PROXY_API_PORT = 8001
PINNED_PACKAGES = (
    "jupyterhub",
    "configurable-http-proxy",
    "jupyterhub-idle-culler",
    "jupyter-server",
    "jupyterlab",
    "notebook",
    "ipykernel",
)


@dataclass
class ExportResult:
    out: Path
    files: list[Path]
    env_vars: dict[str, str] = field(default_factory=dict)
    """Environment variables the bundle reads -> what to set them to (as the README says)."""


def export_hub(fleet: FleetConfig, hub: Hub, out: Path, *, force: bool = False) -> ExportResult:
    """Write the hub's standalone bundle into `out`; refuse a non-empty `out` unless `force`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out} is not empty; choose an empty or new directory, or pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    cluster = fleet.cluster_of(hub)
    if isinstance(cluster, KubernetesCluster):
        files, env = _kubernetes_bundle(fleet, hub, cluster)
    else:
        files, env = _local_bundle(fleet, hub)
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return ExportResult(out=out, files=written, env_vars=env)


# --------------------------------------------------------------------------- kubernetes


def _kubernetes_bundle(
    fleet: FleetConfig, hub: Hub, cluster: KubernetesCluster
) -> tuple[dict[str, str], dict[str, str]]:
    helm = shlex.join(helm_upgrade_command(hub, cluster, "values.yaml", "secret-values.yaml", context=None))
    rollouts = "\n".join(shlex.join(argv) for argv in rollout_commands(hub, cluster, context=None))
    secrets = _secret_names(hub)
    callback = ""
    if hub.auth is not None and hub.auth.type in OAUTH_TYPES:
        callback = (
            f"\n   Register `{oauth_callback_url(fleet, hub)}` as the callback (redirect) URL of that OAuth "
            "client at the provider."
        )
    readme = f"""# {hub.display_name or hub.name}: JupyterHub on Kubernetes

Exported by hubfleet {__version__} from fleet `{fleet.settings.name}` (hub `{hub.name}`, community
`{hub.community}`). This bundle deploys the same hub without hubfleet: the [Zero to JupyterHub]
Helm chart {cluster.chart_version} with the values in `values.yaml`.

[Zero to JupyterHub]: https://z2jh.jupyter.org/

## Files

- `values.yaml`: the chart values (no secrets).
- `secret-values.example.yaml`: the secret values, each replaced by a `<set: ...>` placeholder.

## Deploy

You need Helm 3 (https://helm.sh/docs/intro/install/), kubectl, and a kube context for your cluster.

1. `cp secret-values.example.yaml secret-values.yaml` and replace every `<set: ...>` placeholder
   ({secrets}). Keep `secret-values.yaml` out of version control.{callback}
2. Point DNS for `{hub.domain}` at your ingress controller, and provide the TLS certificate as the
   secret `{hub.name}-tls` in namespace `{hub.name}` (for example with cert-manager, or
   `kubectl -n {hub.name} create secret tls {hub.name}-tls --cert=tls.crt --key=tls.key`).
3. Install or upgrade the release, then wait for the hub and the proxy:

```
{helm}
{rollouts}
```

Add `--kube-context <context>` to helm and `--context <context>` to kubectl to pick a cluster other
than your current context. To undo the last upgrade: `helm rollback {hub.name} 0 --namespace {hub.name}`.
"""
    files = {
        "values.yaml": values_yaml(fleet, hub),
        "secret-values.example.yaml": "# Copy to secret-values.yaml; replace each <set: ...> placeholder.\n"
        + to_yaml(secret_placeholders(fleet, hub)),
        "README.md": readme,
    }
    return files, {}


def _secret_names(hub: Hub) -> str:
    names = [_secret_description(secret) for secret in auth_secrets(hub) if secret.value is not None]
    names.append("the `hubfleet` and `hubfleet-operator` service tokens (any random string)")
    return "; ".join(names)


def _secret_description(secret) -> str:  # noqa: ANN001 - SecretTrait
    if secret.trait == "password":
        return "the dummy password users log in with"
    return secret.label


# --------------------------------------------------------------------------- local

_HUB_DIR = "/__hubfleet_hub_dir__"
_BIN_DIR = "/__hubfleet_bin_dir__"
_SENTINEL_LITERAL = re.compile(r"'([^'\\\n]*(?:__hubfleet_hub_dir__|__hubfleet_bin_dir__)[^'\\\n]*)'")
_PREAMBLE = """import os
import sys

# Standalone: state (database, cookie secret, homes) lives next to this file; programs come from the
# Python environment running jupyterhub (its bin/ directory).
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


# A secret the hub cannot run safely without: refuse to start when it is unset or empty (an empty dummy
# password would let any password in).
def required_env(name, what):
    value = os.environ.get(name, '')
    if not value:
        raise SystemExit(
            f"jupyterhub_config.py: the environment variable {name} ({what}) is not set; "
            "set it as README.md says, then start the hub again"
        )
    return value
"""


def _path_expression(match: re.Match[str]) -> str:
    parts = re.split(f"({re.escape(_HUB_DIR)}|{re.escape(_BIN_DIR)})", match.group(1))
    exprs = []
    for part in parts:
        if part == _HUB_DIR:
            exprs.append("HERE")
        elif part == _BIN_DIR:
            exprs.append("BIN")
        elif part:
            exprs.append(repr(part))
    return " + ".join(exprs)


def _replace_line(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, lambda _: replacement, text, count=1, flags=re.MULTILINE)
    if count != 1:  # the local renderer changed: fail loudly rather than export a hubfleet-bound config
        raise RuntimeError(f"export: no line matching {pattern!r} in the rendered config")
    return new


def standalone_config(fleet: FleetConfig, hub: Hub) -> str:
    """The hub's jupyterhub_config.py as hubfleet renders it, rewritten to need no hubfleet: paths relative
    to the file, programs from the running Python environment, ports and secrets from the environment."""
    runtime = LocalRuntime(
        data_dir=Path(_HUB_DIR),
        homes_dir=Path(_HUB_DIR) / "homes",
        hub_port=DEFAULT_HUB_PORT,
        proxy_api_port=DEFAULT_PROXY_API_PORT,
        bin_dir=Path(_BIN_DIR),
        as_root=False,
    )
    text = render_jupyterhub_config(fleet, hub.model_copy(update={"extra_config": ""}), runtime)
    text = _SENTINEL_LITERAL.sub(_path_expression, text)
    if _HUB_DIR in text or _BIN_DIR in text:
        raise RuntimeError("export: a hubfleet path is left in the rendered config")
    header = (
        f"# JupyterHub config of hub {hub.name!r} (community {hub.community!r}), exported by hubfleet "
        f"{__version__}.\n# Standalone: see README.md for the commands and environment variables.\n"
    )
    text = re.sub(r"\A(#[^\n]*\n)+", lambda _: header, text, count=1)
    text = text.replace("import os\n", _PREAMBLE, 1)
    text = _replace_line(
        text,
        r"^c\.JupyterHub\.port = \d+$",
        f"c.JupyterHub.port = int(os.environ.get({PORT_ENV!r}, '{hub.port}'))",
    )
    text = _replace_line(
        text,
        r"^c\.JupyterHub\.hub_port = \d+$",
        f"c.JupyterHub.hub_port = int(os.environ.get({HUB_PORT_ENV!r}, '{DEFAULT_HUB_PORT}'))",
    )
    text = _replace_line(
        text,
        r"^c\.ConfigurableHTTPProxy\.api_url = .*$",
        "c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:' + "
        f"os.environ.get({PROXY_API_PORT_ENV!r}, '{DEFAULT_PROXY_API_PORT}')",
    )
    text = _replace_line(
        text,
        r"^c\.Spawner\.args = .*$",
        "# jupyter-server refuses to run as root without --allow-root\n"
        "c.Spawner.args = ['--allow-root'] if os.geteuid() == 0 else []",
    )
    text = _require_secrets(text, hub)
    if hub.extra_config.strip():
        text += "\n# ---- extra_config from the hub file ----\n" + hub.extra_config.rstrip() + "\n"
    return text


def _require_secrets(text: str, hub: Hub) -> str:
    """Every secret the standalone config reads is required: unset, the hub refuses to start naming it."""
    for secret in auth_secrets(hub):
        text = _replace_line(
            text,
            rf"^c\.{secret.class_name}\.{secret.trait} = os\.environ\.get\({secret.env!r}, ''\)$",
            f"c.{secret.class_name}.{secret.trait} = "
            f"required_env({secret.env!r}, {_secret_description(secret)!r})",
        )
    for env, what in (
        (CONTROL_TOKEN_ENV, "the hubfleet service token"),
        (OPERATOR_TOKEN_ENV, "the hubfleet-operator service token"),
    ):
        text = text.replace(f"os.environ[{env!r}]", f"required_env({env!r}, {what!r})")
    return text


def local_env_vars(hub: Hub) -> dict[str, str]:
    """Environment variables the standalone config reads -> what to set them to."""
    env = {
        CONTROL_TOKEN_ENV: "$(openssl rand -hex 32)",
        OPERATOR_TOKEN_ENV: "$(openssl rand -hex 32)",
    }
    for secret in auth_secrets(hub):  # required even where hubfleet's own hub runs without (fail closed)
        env[secret.env] = f"'<set: {secret.label}>'"
    env[PORT_ENV] = str(hub.port)
    return env


def requirements(hub: Hub) -> str:
    packages = list(PINNED_PACKAGES)
    if hub.auth is not None:
        packages += AUTH_PACKAGES.get(hub.auth.type, ())
    lines = ["# The versions hubfleet runs this hub with."]
    for name in packages:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def _local_bundle(fleet: FleetConfig, hub: Hub) -> tuple[dict[str, str], dict[str, str]]:
    env = local_env_vars(hub)
    exports = "\n".join(f"export {name}={value}" for name, value in env.items())
    dummy = (
        f"\n- `{DUMMY_PASSWORD_ENV}` (required; the hub refuses to start without it): the shared password "
        "users log in with (dummy authenticator)."
        if DUMMY_PASSWORD_ENV in env
        else ""
    )
    if CLIENT_SECRET_ENV in env:
        dummy += (
            f"\n- `{CLIENT_SECRET_ENV}` (required): the client secret of the OAuth client "
            f"`{hub.auth.client_id}` registered at the provider with the callback URL "  # type: ignore[union-attr]
            f"`{oauth_callback_url(fleet, hub)}`."
        )
    readme = f"""# {hub.display_name or hub.name}: standalone JupyterHub

Exported by hubfleet {__version__} from fleet `{fleet.settings.name}` (hub `{hub.name}`, community
`{hub.community}`). This directory runs the same hub without hubfleet, on this machine, listening on
127.0.0.1 only.

## Run it

Needs Python 3.11+. From this directory:

```
python3 -m venv .venv
.venv/bin/pip install -r requirements.txt
{exports}
.venv/bin/jupyterhub -f jupyterhub_config.py
```

Then open http://127.0.0.1:{hub.port}/ (or the port in `{PORT_ENV}`).

## Environment variables

- `{CONTROL_TOKEN_ENV}`, `{OPERATOR_TOKEN_ENV}` (required): API tokens of the `hubfleet` and
  `hubfleet-operator` services (any random string). They let an operator's tools use the hub API;
  remove those services from `jupyterhub_config.py` if you do not want them.{dummy}
- `{PORT_ENV}` (default {hub.port}): the public port.
- `{HUB_PORT_ENV}` (default {DEFAULT_HUB_PORT}), `{PROXY_API_PORT_ENV}` (default
  {DEFAULT_PROXY_API_PORT}): internal ports of the hub API and the proxy API (127.0.0.1).

## State

The hub database (`jupyterhub.sqlite`), cookie secret (`jupyterhub_cookie_secret`), proxy pid file and
users' home directories (`homes/`) are created next to `jupyterhub_config.py`. User servers keep running
when the hub restarts; stop them from the admin page before deleting this directory.
"""
    files = {
        "jupyterhub_config.py": standalone_config(fleet, hub),
        "requirements.txt": requirements(hub),
        "README.md": readme,
    }
    return files, env
