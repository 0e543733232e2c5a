"""The readiness test (`hubfleet event test`) against REAL hubs run by the daemon: a dummy hub (its login form
and shared password, the Python environment) and a native hub (sign-up form, approval by the operator, login
form). One fleet for the module, few attendees; no timing is asserted (the targets are set far above or below
anything this machine does)."""

from __future__ import annotations

import asyncio
import json
import pwd
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fleet_helpers import copy_demo_fleet, free_ports, hubfleet, running_fleet
from hubfleet.checks.synthetic import TEST_USER_PREFIX
from hubfleet.config.models_events import Arrival, parse_arrival
from hubfleet.config.validate import load_fleet
from hubfleet.events import test_users
from hubfleet.events.readiness import ReadinessReport, run_readiness_test, schedule
from hubfleet.isolation.accounts import fleet_accounts, home_dirname, user_account
from hubfleet.runtime.layout import layout
from hubfleet.store import open_store
from hubfleet.store.models import UserDay

pytestmark = pytest.mark.integration

DUMMY = "uni-a-staging"  # dummy auth (password demo-staging), environments python and r
NATIVE = "uni-a"  # native auth (sign-ups approved by an admin), the same environments
TOKEN = "uni-a-workshop"  # tmp auth: no form a test user can fill in, so the hub issues tokens
WORKSHOP_HUB = """\
name: uni-a-workshop
community: uni-a
cluster: local
stage: staging
port: {port}
auth:
  type: tmp
  admin_users: [grace]
"""
EVENTS = """
events:
  - name: lab-ok
    start: 2030-01-10T10:00
    end: 2030-01-10T12:00
    timezone: Europe/Berlin
    attendees: 3
    arrival: 3 in 2s
    environment: python
    spawn_p95_seconds: 600
    readiness_test_users: 3
  - name: lab-strict
    start: 2030-01-11T10:00
    end: 2030-01-11T12:00
    timezone: Europe/Berlin
    attendees: 3
    environment: python
    spawn_p95_seconds: 0.001
    readiness_test_users: 1
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("fleet") / "demo",
        keep={"communities/uni-a/hubs/staging.yaml", "communities/uni-a/hubs/prod.yaml"},
        front_door=True,  # attendees come through it (https, the hubs' public names), as people do
    )
    staging = root / "communities/uni-a/hubs/staging.yaml"
    staging.write_text(staging.read_text() + EVENTS)
    (root / "communities/uni-a/hubs/workshop.yaml").write_text(WORKSHOP_HUB.format(port=free_ports(1)[0]))
    # the collector samples every second, so it sees the attendees' servers while they run
    with running_fleet(root, env={"HUBFLEET_COLLECT_INTERVAL": "1"}):
        yield root


def operator(fleet: Path, hub: str) -> httpx.Client:
    token = hubfleet("token", hub, fleet=fleet, check=True).stdout.strip()
    url = json.loads((fleet / ".hubfleet" / "daemon.json").read_text())["hubs"][hub]["url"]
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30)


def hub_users(fleet: Path, hub: str) -> list[str]:
    with operator(fleet, hub) as client:
        return [user["name"] for user in client.get("/hub/api/users").json()]


def assert_gone(fleet: Path, hub: str, usernames: list[str]) -> None:
    """No trace of the test users: not on the hub, no OS account, no home, no database."""
    assert not [name for name in hub_users(fleet, hub) if name.startswith(TEST_USER_PREFIX)]
    where = layout(fleet / ".hubfleet")
    for name in usernames:
        with pytest.raises(KeyError):
            pwd.getpwnam(user_account(where.instance, hub, name))
        assert not (where.homes(hub) / home_dirname(name)).exists()
        assert not (where.data_dir / "userdbs" / hub / home_dirname(name)).exists()


def run(fleet: Path, hub: str, **options: object) -> ReadinessReport:
    config = load_fleet(fleet)
    options = {"users": 2, "arrival": None, "event": None, "target_p95_seconds": 600.0} | options
    return asyncio.run(run_readiness_test(config, hub, state_dir=fleet / ".hubfleet", **options))  # type: ignore[arg-type]


def test_dummy_hub_passes_is_stored_and_leaves_no_test_user(fleet: Path) -> None:
    done = hubfleet("event", "test", DUMMY, "--event", "lab-ok", "--json", fleet=fleet)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True and report["failures"] == [] and report["cleanup_problems"] == []
    assert report["url"].startswith("https://")  # through the fleet's front door
    assert report["event"] == "lab-ok" and report["environment"] == "python" and report["users"] == 3
    assert report["arrival"] == {"all_at_once": False, "people": 3, "seconds": 2.0}
    assert [a["arrives_after"] for a in report["attendees"]] == [0.0, 0.667, 1.333]
    for attendee in report["attendees"]:
        assert attendee["sign_in"] == "login form" and attendee["ok"]
        assert [s["name"] for s in attendee["steps"]] == [
            "sign_in", "start_server", "start_kernel", "execute", "delete_kernel", "stop_server"
        ]  # fmt: skip
        assert "python3" in attendee["steps"][2]["detail"]  # the event's environment's kernel
    assert report["spawn"]["count"] == 3 and report["first_execution"]["count"] == 3
    spawn = report["spawn"]
    assert spawn["p50"] <= spawn["p95"] <= spawn["max"]
    assert "demo-staging" not in done.stdout  # the hub's password is never in the report
    assert_gone(fleet, DUMMY, [a["username"] for a in report["attendees"]])

    # stored: `hubfleet events` shows the last test of the event
    listed = json.loads(hubfleet("events", "--json", fleet=fleet, check=True).stdout)["events"]
    row = next(e for e in listed if e["name"] == "lab-ok")
    assert row["last_test"]["passed"] is True
    # the collector saw their servers (every second) but never counted them as users
    with open_store(fleet / ".hubfleet") as store, store.session() as session:
        counted = {d.username for d in session.query(UserDay)}
    assert not [name for name in counted if name.startswith(TEST_USER_PREFIX)]


def test_native_hub_signs_up_and_in_through_the_forms(fleet: Path) -> None:
    report = run(fleet, NATIVE, users=2, arrival=Arrival(2, 2.0))
    assert report.passed, report.to_json()
    for attendee in report.attendees:
        names = [s.name for s in attendee.steps]
        assert names[:3] == ["sign_up", "sign_in", "start_server"], names
        assert attendee.steps[1].detail == "signed in through the login form"
    usernames = [a.username for a in report.attendees]
    assert_gone(fleet, NATIVE, usernames)
    with operator(fleet, NATIVE) as client:  # the sign-ups went with the users
        for name in usernames:
            assert client.get(f"/hub/api/native/users/{name}").status_code == 404


def test_hub_without_a_usable_login_form_issues_tokens(fleet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a test user a killed test left behind; "an hour old" is made "any age" for the test
    with operator(fleet, TOKEN) as client:
        assert client.post(f"/hub/api/users/{TEST_USER_PREFIX}killed-1").status_code == 201
    monkeypatch.setattr(test_users, "STALE_SECONDS", 0.0)
    report = run(fleet, TOKEN, users=2)
    assert report.passed, report.to_json()
    assert report.stale_users_removed == [f"{TEST_USER_PREFIX}killed-1"]
    for attendee in report.attendees:
        assert attendee.sign_in == "token"
        assert [s.name for s in attendee.steps][:2] == ["issue_token", "start_server"]
    assert_gone(fleet, TOKEN, [a.username for a in report.attendees])


def test_failures_name_their_cause_and_a_missed_target_fails(fleet: Path) -> None:
    # code that raises: each attendee fails at `execute`, with the kernel's error as the cause
    report = run(fleet, DUMMY, users=2, code="raise RuntimeError('boom {a}')")
    assert not report.passed
    assert len(report.failures) == 2
    for failure in report.failures:
        assert failure["error"].startswith("execute: execute_reply status 'error'"), failure
        assert "RuntimeError: boom" in failure["error"]
    assert report.verdict.startswith("failed: 2 of 2 attendees failed")
    assert_gone(fleet, DUMMY, [a.username for a in report.attendees])

    # nobody fails, but spawns cannot meet 0.001 s: the CLI says so and exits 1
    done = hubfleet("event", "test", DUMMY, "--event", "lab-strict", fleet=fleet)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is over the target of 0.001s" in done.stderr
    listed = json.loads(hubfleet("events", "--json", fleet=fleet, check=True).stdout)["events"]
    assert next(e for e in listed if e["name"] == "lab-strict")["last_test"]["passed"] is False


def test_cancelled_test_removes_its_users(fleet: Path) -> None:
    """Ctrl-C (the task cancelled) while servers are starting: the test users are removed all the same."""
    where = layout(fleet / ".hubfleet")
    accounts = {a.name for a in fleet_accounts(where.instance)}
    config = load_fleet(fleet)

    async def cancel_during_spawns() -> None:
        task = asyncio.create_task(
            run_readiness_test(
                config, DUMMY, state_dir=fleet / ".hubfleet", users=2, arrival=None, event=None
            )
        )
        await asyncio.sleep(2.5)  # signed in, spawns under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_during_spawns())
    assert not [name for name in hub_users(fleet, DUMMY) if name.startswith(TEST_USER_PREFIX)]
    assert {a.name for a in fleet_accounts(where.instance)} <= accounts
    homes = where.homes(DUMMY)
    assert not [p.name for p in homes.iterdir() if p.name.startswith(TEST_USER_PREFIX)]


def test_cli_errors(tmp_path: Path) -> None:
    """Bad input is refused before anything starts (a fleet that is not running)."""
    root = copy_demo_fleet(
        tmp_path / "demo", keep={"communities/uni-a/hubs/prod.yaml", "communities/uni-a/hubs/staging.yaml"}
    )
    cases = {
        ("nohub",): "no hub named 'nohub'",
        ("uni-a", "--event", "nope"): "no event 'nope' on hub uni-a; events: phys101-first-lab",
        ("uni-a", "--arrival", "fast"): "--arrival: 'fast' is not an arrival rate",
        ("uni-a", "--users", "101"): "101 test users exceed hub uni-a's max_users (100)",
        ("uni-a", "--users", "0"): "--users must be at least 1",
        ("uni-a",): "hub uni-a is not running: no `hubfleet up` daemon runs",
        ("uni-a", "--users", "100", "--arrival", "1 in 1m"): "the test would run 6240s",
    }
    with ThreadPoolExecutor(len(cases)) as pool:  # each a process of its own: at once
        runs = pool.map(lambda args: hubfleet("event", "test", *args, fleet=root), cases)
        results = dict(zip(cases, runs, strict=True))
    for args, message in cases.items():
        done = results[args]
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert message in " ".join((done.stdout + done.stderr).split()), (args, done.stdout + done.stderr)
        assert "Traceback" not in done.stderr


def test_arrival_schedule_and_usage_exclusion() -> None:
    """'60 in 3m' is one attendee every 3 s; the collector never records a test user's day or session."""
    assert schedule(4, parse_arrival("60 in 3m")) == [0.0, 3.0, 6.0, 9.0]
    assert schedule(3, None) == [0.0, 0.0, 0.0]
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from hubfleet.monitor.collector import record_collection
    from hubfleet.store.models import Base, ServerSession

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    server = {"": {"ready": True, "started": stamp, "last_activity": stamp}}
    users = [
        {"name": "alice", "last_activity": stamp, "servers": server},
        {"name": f"{TEST_USER_PREFIX}abc123-1", "last_activity": stamp, "servers": server},
    ]
    with Session(engine) as session, session.begin():
        result = record_collection(session, "hub", "dummy", users, now=now, since=now - timedelta(minutes=5))
        assert result.active_users == 1
        assert {d.username for d in session.query(UserDay)} == {"alice"}
        assert {s.username for s in session.query(ServerSession)} == {"alice"}
