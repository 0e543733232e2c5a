"""`plan` shows what the front door would serve against what the running daemon's front door serves: a real
fleet copy up with its front door, then its files changed, through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fleet_helpers import copy_demo_fleet, edit, free_ports, hubfleet, running_fleet
from hubfleet.config.validate import load_fleet

KEEP = {"communities/uni-a/hubs/prod.yaml", "communities/uni-a/hubs/staging.yaml"}
NEXT_UP = "(takes effect at `hubfleet front-door reload` or the next `hubfleet up`)"


def front_door_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("front door:")]


def test_plan_compares_the_fleet_files_with_the_running_front_door(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP, front_door=True)
    port = load_fleet(root).settings.front_door.https_port
    serving = {
        f"https://console.hubs.localhost:{port}/": "console",
        f"https://hubs.localhost:{port}/uni-a-staging/": "uni-a-staging",
        f"https://uni-a.hubs.localhost:{port}/": "uni-a",
    }

    # No daemon: nothing to compare with, only what it would serve.
    before = hubfleet("plan", fleet=root, check=True).stdout
    assert front_door_lines(before) == [
        "front door: would serve 3 address(es) (no daemon runs; `hubfleet up` starts it)"
    ]
    door = json.loads(hubfleet("plan", "--json", fleet=root, check=True).stdout)["front_door"]
    assert (door["daemon"], door["state"], door["would_serve"]) == (False, None, serving)

    with running_fleet(root):
        assert front_door_lines(hubfleet("plan", fleet=root, check=True).stdout) == ["front door: no changes"]
        door = json.loads(hubfleet("plan", "--json", fleet=root, check=True).stdout)["front_door"]
        assert (door["daemon"], door["state"]) == (True, "running")
        assert door["add"] == door["remove"] == door["change"] == []

        # A new hub at its own domain, the fleet's domain moved (the staging hub's address with it), and
        # certificates from an ACME CA instead of the local one.
        new_hub = root / "communities/uni-a/hubs/uni-c.yaml"
        text = (root / "communities/uni-a/hubs/prod.yaml").read_text()
        text = re.sub(r"(?m)^name: uni-a$", "name: uni-c", text)
        text = re.sub(r"(?m)^display_name: .*$", "display_name: University C", text)
        text = re.sub(r"(?m)^port: \d+$", f"port: {free_ports(1)[0]}", text)
        new_hub.write_text(re.sub(r"(?m)^domain: .*$", "domain: uni-c.hubs.localhost", text))
        edit(root / "fleet.yaml", "  domain: hubs.localhost", "  domain: fleet.localhost")
        edit(root / "fleet.yaml", "    internal: true", "    acme:\n      email: ops@example.org")

        plan = hubfleet("plan", "--no-diff", fleet=root, check=True).stdout
        assert front_door_lines(plan) == [
            f"front door: + https://fleet.localhost:{port}/uni-a-staging/ -> uni-a-staging",
            f"front door: + https://uni-c.hubs.localhost:{port}/ -> uni-c",
            f"front door: - https://hubs.localhost:{port}/uni-a-staging/ -> uni-a-staging",
            f"front door: ~ certificates: internal -> acme {NEXT_UP}",
        ], plan
        assert "create    uni-c (uni-a, prod)" in plan
        moved = f"front door address: https://hubs.localhost:{port}/uni-a-staging/ → https://fleet.localhost:{port}"
        assert f"update    uni-a-staging (uni-a, staging)\n            {moved}/uni-a-staging/\n" in plan, plan
        door = json.loads(hubfleet("plan", "--json", fleet=root, check=True).stdout)["front_door"]
        assert door["add"] == [
            {"url": f"https://fleet.localhost:{port}/uni-a-staging/", "serves": "uni-a-staging"},
            {"url": f"https://uni-c.hubs.localhost:{port}/", "serves": "uni-c"},
        ]
        assert door["remove"] == [
            {"url": f"https://hubs.localhost:{port}/uni-a-staging/", "serves": "uni-a-staging"}
        ]
        assert door["change"] == [
            {"setting": "certificates", "running": "internal", "wanted": "acme", "when": NEXT_UP.strip("()")}
        ]
        assert len(door["would_serve"]) == 4

        # --hub narrows the addresses too; the github matrix stays as it was
        narrowed = hubfleet("plan", "--no-diff", "--hub", "uni-c", fleet=root, check=True).stdout
        assert front_door_lines(narrowed) == [
            f"front door: + https://uni-c.hubs.localhost:{port}/ -> uni-c",
            f"front door: ~ certificates: internal -> acme {NEXT_UP}",
        ]
        matrix = hubfleet("plan", "--format", "github-matrix", fleet=root, check=True).stdout
        assert "front door" not in matrix
        assert [line.split("=")[0] for line in matrix.splitlines()] == [
            "staging",
            "staging-count",
            "prod",
            "prod-count",
        ]

        # The console moved and a new https_port: both wait for a reload of the front door.
        edit(
            root / "fleet.yaml",
            "console_domain: console.hubs.localhost",
            "console_domain: console.fleet.localhost",
        )
        new_port = free_ports(1)[0]
        text = (root / "fleet.yaml").read_text()
        (root / "fleet.yaml").write_text(
            re.sub(r"(?m)^  https_port: \d+$", f"  https_port: {new_port}", text)
        )
        lines = front_door_lines(hubfleet("plan", "--no-diff", fleet=root, check=True).stdout)
        assert f"front door: + https://console.fleet.localhost:{new_port}/ -> console {NEXT_UP}" in lines
        assert f"front door: - https://console.hubs.localhost:{port}/ -> console {NEXT_UP}" in lines
        assert f"front door: ~ https_port: {port} -> {new_port} {NEXT_UP}" in lines
        assert f"front door: + https://uni-c.hubs.localhost:{new_port}/ -> uni-c" in lines
        assert not any("uni-a ->" in line for line in lines), lines  # only the port changed for uni-a
