"""Ready mode in a kubernetes hub's z2jh values: the user placeholders of an event's window, rendered for a
given moment (or a given ready state), never outside the window; checked with the real helm and the real
z2jh chart 4.4.0 (no cluster: `helm template` only, as tests/test_chart_check.py does)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.render.chart_check import ChartCheckError, helm_binary, helm_template
from hubfleet.render.kubernetes import render_z2jh_values, secret_placeholders, to_yaml, values_yaml
from hubfleet.render.ready_mode import NOT_READY, ReadySeats, event_seats, scheduled_ready

HERE = Path(__file__).resolve().parent
K8S_FLEET = HERE / "fixtures" / "k8s-fleet"
CHART = HERE.parent.parent / "shared" / "charts" / "jupyterhub-4.4.0.tgz"
PHYSICS = "communities/physics/hubs/prod.yaml"
START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # 09:00 in Berlin


def with_event(dest: Path, extra: str = "", cluster_extra: str = "") -> FleetConfig:
    """The kubernetes fixture fleet with a 250-person workshop on physics (fixed placeholders: 3)."""
    shutil.copytree(K8S_FLEET, dest)
    path = dest / PHYSICS
    path.write_text(
        path.read_text()
        + "events:\n"
        + "- name: workshop\n"
        + "  start: 2026-12-07T09:00\n"
        + "  end: 2026-12-07T12:00\n"
        + "  timezone: Europe/Berlin\n"
        + "  attendees: 250\n"
        + "  arrival: 60 in 3m\n"
        + extra
    )
    if cluster_extra:
        cluster = dest / "clusters" / "gke.yaml"
        cluster.write_text(cluster.read_text() + cluster_extra)
    return load_fleet(dest)


def placeholders(values: dict) -> dict | None:
    return values.get("scheduling", {}).get("userPlaceholder")


@pytest.fixture
def fleet(tmp_path: Path) -> FleetConfig:
    return with_event(tmp_path / "fleet")


def test_window_renders_the_events_seats_and_only_the_window(fleet: FleetConfig) -> None:
    """60 arrive per 3 minutes, nodes take 10 minutes (the cluster's default): 200 seats of 250 attendees.
    The window opens 30 minutes before the start and closes at the end; outside it the fixed 3 remain."""
    hub = fleet.hubs["physics"]
    at = {
        "before": START - timedelta(minutes=31),
        "lead": START - timedelta(minutes=30),
        "during": START + timedelta(hours=1),
        "last second": START + timedelta(hours=3) - timedelta(seconds=1),
        "end": START + timedelta(hours=3),
    }
    found = {name: placeholders(render_z2jh_values(fleet, hub, now=now)) for name, now in at.items()}
    fixed = {"enabled": True, "replicas": 3}
    warm = {"enabled": True, "replicas": 200}
    assert found == {
        "before": fixed,
        "lead": warm,
        "during": warm,
        "last second": warm,
        "end": fixed,
    }


def test_rendering_is_deterministic_for_a_moment_and_names_the_window(fleet: FleetConfig) -> None:
    hub = fleet.hubs["physics"]
    during = START + timedelta(minutes=5)
    text = values_yaml(fleet, hub, now=during)
    assert text == values_yaml(fleet, hub, now=during)
    assert "# ready mode: event workshop, 200 seats until 2026-12-07T12:00:00+01:00\n" in text
    outside = values_yaml(fleet, hub, now=START - timedelta(days=1))
    assert "ready mode" not in outside and outside != text
    # the explicit ready state wins over the clock (an operator's on before, or off inside, the window)
    assert values_yaml(fleet, hub, now=during, ready=NOT_READY) == outside
    early = event_seats(fleet, hub, fleet.events_of("physics")[0])
    assert values_yaml(fleet, hub, now=START - timedelta(days=1), ready=early) == text
    assert scheduled_ready(fleet, hub, during) == early == ReadySeats("workshop", 200, early.until)


def test_seats_follow_the_clusters_node_startup_and_never_go_below_the_fixed_count(tmp_path: Path) -> None:
    quick = with_event(tmp_path / "quick", cluster_extra="node_startup_minutes: 2\n")
    hub = quick.hubs["physics"]
    assert placeholders(render_z2jh_values(quick, hub, now=START))["replicas"] == 40  # 20/min x 2 min
    slow = with_event(tmp_path / "slow", cluster_extra="node_startup_minutes: 60\n")
    assert placeholders(render_z2jh_values(slow, slow.hubs["physics"], now=START))["replicas"] == 250
    small = with_event(
        tmp_path / "small", cluster_extra="node_startup_minutes: 0.05\n"
    )  # 1 seat < the fixed 3
    assert placeholders(render_z2jh_values(small, small.hubs["physics"], now=START))["replicas"] == 3


def test_a_hub_without_fixed_placeholders_gets_them_for_the_window_only(tmp_path: Path) -> None:
    fleet = with_event(tmp_path / "fleet")
    path = tmp_path / "fleet" / PHYSICS
    path.write_text(path.read_text().replace("  placeholders: 3\n", ""))
    fleet = load_fleet(tmp_path / "fleet")
    hub = fleet.hubs["physics"]
    assert placeholders(render_z2jh_values(fleet, hub, now=START - timedelta(hours=2))) is None
    assert placeholders(render_z2jh_values(fleet, hub, now=START)) == {"enabled": True, "replicas": 200}


def test_extra_values_still_come_last(tmp_path: Path) -> None:
    """`kubernetes.extra_values` is the operator's escape hatch: it wins over ready mode too."""
    fleet = with_event(tmp_path / "fleet")
    path = tmp_path / "fleet" / PHYSICS
    path.write_text(
        path.read_text().replace(
            "  placeholders: 3\n",
            "  placeholders: 3\n  extra_values:\n    scheduling:\n"
            "      userPlaceholder:\n        replicas: 7\n",
        )
    )
    fleet = load_fleet(tmp_path / "fleet")
    assert placeholders(render_z2jh_values(fleet, fleet.hubs["physics"], now=START))["replicas"] == 7


def test_real_chart_renders_the_placeholders_of_the_window(fleet: FleetConfig, tmp_path: Path) -> None:
    """helm template with the real chart: the user-placeholder StatefulSet has the event's replicas in the
    window and the fixed ones outside it; and the hub pod's checksum changes with them (z2jh keeps every
    value in the hub Secret), which is why a window's edge restarts the hub pod (docs say so)."""
    try:
        helm = helm_binary()
    except ChartCheckError as exc:
        pytest.fail(str(exc))
    if helm is None or not CHART.is_file():
        pytest.skip("no helm or no chart: run scripts/install-helm.sh")
    hub = fleet.hubs["physics"]
    secrets = tmp_path / "secret-placeholders.yaml"
    secrets.write_text(to_yaml(secret_placeholders(fleet, hub)))
    found = {}
    for name, now in (("outside", START - timedelta(days=1)), ("window", START)):
        values = tmp_path / f"{name}.yaml"
        values.write_text(values_yaml(fleet, hub, now=now))
        manifests = helm_template(CHART, [values, secrets], release="physics", namespace="physics", helm=helm)
        docs = [d for d in yaml.safe_load_all(manifests) if d]
        sets = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "user-placeholder"]
        hub_pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub")
        found[name] = (
            sets[0]["spec"]["replicas"],
            hub_pod["spec"]["template"]["metadata"]["annotations"]["checksum/secret"],
        )
    assert found["outside"][0] == 3 and found["window"][0] == 200
    assert found["outside"][1] != found["window"][1]
