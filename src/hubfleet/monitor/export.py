"""`hubfleet export-monitoring`: what an operator who runs Prometheus and Grafana needs.

- prometheus.yml: scrape jobs for the daemon's /metrics and every hub's /hub/metrics (bearer token read from a
  file the operator creates; no token is ever written here);
- hubfleet-rules.yml: Prometheus alert rules equivalent to the built-in ones (hub down, certificate,
  anomalies). They compare against the per-hub thresholds the daemon exports (`hubfleet_hub_anomaly_*`), so
  the fleet's per-hub settings apply without re-exporting;
- grafana-dashboard.json: fleet overview and per-hub activity (a `hub` variable, a `datasource` variable);
- README.md: how to put them to use, and the token files to create.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub

PROMETHEUS_FILE = "prometheus.yml"
RULES_FILE = "hubfleet-rules.yml"
DASHBOARD_FILE = "grafana-dashboard.json"
README_FILE = "README.md"
TOKENS_DIR = "tokens"
DAEMON_JOB = "hubfleet"
DAEMON_TOKEN_FILE = "hubfleet.token"
"""An operator's console API token for the daemon's /metrics (outside tokens/, where any hub name may be)."""
DASHBOARD_UID = "hubfleet-fleet"


def token_file(hub: str) -> str:
    """Where prometheus.yml expects the hub's API token (relative to prometheus.yml)."""
    return f"{TOKENS_DIR}/{hub}.token"


def hub_scrape_target(fleet: FleetConfig, hub: Hub) -> tuple[str, str]:
    """(scheme, host:port) of the hub's proxy: 127.0.0.1:PORT for local hubs, DOMAIN (https) otherwise."""
    scheme, _, host = str(fleet.public_url(hub)).partition("://")
    return scheme, host


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


# --------------------------------------------------------------------------- prometheus.yml


def prometheus_config(fleet: FleetConfig, daemon_target: str) -> dict[str, Any]:
    interval = _duration(fleet.settings.monitoring.probe_interval)
    scrape: list[dict[str, Any]] = [
        {
            "job_name": DAEMON_JOB,
            "metrics_path": "/metrics",
            "authorization": {"type": "Bearer", "credentials_file": DAEMON_TOKEN_FILE},
            "static_configs": [{"targets": [daemon_target], "labels": {"fleet": fleet.settings.name}}],
        }
    ]
    for hub in sorted(fleet.hubs.values(), key=lambda h: h.name):
        scheme, target = hub_scrape_target(fleet, hub)
        scrape.append(
            {
                "job_name": f"jupyterhub-{hub.name}",
                "scheme": scheme,
                "metrics_path": "/hub/metrics",
                "authorization": {"type": "Bearer", "credentials_file": token_file(hub.name)},
                "static_configs": [
                    {
                        "targets": [target],
                        "labels": {
                            "fleet": fleet.settings.name,
                            "hub": hub.name,
                            "community": hub.community,
                            "stage": hub.stage,
                        },
                    }
                ],
            }
        )
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [RULES_FILE],
        "scrape_configs": scrape,
    }


# --------------------------------------------------------------------------- alert rules


def _rule(
    alert: str, expr: str, severity: str, summary: str, description: str, for_: str = "0s"
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_ != "0s":
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "source": "hubfleet"}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


SPAWNS_1H = "sum without (result) (increase(hubfleet_hub_spawns_total[1h]))"
FAILED_1H = 'sum without (result) (increase(hubfleet_hub_spawns_total{result="failure"}[1h]))'


