"""`hubfleet status` when the fleet's files do not validate: it still shows what the daemon runs (from
daemon.json, which needs no fleet files) and prints each problem as a warning, instead of only refusing.
The daemon is stood in for by a daemon.json naming this test's own (live) process."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fleet_helpers import copy_demo_fleet, hubfleet


def _daemon_json(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    hub = {
        "name": "uni-a-staging",
        "community": "uni-a",
        "stage": "staging",
        "url": "http://127.0.0.1:18001",
        "state": "running",
        "pid": os.getpid(),
        "restarts": 2,
        "started_at": "2026-11-30T10:00:00Z",
        "error": "",
        "warnings": [],
    }
    status = {
        "pid": os.getpid(),
        "started_at": "2026-11-30T10:00:00Z",
        "console": "http://127.0.0.1:18000",
        "hubs": {"uni-a-staging": hub},
    }
    (state / "daemon.json").write_text(json.dumps(status))


def test_status_of_an_invalid_fleet_shows_what_runs_and_warns(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    _daemon_json(root / ".hubfleet")
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(fleet_yaml.read_text() + "colour: blue\n")

    shown = hubfleet("status", fleet=root)
    assert shown.returncode == 0, shown.stderr
    assert "uni-a-staging" in shown.stdout and "running" in shown.stdout
    assert "console: http://127.0.0.1:18000" in shown.stdout
    assert "warning: fleet.yaml:" in shown.stderr and "colour" in shown.stderr
    assert "1 error(s) in the fleet configuration" in shown.stderr and "Traceback" not in shown.stderr

    as_json = hubfleet("status", "--json", fleet=root)
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["daemon"]["pid"] == os.getpid() and result["console"] == "http://127.0.0.1:18000"
    assert [(h["name"], h["state"], h["restarts"]) for h in result["hubs"]] == [
        ("uni-a-staging", "running", 2)
    ]
    assert len(result["fleet_errors"]) == 1 and "colour" in result["fleet_errors"][0]


def test_status_of_an_invalid_fleet_without_a_daemon_says_it_is_not_up(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(fleet_yaml.read_text() + "colour: blue\n")
    shown = hubfleet("status", fleet=root)
    assert shown.returncode == 0, shown.stderr
    assert "not up" in shown.stdout and "warning: fleet.yaml:" in shown.stderr
