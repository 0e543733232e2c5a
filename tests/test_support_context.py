"""The hub's context on a ticket, from one real local hub: uni-a-staging with a working environment and a
broken one (PYTHONHOME points nowhere, so the user's server exits before it listens). bob's start fails,
alice's succeeds; capture_context names bob's failure from the hub's log (with the server's own last words),
his server's state and environment, the hub's last deploy and an open incident, and start_log gives each
person their own start only. A hub that refuses connections, or accepts and never answers, gives a context
with `problems` (and no exception) within the capture's time limit. The log parser's matching and redaction
are also checked on JupyterHub's own messages without a hub."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet_helpers import copy_demo_fleet, daemon_status, hubfleet, running_fleet, wait_for
from hubfleet.config.validate import load_fleet
from hubfleet.monitor.incidents import open_incident, resolve_incident
from hubfleet.store import open_store
from hubfleet.support import hub_log
from hubfleet.support.context import capture_context, start_log

HUB = "uni-a-staging"
ENVIRONMENTS = """\
environments:
  - slug: python
    display_name: Python
    default: true
  - slug: broken
    display_name: Broken Python
    env: {PYTHONHOME: /nonexistent-python-home}
"""


class Hub:
    def __init__(self, root: Path):
        self.root = root
        self.state = root / ".hubfleet"
        self.fleet = load_fleet(root)
        token = hubfleet("token", HUB, fleet=root, check=True).stdout.strip()
        self.api = httpx.Client(
            base_url=daemon_status(root)["hubs"][HUB]["url"],
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )
        self.secrets = [token, *json.loads((self.state / "hubs" / HUB / "tokens.json").read_text()).values()]

    def server(self, user: str) -> dict[str, Any]:
        return self.api.get(f"/hub/api/users/{user}").json().get("servers", {}).get("") or {}

    def capture(self, user: str | None, **kwargs: Any) -> dict[str, Any]:
        with open_store(self.state) as store:
            return asyncio.run(capture_context(self.fleet, store, HUB, user, state_dir=self.state, **kwargs))


def _failures(hub: Hub, user: str) -> list[dict[str, Any]]:
    return hub_log.spawn_failures(hub_log.parse(hub_log.read_local_log(hub.state, HUB)), user)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("support-context") / "demo", keep={"communities/uni-a/hubs/staging.yaml"}
    )
    hub_file = root / "communities/uni-a/hubs/staging.yaml"
    hub_file.write_text(hub_file.read_text() + ENVIRONMENTS)
    with running_fleet(root):
        hub = Hub(root)
        for user in ("alice", "bob"):
            hub.api.post(f"/hub/api/users/{user}")
        started = hub.api.post("/hub/api/users/alice/server", json={"environment": "python"})
        assert started.status_code in (201, 202), started.text
        wait_for(lambda: hub.server("alice").get("ready"), timeout=120)
        # bob's server exits at once: the hub answers the start with an error once it notices
        hub.api.post("/hub/api/users/bob/server", json={"environment": "broken"})
        wait_for(lambda: _failures(hub, "bob"), timeout=120)
        yield hub


def test_context_names_the_failed_start_the_deploy_and_the_incident(hub: Hub) -> None:
    with open_store(hub.state) as store:
        incident, _ = open_incident(store, HUB, "anomaly", "spawn failures above normal", rule="spawns")
    try:
        context = hub.capture("bob")
    finally:
        with open_store(hub.state) as store:
            resolve_incident(store, HUB, "anomaly", rule="spawns")

    assert context["problems"] == [], context["problems"]
    assert context["hub"]["name"] == HUB and context["hub"]["community"] == "uni-a"
    assert context["hub"]["stage"] == "staging" and context["hub"]["url"].startswith("http://127.0.0.1:")
    assert context["hub"]["state"] in ("up", "running"), context["hub"]
    assert context["hub"]["runtime"]["state"] == "running"

    failures = context["spawn_failures"]
    assert failures, "bob's failed start is read from the hub's log"
    assert any(
        "HTTP 500" in f["message"] or "exit" in f["message"] or "never answered" in f["message"]
        for f in failures
    ), failures
    assert any("No module named 'encodings'" in f.get("detail", "") for f in failures), failures
    assert all(datetime.fromisoformat(f["at"]) <= datetime.now(UTC) for f in failures)

    user = context["user"]
    assert user["username"] == "bob" and user["exists"] is True
    if user["server"] != "not running":  # JupyterHub gives up on the start after http_timeout
        assert user["user_options"] == {"environment": "broken"}
        assert context["environment"] == "broken"
        assert context["environment_detail"]["display_name"] == "Broken Python"

    assert context["deploys"], "hubfleet up records the hub's deploy"
    assert context["deploys"][0]["result"] == "ok" and context["deploys"][0]["config_hash"]
    assert [i["id"] for i in context["incidents"]["open"]] == [incident.id]
    assert context["incidents"]["open"][0]["cause"] == "spawn failures above normal"

    text = json.dumps(context)
    for secret in hub.secrets:
        assert secret not in text


def test_a_working_server_and_each_persons_own_start_log(hub: Hub) -> None:
    context = hub.capture("alice")
    assert context["user"]["server"] == "running" and context["user"]["ready"] is True
    assert context["environment"] == "python" and context["environment_detail"]["source"] == "server"
    assert context["spawn_failures"] == []

    alice = start_log(hub.fleet, HUB, "alice", state_dir=hub.state)
    bob = start_log(hub.fleet, HUB, "bob", state_dir=hub.state)
    assert alice is not None and bob is not None
    assert "User alice took" in alice and "bob" not in alice
    assert "Fatal Python error" in bob and "/user/alice" not in bob and "homes/uni-a-staging/alice" not in bob
    assert len(start_log(hub.fleet, HUB, "bob", state_dir=hub.state, max_lines=5).splitlines()) == 5
    assert start_log(hub.fleet, HUB, "nobody-here", state_dir=hub.state) is None
    for secret in hub.secrets:
        assert secret not in alice and secret not in bob

    unknown = hub.capture("nobody-here")
    assert unknown["user"] == {
        "username": "nobody-here",
        "exists": False,
        "server": "no such user on this hub",
    }
    assert hub.capture(None)["user"] is None


def test_an_unreachable_or_silent_hub_gives_problems_not_an_exception(hub: Hub, tmp_path: Path) -> None:
    """A copy of the hub's state files pointing at a closed port, then at a port that accepts connections
    and never answers: the store's parts are still there, the live parts are named in `problems`."""
    state = tmp_path / "state"
    shutil.copytree(hub.state / "hubs" / HUB, state / "hubs" / HUB, ignore=shutil.ignore_patterns("hub.log"))
    with (
        sqlite3.connect(hub.state / "hubfleet.sqlite") as source,
        sqlite3.connect(state / "hubfleet.sqlite") as copy,
    ):
        source.backup(copy)  # a consistent copy while the daemon writes
    runtime = state / "hubs" / HUB / "runtime.json"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    closed_port = silent.getsockname()[1]
    try:
        runtime.write_text(
            json.dumps({**json.loads(runtime.read_text()), "url": f"http://127.0.0.1:{closed_port}"})
        )
        with open_store(state) as store:
            refused = asyncio.run(capture_context(hub.fleet, store, HUB, "bob", state_dir=state, timeout=5))
        assert any("cannot connect" in p for p in refused["problems"]), refused["problems"]
        assert any("spawn failures unknown" in p and "no log" in p for p in refused["problems"])
        assert refused["user"] == {"username": "bob", "exists": None, "server": "unknown"}
        assert refused["deploys"] and refused["hub"]["name"] == HUB

        silent.listen(8)  # the kernel accepts connections; nobody reads the request
        started = time.monotonic()
        with open_store(state) as store:
            slow = asyncio.run(capture_context(hub.fleet, store, HUB, "bob", state_dir=state, timeout=1.5))
        assert time.monotonic() - started < 30  # bounded by the capture's timeout, not the hub
        assert any("no answer in time" in p or "did not answer" in p for p in slow["problems"]), slow[
            "problems"
        ]
    finally:
        silent.close()

    with open_store(state) as store:
        no_state = asyncio.run(capture_context(hub.fleet, store, HUB, "bob", state_dir=None))
        elsewhere = asyncio.run(capture_context(hub.fleet, store, "no-such-hub", "bob", state_dir=state))
    assert any("no state directory" in p for p in no_state["problems"])
    assert (
        elsewhere["problems"] == ["hub 'no-such-hub' is not in the fleet files"] and elsewhere["hub"] is None
    )