def alert_rules(fleet: FleetConfig) -> dict[str, Any]:
    """Prometheus rules equivalent to the daemon's incidents and anomaly rules."""
    monitoring = fleet.settings.monitoring
    down_for = _duration(monitoring.failures_to_open * monitoring.probe_interval)
    cert_days = monitoring.certificate_warning_days
    hub = "{{ $labels.hub }}"
    rules = [
        _rule(
            "HubfleetDaemonDown",
            f'up{{job="{DAEMON_JOB}"}} == 0',
            "critical",
            "The hubfleet daemon does not answer",
            "Prometheus cannot scrape the daemon's /metrics: hubs are neither supervised nor probed.",
            "2m",
        ),
        _rule(
            "HubDown",
            "hubfleet_hub_up == 0",
            "critical",
            f"Hub {hub} is down",
            f"/hub/health or /hub/api/ of {hub} failed for {down_for} "
            f"({monitoring.failures_to_open} probes {_duration(monitoring.probe_interval)} apart).",
            down_for,
        ),
        _rule(
            "HubCertificateExpiring",
            f"hubfleet_hub_certificate_expiry_timestamp_seconds - time() < {cert_days} * 86400",
            "warning",
            f"TLS certificate of hub {hub} expires soon",
            f"The certificate expires in {{{{ $value | humanizeDuration }}}} (warning at {cert_days} days).",
        ),
        _rule(
            "HubRunningServersAboveCap",
            "hubfleet_hub_running_servers > hubfleet_hub_anomaly_max_running_servers",
            "warning",
            f"Hub {hub} runs more user servers than its cap",
            "{{ $value }} user servers running (anomalies.max_running_servers).",
        ),
        _rule(
            "HubRunningServersAboveUsual",
            "hubfleet_hub_running_servers"
            " > hubfleet_hub_anomaly_baseline_factor * hubfleet_hub_running_servers_baseline"
            " and (hubfleet_hub_running_servers - hubfleet_hub_running_servers_baseline)"
            " >= hubfleet_hub_anomaly_baseline_min_excess",
            "warning",
            f"Hub {hub} runs far more user servers than usual for this hour of the week",
            "{{ $value }} user servers running (anomalies.baseline_factor and baseline_min_excess over the "
            "median of past weeks).",
        ),
        _rule(
            "HubServerTooOld",
            "hubfleet_hub_oldest_server_age_seconds > hubfleet_hub_anomaly_max_server_age_seconds",
            "warning",
            f"A user server on hub {hub} has run too long",
            "The oldest user server has run {{ $value | humanizeDuration }} "
            "(anomalies.max_server_age_hours).",
        ),
        _rule(
            "HubSpawnFailureRateHigh",
            f"({FAILED_1H} / {SPAWNS_1H}) > hubfleet_hub_anomaly_spawn_failure_rate"
            f" and {SPAWNS_1H} >= hubfleet_hub_anomaly_min_spawns",
            "warning",
            f"Many spawns fail on hub {hub}",
            "{{ $value | humanizePercentage }} of spawns failed in the last hour "
            "(anomalies.spawn_failure_rate, min_spawns).",
        ),
        _rule(
            "HubRestarting",
            "increase(hubfleet_hub_restarts_total[1h]) > hubfleet_hub_anomaly_max_restarts_per_hour",
            "warning",
            f"Hub {hub} restarts repeatedly",
            "{{ $value }} restarts in the last hour (anomalies.max_restarts_per_hour).",
        ),
    ]
    return {"groups": [{"name": "hubfleet", "rules": rules}]}


# --------------------------------------------------------------------------- grafana

DS = {"type": "prometheus", "uid": "${datasource}"}


