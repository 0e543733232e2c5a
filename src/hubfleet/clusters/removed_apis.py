"""API versions removed by Kubernetes releases, and the scan of a hub's rendered manifests for them.

The table ships as data (clusters/data/removed_apis.yaml, from the Kubernetes deprecation guide) so that a
newer guide is a data change. The manifests scanned are `helm template`'s output with the real chart
(render.chart_check): what the cluster would be asked to create, not what the values look like.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from hubfleet.settings import UserError

DEFAULT_TABLE = Path(__file__).parent / "data" / "removed_apis.yaml"


def minor_key(version: str) -> tuple[int, int]:
    """ "1.30" or "1.30.4-eks-..." -> (1, 30); a clear error for anything else."""
    parts = version.strip().lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1].split("-")[0].split("+")[0])
    except (IndexError, ValueError):
        raise UserError(
            f"'{version}' is not a Kubernetes version; write it as MAJOR.MINOR, e.g. 1.33"
        ) from None


def minor_of(version: str) -> str:
    major, minor = minor_key(version)
    return f"{major}.{minor}"


@dataclass(frozen=True)
class RemovedApi:
    api_version: str
    kind: str
    removed_in: str
    replacement: str


@dataclass(frozen=True)
class RemovedApiTable:
    compiled: date
    entries: tuple[RemovedApi, ...]
    source: Path

    def removed_between(self, current: str, target: str) -> list[RemovedApi]:
        """Entries removed by a release after `current`, up to and including `target` (those crossed)."""
        low, high = minor_key(current), minor_key(target)
        return [e for e in self.entries if low < minor_key(e.removed_in) <= high]


def load_removed_apis(path: Path | None = None) -> RemovedApiTable:
    """The shipped table, or `path` in the same shape; errors name the file and the entry."""
    source = path or DEFAULT_TABLE
    try:
        data = yaml.safe_load(source.read_text())
    except OSError as exc:
        raise UserError(f"removed-API table {source}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"removed-API table {source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("removed"), dict):
        raise UserError(f"removed-API table {source}: expected `compiled:` and `removed:` (release -> list)")
    compiled = data.get("compiled")
    if not isinstance(compiled, date):
        raise UserError(f"removed-API table {source}: `compiled:` must be a date (YYYY-MM-DD)")
    entries: list[RemovedApi] = []
    for release, items in data["removed"].items():
        minor_key(str(release))
        for n, item in enumerate(items or []):
            if not isinstance(item, dict) or not item.get("api_version") or not item.get("kinds"):
                raise UserError(
                    f"removed-API table {source}: release {release} entry {n + 1} needs api_version and kinds"
                )
            for kind in item["kinds"]:
                entries.append(
                    RemovedApi(
                        str(item["api_version"]), str(kind), str(release), str(item.get("replacement", ""))
                    )
                )
    return RemovedApiTable(compiled, tuple(entries), source)


@dataclass(frozen=True)
class ManifestObject:
    api_version: str
    kind: str
    name: str
    source: str
    """helm's `# Source: chart/templates/...` line, where the object came from."""


def manifest_objects(rendered: str) -> list[ManifestObject]:
    """Every object of a multi-document YAML stream (helm template's output); List items included."""
    objects: list[ManifestObject] = []
    for text in rendered.split("\n---"):
        source = next(
            (line[len("# Source: ") :] for line in text.splitlines() if line.startswith("# Source: ")), ""
        )
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        for item in _items(doc):
            meta = item.get("metadata") or {}
            objects.append(
                ManifestObject(str(item["apiVersion"]), str(item["kind"]), str(meta.get("name", "")), source)
            )
    return objects


def _items(doc: Any) -> Iterable[dict[str, Any]]:
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return []
    if str(doc["kind"]).endswith("List") and isinstance(doc.get("items"), list):
        return [i for i in doc["items"] if isinstance(i, dict) and "apiVersion" in i and "kind" in i]
    return [doc]


@dataclass(frozen=True)
class Finding:
    object: ManifestObject
    removed: RemovedApi

    def describe(self) -> str:
        return (
            f"{self.object.kind} {self.object.name} uses {self.object.api_version}, removed in "
            f"{self.removed.removed_in}; use {self.removed.replacement}"
            + (f" ({self.object.source})" if self.object.source else "")
        )


def scan(objects: Iterable[ManifestObject], removed: Iterable[RemovedApi]) -> list[Finding]:
    table = {(r.api_version, r.kind): r for r in removed}
    return [Finding(o, table[(o.api_version, o.kind)]) for o in objects if (o.api_version, o.kind) in table]