# --------------------------------------------------------------------------- the parser, without a hub

LOG = """\
[I 2026-12-01 10:00:00.100 JupyterHub provider:744] Creating oauth client jupyterhub-user-carol
[I 2026-12-01 10:00:00.200 JupyterHub provider:744] Creating oauth client jupyterhub-user-dave
[I 2026-12-01 10:00:01.000 ServerApp] Serving notebooks from local directory: /data/homes/h/dave
[I 2026-12-01 10:00:01.100 ServerApp] http://127.0.0.1:1234/user/carol/lab?token=abc123secret
[E 2026-12-01 10:00:02.000 JupyterHub user:1073] Unhandled error starting carol's server: broker refused start
    Traceback (most recent call last):
      File "spawner.py", line 1, in start
    BrokerError: broker refused start
[W 2026-12-01 10:00:03.000 JupyterHub user:1059] dave's server failed to start in 120 seconds, giving up.
[E 2026-12-01 10:00:04.000 JupyterHub log:192] 500 POST /hub/api/users/carol/server (op@127.0.0.1) 9.1ms
[E 2026-12-01 10:00:04,001 tornado.access] 500 POST /hub/api/users/carol/server (127.0.0.1) 9.3ms
[hubfleet broker 2026-12-01 10:05:00] user carol: killed at the memory limit (1G)
[I 2026-12-01 10:06:00.000 JupyterHub log:1] {"Authorization": "token 0123456789abcdef01234567"}
"""


