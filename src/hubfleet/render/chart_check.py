"""Kubernetes hubs checked against the real Zero to JupyterHub chart with `helm template`.

helm validates every values file against the chart's values.schema.json, so a key the chart does not know
(`singleuser.extraEnvv` in `kubernetes.extra_values`) fails here, at `hubfleet validate --chart`, instead of
at `helm upgrade` on a live cluster. helm's schema errors name a path in the chart's values; `locate_problems`
turns each into `file:line:col: message` at the key of the fleet file that set it.

Results are cached in the state directory (`chart-checks.json`) under a hash of everything helm saw: the
rendered values, the secret placeholders, the chart file and the helm binary. An unchanged hub costs no helm
run; only passing checks are cached (a failing hub is checked again until it passes).

The commands are valid for helm 3 and helm 4 alike (`helm template NAME CHART -f ... --namespace NS
[--kube-version V]`, `helm version --short`), and both formats of helm's schema errors are read: helm 4 (and
3.18+) `- at '/singleuser': additional properties 'extraEnvv' not allowed`; older helm 3 `- singleuser:
Additional property extraEnvv is not allowed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubfleet.config.fleet import ConfigError, FleetConfig
from hubfleet.config.models import Hub, KubernetesCluster
from hubfleet.render.kubernetes import kubernetes_settings, secret_placeholders, to_yaml, values_yaml

HELM_ENV = "HUBFLEET_HELM"
"""A helm binary to use instead of the repository's `.cache/helm/helm` or `helm` on PATH."""
REPO_HELM = Path(__file__).resolve().parents[3] / ".cache" / "helm" / "helm"
"""Where scripts/install-helm.sh puts helm in a checkout of hubfleet."""
CACHE_FILE = "chart-checks.json"
HELM_TIMEOUT = 120.0
INSTALL_HINT = (
    "no helm found: run scripts/install-helm.sh in the hubfleet checkout (it puts a static helm in "
    f".cache/helm/), install helm (https://helm.sh/docs/intro/install/), or set {HELM_ENV}=/path/to/helm"
)


class ChartCheckError(Exception):
    """helm could not render the chart with these values; the message is helm's own (no secret is in it:
    only placeholders are passed for secrets)."""


# --------------------------------------------------------------------------- helm


