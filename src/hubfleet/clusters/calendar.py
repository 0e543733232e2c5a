"""Release calendars of the managed Kubernetes services and the table of z2jh chart versions, shipped as data.

Both files are compiled by hand from the providers' pages (the sources are in their comments) and go stale:
each carries the date it was compiled, and `is_stale` says when that is more than six months ago, so the
inventory can say so instead of trusting old dates. `hubfleet clusters --calendar FILE` / `--chart-table FILE`
replace them with an operator's own copy, validated the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hubfleet.clock import utcnow
from hubfleet.settings import UserError

DATA_DIR = Path(__file__).parent / "data"
CALENDAR_FILE = DATA_DIR / "calendar.yaml"
CHART_TABLE_FILE = DATA_DIR / "chart_versions.yaml"
PROVIDERS = ("aws", "gcp", "azure")
"""Provider keys, as in a cluster file's `credentials.provider` (a `kubeconfig` cluster has no calendar)."""
STALE_AFTER_DAYS = 183
"""Six months: a calendar or chart table compiled longer ago than this is reported as stale."""
HOURS_PER_MONTH = 730

_MINOR = re.compile(r"^1\.(\d+)$")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


class CalendarError(UserError):
    """A calendar or chart table that cannot be used; the message names the file and the key."""


# --------------------------------------------------------------------------- versions


def minor_of(version: str) -> str:
    """'1.30' from 'v1.30.4-eks-a737599', '1.30.4-gke.1348000', '1.30' (ValueError when there is none)."""
    match = _VERSION.match(version.strip())
    if not match:
        raise ValueError(f"'{version}' is not a Kubernetes version such as 1.30 or v1.30.4")
    return f"{int(match.group(1))}.{int(match.group(2))}"


def minor_number(version: str) -> int:
    """30 for '1.30' / 'v1.30.4': minors compare as numbers ('1.9' < '1.10')."""
    return int(minor_of(version).split(".")[1])


# --------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class MinorRelease:
    version: str
    """'1.30'"""
    released: date
    """Generally available at the provider."""
    end_of_standard: date
    """End of standard support (EKS, GKE) / of community support (AKS)."""
    end_of_extended: date | None
    """End of paid extended support (EKS extended, GKE Extended channel, AKS LTS); None: there is none."""
    extended_cost_per_hour: float | None
    """EXTRA cost per cluster-hour while in extended support, on top of the standard price (USD); None when
    the provider does not charge for it or the calendar does not know."""

    def in_extended(self, day: date) -> bool:
        return day > self.end_of_standard and (self.end_of_extended is None or day <= self.end_of_extended)

    def past_extended(self, day: date) -> bool:
        return self.end_of_extended is not None and day > self.end_of_extended


@dataclass(frozen=True)
class ProviderCalendar:
    provider: str
    standard_cost_per_hour: float | None
    extended_cost_per_hour: float | None
    """Total price per cluster-hour in extended support (the extra is this minus the standard price)."""
    note: str
    minors: list[MinorRelease]


@dataclass(frozen=True)
class Calendar:
    path: Path
    compiled: date
    providers: dict[str, ProviderCalendar] = field(default_factory=dict)

    def minors(self, provider: str) -> list[MinorRelease]:
        """The provider's minor versions, oldest first ([] for a provider without a calendar)."""
        entry = self.providers.get(provider)
        return list(entry.minors) if entry else []

    def minor(self, provider: str, version: str) -> MinorRelease | None:
        try:
            wanted = minor_of(version)
        except ValueError:
            return None
        return next((m for m in self.minors(provider) if m.version == wanted), None)

    def is_stale(self, today: date | None = None) -> bool:
        return is_stale(self.compiled, today)


def is_stale(compiled: date, today: date | None = None) -> bool:
    """True when `compiled` is more than six months before today (hubfleet.clock's today by default)."""
    today = today or utcnow().date()
    return (today - compiled).days > STALE_AFTER_DAYS


