"""The daemon's /metrics over real HTTP (uvicorn on a free loopback port), parsed with prometheus_client's
text parser and checked against the store; `hubfleet export-monitoring` files validated structurally (and with
promtool when it is installed: Debian's `prometheus` package ships it)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from console_helpers import write_accounts
from fleet_helpers import copy_demo_fleet, daemon_status, free_ports, hubfleet, running_fleet
from hubfleet.config.fleet import FleetConfig
from hubfleet.console.accounts import create_token
from hubfleet.console.app import create_app
from hubfleet.console.server import start_console
from hubfleet.monitor.export import (
    DASHBOARD_FILE,
    PROMETHEUS_FILE,
    README_FILE,
    RULES_FILE,
    export_monitoring,
)
from hubfleet.monitor.incidents import open_incident, resolve_incident
from hubfleet.monitor.metrics import METRIC_NAMES
from hubfleet.store import Store, open_store
from hubfleet.store.models import ProbeSample, UserDay
from test_anomaly import add_sample, add_server, write_fleet

PROMTOOL = shutil.which("promtool")


def populate(store: Store, now: datetime) -> None:
    """Hub a (prod) is busy and healthy; hub b (staging) is failing and its usage sample is stale."""
    today = now.date()
    with store.session() as session, session.begin():
        for minutes, ok in ((50, True), (40, False), (30, True), (1, True)):
            status = 200 if ok else None
            session.add(
                ProbeSample(
                    hub="a",
                    at=now - timedelta(minutes=minutes),
                    ok=ok,
                    health_status=status,
                    api_status=status,
                    latency_ms=120.0 if ok else None,
                    cert_expires_at=now + timedelta(days=10),
                )
            )
        session.add(ProbeSample(hub="b", at=now - timedelta(minutes=2), ok=True, latency_ms=50.0))
        session.add(ProbeSample(hub="b", at=now - timedelta(minutes=1), ok=False, error="refused"))
        users = [
            ("a", "alice", 0), ("a", "bob", 3), ("a", "carol", 20), ("a", "dave", 40),
            ("b", "alice", 0), ("b", "erin", 10),
        ]  # fmt: skip
        for hub, user, days_ago in users:
            at = now - timedelta(days=days_ago)
            session.add(UserDay(hub=hub, username=user, day=today - timedelta(days=days_ago),
                                identity=f"native:{user}", first_seen=at, last_seen=at))  # fmt: skip
    hour = now.replace(minute=0, second=0, microsecond=0)
    for k in (1, 2, 3):
        add_sample(store, "a", hour - timedelta(weeks=k) + timedelta(minutes=1), 2 * k)  # baseline: 4
    add_sample(store, "a", now - timedelta(seconds=20), 7, ok=10, failed=2)
    add_sample(store, "b", now - timedelta(minutes=10), 3)  # stale: not reported as running now
    add_server(store, "a", "alice", now - timedelta(hours=5))
    add_server(store, "a", "bob", now - timedelta(hours=1))
    add_server(store, "a", "carol", now - timedelta(hours=9), now - timedelta(hours=8))
    for minutes in (5, 15):
        store.record_restart("a", reason="crash", at=now - timedelta(minutes=minutes))
    open_incident(store, "a", "down", "refused")
    open_incident(store, "a", "anomaly", "7 servers", rule="max_running_servers")
    open_incident(store, "b", "certificate", "expires")
    resolve_incident(store, "b", "certificate")


@pytest.fixture
def fleet(tmp_path: Path) -> FleetConfig:
    return write_fleet(
        tmp_path / "fleet",
        {"a": {"stage": "prod", "max_running_servers": 20}, "b": {"max_server_age_hours": None}},
        {"max_restarts_per_hour": 4},
        console={
            "accounts": [
                {"username": "ops", "role": "operator"},
                {"username": "lead", "role": "community-leader", "communities": ["c"]},
            ]
        },
    )


async def scrape(store: Store, fleet: FleetConfig, *tokens: str | None) -> list[httpx.Response]:
    """GET /metrics once per token (None: no Authorization header), as Prometheus would."""
    server = await start_console(create_app(store, fleet))
    try:
        assert server.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            return [
                await client.get(
                    f"{server.url}/metrics", headers={"Authorization": f"Bearer {t}"} if t else {}
                )
                for t in tokens
            ]
    finally:
        await server.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def value(data: dict[Any, float], name: str, **labels: str) -> float | None:
    return data.get((name, tuple(sorted(labels.items()))))


def test_metrics_over_http_match_the_store(tmp_path: Path, fleet: FleetConfig) -> None:
    now = datetime.now(UTC)
    with open_store(tmp_path / "state") as store:
        populate(store, now)
        token, _ = create_token(store, "ops")
        response, again = asyncio.run(scrape(store, fleet, token, token))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert again.text == response.text  # served from the few-seconds cache
    text = response.text
    data = samples(text)
    a = {"hub": "a", "community": "c", "stage": "prod"}
    b = {"hub": "b", "community": "c", "stage": "staging"}

    # HELP and TYPE for every family we serve.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "hubfleet_hub_up",
        "hubfleet_hub_active_users",
        "hubfleet_hub_spawns",
        "hubfleet_hub_restarts",
    ):
        assert f"# HELP {name}" in text
    assert "# TYPE hubfleet_hub_up gauge" in text
    assert "# TYPE hubfleet_hub_spawns_total counter" in text
    assert families["hubfleet_hub_restarts"].type == "counter"
    sample_names = {name for name, _ in data}
    assert sample_names == set(METRIC_NAMES)

    assert value(data, "hubfleet_hub_info", **a, cluster="local", display_name="a") == 1
    assert value(data, "hubfleet_hub_up", **a) == 1
    assert value(data, "hubfleet_hub_up", **b) == 0
    assert value(data, "hubfleet_hub_probe_latency_seconds", **a) == pytest.approx(0.12)
    assert value(data, "hubfleet_hub_probe_latency_seconds", **b) is None  # the last probe got no answer
    assert value(data, "hubfleet_hub_last_probe_timestamp_seconds", **a) == pytest.approx(
        (now - timedelta(minutes=1)).timestamp()
    )
    assert value(data, "hubfleet_hub_certificate_expiry_timestamp_seconds", **a) == pytest.approx(
        (now + timedelta(days=10)).timestamp()
    )
    for window in ("24h", "7d", "30d"):
        assert value(data, "hubfleet_hub_uptime_ratio", **a, window=window) == pytest.approx(0.75)
        assert value(data, "hubfleet_hub_uptime_ratio", **b, window=window) == pytest.approx(0.5)

    assert [value(data, "hubfleet_hub_active_users", **a, period=p) for p in ("dau", "wau", "mau")] == [
        1,
        2,
        3,
    ]
    assert [value(data, "hubfleet_hub_active_users", **b, period=p) for p in ("dau", "wau", "mau")] == [
        1,
        1,
        2,
    ]
    # Fleet-wide: alice on both hubs is one person; dave (40 days ago) is outside every window.
    assert [value(data, "hubfleet_fleet_active_users", period=p) for p in ("dau", "wau", "mau")] == [1, 2, 4]

    assert value(data, "hubfleet_hub_running_servers", **a) == 7
    assert value(data, "hubfleet_hub_running_servers", **b) is None  # stale sample
    assert value(data, "hubfleet_fleet_running_servers") == 7
    assert value(data, "hubfleet_hub_running_servers_baseline", **a) == 4
    assert value(data, "hubfleet_hub_running_servers_baseline", **b) is None
    assert value(data, "hubfleet_hub_oldest_server_age_seconds", **a) == pytest.approx(5 * 3600, abs=60)
    assert value(data, "hubfleet_hub_spawns_total", **a, result="success") == 10
    assert value(data, "hubfleet_hub_spawns_total", **a, result="failure") == 2
    assert value(data, "hubfleet_hub_restarts_total", **a) == 2
    assert value(data, "hubfleet_hub_restarts_total", **b) == 0

    assert value(data, "hubfleet_hub_open_incidents", **a, kind="down") == 1
    assert value(data, "hubfleet_hub_open_incidents", **a, kind="anomaly") == 1
    assert value(data, "hubfleet_hub_open_incidents", **b, kind="certificate") == 0  # resolved
    assert value(data, "hubfleet_fleet_open_incidents", kind="down") == 1
    assert value(data, "hubfleet_fleet_open_incidents", kind="certificate") == 0

    # Per-hub anomaly settings (fleet defaults merged), as thresholds for the exported alert rules.
    assert value(data, "hubfleet_hub_anomaly_max_running_servers", **a) == 20
    assert value(data, "hubfleet_hub_anomaly_max_running_servers", **b) is None  # no cap
    assert value(data, "hubfleet_hub_anomaly_max_restarts_per_hour", **b) == 4  # fleet default
    assert value(data, "hubfleet_hub_anomaly_max_server_age_seconds", **a) == 72 * 3600
    assert value(data, "hubfleet_hub_anomaly_max_server_age_seconds", **b) is None  # disabled on b
    assert value(data, "hubfleet_hub_anomaly_spawn_failure_rate", **a) == pytest.approx(0.2)


def test_metrics_are_for_operators_only(tmp_path: Path, fleet: FleetConfig) -> None:
    """Any notebook on this machine can reach the port: every community's figures need an operator's token."""
    with open_store(tmp_path / "state") as store:
        populate(store, datetime.now(UTC))
        operator, _ = create_token(store, "ops")
        leader, _ = create_token(store, "lead")
        anonymous, wrong, led, allowed = asyncio.run(
            scrape(store, fleet, None, "hf_not-a-token", leader, operator)
        )
    assert (anonymous.status_code, wrong.status_code, led.status_code) == (401, 401, 403)
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert all("hubfleet_" not in r.text for r in (anonymous, wrong, led))
    assert allowed.status_code == 200 and "hubfleet_hub_up" in allowed.text


def test_console_port_in_use_is_one_clear_error(tmp_path: Path, fleet: FleetConfig) -> None:
    import socket

    from hubfleet.settings import UserError

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with (
            open_store(tmp_path / "state") as store,
            pytest.raises(UserError, match=f"port {port} .* in use"),
        ):
            asyncio.run(start_console(create_app(store, fleet), port=port))
    finally:
        holder.close()


# --------------------------------------------------------------------------- export-monitoring


METRIC_REF = re.compile(r"\b((?:hubfleet|jupyterhub)_[a-z0-9_]+)")


def referenced_metrics(expr: str) -> set[str]:
    return set(METRIC_REF.findall(expr))


def test_export_files_are_valid_and_reference_served_metrics(tmp_path: Path) -> None:
    root = write_fleet(
        tmp_path / "fleet", {"a": {"stage": "prod"}, "b": {}}, monitoring={"metrics_port": 19464}
    ).root
    out = tmp_path / "out"
    result = hubfleet("export-monitoring", "--out", str(out), fleet=root, check=True)
    assert "create the token files" in result.stdout
    for name in (PROMETHEUS_FILE, RULES_FILE, DASHBOARD_FILE, README_FILE):
        assert (out / name).is_file(), name

    config = yaml.safe_load((out / PROMETHEUS_FILE).read_text())
    assert config["rule_files"] == [RULES_FILE]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["hubfleet"]["static_configs"][0]["targets"] == ["127.0.0.1:19464"]
    assert jobs["hubfleet"]["metrics_path"] == "/metrics"
    assert jobs["hubfleet"]["authorization"] == {"type": "Bearer", "credentials_file": "hubfleet.token"}
    hub_a = jobs["jupyterhub-a"]
    assert hub_a["metrics_path"] == "/hub/metrics"
    assert hub_a["authorization"] == {"type": "Bearer", "credentials_file": "tokens/a.token"}
    assert hub_a["static_configs"][0]["targets"] == ["127.0.0.1:20001"]
    assert hub_a["static_configs"][0]["labels"] == {
        "fleet": "t",
        "hub": "a",
        "community": "c",
        "stage": "prod",
    }
    readme = (out / README_FILE).read_text()
    assert "`tokens/a.token`" in readme and "`tokens/b.token`" in readme and "`hubfleet.token`" in readme
    # No token in any exported file (the hubs' tokens live in the state dir, none was created here).
    assert not re.search(
        r"(?i)bearer [0-9a-f]{16,}|credentials:", "".join(p.read_text() for p in out.iterdir())
    )

    served = set(METRIC_NAMES) | {"up"}
    rules = yaml.safe_load((out / RULES_FILE).read_text())
    (group,) = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert set(alerts) == {
        "HubfleetDaemonDown", "HubDown", "HubCertificateExpiring", "HubRunningServersAboveCap",
        "HubRunningServersAboveUsual", "HubServerTooOld", "HubSpawnFailureRateHigh", "HubRestarting",
    }  # fmt: skip
    assert alerts["HubDown"]["for"] == "60s"  # failures_to_open (2) x probe_interval (30 s)
    for rule in group["rules"]:
        assert referenced_metrics(rule["expr"]) <= served, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"])

    dashboard = json.loads((out / DASHBOARD_FILE).read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["hub"]["query"]["query"] == "label_values(hubfleet_hub_info, hub)"
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Fleet overview", "Hub $hub", "Hubs up", "Uptime 30 d", "Active users (fleet)", "Running servers",
            "Open incidents", "Active users", "Probe latency"} <= titles  # fmt: skip
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(pos) and pos["x"] + pos["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert referenced_metrics(target["expr"]) <= served | {"jupyterhub_active_users"}, target["expr"]
    hub_row = next(p for p in dashboard["panels"] if p["title"] == "Hub $hub")
    hub_panels = [p for p in dashboard["panels"] if p["gridPos"]["y"] > hub_row["gridPos"]["y"]]
    assert hub_panels and all('hub="$hub"' in t["expr"] for p in hub_panels for t in p["targets"])


def test_export_needs_a_known_daemon_port(tmp_path: Path) -> None:
    root = write_fleet(tmp_path / "fleet", {"a": {}}).root
    result = hubfleet("export-monitoring", "--out", str(tmp_path / "out"), fleet=root)
    assert result.returncode == 1
    assert "monitoring.metrics_port" in result.stderr and "Traceback" not in result.stderr
    ok = hubfleet("export-monitoring", "--out", str(tmp_path / "out"), "--daemon-target", "10.0.0.5:9000",
                  fleet=root, check=True)  # fmt: skip
    assert "wrote" in ok.stdout
    config = yaml.safe_load((tmp_path / "out" / PROMETHEUS_FILE).read_text())
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["10.0.0.5:9000"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_export_and_the_rules_fire_like_the_builtin_ones(
    tmp_path: Path, fleet: FleetConfig
) -> None:
    out = tmp_path / "out"
    export = export_monitoring(fleet, out, "127.0.0.1:19464")
    (out / "tokens").mkdir()
    for name in export.token_files:  # the daemon's and one per hub, as the README lists them
        (out / name).write_text("placeholder\n")
    for args in (["check", "config", PROMETHEUS_FILE], ["check", "rules", RULES_FILE]):
        run = subprocess.run([PROMTOOL, *args], cwd=out, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr

    # Unit-test the rules with promtool: series as the daemon would serve them for hub a (per-hub limits).
    hub = 'hub="a",community="c",stage="prod",job="hubfleet",instance="d"'
    rules = {r["alert"]: r for r in yaml.safe_load((out / RULES_FILE).read_text())["groups"][0]["rules"]}

    def fired(alert: str, shown_value: str = "", severity: str = "warning") -> dict[str, Any]:
        """The alert as promtool shows it for hub a: labels, and annotations with the templates filled."""

        def fill(text: str) -> str:
            return re.sub(r"\{\{ \$value[^}]*\}\}", shown_value, text.replace("{{ $labels.hub }}", "a"))

        annotations = {k: fill(v) for k, v in rules[alert]["annotations"].items()}
        return {"exp_labels": _labels(severity), "exp_annotations": annotations}

    tests = {
        "rule_files": [str(out / RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"hubfleet_hub_up{{{hub}}}", "values": "1 1 0 0 0 0"},
                    {"series": f"hubfleet_hub_running_servers{{{hub}}}", "values": "5 25 25 25 25 25"},
                    {"series": f"hubfleet_hub_anomaly_max_running_servers{{{hub}}}", "values": "20x5"},
                    {"series": f"hubfleet_hub_running_servers_baseline{{{hub}}}", "values": "4x5"},
                    {"series": f"hubfleet_hub_anomaly_baseline_factor{{{hub}}}", "values": "3x5"},
                    {"series": f"hubfleet_hub_anomaly_baseline_min_excess{{{hub}}}", "values": "10x5"},
                    {
                        "series": f'hubfleet_hub_spawns_total{{{hub},result="success"}}',
                        "values": "0 2 4 6 8 10",
                    },
                    {
                        "series": f'hubfleet_hub_spawns_total{{{hub},result="failure"}}',
                        "values": "0 1 2 3 4 5",
                    },
                    {"series": f"hubfleet_hub_anomaly_spawn_failure_rate{{{hub}}}", "values": "0.2x5"},
                    {"series": f"hubfleet_hub_anomaly_min_spawns{{{hub}}}", "values": "5x5"},
                    {"series": f"hubfleet_hub_restarts_total{{{hub}}}", "values": "0 1 2 3 4 5"},
                    {"series": f"hubfleet_hub_anomaly_max_restarts_per_hour{{{hub}}}", "values": "4x5"},
                    {"series": f"hubfleet_hub_oldest_server_age_seconds{{{hub}}}", "values": "3600x5"},
                    {"series": f"hubfleet_hub_anomaly_max_server_age_seconds{{{hub}}}", "values": "259200x5"},
                ],
                "alert_rule_test": [  # fmt: skip
                    {"eval_time": "2m", "alertname": "HubDown", "exp_alerts": []},  # pending for 60 s
                    {
                        "eval_time": "3m",
                        "alertname": "HubDown",
                        "exp_alerts": [fired("HubDown", "", "critical")],
                    },
                    {"eval_time": "0m", "alertname": "HubRunningServersAboveCap", "exp_alerts": []},
                    {
                        "eval_time": "2m",
                        "alertname": "HubRunningServersAboveCap",
                        "exp_alerts": [fired("HubRunningServersAboveCap", "25")],
                    },
                    {"eval_time": "0m", "alertname": "HubRunningServersAboveUsual", "exp_alerts": []},
                    {
                        "eval_time": "2m",
                        "alertname": "HubRunningServersAboveUsual",
                        "exp_alerts": [fired("HubRunningServersAboveUsual", "25")],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "HubSpawnFailureRateHigh",
                        "exp_alerts": [fired("HubSpawnFailureRateHigh", "33.33%")],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "HubRestarting",
                        "exp_alerts": [fired("HubRestarting", "5")],
                    },
                    {"eval_time": "5m", "alertname": "HubServerTooOld", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "HubCertificateExpiring", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    run = subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _labels(severity: str = "warning") -> dict[str, str]:
    return {"hub": "a", "community": "c", "stage": "prod", "job": "hubfleet", "instance": "d",
            "severity": severity, "source": "hubfleet"}  # fmt: skip


# --------------------------------------------------------------------------- the daemon serves it


@pytest.mark.integration
def test_daemon_serves_metrics_and_status_names_the_console(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/hackweek/hubs/staging.yaml"})
    (port,) = free_ports(1)
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(fleet_yaml.read_text() + textwrap.dedent(f"monitoring:\n  metrics_port: {port}\n"))
    write_accounts(root, {"ops": "operator"})
    token = hubfleet("console-token", "create", "ops", fleet=root, check=True).stdout.strip()
    with running_fleet(root):
        assert daemon_status(root)["console"] == f"http://127.0.0.1:{port}"
        status = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
        assert status["console"] == f"http://127.0.0.1:{port}"
        response = httpx.get(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 200
        data = samples(response.text)
        (hub,) = {dict(labels)["hub"] for name, labels in data if name == "hubfleet_hub_info"}
        assert value(data, "hubfleet_hub_anomaly_max_restarts_per_hour", hub=hub, community="hackweek",
                     stage="staging") == 3  # fmt: skip
    status = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
    assert status["console"] is None
