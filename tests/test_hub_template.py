"""Hubs forked from the hub template (daemon/hub_templates.py), real JupyterHubs as root: each hub runs as its
own service account with only its own environment, is restarted (forked again) when killed, and its secrets
never enter the template's memory; `down` leaves nothing, the template included."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from fleet_helpers import copy_demo_fleet, daemon_status, running_fleet, wait_for
from hubfleet.backends.local import CONTROL_TOKEN_ENV, OPERATOR_TOKEN_ENV
from hubfleet.isolation.accounts import hub_account

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="hubs are forked only with service accounts (root)"),
]

HUBS = {
    "hackweek": "communities/hackweek/hubs/prod.yaml",
    "hackweek-staging": "communities/hackweek/hubs/staging.yaml",
}
MARKER = "HF_TEST_NOT_FOR_HUBS"
"""In the environment of `hubfleet up` (so the daemon's): no hub, proxy or template may inherit it."""


def environ(pid: int) -> dict[str, str]:
    """A process's environment as its children get it: a forked hub's own /proc/PID/environ still shows the
    template's (the block it was started with), so the hub's proxy, which it started, shows the hub's."""
    return psutil.Process(pid).environ()


def proxy_of(hub_pid: int) -> psutil.Process:
    def find() -> psutil.Process | None:
        for child in psutil.Process(hub_pid).children():
            if any("configurable-http-proxy" in part for part in child.cmdline()):
                return child
        return None

    return wait_for(find, timeout=30)


def memory_holds(pid: int, needles: list[bytes]) -> list[bytes]:
    """Which of `needles` are anywhere in the readable memory of `pid` (as root, through /proc/PID/mem)."""
    found: set[bytes] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            found |= {needle for needle in needles if needle in data}
    return sorted(found)


def tokens(fleet: Path, hub: str) -> dict[str, str]:
    data = json.loads((fleet / ".hubfleet" / "hubs" / hub / "tokens.json").read_text())
    return {CONTROL_TOKEN_ENV: data["control"], OPERATOR_TOKEN_ENV: data["operator"]}


def test_forked_hubs_run_as_their_accounts_with_their_own_env_and_restart_and_leave_no_secret_in_the_template(
    tmp_path: Path,
) -> None:
    fleet = copy_demo_fleet(tmp_path / "fleet", keep=set(HUBS.values()))
    with running_fleet(fleet, env={MARKER: "1"}):
        status = daemon_status(fleet)
        template = status["hub_template"]
        assert template["state"] == "running", template
        instance = json.loads((fleet / ".hubfleet" / "layout.json").read_text())["instance"]
        secrets: list[bytes] = []
        for hub in HUBS:
            state = status["hubs"][hub]
            assert state["state"] == "running", state
            proc = psutil.Process(state["pid"])
            assert proc.ppid() == template["pid"]  # a fork of the template, not a fresh process
            account = psutil.Process(state["pid"]).username()
            assert account == hub_account(instance, hub)
            assert set(proc.uids()) == {proc.uids().real} and proc.uids().real != 0
            assert set(proc.gids()) == {proc.gids().real} and proc.gids().real != 0
            status_lines = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            groups = next(line for line in status_lines if line.startswith("Groups:"))
            assert groups.split(":", 1)[1].split() == []  # no supplementary group (root's or the template's)
            assert os.getsid(proc.pid) == proc.pid  # its own session: stopped by its process group
            assert proc.cwd() == str(fleet / ".hubfleet-data" / "hubs" / hub)
            assert "jupyterhub" in proc.cmdline()[0] and "-f" in proc.cmdline()

            env = environ(proxy_of(proc.pid).pid)
            own = tokens(fleet, hub)
            assert {k: env.get(k) for k in own} == own  # its own tokens, not another hub's
            assert env["HOME"] == proc.cwd()
            assert MARKER not in env, "the hub inherited the daemon's environment"
            secrets += [value.encode() for value in own.values()]
        template_env = environ(template["pid"])
        assert MARKER not in template_env and not set(template_env) & {CONTROL_TOKEN_ENV, OPERATOR_TOKEN_ENV}
        assert memory_holds(template["pid"], secrets) == [], "a hub's token is in the template's memory"

        # killed: restarted by the supervisor, forked again from the same template
        old = status["hubs"]["hackweek-staging"]["pid"]
        os.kill(old, signal.SIGKILL)

        def restarted() -> dict | None:
            hub = daemon_status(fleet)["hubs"]["hackweek-staging"]
            return hub if hub["state"] == "running" and hub["pid"] not in (None, old) else None

        hub = wait_for(restarted, timeout=120)
        assert hub["restarts"] == 1
        assert psutil.Process(hub["pid"]).ppid() == template["pid"]
        assert daemon_status(fleet)["hubs"]["hackweek"]["pid"] == status["hubs"]["hackweek"]["pid"]
        assert memory_holds(template["pid"], secrets) == []
    assert not psutil.pid_exists(template["pid"]) or psutil.Process(template["pid"]).status() == "zombie"