def load_calendar(path: Path | None = None) -> Calendar:
    """The release calendar shipped with hubfleet, or `path` instead; CalendarError names file and key."""
    path = path or CALENDAR_FILE
    data = _read_yaml(path)
    compiled = _date(data, "compiled", path, "compiled")
    providers_raw = data.get("providers")
    if not isinstance(providers_raw, dict) or not providers_raw:
        raise CalendarError(f"{path}: key 'providers' must map provider names (aws, gcp, azure) to calendars")
    providers: dict[str, ProviderCalendar] = {}
    for name, raw in providers_raw.items():
        where = f"providers.{name}"
        if name not in PROVIDERS:
            raise CalendarError(f"{path}: key '{where}': unknown provider; use one of {', '.join(PROVIDERS)}")
        if not isinstance(raw, dict):
            raise CalendarError(f"{path}: key '{where}' must be a mapping")
        _no_unknown_keys(
            raw, {"standard_cost_per_hour", "extended_cost_per_hour", "note", "minors"}, path, where
        )
        standard = _price(raw, "standard_cost_per_hour", path, where)
        extended = _price(raw, "extended_cost_per_hour", path, where)
        extra = None
        if extended is not None:
            extra = round(extended - (standard or 0.0), 4)
            if extra < 0:
                raise CalendarError(
                    f"{path}: key '{where}.extended_cost_per_hour' ({extended}) is below the standard price "
                    f"({standard}); it is the total price per cluster-hour in extended support"
                )
        minors_raw = raw.get("minors")
        if not isinstance(minors_raw, dict) or not minors_raw:
            raise CalendarError(f"{path}: key '{where}.minors' must map versions ('1.30') to dates")
        minors = [
            _minor_release(str(v), m, extra, path, f"{where}.minors.{v}") for v, m in minors_raw.items()
        ]
        minors.sort(key=lambda m: minor_number(m.version))
        providers[name] = ProviderCalendar(name, standard, extended, str(raw.get("note", "")), minors)
    return Calendar(path, compiled, providers)


def _minor_release(version: str, raw: Any, extra: float | None, path: Path, where: str) -> MinorRelease:
    if not _MINOR.match(version):
        raise CalendarError(f"{path}: key '{where}': '{version}' is not a minor version such as \"1.30\"")
    if not isinstance(raw, dict):
        raise CalendarError(f"{path}: key '{where}' must be a mapping with released, end_of_standard, ...")
    _no_unknown_keys(raw, {"released", "end_of_standard", "end_of_extended"}, path, where)
    released = _date(raw, "released", path, f"{where}.released")
    end_standard = _date(raw, "end_of_standard", path, f"{where}.end_of_standard")
    end_extended = _date(raw, "end_of_extended", path, f"{where}.end_of_extended", required=False)
    if end_standard <= released:
        raise CalendarError(f"{path}: key '{where}.end_of_standard' ({end_standard}) is not after 'released'")
    if end_extended is not None and end_extended <= end_standard:
        raise CalendarError(
            f"{path}: key '{where}.end_of_extended' ({end_extended}) is not after 'end_of_standard'"
        )
    return MinorRelease(version, released, end_standard, end_extended, extra if end_extended else None)


# --------------------------------------------------------------------------- chart table


@dataclass(frozen=True)
class ChartVersion:
    version: str
    """'4.4.0'"""
    kube_min: str
    """Oldest supported Kubernetes minor ('1.28'), from Chart.yaml's kubeVersion."""
    kube_max: str | None
    """Newest supported minor; None: kubeVersion sets no upper bound."""
    jupyterhub: str
    released: date | None = None
    kube_version: str = ""
    """kubeVersion as written in Chart.yaml."""

    def supports(self, kube_minor: str) -> bool:
        wanted = minor_number(kube_minor)
        if wanted < minor_number(self.kube_min):
            return False
        return self.kube_max is None or wanted <= minor_number(self.kube_max)


@dataclass(frozen=True)
class ChartTable:
    path: Path
    compiled: date
    versions: list[ChartVersion]
    """Oldest first."""

    def supporting(self, kube_minor: str) -> list[ChartVersion]:
        """Chart versions whose kubeVersion admits `kube_minor`, oldest first."""
        return [v for v in self.versions if v.supports(kube_minor)]

    def get(self, version: str) -> ChartVersion | None:
        return next((v for v in self.versions if v.version == version.strip()), None)

    def is_stale(self, today: date | None = None) -> bool:
        return is_stale(self.compiled, today)


