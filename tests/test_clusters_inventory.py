"""Cluster inventory: the shipped release calendar and chart table, versions read live, the store, and
`hubfleet clusters`.

No Kubernetes API server or cloud account exists here: kubectl, helm, gcloud, aws and az are the fakes of
tests/fake_clouds.py on PATH, answering with the JSON shapes the real CLIs document (see that module). The
fleet is tests/fixtures/k8s-fleet (an EKS, a GKE, an AKS and a kubeconfig cluster) at different versions:
EKS 1.32 past end of standard support (paid extended support), GKE 1.35 in standard support, AKS 1.27 past
even LTS. The store is the real SQLite store; `hubfleet clusters` runs as a real subprocess. Dates that
depend on today are fixed in-process (`today=`) and computed from the output's own `today` in subprocesses.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import fake_clouds
from fleet_helpers import hubfleet
from hubfleet.clusters.calendar import (
    CalendarError,
    load_calendar,
    load_chart_table,
    minor_of,
    parse_kube_version,
)
from hubfleet.clusters.inventory import build_inventory, latest_versions, record_versions, version_history
from hubfleet.clusters.versions import ClusterVersions, read_versions
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.settings import UserError
from hubfleet.store import open_store
from postgres_helpers import PostgresServer, postgres_server

FIXTURE = Path(__file__).parent / "fixtures" / "k8s-fleet"
CHART = Path(__file__).resolve().parents[2] / "shared" / "charts" / "jupyterhub-4.4.0.tgz"
TODAY = date(2026, 11, 30)


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(FIXTURE)


@pytest.fixture
def clouds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The fake CLIs on PATH (nothing else), answering the k8s-fleet scenario; env and call log."""
    log = tmp_path / "calls.jsonl"
    env = fake_clouds.install(tmp_path / "fakebin", fake_clouds.k8s_fleet_scenario(), log)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {"env": env, "log": log, "bin": tmp_path / "fakebin"}


# --------------------------------------------------------------------------- shipped data


def test_shipped_calendar_covers_every_provider_and_prices_extended_support() -> None:
    calendar = load_calendar()
    assert calendar.compiled == date(2026, 11, 30)
    wanted = [f"1.{n}" for n in range(27, 35)]
    for provider in ("aws", "gcp", "azure"):
        versions = [m.version for m in calendar.minors(provider)]
        assert set(wanted) <= set(versions), provider
        assert versions == sorted(versions, key=lambda v: int(v.split(".")[1]))  # oldest first
        for release in calendar.minors(provider):
            assert release.released < release.end_of_standard < (release.end_of_extended or date.max)
    eks = calendar.minor("aws", "v1.31.2-eks-7f9249a")
    assert eks is not None and (eks.released, eks.end_of_standard, eks.end_of_extended) == (
        date(2024, 9, 26),
        date(2025, 11, 26),
        date(2026, 11, 26),
    )
    assert eks.extended_cost_per_hour == pytest.approx(0.50)  # $0.60 in extended - $0.10 in standard
    assert calendar.minor("aws", "1.12") is None and calendar.minor("kubeconfig", "1.30") is None
    assert not calendar.is_stale(TODAY) and calendar.is_stale(date(2027, 6, 2))


