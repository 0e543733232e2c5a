"""What server sessions record for cost allocation: the environment and requests a server started with, and
the CPU time and peak memory its control group measured (issue 18 §2).

Requests are resolved from the demo fleet's own hub files; the measurement reads a real control group of this
host (as root) holding a real process that burns CPU and holds memory; the sessions are written by the
collector's `record_collection` into a real store.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.isolation.accounts import user_account
from hubfleet.isolation.cgroups import Limits, detect
from hubfleet.monitor.collector import record_collection
from hubfleet.monitor.resources import Measured, Request, ServerMeter, server_request
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.store.models import ServerSession

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
GIB = 1024**3
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(DEMO)


def with_environments(fleet: FleetConfig, hub: str, environments: list[dict[str, Any]]) -> Any:
    base = fleet.hubs[hub]
    return type(base).model_validate({**base.model_dump(mode="json"), "environments": environments})


def test_requests_from_the_environment_over_the_hubs_resources(fleet: FleetConfig) -> None:
    # the demo's defaults: memory_limit 1G, cpu_limit 1; uni-a offers python (default) and r
    hub = fleet.hubs["uni-a-staging"]
    assert server_request(hub, {"environment": "r"}) == Request("r", 1.0, GIB)
    assert server_request(hub, {}) == Request("python", 1.0, GIB)  # the default environment
    sized = with_environments(
        fleet,
        "uni-a-staging",
        [
            {
                "slug": "python",
                "display_name": "Python",
                "default": True,
                "resources": {"memory_limit": "2G", "cpu_limit": 0.5},
            },
            {
                "slug": "gpu",
                "display_name": "GPU",
                "groups": ["gpu-users"],
                "resources": {"memory_guarantee": "4G", "memory_limit": "8G", "cpu_guarantee": 2},
                "options": {
                    "size": {
                        "display_name": "Size",
                        "choices": {
                            "small": {"display_name": "Small", "default": True},
                            "large": {
                                "display_name": "Large",
                                "resources": {"cpu_guarantee": 4},
                                "groups": ["big"],
                            },
                        },
                    }
                },
            },
        ],
    )
    assert server_request(sized, {"environment": "python"}) == Request("python", 0.5, 2 * GIB)
    # guarantees win over limits; a choice's override counts even for a user no longer in its group
    assert server_request(sized, {"environment": "gpu"}, ["gpu-users"]) == Request("gpu", 2.0, 4 * GIB)
    assert server_request(sized, {"environment": "gpu", "size": "large"}, []) == Request("gpu", 4.0, 4 * GIB)
    # KubeSpawner names the environment `profile`; an unknown one keeps the hub's resources
    assert server_request(sized, {"profile": "gpu"}) == Request("gpu", 2.0, 4 * GIB)
    assert server_request(sized, {"environment": "gone"}) == Request("gone", 1.0, GIB)


def test_no_resources_anywhere_is_none(fleet: FleetConfig) -> None:
    base = fleet.hubs["hackweek-staging"]
    bare = type(base).model_validate({**base.model_dump(mode="json"), "resources": {}, "environments": []})
    assert server_request(bare, None) == Request(None, None, None)


# --------------------------------------------------------------------------- sessions in the store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state") as s:
        yield s


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def running(started: datetime, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "started": iso(started),
        "last_activity": iso(started),
        "ready": True,
        "stopped": False,
        "pending": None,
        "user_options": options,
    }


def test_sessions_keep_requests_and_the_highest_measurement(store: Store, fleet: FleetConfig) -> None:
    hub = fleet.hubs["uni-a-staging"]

    def request_of(user: dict[str, Any], server: dict[str, Any]) -> Request:
        return server_request(hub, server.get("user_options"), user.get("groups"))

    def collect(at: datetime, users: list[dict[str, Any]], measured: dict[str, Measured]) -> None:
        with store.session() as session, session.begin():
            record_collection(
                session,
                hub.name,
                "dummy",
                users,
                now=at,
                since=at - timedelta(minutes=15),
                request_of=request_of,
                measured=measured,
            )

    ann = {"name": "ann", "servers": {"": running(NOW, {"environment": "r"})}}
    collect(NOW, [ann], {"ann": Measured(cpu_seconds=3.0, memory_peak_bytes=100)})
    collect(NOW + timedelta(minutes=1), [ann], {"ann": Measured(cpu_seconds=9.5, memory_peak_bytes=80)})
    # the group is gone (server stopping): the last values stay
    collect(NOW + timedelta(minutes=2), [ann], {})
    collect(NOW + timedelta(minutes=3), [{"name": "ann", "servers": {}}], {})
    with store.session() as session:
        row = session.scalars(select(ServerSession)).one()
    assert (row.environment, row.cpu_request, row.memory_request_bytes) == ("r", 1.0, GIB)
    assert (row.cpu_seconds_used, row.memory_peak_bytes) == (9.5, 100)
    assert row.stopped_at is not None


# --------------------------------------------------------------------------- a real control group

BURN = """
import sys, time
sys.stdin.readline()                      # joined the group
held = bytearray(64 * 1024 * 1024)        # 64 MiB, touched
for i in range(0, len(held), 4096):
    held[i] = 1
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
print("done", flush=True)
sys.stdin.readline()
"""


def test_meter_reads_a_servers_control_group() -> None:
    driver = detect()
    if driver is None:
        pytest.skip("needs writable control groups (root)")
    instance = "t" + secrets.token_hex(4)
    group = driver.group("hubfleet", instance, "uni-a", user_account(instance, "uni-a", "ann"))
    meter = ServerMeter(driver, instance)
    assert meter.measure("uni-a", "ann") is None  # no group: not running
    group.create(Limits(memory_bytes=512 * 1024 * 1024))
    proc = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        group.add(proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        use = meter.measure("uni-a", "ann")
        assert use is not None and use.cpu_seconds is not None and use.memory_peak_bytes is not None
        assert use.cpu_seconds >= 0.3
        assert use.memory_peak_bytes >= 64 * 1024 * 1024
        assert meter.measure("uni-a", "bob") is None
    finally:
        proc.kill()
        proc.wait()
        group.remove()
        for base in driver.bases():
            for path in (base / "hubfleet" / instance / "uni-a", base / "hubfleet" / instance):
                with contextlib.suppress(OSError):
                    path.rmdir()