def parse_kube_version(constraint: str) -> tuple[str, str | None]:
    """('1.28', None) from '>=1.28.0-0'; ('1.23', '1.30') from '>=1.23.0-0 <1.31.0-0' or '>=1.23.0-0, <=1.30'.

    Only the forms Chart.yaml files use: lower bounds >= / >, upper bounds < / <=, separated by commas or
    spaces."""
    lower: str | None = None
    upper: str | None = None
    for part in re.split(r"[,\s]+", constraint.strip()):
        if not part:
            continue
        match = re.match(r"^(>=|>|<=|<)v?(\d+)\.(\d+)(?:\.(\d+))?(?:-\S*)?$", part)
        if not match:
            raise ValueError(
                f"cannot read '{part}' in kubeVersion '{constraint}' (expected >=1.28.0-0 <1.35)"
            )
        op, major, minor, patch = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
        if op == ">=":
            lower = f"{major}.{minor}"
        elif op == ">":
            lower = f"{major}.{minor + (0 if patch is not None else 1)}"
        elif op == "<=":
            upper = f"{major}.{minor}"
        else:  # '<1.31.0-0' and '<1.31' exclude 1.31; '<1.31.2' admits 1.31.0-1.31.1
            upper = f"{major}.{minor - 1}" if not patch or int(patch) == 0 else f"{major}.{minor}"
    if lower is None:
        raise ValueError(f"kubeVersion '{constraint}' has no lower bound (>=1.x)")
    return lower, upper


def load_chart_table(path: Path | None = None) -> ChartTable:
    """The z2jh chart table shipped with hubfleet, or `path` instead; CalendarError names file and key."""
    path = path or CHART_TABLE_FILE
    data = _read_yaml(path)
    compiled = _date(data, "compiled", path, "compiled")
    raw_versions = data.get("versions")
    if not isinstance(raw_versions, dict) or not raw_versions:
        raise CalendarError(f"{path}: key 'versions' must map chart versions ('4.4.0') to their details")
    versions = []
    for version, raw in raw_versions.items():
        where = f"versions.{version}"
        if not re.match(r"^\d+\.\d+\.\d+", str(version)):
            raise CalendarError(f"{path}: key '{where}': '{version}' is not a chart version such as 4.4.0")
        if not isinstance(raw, dict):
            raise CalendarError(f"{path}: key '{where}' must be a mapping with kube_version and jupyterhub")
        _no_unknown_keys(raw, {"kube_version", "jupyterhub", "released"}, path, where)
        constraint = raw.get("kube_version")
        if not isinstance(constraint, str) or not constraint.strip():
            raise CalendarError(f"{path}: key '{where}.kube_version' is missing (Chart.yaml's kubeVersion)")
        try:
            kube_min, kube_max = parse_kube_version(constraint)
        except ValueError as err:
            raise CalendarError(f"{path}: key '{where}.kube_version': {err}") from None
        jupyterhub = raw.get("jupyterhub")
        if not isinstance(jupyterhub, str) or not jupyterhub.strip():
            raise CalendarError(f"{path}: key '{where}.jupyterhub' is missing (Chart.yaml's appVersion)")
        released = _date(raw, "released", path, f"{where}.released", required=False)
        versions.append(ChartVersion(str(version), kube_min, kube_max, jupyterhub, released, constraint))
    versions.sort(key=lambda v: tuple(int(x) for x in re.findall(r"\d+", v.version)[:3]))
    return ChartTable(path, compiled, versions)


# --------------------------------------------------------------------------- reading and checking


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CalendarError(
            f"{path}: file not found; check the path given to --calendar/--chart-table"
        ) from None
    except OSError as err:
        raise CalendarError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CalendarError(f"{path}: not valid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise CalendarError(
            f"{path}: expected a mapping with 'compiled' at the top, found {type(data).__name__}"
        )
    return data


def _date(data: dict[str, Any], key: str, path: Path, where: str, *, required: bool = True) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise CalendarError(f"{path}: key '{where}' is missing (a date such as 2026-11-30)")
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise CalendarError(f"{path}: key '{where}': '{value}' is not a date such as 2026-11-30")


def _price(data: dict[str, Any], key: str, path: Path, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CalendarError(f"{path}: key '{where}.{key}': '{value}' is not a price in USD such as 0.60")
    return float(value)


def _no_unknown_keys(data: dict[str, Any], known: set[str], path: Path, where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise CalendarError(
            f"{path}: key '{where}.{unknown[0]}' is not known here; expected {', '.join(sorted(known))}"
        )