def test_shipped_chart_table_agrees_with_the_real_chart() -> None:
    """4.4.0's row is checked against Chart.yaml inside the real z2jh chart archive."""
    table = load_chart_table()
    with tarfile.open(CHART) as archive:
        chart = yaml.safe_load(archive.extractfile("jupyterhub/Chart.yaml").read())  # type: ignore[union-attr]
    row = table.get(chart["version"])
    assert row is not None
    assert (row.kube_version, row.jupyterhub) == (chart["kubeVersion"], chart["appVersion"])
    assert (row.kube_min, row.kube_max) == ("1.28", None)
    versions = [v.version for v in table.versions]
    assert {"3.3.8", "4.0.0", "4.1.0", "4.2.0", "4.3.5", "4.4.0"} <= set(versions)
    assert [v.version for v in table.supporting("1.27")] == [v for v in versions if v.startswith("3.")]
    assert "4.4.0" in [v.version for v in table.supporting("1.35")]
    assert not table.is_stale(TODAY)


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        (">=1.28.0-0", ("1.28", None)),
        (">=1.23.0-0 <1.31.0-0", ("1.23", "1.30")),
        (">= 1.23.0-0, <= 1.30", None),  # spaces after operators are not a Chart.yaml form we read
        (">=1.23.0-0, <=1.30", ("1.23", "1.30")),
        (">1.27.0", ("1.27", None)),  # 1.27.1 and later patches of 1.27 qualify
        ("<1.31.2", None),
    ],
)
def test_kube_version_constraints(constraint: str, expected: tuple[str, str | None] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            parse_kube_version(constraint)
    else:
        assert parse_kube_version(constraint) == expected


def test_minor_of_provider_version_strings() -> None:
    assert [minor_of(v) for v in ("v1.32.9-eks-113cf36", "1.35.2-gke.1485000", "1.27.9", "1.30")] == [
        "1.32",
        "1.35",
        "1.27",
        "1.30",
    ]
    with pytest.raises(ValueError, match="not a Kubernetes version"):
        minor_of("latest")


CALENDAR_OK = """\
compiled: 2026-01-15
providers:
  aws:
    standard_cost_per_hour: 0.10
    extended_cost_per_hour: 0.60
    minors:
      "1.30": {released: 2024-05-23, end_of_standard: 2025-07-23, end_of_extended: 2026-07-23}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("compiled: 2026-01-15\nproviders: [\n", "not valid YAML at line 3"),
        ("- a list\n", "expected a mapping with 'compiled' at the top, found list"),
        (CALENDAR_OK.replace("compiled: 2026-01-15\n", ""), "key 'compiled' is missing"),
        (CALENDAR_OK.replace("2026-01-15", "15/01/2026"), "key 'compiled': '15/01/2026' is not a date"),
        (CALENDAR_OK.replace("aws:", "ibm:"), "key 'providers.ibm': unknown provider; use one of aws"),
        (
            CALENDAR_OK.replace('"1.30"', '"1.30.4"'),
            "key 'providers.aws.minors.1.30.4': '1.30.4' is not a minor",
        ),
        (
            CALENDAR_OK.replace("end_of_standard: 2025-07-23, ", ""),
            "key 'providers.aws.minors.1.30.end_of_standard' is missing",
        ),
        (
            CALENDAR_OK.replace("end_of_extended: 2026-07-23", "end_of_extended: 2025-01-01"),
            "key 'providers.aws.minors.1.30.end_of_extended' (2025-01-01) is not after 'end_of_standard'",
        ),
        (
            CALENDAR_OK.replace("0.60", "cheap"),
            "key 'providers.aws.extended_cost_per_hour': 'cheap' is not a price",
        ),
        (CALENDAR_OK.replace("0.60", "0.05"), "is below the standard price"),
        (
            CALENDAR_OK.replace("    minors:", "    extended: true\n    minors:"),
            "key 'providers.aws.extended' is not known here",
        ),
    ],
)
def test_malformed_calendar_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(text)
    with pytest.raises(CalendarError) as exc:
        load_calendar(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("compiled: 2026-01-15\nversions: {}\n", "key 'versions' must map chart versions"),
        (
            "compiled: 2026-01-15\nversions:\n  4.4.0: {jupyterhub: 5.5.0}\n",
            "key 'versions.4.4.0.kube_version' is missing",
        ),
        (
            "compiled: 2026-01-15\nversions:\n  4.4.0: {kube_version: '~1.28', jupyterhub: 5.5.0}\n",
            "key 'versions.4.4.0.kube_version': cannot read '~1.28'",
        ),
        (
            "compiled: 2026-01-15\nversions:\n  latest: {kube_version: '>=1.28.0-0', jupyterhub: 5.5.0}\n",
            "'latest' is not a chart version",
        ),
    ],
)
def test_malformed_chart_table_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "charts.yaml"
    path.write_text(text)
    with pytest.raises(CalendarError, match="^" + str(path).replace(".", r"\.")) as exc:
        load_chart_table(path)
    assert message in str(exc.value)


# --------------------------------------------------------------------------- live reading (fake CLIs)


def test_read_versions_of_each_provider(fleet: FleetConfig, clouds: dict[str, Any]) -> None:
    eks = read_versions(fleet, "eks")
    assert (eks.provider, eks.region, eks.control_plane, eks.control_plane_version) == (
        "aws",
        "us-west-2",
        "1.32",
        "v1.32.9-eks-113cf36",
    )
    assert eks.node_pools == {"general": "1.32", "gpu": "1.28"}
    # other charts' releases (ingress-nginx) are left out
    assert eks.chart_versions == {
        "astro": "4.4.0",
        "astro-staging": "4.4.0",
        "bio": "4.3.5",
        "bio-staging": "4.4.0",
    }
    assert eks.read_at.tzinfo is not None
    ctx = fake_clouds.EKS_CONTEXT
    assert fake_clouds.calls(clouds["log"]) == [
        ["aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text"],
        ["aws", "eks", "update-kubeconfig", "--name", "fleet-two", "--region", "us-west-2"],
        ["kubectl", "version", "-o", "json", "--context", ctx],
        ["aws", "eks", "list-nodegroups", "--cluster-name", "fleet-two", "--region", "us-west-2",
         "--output", "json"],
        ["aws", "eks", "describe-nodegroup", "--cluster-name", "fleet-two", "--nodegroup-name", "general",
         "--region", "us-west-2", "--output", "json"],
        ["aws", "eks", "describe-nodegroup", "--cluster-name", "fleet-two", "--nodegroup-name", "gpu",
         "--region", "us-west-2", "--output", "json"],
        ["helm", "list", "-A", "-o", "json", "--kube-context", ctx],
    ]  # fmt: skip

    gke = read_versions(fleet, "gke")
    assert (gke.region, gke.control_plane, gke.node_pools) == (
        "europe-west1-b",
        "1.35",
        {"default-pool": "1.35", "highmem": "1.34"},
    )
    aks = read_versions(fleet, "aks")
    assert (aks.region, aks.control_plane, aks.node_pools, aks.chart_versions) == (
        "westeurope",
        "1.27",
        {"nodepool1": "1.27"},
        {"chem-staging": "4.3.5"},
    )
    kube = read_versions(fleet, "kube")  # no provider CLI: nodes grouped by pool label, oldest kubelet
    assert (kube.provider, kube.region, kube.control_plane, kube.node_pools) == (
        "kubeconfig",
        "",
        "1.30",
        {"core": "1.29", "users": "1.30"},
    )
    assert ["kubectl", "get", "nodes", "-o", "json", "--context", "research"] in fake_clouds.calls(
        clouds["log"]
    )


def test_missing_cli_names_the_cluster_and_how_to_install(fleet: FleetConfig, clouds: dict[str, Any]) -> None:
    (clouds["bin"] / "az").unlink()
    with pytest.raises(UserError) as exc:
        read_versions(fleet, "aks")
    assert str(exc.value).startswith(
        "cluster 'aks' (azure): az not found on PATH: install the Azure CLI: https://"
    )
    (clouds["bin"] / "kubectl").unlink()
    with pytest.raises(UserError, match=r"^cluster 'kube' \(kubeconfig\): kubectl not found on PATH"):
        read_versions(fleet, "kube")


def test_cli_answering_an_error_names_cluster_command_and_login(
    fleet: FleetConfig, clouds: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "node-pools list")
    with pytest.raises(UserError) as exc:
        read_versions(fleet, "gke")
    message = str(exc.value)
    assert message.startswith("cluster 'gke' (gcp): `gcloud container node-pools list --cluster fleet-one")
    assert "You do not currently have an active account selected" in message
    assert message.endswith("check the project, zone and cluster name")  # kube_credentials' login hint
    assert "gcloud auth login" in message


def test_cli_answering_nonsense_is_refused(
    fleet: FleetConfig, clouds: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GARBAGE", "kubectl version")
    with pytest.raises(UserError) as exc:
        read_versions(fleet, "eks")
    assert str(exc.value).startswith(
        "cluster 'eks': `kubectl version -o json --context "
        "arn:aws:eks:us-west-2:123456789012:cluster/fleet-two` answered with something that is not JSON "
        "('<html><body>Service Unavailable</body></html>')"
    )


def test_cli_answering_json_of_the_wrong_shape_is_refused(
    fleet: FleetConfig, clouds: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = fake_clouds.k8s_fleet_scenario()
    scenario["eks"]["fleet-two"]["gpu"] = "next"
    env = fake_clouds.install(tmp_path / "other-bin", scenario, clouds["log"])
    monkeypatch.setenv("FAKE_CLOUDS", env["FAKE_CLOUDS"])
    with pytest.raises(UserError, match=r"version of node group 'gpu' 'next' is not a Kubernetes version"):
        read_versions(fleet, "eks")
    with pytest.raises(
        UserError, match=r"^no cluster named 'nowhere' in the fleet; clusters: aks, eks, gke, kube"
    ):
        read_versions(fleet, "nowhere")


# --------------------------------------------------------------------------- store


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer | str]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A state directory (SQLite) or a new database on a real PostgreSQL (migration 0009 on both)."""
    if request.param == "sqlite":
        return str(tmp_path / "state")
    server = request.getfixturevalue("postgres")
    if isinstance(server, str):
        pytest.skip(f"PostgreSQL could not start: {server}")
    return server.new_database()


def _reading(cluster: str, control_plane: str, at: datetime, **pools: str) -> ClusterVersions:
    return ClusterVersions(cluster, "aws", "us-west-2", control_plane, pools, {"astro": "4.4.0"}, at)


def test_readings_round_trip_in_the_store(where: str) -> None:
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    with open_store(where) as store:
        assert latest_versions(store, "eks") is None
        record_versions(store, _reading("eks", "1.31", t0, general="1.31"))
        record_versions(store, _reading("eks", "1.32", t0 + timedelta(days=2), general="1.32", gpu="1.28"))
        record_versions(store, _reading("gke", "1.35", t0 + timedelta(days=5)))
    with open_store(where) as store:
        latest = latest_versions(store, "eks")
        assert latest == _reading("eks", "1.32", t0 + timedelta(days=2), general="1.32", gpu="1.28")
        assert latest is not None and latest.read_at.tzinfo == UTC
        assert [r.control_plane for r in version_history(store, "eks")] == ["1.32", "1.31"]
    assert ClusterVersions.from_json(latest.to_json()) == latest


# --------------------------------------------------------------------------- inventory


def _scenario_readings(fleet: FleetConfig) -> dict[str, ClusterVersions]:
    return {name: read_versions(fleet, name) for name in ("eks", "gke", "aks", "kube")}


def test_inventory_rows_support_cost_and_warnings(fleet: FleetConfig, clouds: dict[str, Any]) -> None:
    inventory = build_inventory(fleet, None, readings=_scenario_readings(fleet), today=TODAY)
    assert [r.cluster for r in inventory.rows] == ["aks", "eks", "gke", "kube"]
    assert inventory.warnings == []

    eks = inventory.row("eks")
    assert eks is not None
    assert (eks.support, eks.end_of_standard, eks.days_left, eks.end_of_extended) == (
        "extended",
        date(2026, 3, 23),
        -252,
        date(2027, 3, 23),
    )
    assert eks.extra_monthly_cost == pytest.approx(365.0)  # ($0.60 - $0.10) x 730 h
    assert (eks.hub_count, eks.chart_version) == (4, "4.4.0")
    assert any(
        "node pool gpu is at 1.28, 4 minor versions behind the control plane (1.32)" in w
        for w in eks.warnings
    )
    assert any("hub bio runs chart 4.3.5 but the cluster file pins 4.4.0" in w for w in eks.warnings)
    assert any("paid extended support since 2026-03-23" in w and "$365.00 a month" in w for w in eks.warnings)

    gke = inventory.row("gke")
    assert gke is not None
    assert (gke.support, gke.end_of_standard, gke.days_left, gke.extra_monthly_cost) == (
        "standard",
        date(2027, 4, 11),
        132,
        None,
    )
    assert gke.warnings == []  # highmem at 1.34 is one minor behind: within the skew policy

    aks = inventory.row("aks")
    assert aks is not None
    assert (aks.support, aks.extra_monthly_cost, aks.region, aks.hub_count) == (
        "ended",
        None,
        "westeurope",
        1,
    )
    assert any("past the end of extended support (2025-07-31)" in w for w in aks.warnings)
    assert (
        "hub chem-staging runs chart 4.3.5, which supports Kubernetes 1.28 and later "
        "(kubeVersion >=1.28.0-0), not the control plane's 1.27" in aks.warnings
    )

    kube = inventory.row("kube")
    assert kube is not None
    assert (kube.support, kube.end_of_standard, kube.days_left) == ("none", None, None)
    assert kube.warnings == []


def test_inventory_of_clusters_never_read_and_of_stale_tables(fleet: FleetConfig) -> None:
    inventory = build_inventory(fleet, None, today=date(2027, 6, 15))
    for row in inventory.rows:
        assert row.control_plane is None and row.read_at is None
        assert row.warnings[0].startswith("versions never read: run `hubfleet clusters --refresh`")
    assert len(inventory.warnings) == 2
    assert "release calendar" in inventory.warnings[0] and "compiled on 2026-11-30" in inventory.warnings[0]
    assert "chart table" in inventory.warnings[1] and "--chart-table FILE" in inventory.warnings[1]
    data = inventory.to_json()
    assert data["calendar"]["stale"] is True and data["chart_table"]["stale"] is True


def test_control_plane_missing_from_the_calendar(fleet: FleetConfig, clouds: dict[str, Any]) -> None:
    readings = _scenario_readings(fleet)
    gke = readings["gke"]
    readings["gke"] = ClusterVersions("gke", "gcp", gke.region, "1.40", {}, gke.chart_versions, gke.read_at)
    row = build_inventory(fleet, None, readings=readings, today=TODAY).row("gke")
    assert row is not None and row.support == "unknown" and row.end_of_standard is None
    assert row.warnings[0].startswith("Kubernetes 1.40 is not in the gcp release calendar (it has 1.27-1.35")


# --------------------------------------------------------------------------- the CLI


def _clusters(tmp_path: Path, env: dict[str, str], *args: str) -> Any:
    return hubfleet("clusters", "--state-dir", str(tmp_path / "state"), *args, fleet=FIXTURE, env=env)


def test_cli_reads_stores_and_reports_every_cluster(tmp_path: Path, clouds: dict[str, Any]) -> None:
    env = clouds["env"]
    result = _clusters(tmp_path, env, "--json", "--date", TODAY.isoformat())  # the inventory as of that day
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["today"] == "2026-11-30" and data["warnings"] == []
    assert data["read_errors"] == {}
    rows = {row["cluster"]: row for row in data["clusters"]}
    assert {name: row["control_plane"] for name, row in rows.items()} == {
        "aks": "1.27",
        "eks": "1.32",
        "gke": "1.35",
        "kube": "1.30",
    }
    eks = rows["eks"]
    assert (eks["provider"], eks["region"], eks["support"], eks["extra_monthly_cost"]) == (
        "aws",
        "us-west-2",
        "extended",
        365.0,
    )
    assert (eks["end_of_standard"], eks["days_left"], eks["end_of_extended"]) == (
        "2026-03-23",
        -252,
        "2027-03-23",
    )
    assert eks["node_pools"] == {"general": "1.32", "gpu": "1.28"}
    assert (eks["chart_version"], eks["hub_count"]) == ("4.4.0", 4)
    assert rows["gke"]["support"] == "standard" and rows["gke"]["end_of_standard"] == "2027-04-11"
    assert rows["aks"]["support"] == "ended" and rows["kube"]["support"] == "none"
    first_calls = len(fake_clouds.calls(clouds["log"]))
    assert first_calls > 0

    # stored: a second run shows the same versions without calling any CLI; --refresh reads them again.
    # Without --date the inventory is as of today (UTC).
    before = datetime.now(UTC).date()
    again = json.loads(_clusters(tmp_path, env, "--json").stdout)
    assert before <= date.fromisoformat(again["today"]) <= datetime.now(UTC).date()
    assert [r["read_at"] for r in again["clusters"]] == [r["read_at"] for r in data["clusters"]]
    assert len(fake_clouds.calls(clouds["log"])) == first_calls
    refreshed = json.loads(_clusters(tmp_path, env, "--json", "--refresh").stdout)
    assert len(fake_clouds.calls(clouds["log"])) == 2 * first_calls
    assert all(
        r["read_at"] > o["read_at"] for r, o in zip(refreshed["clusters"], data["clusters"], strict=True)
    )
    with open_store(tmp_path / "state") as store:
        assert len(version_history(store, "eks")) == 2

    table = _clusters(tmp_path, env, "--date", "2026-11-30")
    assert table.returncode == 0, table.stderr
    for text in ("eks", "us-west-2", "extended", "$365.00", "westeurope", "ended", "standard", "2027-04-11"):
        assert text in table.stdout
    assert "warning: cluster eks: node pool gpu is at 1.28, 4 minor versions behind" in table.stderr
    assert "warning: cluster aks: 1.27 is past the end of extended support" in table.stderr


def test_cli_with_a_missing_provider_cli_reports_the_others(tmp_path: Path, clouds: dict[str, Any]) -> None:
    (clouds["bin"] / "az").unlink()
    result = _clusters(tmp_path, clouds["env"], "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert list(data["read_errors"]) == ["aks"]
    assert data["read_errors"]["aks"].startswith("cluster 'aks' (azure): az not found on PATH")
    assert "error: cluster 'aks' (azure): az not found on PATH: install the Azure CLI" in result.stderr
    rows = {row["cluster"]: row for row in data["clusters"]}
    assert rows["aks"]["control_plane"] is None and rows["aks"]["warnings"][0].startswith(
        "versions never read"
    )
    assert rows["eks"]["control_plane"] == "1.32"


def test_cli_with_a_cli_answering_an_error(tmp_path: Path, clouds: dict[str, Any]) -> None:
    env = clouds["env"] | {"FAKE_FAIL": "helm list"}
    result = _clusters(tmp_path, env)
    assert result.returncode == 1
    for cluster in ("aks", "eks", "gke", "kube"):
        assert f"error: cluster '{cluster}'" in result.stderr
    assert "Kubernetes cluster unreachable" in result.stderr


def test_cli_replacement_calendar_and_chart_table(tmp_path: Path, clouds: dict[str, Any]) -> None:
    old = tmp_path / "old-calendar.yaml"
    old.write_text(CALENDAR_OK.replace("2026-01-15", "2025-01-15"))
    result = _clusters(tmp_path, clouds["env"], "--json", "--calendar", str(old))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["calendar"] == {"path": str(old), "compiled": "2025-01-15", "stale": True}
    assert "release calendar" in data["warnings"][0] and "more than six months ago" in data["warnings"][0]
    eks = next(row for row in data["clusters"] if row["cluster"] == "eks")
    assert eks["support"] == "unknown"  # that calendar knows EKS 1.30 only
    assert "Kubernetes 1.32 is not in the aws release calendar (it has 1.30-1.30" in eks["warnings"][0]

    bad = tmp_path / "bad.yaml"
    bad.write_text(CALENDAR_OK.replace("end_of_standard: 2025-07-23, ", ""))
    result = _clusters(tmp_path, clouds["env"], "--calendar", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert f"error: {bad}: key 'providers.aws.minors.1.30.end_of_standard' is missing" in result.stderr
    result = _clusters(tmp_path, clouds["env"], "--date", "30/11/2026")
    assert (
        result.returncode == 1
        and "error: --date '30/11/2026' is not a day such as 2026-11-30" in result.stderr
    )
    result = _clusters(tmp_path, clouds["env"], "--chart-table", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "nope.yaml: file not found; check the path given to --calendar/--chart-table" in result.stderr
