"""A running web console over a demo-fleet copy with accounts, passwords, tokens and a month of data.

The console is the real `hubfleet console` process on a loopback port; passwords and tokens are made by
the functions behind `hubfleet console-password` / `console-token create`; the store is seeded with rows
of the kinds the daemon writes (probe samples and their daily sums, user days, hub samples, sessions,
deployments, checks, restarts, incidents). No hub runs: pages and API read the store, which is what they
do in the daemon too."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from fleet_helpers import HUBFLEET, copy_demo_fleet, drop_section, free_ports, hubfleet_env

ACCOUNTS = {"ops": "operator", "lead-a": "uni-a", "lead-h": "hackweek"}
"""username -> "operator", or the one community the leader leads."""
PASSWORDS = {"ops": "ops-password-1", "lead-a": "lead-a-password", "lead-h": "lead-h-password"}


@dataclass
class ConsoleFleet:
    root: Path
    state_dir: Path
    url: str
    passwords: dict[str, str]
    tokens: dict[str, str]
    hubs_by_community: dict[str, list[str]]
    """Community -> its hub names (sorted), as the fleet's files say."""
    process: subprocess.Popen[str] | None = None


def console_accounts_yaml(accounts: dict[str, str]) -> str:
    lines = ["console:", "  accounts:"]
    for username, what in accounts.items():
        lines.append(f"    - username: {username}")
        if what == "operator":
            lines.append("      role: operator")
        else:
            lines += ["      role: community-leader", f"      communities: [{what}]"]
    return "\n".join(lines) + "\n"


def write_accounts(root: Path, accounts: dict[str, str] | None = None) -> None:
    """Replace the demo's console section of fleet.yaml with `accounts` (default ACCOUNTS)."""
    fleet_yaml = root / "fleet.yaml"
    text = fleet_yaml.read_text()
    text = drop_section(text, "console")
    fleet_yaml.write_text(text.rstrip("\n") + "\n" + console_accounts_yaml(accounts or ACCOUNTS))


def hubs_by_community(root: Path) -> dict[str, list[str]]:
    from hubfleet.config.validate import load_fleet

    found: dict[str, list[str]] = {}
    for hub in load_fleet(root).hubs.values():
        found.setdefault(hub.community, []).append(hub.name)
    return {community: sorted(names) for community, names in sorted(found.items())}