def test_the_log_parser_on_jupyterhubs_messages() -> None:
    lines = hub_log.parse(LOG.splitlines(), tz=UTC)
    carol = hub_log.spawn_failures(lines, "carol")
    assert [f["message"] for f in carol] == [
        "the server failed to start: broker refused start",
        "the hub answered HTTP 500 to the start of the server",  # once, though JupyterHub and tornado log it
        "killed at the memory limit (1G)",
    ]
    assert carol[0]["at"] == "2026-12-01T10:00:02+00:00"
    dave = hub_log.spawn_failures(lines, "dave")
    assert [f["message"] for f in dave] == ["the server did not start within 120 seconds"]
    assert hub_log.spawn_failures(lines, "car") == []  # a name is matched whole

    log = "\n".join(hub_log.start_lines(lines, "carol") or [])
    assert "Unhandled error starting carol's server" in log and "BrokerError" in log
    assert "dave" not in log and "abc123secret" not in log and "token=***" in log
    assert hub_log.redact('"Authorization": "token 0123456789abcdef0123456789abcdef"').count("0123") == 0
    assert hub_log.redact(LOG.splitlines()[-1]).endswith('"token ***"}')


KUBECTL = """#!/bin/sh
# a stand-in for kubectl (no cluster here): records its arguments and KUBECONFIG, prints the hub pod's log
echo "$KUBECONFIG $*" > "$(dirname "$0")/called"
if [ -f "$(dirname "$0")/fail" ]; then
  echo 'error: You must be logged in to the server (Unauthorized)' >&2
  exit 1
fi
cat <<'LOG'
{log}LOG
"""


def test_a_kubernetes_hubs_log_is_read_with_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Kubernetes hub's log comes from `kubectl logs deployment/hub` in the hub's namespace, with the
    cluster's kubeconfig and context. No cluster runs here: kubectl is a script that prints a log; the hub's
    API is not reached (it was never deployed from this state directory), which `problems` says."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "k8s-fleet"
    fleet = load_fleet(fixture)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(KUBECTL.replace("{log}", LOG))
    kubectl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    state = tmp_path / "state"
    state.mkdir()

    log = start_log(fleet, "lab-staging", "carol", state_dir=state)
    assert log is not None and "Unhandled error starting carol's server" in log and "dave" not in log
    called = (bin_dir / "called").read_text()
    assert called.startswith(str(fixture / "kubeconfig.yaml"))
    assert "--context research -n lab-staging logs deployment/hub --tail=" in called

    with open_store(state) as store:
        context = asyncio.run(capture_context(fleet, store, "lab-staging", "carol", state_dir=state))
        assert [f["message"] for f in context["spawn_failures"]][
            0
        ] == "the server failed to start: broker refused start"
        assert context["hub"]["url"] == "https://lab-staging.research.example.org"
        assert any("never deployed" in p for p in context["problems"]), context["problems"]

        (bin_dir / "fail").write_text("")
        failed = asyncio.run(capture_context(fleet, store, "lab-staging", "carol", state_dir=state))
    assert failed["spawn_failures"] == []
    assert any("kubectl logs failed" in p and "Unauthorized" in p for p in failed["problems"]), failed[
        "problems"
    ]
    assert start_log(fleet, "lab-staging", "carol", state_dir=state) is None
