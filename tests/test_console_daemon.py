"""The console served by the `hubfleet up` daemon, over a real running hub: its URL in `up` and
`status --json`, live state and version from the daemon and the prober, and the operator's "run check"
doing the real synthetic check (log in, spawn, run code, stop) on the hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from console_helpers import write_accounts
from fleet_helpers import copy_demo_fleet, hubfleet, running_fleet

pytestmark = pytest.mark.integration
HUB = "uni-a-staging"


def _wait_for(client: httpx.Client, predicate, timeout: float = 60):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = next(h for h in client.get("/api/hubs").json()["hubs"] if h["name"] == HUB)
        if predicate(row):
            return row
        time.sleep(0.5)
    raise AssertionError(f"hub row never matched: {row}")


def test_the_daemon_serves_the_console_and_operators_run_checks(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    write_accounts(root, {"ops": "operator", "lead-a": "uni-a"})
    hubfleet("console-password", "ops", "--stdin", fleet=root, input="ops-password-1\n", check=True)
    tokens = {
        user: hubfleet("console-token", "create", user, fleet=root, check=True).stdout.strip()
        for user in ("ops", "lead-a")
    }
    env = {"HUBFLEET_PROBE_INTERVAL": "1"}
    with running_fleet(root, env=env):
        status = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
        url = status["console"]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/login").status_code == 200
        ops = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['ops']}"}, timeout=120)
        lead = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['lead-a']}"}, timeout=30)
        # /metrics shows every community: an operator's token, as the exported Prometheus config sends it
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert lead.get("/metrics").status_code == 403
        assert "hubfleet_hub_up" in ops.get("/metrics").text
        row = _wait_for(ops, lambda r: r["state"] == "running" and r["version"])
        assert row["version"].startswith("6.") and row["url"].startswith("http://127.0.0.1:")
        assert row["last_probe_ok"] is True

        assert lead.post(f"/api/hubs/{HUB}/checks").status_code == 403
        result = ops.post(f"/api/hubs/{HUB}/checks")
        assert result.status_code == 200, result.text
        body = result.json()
        assert body["ok"] is True, body
        assert {step["name"] for step in body["steps"]} >= {"start_server", "execute", "stop_server"}
        checks = ops.get("/api/checks", params={"hub": HUB}).json()["checks"]
        assert checks and checks[0]["ok"] is True
        # the check is in the store the CLI reads too
        assert "check" in hubfleet("history", HUB, fleet=root, check=True).stdout

    # the fleet is down, and the console with it
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/login", timeout=3)