def _target(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        target |= {"instant": True, "range": False, "format": "table"}
    return target


class _Layout:
    """Hands out gridPos left to right, top to bottom on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def new_row(self) -> dict[str, int]:
        self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": 0, "y": self.y, "w": 24, "h": 1}
        self.y += 1
        return pos

    def id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _panel(
    layout: _Layout,
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    w: int,
    h: int,
    unit: str = "short",
    description: str = "",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    for i, target in enumerate(targets):
        target["refId"] = chr(ord("A") + i)
    panel: dict[str, Any] = {
        "id": layout.id(),
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": layout.place(w, h),
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }
    if options:
        panel["options"] = options
    return panel


def _row(layout: _Layout, title: str) -> dict[str, Any]:
    return {"id": layout.id(), "type": "row", "title": title, "collapsed": False, "gridPos": layout.new_row(),
            "panels": []}  # fmt: skip


def grafana_dashboard(fleet: FleetConfig) -> dict[str, Any]:
    layout = _Layout()
    h = 'hub="$hub"'
    panels = [
        _row(layout, "Fleet overview"),
        _panel(layout, "stat", "Hubs up", [_target("sum(hubfleet_hub_up)")], 4, 4,
               description="Hubs whose last probe succeeded."),
        _panel(layout, "stat", "Hubs down", [_target("count(hubfleet_hub_up == 0) or vector(0)")], 4, 4),
        _panel(layout, "stat", "Active users (fleet)", [_target("hubfleet_fleet_active_users", "{{period}}")],
               6, 4, description="Distinct people: dau today, wau 7 days, mau 30 days."),
        _panel(layout, "stat", "Running servers", [_target("hubfleet_fleet_running_servers")], 5, 4),
        _panel(layout, "stat", "Open incidents", [_target("hubfleet_fleet_open_incidents", "{{kind}}")],
               5, 4),
        _panel(layout, "state-timeline", "Hub up", [_target("hubfleet_hub_up", "{{hub}}")], 12, 8),
        _panel(layout, "bargauge", "Uptime 30 d",
               [_target('hubfleet_hub_uptime_ratio{window="30d"}', "{{hub}}")], 12, 8,
               unit="percentunit", options={"orientation": "horizontal"}),
        _panel(layout, "timeseries", "Running servers by hub",
               [_target("sum by (hub) (hubfleet_hub_running_servers)", "{{hub}}")], 12, 8),
        _panel(layout, "timeseries", "Active users (fleet)",
               [_target("hubfleet_fleet_active_users", "{{period}}")], 12, 8),
        _panel(layout, "table", "Uptime by hub",
               [_target("hubfleet_hub_uptime_ratio", instant=True)], 12, 8, unit="percentunit"),
        _panel(layout, "table", "Open incidents by hub",
               [_target("sum by (hub, kind) (hubfleet_hub_open_incidents) > 0", instant=True)], 12, 8),
        _row(layout, "Hub $hub"),
        _panel(layout, "stat", "Up", [_target(f"hubfleet_hub_up{{{h}}}")], 4, 4),
        _panel(layout, "stat", "Uptime", [_target(f"hubfleet_hub_uptime_ratio{{{h}}}", "{{window}}")], 10, 4,
               unit="percentunit"),
        _panel(layout, "stat", "Open incidents", [_target(f"hubfleet_hub_open_incidents{{{h}}}", "{{kind}}")],
               10, 4),
        _panel(layout, "timeseries", "Active users",
               [_target(f"hubfleet_hub_active_users{{{h}}}", "{{period}}")], 12, 8,
               description="hubfleet's exact counts: dau today, wau 7 days, mau 30 days."),
        _panel(layout, "timeseries", "Running servers", [
            _target(f"hubfleet_hub_running_servers{{{h}}}", "running"),
            _target(f"hubfleet_hub_running_servers_baseline{{{h}}}", "usual for this hour of the week"),
            _target(f"hubfleet_hub_anomaly_max_running_servers{{{h}}}", "cap"),
        ], 12, 8),
        _panel(layout, "timeseries", "Probe latency", [_target(f"hubfleet_hub_probe_latency_seconds{{{h}}}",
               "latency")], 12, 8, unit="s"),
        _panel(layout, "timeseries", "Spawns per hour",
               [_target(f"sum by (result) (increase(hubfleet_hub_spawns_total{{{h}}}[1h]))", "{{result}}")],
               12, 8),
        _panel(layout, "timeseries", "Oldest user server", [
            _target(f"hubfleet_hub_oldest_server_age_seconds{{{h}}}", "oldest"),
            _target(f"hubfleet_hub_anomaly_max_server_age_seconds{{{h}}}", "limit"),
        ], 8, 8, unit="s"),
        _panel(layout, "timeseries", "Restarts per hour",
               [_target(f"increase(hubfleet_hub_restarts_total{{{h}}}[1h])", "restarts")], 8, 8),
        _panel(layout, "timeseries", "The hub's own active-user gauges",
               [_target(f"jupyterhub_active_users{{{h}}}", "{{period}}")], 8, 8,
               description="jupyterhub_active_users from the hub's /hub/metrics, for cross-checking."),
    ]  # fmt: skip
    return {
        "uid": DASHBOARD_UID,
        "title": f"hubfleet: {fleet.settings.display_name or fleet.settings.name}",
        "description": "Fleet overview and per-hub activity, from the hubfleet daemon's /metrics.",
        "tags": ["hubfleet", "jupyterhub"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "hub",
                    "label": "Hub",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(hubfleet_hub_info, hub)", "refId": "hub"},
                    "definition": "label_values(hubfleet_hub_info, hub)",
                    "refresh": 2,
                    "sort": 1,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


# --------------------------------------------------------------------------- README


def readme(fleet: FleetConfig, daemon_target: str) -> str:
    hubs = sorted(fleet.hubs.values(), key=lambda h: h.name)
    local = [h for h in hubs if fleet.clusters[h.cluster].kind == "local"]
    lines = [
        f"# Prometheus and Grafana for fleet `{fleet.settings.name}`",
        "",
        "Generated by `hubfleet export-monitoring`; regenerate after adding or removing hubs.",
        "",
        f"- `{PROMETHEUS_FILE}`: scrape jobs for the hubfleet daemon (`http://{daemon_target}/metrics`) and",
        "  for each hub's `/hub/metrics`.",
        f"- `{RULES_FILE}`: alert rules equivalent to hubfleet's own (hub down, certificate, anomalies).",
        "  Thresholds come from the daemon's `hubfleet_hub_anomaly_*` series, i.e. from fleet.yaml and the",
        "  hub files, so a changed setting needs no new export.",
        f"- `{DASHBOARD_FILE}`: a Grafana dashboard (fleet overview; per-hub activity with a `hub`",
        "  variable).",
        "  Import it in Grafana (Dashboards > New > Import) and pick your Prometheus data source.",
        "",
        "## Token files (create them; hubfleet never writes a token here)",
        "",
        f"Prometheus reads each token from a file next to `{PROMETHEUS_FILE}`; create these (mode 0600,",
        "owned by the Prometheus user).",
        "",
        f"- `{DAEMON_TOKEN_FILE}` for the daemon's `/metrics`: a console API token of an operator account",
        f"  (`hubfleet console-token create USER > {DAEMON_TOKEN_FILE}`). It answers 401 without one and 403",
        "  to a community leader's token, since it shows every community's figures.",
        "",
        "A hub's `/hub/metrics` needs an API token with the `read:metrics` scope:",
        "",
    ]
    lines += [f"- `{token_file(h.name)}` for hub `{h.name}`" for h in hubs]
    lines += [""]
    if local:
        lines += [
            "For hubs on this machine, `hubfleet token HUB > tokens/HUB.token` writes an operator token",
            "(it has `read:metrics` among broader scopes; for production prefer a token with only",
            "`read:metrics`, issued by the hub for a dedicated service).",
            "",
        ]
    lines += [
        "## Check the files",
        "",
        "```",
        f"promtool check config {PROMETHEUS_FILE}  # also checks {RULES_FILE} and the token files",
        f"promtool check rules {RULES_FILE}",
        "```",
        "",
        "The daemon binds 127.0.0.1: run Prometheus on the same machine, or put an authenticating proxy in",
        "front of it.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- writing


@dataclass
class Export:
    out: Path
    files: list[Path] = field(default_factory=list)
    token_files: list[str] = field(default_factory=list)


def export_monitoring(fleet: FleetConfig, out: Path, daemon_target: str) -> Export:
    """Write prometheus.yml, the alert rules, the Grafana dashboard and a README into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Generated by `hubfleet export-monitoring` for fleet {fleet.settings.name}; see {README_FILE}.\n"
    )
    contents = {
        PROMETHEUS_FILE: header + yaml.safe_dump(prometheus_config(fleet, daemon_target), sort_keys=False),
        RULES_FILE: header + yaml.safe_dump(alert_rules(fleet), sort_keys=False, width=1000),
        DASHBOARD_FILE: json.dumps(grafana_dashboard(fleet), indent=2) + "\n",
        README_FILE: readme(fleet, daemon_target),
    }
    result = Export(out, token_files=[DAEMON_TOKEN_FILE, *(token_file(name) for name in sorted(fleet.hubs))])
    for name, text in contents.items():
        path = out / name
        path.write_text(text)
        result.files.append(path)
    return result