def seed_store(state_dir: Path, hubs: list[str], now: datetime | None = None) -> None:
    """A month of monitoring rows for the four demo hubs (numbers chosen to be told apart in tests)."""
    from hubfleet.store.api import open_store
    from hubfleet.store.models import (
        Check,
        Deployment,
        HubSample,
        Incident,
        ProbeDay,
        ProbeSample,
        Restart,
        ServerSession,
    )

    now = now or datetime.now(UTC)
    today = now.date()
    rows: list[object] = []
    for n, hub in enumerate(hubs):
        for back in range(30):
            day = today - timedelta(days=back)
            probes = 2880 if back else 100
            failed = (n + back) % 7 == 0 and back > 0
            ok = probes - (30 if failed else 0)
            rows.append(
                ProbeDay(
                    hub=hub,
                    day=day,
                    probes=probes,
                    ok=ok,
                    latency_ms_sum=ok * (20.0 + n),
                    latency_ms_max=90.0 + n,
                )
            )
            # users: hub n has 5 + n regulars every day and a few who come every third day
            for u in range(5 + n):
                rows.append(_user_day(hub, f"user{u}", day))
            if back % 3 == 0:
                for u in range(100, 103):
                    rows.append(_user_day(hub, f"user{u}", day))
        for minute in range(0, 24 * 60, 10):
            at = now - timedelta(minutes=minute)
            rows.append(
                HubSample(
                    hub=hub,
                    at=at,
                    running_servers=(minute // 60) % (4 + n),
                    users=20,
                    active_24h=5 + n,
                    active_7d=8 + n,
                    active_30d=8 + n,
                    spawn_success_total=float(1000 - minute // 10),
                    spawn_failure_total=float(10 - minute // 200),
                    spawn_seconds_total=float((1000 - minute // 10) * 4.5),
                )
            )
        for i in range(20):
            at = now - timedelta(seconds=30 * i)
            rows.append(
                ProbeSample(
                    hub=hub,
                    at=at,
                    ok=True,
                    health_status=200,
                    api_status=200,
                    latency_ms=21.0 + n,
                    version="6.1.1",
                )
            )
        rows.append(
            ServerSession(
                hub=hub,
                username="user0",
                server_name="",
                started_at=now - timedelta(hours=2),
                stopped_at=None,
            )
        )
        for d in range(3):
            started = now - timedelta(days=d * 5 + 1)
            rows.append(
                Deployment(
                    hub=hub,
                    config_hash=f"hash{n}{d}",
                    started_at=started,
                    finished_at=started + timedelta(seconds=12),
                    result="ok" if d != 1 else "rolled_back",
                    message="" if d != 1 else "check failed at spawn: timeout",
                    actor="ops@ci",
                    community=hub.removesuffix("-staging"),
                    stage="staging" if hub.endswith("-staging") else "prod",
                )
            )
        rows.append(
            Check(
                hub=hub,
                at=now - timedelta(hours=1),
                ok=True,
                failed_step=None,
                total_seconds=6.5,
                steps=[
                    {"name": "spawn", "ok": True, "seconds": 4.2},
                    {"name": "kernel", "ok": True, "seconds": 1.1},
                ],
            )
        )
        rows.append(
            Restart(hub=hub, at=now - timedelta(days=2), reason="exited with code 1", exit_code=1, attempt=1)
        )
    rows += [
        Incident(
            hub="uni-a",
            kind="down",
            started_at=now - timedelta(minutes=20),
            cause="GET /hub/health: 502",
        ),
        Incident(
            hub="hackweek",
            kind="down",
            started_at=now - timedelta(days=3, hours=1),
            resolved_at=now - timedelta(days=3),
            cause="connection refused",
        ),
        Incident(
            hub="hackweek-staging",
            kind="anomaly",
            rule="max_running_servers",
            started_at=now - timedelta(days=1),
            cause="12 servers running (cap 10)",
        ),
    ]
    with open_store(state_dir) as store, store.session() as session, session.begin():
        session.add_all(rows)


def _user_day(hub: str, username: str, day: date) -> object:
    from hubfleet.store.models import UserDay

    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=10)
    return UserDay(
        hub=hub, username=username, day=day, identity=f"dummy:{username}", first_seen=at, last_seen=at
    )


def set_credentials(state_dir: Path) -> dict[str, str]:
    """PASSWORDS set and an API token per account, as `hubfleet console-password` and `console-token
    create` do (those commands are tested in test_console_accounts.py; here in-process, which saves a
    CLI start per account). Returns the tokens."""
    from hubfleet.console import accounts
    from hubfleet.store.api import open_store

    with open_store(state_dir) as store:
        for username, password in PASSWORDS.items():
            accounts.set_password(store, username, password)
        return {username: accounts.create_token(store, username, "tests")[0] for username in PASSWORDS}


def start_console(
    root: Path, state_dir: Path, port: int, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    """`hubfleet console` on `port` (and `args`), in a session of its own, its output in
    <state_dir>/console.log."""
    env = hubfleet_env() | (env or {})
    log = (state_dir / "console.log").open("a")  # two consoles of one state dir share it
    process = subprocess.Popen(
        [
            str(HUBFLEET),
            "console",
            "--fleet",
            str(root),
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"hubfleet console exited {process.returncode}:\n{(state_dir / 'console.log').read_text()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                return process
        time.sleep(0.1)
    stop_console(process)
    raise AssertionError(
        f"hubfleet console did not answer within 60 s:\n{(state_dir / 'console.log').read_text()}"
    )


def stop_console(process: subprocess.Popen[str]) -> None:
    """Stop the console's process group (it was started in a session of its own)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def console_fleet(root: Path) -> Iterator[ConsoleFleet]:
    """Demo-fleet copy with console accounts (ops = operator, lead-a = community-leader of uni-a, lead-h =
    community-leader of hackweek), passwords and API tokens set, the store seeded with 30 days of rows,
    and `hubfleet console --port N` running as a subprocess (no hubs running)."""
    fleet = copy_demo_fleet(root / "fleet")
    write_accounts(fleet)
    state_dir = fleet / ".hubfleet"
    state_dir.mkdir(exist_ok=True)
    tokens = set_credentials(state_dir)
    by_community = hubs_by_community(fleet)
    seed_store(state_dir, [hub for names in by_community.values() for hub in names])
    (port,) = free_ports(1)
    process = start_console(fleet, state_dir, port)
    try:
        url = f"http://127.0.0.1:{port}"
        yield ConsoleFleet(fleet, state_dir, url, dict(PASSWORDS), tokens, by_community, process=process)
    finally:
        stop_console(process)


def sign_in(client: httpx.Client, username: str, password: str, next_url: str = "/") -> httpx.Response:
    """Sign in through the real form: GET /login (its CSRF cookie and field), then POST it."""
    page = client.get("/login", params={"next": next_url})
    csrf = input_value(page.text, "login_csrf")
    assert csrf, f"no login_csrf field on the sign-in page:\n{page.text[:2000]}"
    return client.post(
        "/login", data={"username": username, "password": password, "login_csrf": csrf, "next": next_url}
    )


def input_value(html: str, name: str) -> str | None:
    """The value of the <input name=NAME> of a page (attributes in any order)."""
    for tag in re.findall(r"<input\b[^>]*>", html):
        if re.search(rf'\bname="{re.escape(name)}"', tag):
            value = re.search(r'\bvalue="([^"]*)"', tag)
            return value.group(1) if value else None
    return None


def signed_in_client(cf: ConsoleFleet, username: str) -> httpx.Client:
    """An httpx client with a session of `username` and its CSRF token in the X-CSRF-Token header."""
    client = httpx.Client(base_url=cf.url, timeout=30)
    response = sign_in(client, username, cf.passwords[username])
    assert response.status_code == 303, (
        f"sign-in of {username} failed: {response.status_code} {response.text[:500]}"
    )
    page = client.get("/")
    match = re.search(r'<meta\s+name="csrf-token"\s+content="([^"]+)"', page.text)
    assert match, f"no csrf-token meta tag on the overview page:\n{page.text[:2000]}"
    client.headers["X-CSRF-Token"] = match.group(1)
    return client
