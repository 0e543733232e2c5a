"""Right to replicate: a standalone bundle of one hub that its community can run without hubfleet.

- kubernetes hub: values.yaml (the public z2jh values hubfleet deploys), secret-values.example.yaml (the
  same shape as the secret values, each secret replaced by a `<set: ...>` placeholder naming it) and a
  README.md with the exact helm and kubectl commands.
- local hub: jupyterhub_config.py (the config hubfleet runs, rewritten to keep its state next to itself
  and to read ports and secrets from environment variables), requirements.txt pinning the versions
  installed here, and a README.md with the exact commands. `--with-data` adds the hub's users and files:
  data/jupyterhub.sqlite (a consistent copy, without the fleet's own service tokens and without the records
  of running servers) and homes/<home>/ (every user's files), which the config then uses.

No secret value is ever written: secrets are named, never copied (the cookie secret is not in the bundle:
a new one is made at the first start, and users sign in again).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from hubfleet import __version__
from hubfleet.backends.kubernetes import helm_upgrade_command, rollout_commands
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub, KubernetesCluster
from hubfleet.config.models_auth import OAUTH_TYPES
from hubfleet.isolation.accounts import AccountError, home_dirname
from hubfleet.render.branding import local_files
from hubfleet.render.common import (
    AUTH_PACKAGES,
    CHECK_USERNAME,
    CLIENT_SECRET_ENV,
    CONTROL_SERVICE,
    DUMMY_PASSWORD_ENV,
    auth_secrets,
    oauth_callback_url,
)
from hubfleet.render.kubernetes import secret_placeholders, to_yaml, values_yaml
from hubfleet.render.local import (
    CONTROL_TOKEN_ENV,
    OPERATOR_SERVICE,
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


DATA_DIR = "data"
HOMES_DIR = "homes"
DATABASE = "jupyterhub.sqlite"


@dataclass(frozen=True)
class HubData:
    """Where a local hub's users and files are, for `--with-data`."""

    database: Path
    homes: Path | None
    """None: the bundle gets the database alone (a retired hub's homes are in its archives)."""
    copy_database: Callable[[Path, Path], None]
    """A consistent copy of a live SQLite database (the caller passes the backup package's)."""


@dataclass
class ExportResult:
    out: Path
    files: list[Path]
    env_vars: dict[str, str] = field(default_factory=dict)
    """Environment variables the bundle reads -> what to set them to (as the README says)."""
    users: list[str] = field(default_factory=list)
    """With data: the users whose homes the bundle holds."""


def export_hub(
    fleet: FleetConfig, hub: Hub, out: Path, *, force: bool = False, data: HubData | None = None
) -> ExportResult:
    """Write the hub's standalone bundle into `out`; refuse a non-empty `out` unless `force`. With `data`
    (local hubs only), its database and homes go into the bundle too."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out} is not empty; choose an empty or new directory, or pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    cluster = fleet.cluster_of(hub)
    if isinstance(cluster, KubernetesCluster):
        if data is not None:
            raise UserError(
                f"hub {hub.name} runs on Kubernetes: its homes are on the cluster's volumes; --with-data is "
                "for local hubs (see docs/backups.md for the volume snapshot route)"
            )
        files, env = _kubernetes_bundle(fleet, hub, cluster)
    else:
        files, env = _local_bundle(fleet, hub, data)
    written = []
    users: list[str] = []
    if data is not None:
        users, homes = write_data(data, out)
        written += [out / DATA_DIR / DATABASE] if (out / DATA_DIR / DATABASE).exists() else []
        written += [out / HOMES_DIR]
        files["jupyterhub_config.py"] = with_data_config(files["jupyterhub_config.py"], homes)
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    if not isinstance(cluster, KubernetesCluster):
        written += _write_branding(fleet, hub, out)
    return ExportResult(out=out, files=written, env_vars=env, users=users)


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


def _local_bundle(
    fleet: FleetConfig, hub: Hub, data: HubData | None = None
) -> tuple[dict[str, str], dict[str, str]]:
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
    database = f"{DATA_DIR}/{DATABASE}" if data else DATABASE
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

The hub database (`{database}`), cookie secret (`jupyterhub_cookie_secret`), proxy pid file and
users' home directories (`homes/`) are created next to `jupyterhub_config.py`. User servers keep running
when the hub restarts; stop them from the admin page before deleting this directory.
{DATA_README if data else ""}"""
    files = {
        "jupyterhub_config.py": standalone_config(fleet, hub),
        "requirements.txt": requirements(hub),
        "README.md": readme,
    }
    return files, env


