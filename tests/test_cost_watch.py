"""The daemon's cost watch in a real `hubfleet up --detach`: the local cluster's price sheet turns the running
fleet into cost, a tiny budget is passed, and the `cost` incidents appear in `hubfleet incidents` and by
email through the fleet's alert channel."""

from __future__ import annotations

import json
import re
from pathlib import Path

from alert_receivers import smtp_server
from fleet_helpers import copy_demo_fleet, hubfleet, running_fleet, wait_for

OPS = "ops@hubfleet.example"


def test_a_tiny_budget_raises_cost_incidents_in_the_running_daemon(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    # a fixed cost so large that the first second of the month costs cents, and a budget of one cent
    cluster = root / "clusters/local.yaml"
    cluster.write_text(
        re.sub(r"(?m)^    monthly_fixed: .*$", "    monthly_fixed: 10000000", cluster.read_text())
    )
    community = root / "communities/uni-a/community.yaml"
    community.write_text(
        community.read_text().replace("  budget: {monthly: 400}\n", "  budget: {monthly: 0.01}\n")
    )
    with smtp_server() as smtp:
        with (root / "fleet.yaml").open("a") as f:
            f.write(
                "monitoring:\n  alerts:\n    community_contacts: false\n    email:\n      - name: ops-mail\n"
                f"        smtp_host: 127.0.0.1\n        smtp_port: {smtp.port}\n        security: none\n"
                f"        sender: hubfleet@hubfleet.example\n        to: [{OPS}]\n"
            )
        with running_fleet(root, env={"HUBFLEET_COST_INTERVAL": "2"}):

            def cost_incidents() -> list[dict]:
                listed = json.loads(hubfleet("incidents", "--json", fleet=root, check=True).stdout)
                found = [i for i in listed if i["kind"] == "cost" and i["community"] == "uni-a"]
                return found if {i["rule"] for i in found} >= {"budget-100", "forecast"} else []

            found = wait_for(cost_incidents, timeout=120, interval=2)
            subjects = wait_for(
                lambda: [m.subject for m in smtp.to(OPS) if "budget-100" in m.subject], timeout=60
            )
            budgets = json.loads(hubfleet("budgets", "--json", fleet=root, check=True).stdout)["budgets"]

    rules = {i["rule"]: i for i in found}
    assert {"budget-50", "budget-90", "budget-100", "forecast"} <= set(rules)
    assert all(i["hub"] == "" and i["resolved_at"] is None for i in rules.values())
    assert "community uni-a has spent" in rules["budget-100"]["cause"]
    assert "of its budget of 0.01 USD" in rules["budget-100"]["cause"]
    assert subjects[0].startswith(
        "[demo] OPEN: community uni-a cost alert (budget-100): community uni-a has spent"
    )
    (uni,) = [b for b in budgets if b["community"] == "uni-a"]
    assert uni["budget"] == "0.01" and uni["status"] == "over 100 %" and uni["reached"] == ["50", "90", "100"]