def helm_binary() -> Path | None:
    """$HUBFLEET_HELM, else the checkout's .cache/helm/helm, else `helm` on PATH; None when there is none.

    Raises ChartCheckError when $HUBFLEET_HELM names no executable file (a typo must not fall back
    silently)."""
    chosen = os.environ.get(HELM_ENV, "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ChartCheckError(f"{HELM_ENV}={chosen}: no executable file there")
        return path
    if REPO_HELM.is_file() and os.access(REPO_HELM, os.X_OK):
        return REPO_HELM
    found = shutil.which("helm")
    return Path(found) if found else None


def _run_helm(helm: Path, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(helm), *argv],
            capture_output=True,
            text=True,
            timeout=HELM_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ChartCheckError(f"{helm} {argv[0]} did not finish in {HELM_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise ChartCheckError(f"{helm}: cannot run it: {exc.strerror or exc}") from None


def helm_version(helm: Path) -> str:
    """`helm version --short` (v4.1.4+g05fa379, v3.16.2+g13654a5): the same command in helm 3 and 4."""
    result = _run_helm(helm, ["version", "--short"])
    if result.returncode != 0:
        raise ChartCheckError(f"{helm} version failed: {_helm_message(result.stderr)}")
    return result.stdout.strip()


def template_command(
    chart: Path,
    values_files: Sequence[Path],
    *,
    release: str,
    namespace: str,
    kube_version: str | None = None,
) -> list[str]:
    """The arguments of `helm template` (after the binary): valid for helm 3 and helm 4."""
    argv = ["template", release, str(chart)]
    for path in values_files:
        argv += ["-f", str(path)]
    argv += ["--namespace", namespace]
    if kube_version:
        argv += ["--kube-version", kube_version]
    return argv


def helm_template(
    chart: Path,
    values_files: list[Path],
    *,
    release: str,
    namespace: str,
    kube_version: str | None = None,
    helm: Path | None = None,
) -> str:
    """The manifests `helm template` renders from the chart and the values files (later files win).

    Raises ChartCheckError with helm's message when the values do not meet the chart's schema or the chart
    cannot be rendered, and when there is no helm (saying how to get one)."""
    binary = helm or helm_binary()
    if binary is None:
        raise ChartCheckError(INSTALL_HINT)
    argv = template_command(
        chart, values_files, release=release, namespace=namespace, kube_version=kube_version
    )
    result = _run_helm(binary, argv)
    if result.returncode != 0:
        raise ChartCheckError(_helm_message(result.stderr) or f"helm template exited {result.returncode}")
    dropped = _DROPPED.findall(result.stderr)
    if dropped:
        raise ChartCheckError("\n".join(f"- dropped '{path}': {DROPPED_MESSAGE}" for path in dropped))
    return result.stdout


_DROPPED = re.compile(r"cannot overwrite table with non table for [\w-]+\.(\S+)")
"""helm's warning (not an error) when a values file sets a scalar where the chart has a mapping: helm keeps
the chart's mapping and drops the value, so the setting would silently do nothing."""
DROPPED_MESSAGE = (
    "is a mapping in the chart; helm drops a value that is not one (warning: cannot overwrite table)"
)


def _helm_message(stderr: str) -> str:
    """helm's error without its log lines (helm 4 prints `level=INFO msg=...` warnings on stderr)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("level=")]
    return "\n".join(lines).strip()


# --------------------------------------------------------------------------- helm's schema errors


@dataclass(frozen=True)
class SchemaProblem:
    """One complaint of the chart's schema: the values path it is about and what is wrong there."""

    path: tuple[str, ...]
    """Keys (and list indexes, as digits) from the top of the values to the offending key."""
    message: str
    unknown_key: bool = False
    """The last key of `path` is not one the chart allows (a misspelt key)."""


_V4_LINE = re.compile(r"^\s*-\s+at\s+'(?P<pointer>[^']*)':\s*(?P<message>.+?)\s*$")
_V4_PROPERTIES = re.compile(r"^additional propert(?:y|ies) (?P<names>.+) not allowed$")
_V3_LINE = re.compile(r"^\s*-\s+(?P<path>\(root\)|[^\s:]+):\s*(?P<message>.+?)\s*$")
_V3_PROPERTY = re.compile(r"^Additional property (?P<name>\S+) is not allowed$")


_DROPPED_LINE = re.compile(r"^- dropped '(?P<path>[^']+)': ")


def schema_problems(message: str) -> list[SchemaProblem]:
    """The schema complaints in helm's error message (helm 4 / 3.18+ and older helm 3 formats)."""
    problems: list[SchemaProblem] = []
    for line in message.splitlines():
        dropped = _DROPPED_LINE.match(line)
        if dropped is not None:
            problems.append(SchemaProblem(tuple(dropped["path"].split(".")), DROPPED_MESSAGE))
            continue
        v4 = _V4_LINE.match(line)
        if v4 is not None:
            if v4["message"] == "validation failed":
                continue  # a heading: the lines below it say what failed
            path = tuple(_unescape(part) for part in v4["pointer"].split("/")[1:])
            names = _V4_PROPERTIES.match(v4["message"])
            if names is not None:
                for name in re.findall(r"'((?:[^']|'')*)'", names["names"]):
                    problems.append(SchemaProblem((*path, name), "not allowed", True))
            else:
                problems.append(SchemaProblem(path, v4["message"]))
            continue
        v3 = _V3_LINE.match(line)
        if v3 is not None:
            path = () if v3["path"] == "(root)" else tuple(v3["path"].split("."))
            prop = _V3_PROPERTY.match(v3["message"])
            if prop is not None:
                problems.append(SchemaProblem((*path, prop["name"]), "not allowed", True))
            else:
                problems.append(SchemaProblem(path, v3["message"]))
    return problems


def _unescape(part: str) -> str:
    """A JSON pointer segment: `~1` is '/', `~0` is '~' (hub.jupyter.org~1node-purpose)."""
    return part.replace("~1", "/").replace("~0", "~")


def _set_in(values: Any, path: Sequence[str]) -> tuple[int, bool]:
    """How many keys of `path` `values` holds, and whether `values` replaces everything below the point where
    it stops (a scalar, or inside a list: lists replace whole) rather than merging into hubfleet's mapping."""
    node, in_list = values, False
    for depth, key in enumerate(path):
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node, in_list = node[int(key)], True
        else:
            return depth, in_list or not isinstance(node, Mapping)
    return len(path), True


def locate_problems(fleet: FleetConfig, hub: Hub, helm_message: str, chart: Path) -> list[ConfigError]:
    """helm's schema errors of a hub as `file:line:col: message` at the key of the fleet files that set it.

    A path that the hub's `kubernetes.extra_values` sets (in the hub file or inherited) is pointed at there,
    line and column included; a path hubfleet rendered from the hub's other settings is reported at the hub
    file, saying so. An error of helm that is no schema complaint is reported whole, at the hub file."""
    extra = kubernetes_settings(hub).extra_values
    hub_file = str(fleet.hub_files.get(hub.name, f"hub {hub.name}"))
    chart_name = f"the z2jh chart {chart.name.removesuffix('.tgz').removeprefix('jupyterhub-')}"
    problems = schema_problems(helm_message)
    if not problems:
        return [
            ConfigError(hub_file, 1, 1, f"helm template with {chart_name} failed: {_one_line(helm_message)}")
        ]
    errors = []
    for problem in problems:
        dotted = ".".join(problem.path) or "the values"
        if problem.unknown_key:
            parent = ".".join(problem.path[:-1]) or "the top of the values"
            hint = chart_key_hint(chart, problem.path)
            what = f"{chart_name} has no key '{problem.path[-1]}' under {parent}{hint}"
        elif problem.message == DROPPED_MESSAGE:
            what = f"{chart_name}: {dotted} {problem.message}"
        else:
            what = f"{chart_name} rejects {dotted}: {problem.message}"
        depth, whole = _set_in(extra, problem.path)
        if depth == len(problem.path) or (depth > 0 and whole):
            where = ".".join(["kubernetes", "extra_values", *problem.path[:depth]])
            errors.append(ConfigError(*_locate(fleet, hub, where, hub_file), f"{where}: {what}"))
        else:
            errors.append(
                ConfigError(
                    hub_file,
                    1,
                    1,
                    f"{what} (as hubfleet rendered it from this hub's settings: `hubfleet render`)",
                )
            )
    return sorted(set(errors))  # helm 4 may repeat a complaint


_CHART_KEYS: dict[Path, dict[tuple[str, ...], list[str]]] = {}
"""Per chart file: the keys its values schema allows under each values path (read once per process)."""


def chart_key_hint(chart: Path, path: Sequence[str]) -> str:
    """'; did you mean ...?' for a misspelt chart key, from the keys the chart's values schema allows."""
    from hubfleet.suggest import closest

    if chart not in _CHART_KEYS:
        _CHART_KEYS[chart] = _schema_keys(chart)
    known = _CHART_KEYS[chart].get(tuple(path[:-1]))
    close = closest(path[-1], known) if known else None
    return f"; did you mean '{close}'?" if close else ""


def _schema_keys(chart: Path) -> dict[tuple[str, ...], list[str]]:
    import tarfile

    try:
        with tarfile.open(chart) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("/values.schema.json"))
            handle = archive.extractfile(member)
            schema = json.load(handle) if handle is not None else {}
    except (OSError, tarfile.TarError, StopIteration, ValueError):
        return {}
    keys: dict[tuple[str, ...], list[str]] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        properties = node.get("properties") if isinstance(node, dict) else None
        if isinstance(properties, dict):
            keys[path] = sorted(properties)
            for key, child in properties.items():
                walk(child, (*path, key))

    walk(schema, ())
    return keys


def _locate(fleet: FleetConfig, hub: Hub, dotted: str, hub_file: str) -> tuple[str, int, int]:
    locate = getattr(fleet, "locate", None)
    if locate is None:
        return hub_file, 1, 1
    try:
        return locate(hub.name, dotted)
    except (StopIteration, KeyError, ValueError, AttributeError):
        return hub_file, 1, 1


def _one_line(text: str) -> str:
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


# --------------------------------------------------------------------------- the fleet's hubs, cached


@dataclass
class HubCheck:
    """What `validate --chart` says about one Kubernetes hub."""

    hub: str
    status: Literal["ok", "failed", "not-checked"]
    detail: str = ""
    cached: bool = False
    errors: list[ConfigError] = field(default_factory=list)


def chart_file(charts_dir: Path, cluster: KubernetesCluster) -> Path:
    """`jupyterhub-<chart_version>.tgz` in the charts directory (as `helm package` names it)."""
    return charts_dir / f"jupyterhub-{cluster.chart_version}.tgz"


def kubernetes_hubs(fleet: FleetConfig) -> list[tuple[Hub, KubernetesCluster]]:
    """Every hub of the fleet on a kubernetes cluster, by name."""
    found = []
    for name in sorted(fleet.hubs):
        hub = fleet.hubs[name]
        cluster = fleet.clusters.get(hub.cluster)
        if isinstance(cluster, KubernetesCluster):
            found.append((hub, cluster))
    return found


@dataclass
class _Cache:
    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> _Cache:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or not isinstance(data.get("checks"), dict):
            data = {"checks": {}, "helm": {}}
        return cls(path, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _helm_identity(helm: Path, cache: _Cache) -> tuple[str, str]:
    """(identity, version) of the helm binary; the version is asked of helm only when the binary changed, so
    that an unchanged fleet runs no helm at all."""
    stat = helm.resolve().stat()
    identity = f"{helm.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known = cache.data.setdefault("helm", {})
    if known.get("identity") != identity or not known.get("version"):
        known.update(identity=identity, version=helm_version(helm))
    return identity, str(known["version"])


def check_fleet_charts(
    fleet: FleetConfig,
    *,
    charts_dir: Path,
    state_dir: Path,
    helm: Path,
    kube_version: str | None = None,
) -> list[HubCheck]:
    """`helm template` of every Kubernetes hub's values (secrets as placeholders) with the chart of its
    cluster's chart_version from `charts_dir`; hubs whose inputs did not change since a passing check are
    not run again."""
    cache = _Cache.load(state_dir / CACHE_FILE)
    checks: list[HubCheck] = []
    helm_id: tuple[str, str] | None = None
    digests: dict[Path, str] = {}
    for hub, cluster in kubernetes_hubs(fleet):
        chart = chart_file(charts_dir, cluster)
        if not chart.is_file():
            checks.append(HubCheck(hub.name, "not-checked", f"chart {chart.name} is not in {charts_dir}"))
            continue
        if helm_id is None:
            helm_id = _helm_identity(helm, cache)
        if chart not in digests:
            digests[chart] = _file_digest(chart)
        public = values_yaml(fleet, hub)
        placeholders = to_yaml(secret_placeholders(fleet, hub))
        key = hashlib.sha256(
            "\0".join([public, placeholders, digests[chart], *helm_id, hub.name, kube_version or ""]).encode()
        ).hexdigest()
        version = cluster.chart_version
        if cache.data["checks"].get(hub.name) == key:
            checks.append(
                HubCheck(hub.name, "ok", f"chart {version}, unchanged since it passed", cached=True)
            )
            continue
        with tempfile.TemporaryDirectory(prefix=f"hubfleet-chart-{hub.name}-") as tmp:
            values_path, secrets_path = Path(tmp) / "values.yaml", Path(tmp) / "secret-placeholders.yaml"
            values_path.write_text(public)
            secrets_path.write_text(placeholders)
            try:
                helm_template(
                    chart,
                    [values_path, secrets_path],
                    release=hub.name,
                    namespace=hub.name,
                    kube_version=kube_version,
                    helm=helm,
                )
            except ChartCheckError as exc:
                errors = locate_problems(fleet, hub, str(exc), chart)
                cache.data["checks"].pop(hub.name, None)
                checks.append(HubCheck(hub.name, "failed", errors[0].message, errors=errors))
                continue
        cache.data["checks"][hub.name] = key
        checks.append(HubCheck(hub.name, "ok", f"chart {version}, helm template passed"))
    for name in list(cache.data["checks"]):
        if name not in fleet.hubs:
            del cache.data["checks"][name]
    if helm_id is not None:
        cache.save()
    return checks


def helm_version_label(state_dir: Path) -> str | None:
    """The helm version the last check used (from the cache: no helm run)."""
    version = _Cache.load(state_dir / CACHE_FILE).data.get("helm", {}).get("version")
    return str(version) if version else None