def _write_branding(fleet: FleetConfig, hub: Hub, out: Path) -> list[Path]:
    """The community's logo and hubfleet's page templates into branding/, where the standalone config's
    `logo_file` and `template_paths` point (beside jupyterhub_config.py, as in the hub's data directory)."""
    written = []
    for name, encoded in local_files(fleet, hub, help=False).items():  # no support service in an export
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(encoded))
        written.append(path)
    return written


# --------------------------------------------------------------------------- --with-data

DATA_README = f"""
## Users and their files

This bundle holds the hub's users: `{DATA_DIR}/{DATABASE}` is its database (users, groups, their API tokens,
hashed; the records of servers that were running are left out) and `{HOMES_DIR}/<user>/` every user's files,
which each user's server opens as its home. Users sign in again (the cookie secret is not exported). The files
belong to whoever unpacked the bundle: as root, give each home to its user's account if you run one per user.
"""


def write_data(data: HubData, out: Path) -> tuple[list[str], dict[str, str]]:
    """The database copy and the homes into the bundle. Returns (usernames, {username: home dir name})."""
    users: list[str] = []
    if data.database.exists():
        (out / DATA_DIR).mkdir(mode=0o700, exist_ok=True)
        copy = out / DATA_DIR / DATABASE
        data.copy_database(data.database, copy)
        users = scrub_database(copy)
    homes_out = out / HOMES_DIR
    homes_out.mkdir(mode=0o711, exist_ok=True)
    dirs: dict[str, str] = {}
    for user in users:
        with contextlib.suppress(AccountError):
            dirs[user] = home_dirname(user)
    if data.homes is not None and data.homes.is_dir():
        wanted = {home: user for user, home in dirs.items() if user != CHECK_USERNAME}
        for home in sorted(data.homes.iterdir(), key=lambda p: p.name):
            if home.name in wanted and home.is_dir() and not home.is_symlink():
                copy_tree(home, homes_out / home.name)
    return users, dirs


def scrub_database(path: Path) -> list[str]:
    """Remove from the copy what belongs to this fleet, not to the community: the fleet's service tokens, its
    synthetic check user, and the records of servers running here (their pids and ports mean nothing
    elsewhere). Its users."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA foreign_keys = ON")  # a user's spawners, tokens and roles go with it
        with connection:
            connection.execute("DELETE FROM users WHERE name = ?", (CHECK_USERNAME,))
            connection.execute(
                "DELETE FROM api_tokens WHERE service_id IN (SELECT id FROM services WHERE name IN (?, ?))",
                (CONTROL_SERVICE, OPERATOR_SERVICE),
            )
            connection.execute("UPDATE spawners SET server_id = NULL, state = NULL")
            connection.execute("DELETE FROM servers")
        connection.execute("VACUUM")  # no deleted token hash left in free pages
        return [row[0] for row in connection.execute("SELECT name FROM users ORDER BY name")]
    finally:
        connection.close()


def copy_tree(source: Path, dest: Path) -> None:
    """Copy a home without following any symlink (a symlink is copied as one), through descriptors of its
    own directories so nothing outside it is read; sockets, pipes and devices are left out."""
    top = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        dest.mkdir(mode=stat.S_IMODE(os.fstat(top).st_mode) | 0o700)
    finally:
        os.close(top)
    for root, dirs, names, dir_fd in os.fwalk(source, follow_symlinks=False):
        target = dest / os.path.relpath(root, source)
        for name in sorted([*dirs, *names]):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=dir_fd), target / name)
            elif stat.S_ISDIR(st.st_mode):
                (target / name).mkdir(mode=stat.S_IMODE(st.st_mode) | 0o700)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
                with os.fdopen(fd, "rb") as src:
                    out_fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(out_fd, "wb") as dst:
                        while block := src.read(1 << 20):
                            dst.write(block)
                    os.chmod(target / name, stat.S_IMODE(os.fstat(src.fileno()).st_mode))


def with_data_config(text: str, homes: dict[str, str]) -> str:
    """The standalone config using the bundle's database and homes (each user's server starts in theirs)."""
    text = _replace_line(
        text,
        r"^c\.JupyterHub\.db_url = .*$",
        f"c.JupyterHub.db_url = 'sqlite:///' + HERE + '/{DATA_DIR}/{DATABASE}'",
    )
    escaped = {user: home for user, home in homes.items() if user != home}
    if not escaped:  # every home is named by its username: the spawner's template finds it
        return text
    hook = f"""
# homes whose directory name is not the username (escaped by hubfleet): each user's server starts there
HOME_DIRS = {escaped!r}


def _home_dir(spawner):
    name = spawner.user.name
    spawner.home_dir = os.path.join(HERE, {HOMES_DIR!r}, HOME_DIRS.get(name, name))


c.Spawner.pre_spawn_hook = _home_dir
"""
    marker = "c.Spawner.cmd = "
    index = text.index(marker)
    return text[:index] + hook.lstrip("\n") + text[index:]
