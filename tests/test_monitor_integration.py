"""Integration: the daemon's prober against real hubs; a killed hub opens an incident, the supervisor
restarts it, the incident resolves, and exactly one open and one resolve alert reach a real SMTP server
(aiosmtpd) and a real webhook receiver on loopback."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from alert_receivers import smtp_server, webhook_receiver
from fleet_helpers import copy_demo_fleet, daemon_status, drop_section, hubfleet, running_fleet, wait_for

pytestmark = pytest.mark.integration

PROBE_INTERVAL = 1.0
OPS = "ops@hubfleet.example"


def failed_probes_until(fleet: Path, hub: str, until: str) -> int:
    """Failed probes of `hub` recorded up to and including `until` (an ISO time from `hubfleet incidents`)."""
    from datetime import datetime

    from hubfleet.store import open_store
    from hubfleet.store.models import ProbeSample

    with open_store(fleet / ".hubfleet") as store, store.session() as session:
        rows = session.query(ProbeSample).filter(ProbeSample.hub == hub, ProbeSample.ok.is_(False))
        return sum(1 for row in rows if row.at <= datetime.fromisoformat(until))


def incidents(fleet: Path, *flags: str) -> list[dict]:
    return json.loads(hubfleet("incidents", "--json", *flags, fleet=fleet, check=True).stdout)


def test_killed_hub_opens_one_incident_alerts_once_and_resolves(tmp_path: Path) -> None:
    fleet = copy_demo_fleet(
        tmp_path / "fleet",
        keep={"communities/uni-a/hubs/staging.yaml", "communities/hackweek/hubs/staging.yaml"},
    )
    # the demo's hackweek budget (25 EUR) is forecast to be passed as soon as the daemon prices the running
    # month: a `cost` incident and its alert, which are not what this test is about
    hackweek = fleet / "communities/hackweek/community.yaml"
    hackweek.write_text(drop_section(hackweek.read_text(), "billing"))
    with smtp_server() as smtp, webhook_receiver() as hook:
        with (fleet / "fleet.yaml").open("a") as f:
            f.write(
                f"""
monitoring:
  probe_timeout: 3
  failures_to_open: 2
  alerts:
    community_contacts: false
    webhooks:
      - name: ops-chat
        url: {hook.url}
    email:
      - name: ops-mail
        smtp_host: 127.0.0.1
        smtp_port: {smtp.port}
        security: none
        sender: hubfleet@hubfleet.example
        to: [{OPS}]
"""
            )
        # hubs as fresh processes: a hub forked from the hub template is back within about a second, before
        # two probes could fail, and a blip that short is no incident (the rule this test is about)
        env = {"HUBFLEET_PROBE_INTERVAL": str(PROBE_INTERVAL), "HUBFLEET_HUB_START": "process"}
        with running_fleet(fleet, env=env):
            # The daemon probes on its own: samples appear, every hub up, no incident.
            def sampled() -> dict:
                figures = json.loads(hubfleet("uptime", "--json", fleet=fleet, check=True).stdout)["uptime"]
                return figures if all(hub["24h"] is not None for hub in figures.values()) else {}

            figures = wait_for(sampled, timeout=30)
            assert set(figures) == {"uni-a-staging", "hackweek-staging"}
            assert all(hub["24h"] == 100.0 for hub in figures.values()), figures
            assert incidents(fleet) == []

            victim = "uni-a-staging"
            old_pid = daemon_status(fleet)["hubs"][victim]["pid"]
            os.kill(old_pid, signal.SIGKILL)

            [opened] = wait_for(lambda: incidents(fleet, "--open"), timeout=60, interval=0.1)
            assert (opened["hub"], opened["kind"], opened["resolved_at"]) == (victim, "down", None)
            assert opened["cause"], opened
            # "within two probe intervals", counted in probes rather than seconds (the machine may be busy):
            # the incident opened at the second failed probe after the kill
            assert failed_probes_until(fleet, victim, opened["started_at"]) == 2

            def restarted() -> bool:
                hub = daemon_status(fleet)["hubs"][victim]
                return hub["state"] == "running" and hub["pid"] != old_pid

            wait_for(restarted, timeout=120)
            [resolved] = wait_for(lambda: [i for i in incidents(fleet) if i["resolved_at"]], timeout=30)
            assert resolved["hub"] == victim and resolved["started_at"] == opened["started_at"]
            assert resolved["duration_seconds"] > 0
            assert incidents(fleet, "--open") == []

            wait_for(lambda: len(smtp.messages) >= 2 and len(hook.bodies) >= 2, timeout=30)
            time.sleep(5 * PROBE_INTERVAL)  # more passes with the hub up: nothing more is sent
            # the untouched hub never had an incident
            assert {i["hub"] for i in incidents(fleet)} == {victim}

        subjects = [m.subject for m in smtp.messages]
        assert len(subjects) == 2, subjects
        assert "OPEN" in subjects[0] and victim in subjects[0]
        assert "RESOLVED" in subjects[1] and victim in subjects[1]
        assert all(m.rcpt_tos == [OPS] for m in smtp.messages)
        texts = hook.texts
        assert len(texts) == 2, texts
        assert "OPEN" in texts[0] and victim in texts[0]
        assert "RESOLVED" in texts[1] and victim in texts[1]
        assert len(hook.requests) == 2  # no retries were needed, no repeats while open
