"""Tenants apart on one machine, tried as an attacker would: real hubs under a root daemon, real OS accounts,
real kernels running hostile code through the kernel websocket, real control-group limits.

Two staging hubs of different communities; alice and bob on uni-a-staging, carol on hackweek-staging. Alice's
kernel looks for everything that is not hers: the control plane's files, the other hubs' files, the other
users' homes, every other process's environment, and known values planted there (tokens, cookie secrets, a
marker in the daemon's environment, markers in other homes). Then it runs past its memory limit and into its
process limit, while bob keeps working.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.sync.client import connect as ws_connect

from fleet_helpers import copy_demo_fleet, daemon_status, edit, hubfleet, running_fleet, wait_for
from hubfleet.store import open_store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="accounts and limits need root; see test_single_account.py"),
]

UNI, HACK = "uni-a-staging", "hackweek-staging"
DAEMON_MARKER = "daemon-env-" + secrets.token_hex(8)
MEMORY_LIMIT = "400M"
PROCESS_LIMIT = 96


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("isolation") / "demo",
        keep={"communities/uni-a/hubs/staging.yaml", "communities/hackweek/hubs/staging.yaml"},
    )
    edit(
        root / "communities/uni-a/hubs/staging.yaml",
        "auth:",
        f"resources:\n  memory_limit: {MEMORY_LIMIT}\n  process_limit: {PROCESS_LIMIT}\nauth:",
    )
    with running_fleet(root, env={"HUBFLEET_TEST_PLANT": DAEMON_MARKER}):
        yield root


class Hub:
    """A hub seen by the operator: REST API with the operator token, kernels over the websocket."""

    def __init__(self, fleet: Path, name: str):
        self.name = name
        self.token = hubfleet("token", name, fleet=fleet, check=True).stdout.strip()
        self.url = daemon_status(fleet)["hubs"][name]["url"]
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=60
        )

    def start(self, user: str) -> None:
        self.client.post(f"/hub/api/users/{user}")
        self.client.post(f"/hub/api/users/{user}/server")

        def ready() -> bool:
            server = self.client.get(f"/hub/api/users/{user}").json().get("servers", {}).get("")
            return bool(server and server.get("ready"))

        wait_for(ready, timeout=120)

    def kernel(self, user: str) -> str:
        response = self.client.post(f"/user/{user}/api/kernels", json={})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def run_once(self, user: str, code: str) -> dict[str, object]:
        """`code` in a kernel of its own, shut down afterwards (a small memory limit holds few kernels)."""
        kernel = self.kernel(user)
        try:
            return self.run(user, kernel, code)
        finally:
            self.client.delete(f"/user/{user}/api/kernels/{kernel}")

    def run(self, user: str, kernel: str, code: str, timeout: float = 120) -> dict[str, object]:
        """Execute `code`; returns stdout, error and whether the kernel died while running it."""
        ws_url = "ws" + self.url.removeprefix("http")
        session = uuid.uuid4().hex
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "username": user,
                "session": session,
                "msg_type": "execute_request",
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "channel": "shell",
            "buffers": [],
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        }
        out: list[str] = []
        error = ""
        died = False
        url = f"{ws_url}/user/{user}/api/kernels/{kernel}/channels?session_id={session}"
        deadline = time.monotonic() + timeout
        with ws_connect(url, additional_headers={"Authorization": f"token {self.token}"}) as ws:
            ws.send(json.dumps(request))
            while time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
                kind = message.get("msg_type")
                content = message.get("content", {})
                if kind == "status" and content.get("execution_state") in ("restarting", "dead"):
                    died = True
                    break
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if kind == "stream":
                    out.append(content.get("text", ""))
                elif kind == "error":
                    error = f"{content.get('ename')}: {content.get('evalue')}"
                elif kind == "status" and content.get("execution_state") == "idle":
                    break
        return {"stdout": "".join(out), "error": error, "died": died}


@pytest.fixture(scope="module")
def hubs(fleet: Path) -> dict[str, Hub]:
    uni, hack = Hub(fleet, UNI), Hub(fleet, HACK)
    for hub, user in ((uni, "alice"), (uni, "bob"), (hack, "carol")):
        hub.start(user)
    return {UNI: uni, HACK: hack}


ATTACK = r"""
import json, os, pwd, socket
state, data = {state!r}, {data!r}
markers = {markers!r}
mine = os.path.realpath(os.path.expanduser("~"))
readable, leaked, connected = [], [], []

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read(4 << 20)
    except OSError:
        return None

def look(path, data_bytes):
    if os.path.realpath(path).startswith(mine + os.sep):
        return
    readable.append(path)
    for marker in markers:
        if marker.encode() in data_bytes:
            leaked.append((path, marker))

for path in {known!r}:
    content = read(path)
    if content is not None:
        look(path, content)
for top in (state, data, os.path.dirname(mine)):
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            if path.endswith(".sock"):
                try:
                    s = socket.socket(socket.AF_UNIX); s.connect(path); connected.append(path)
                except OSError:
                    pass
                continue
            content = read(path)
            if content is not None:
                look(path, content)
for sock in {sockets!r}:
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(sock); connected.append(sock)
    except OSError:
        pass
environs = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    for kind in ("environ", "cmdline"):
        content = read(f"/proc/{{pid}}/{{kind}}")
        if content is None:
            continue
        if kind == "environ":
            environs += 1
            try:
                owner = os.stat(f"/proc/{{pid}}").st_uid
            except OSError:
                continue
            if owner != os.getuid():
                leaked.append((f"/proc/{{pid}}/environ", "readable"))
        for marker in markers:
            if marker.encode() in content:
                leaked.append((f"/proc/{{pid}}/{{kind}}", marker))
print(json.dumps({{"uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name, "home": mine,
                   "readable": readable, "leaked": leaked, "connected": connected, "environs": environs}}))
"""


def test_a_kernel_finds_nothing_of_the_control_plane_other_hubs_or_other_users(
    fleet: Path, hubs: dict[str, Hub]
) -> None:
    state, data = fleet / ".hubfleet", fleet / ".hubfleet-data"
    homes = {
        user: data / "homes" / hub / user for hub, user in ((UNI, "alice"), (UNI, "bob"), (HACK, "carol"))
    }
    planted = {}
    for user in ("bob", "carol"):  # a file each user keeps to themselves
        planted[user] = f"{user}-private-" + secrets.token_hex(8)
        path = homes[user] / "notes.txt"
        path.write_text(planted[user])
        os.chown(path, homes[user].stat().st_uid, homes[user].stat().st_gid)
    markers = [DAEMON_MARKER, *planted.values()]
    known: list[str] = [
        str(state / name) for name in ("hubfleet.sqlite", "daemon.json", "layout.json", "daemon.log")
    ]
    for hub in (UNI, HACK):
        tokens = json.loads((state / "hubs" / hub / "tokens.json").read_text())
        markers += [tokens["control"], tokens["operator"]]
        markers.append((data / "hubs" / hub / "jupyterhub_cookie_secret").read_text().strip()[:32])
        known += [str(state / "hubs" / hub / name) for name in ("tokens.json", "runtime.json", "hub.log")]
        known += [
            str(data / "hubs" / hub / name)
            for name in ("jupyterhub.sqlite", "jupyterhub_cookie_secret", "jupyterhub_config.py", "proxy.pid")
        ]
    known += [str(homes[user] / "notes.txt") for user in ("bob", "carol")]
    instance = json.loads((state / "layout.json").read_text())["instance"]
    sockets = [f"/run/hubfleet/{instance}-{hub}.sock" for hub in (UNI, HACK)] + [str(state / "daemon.sock")]

    uni = hubs[UNI]
    code = ATTACK.format(state=str(state), data=str(data), markers=markers, known=known, sockets=sockets)
    result = uni.run_once("alice", code)
    assert not result["error"], result
    report = json.loads(result["stdout"])

    # the kernel runs as alice's own account, in her own home, not as root or as the hub
    assert report["uid"] != 0 and report["user"].startswith("hfu-") and "alice" in report["user"]
    assert report["home"] == str(homes["alice"])
    assert report["environs"] > 0  # it did look at other processes
    assert report["readable"] == [], report["readable"]
    assert report["leaked"] == [], report["leaked"]
    assert report["connected"] == [], report["connected"]
    # every planted value is really where the attack looked (the test would prove nothing otherwise)
    assert DAEMON_MARKER.encode() in Path(f"/proc/{daemon_status(fleet)['pid']}/environ").read_bytes()
    # a hub forked from the hub template shows the template's first environment in /proc/PID/environ; its
    # own (with the control token) is what its children, such as its proxy, were given
    hub = psutil.Process(daemon_status(fleet)["hubs"][UNI]["pid"])
    control = json.loads((state / "hubs" / UNI / "tokens.json").read_text())["control"].encode()
    assert any(control in Path(f"/proc/{proc.pid}/environ").read_bytes() for proc in [hub, *hub.children()])


def test_metrics_and_console_answer_a_kernel_only_with_a_token(fleet: Path, hubs: dict[str, Hub]) -> None:
    console = daemon_status(fleet)["console"]
    code = (
        "import urllib.request, urllib.error\n"
        f"for path in ('/metrics', '/api/hubs'):\n"
        "    try:\n"
        f"        print(path, urllib.request.urlopen({console!r} + path).status)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(path, e.code)\n"
    )
    uni = hubs[UNI]
    out = uni.run_once("alice", code)["stdout"]
    assert "/metrics 401" in out and "/api/hubs 401" in out


def test_memory_limit_kills_the_kernel_and_not_the_neighbours(fleet: Path, hubs: dict[str, Hub]) -> None:
    uni = hubs[UNI]
    bob_kernel = uni.kernel("bob")
    hog = (
        "blocks = []\nfor i in range(60):\n    blocks.append(bytearray(20 * 1024 * 1024))\nprint('survived')"
    )
    result = uni.run("alice", uni.kernel("alice"), hog)
    assert result["died"] and "survived" not in result["stdout"], result

    # bob, on the same hub, and the hub itself go on as if nothing happened
    assert uni.run("bob", bob_kernel, "print(6 * 7)")["stdout"].strip() == "42"
    uni.client.delete(f"/user/bob/api/kernels/{bob_kernel}")
    assert uni.client.get("/hub/health").status_code == 200
    assert uni.client.get("/hub/api/users/alice").json()["servers"][""]["ready"] is True

    def recorded() -> list:
        with open_store(fleet / ".hubfleet") as store:
            return [e for e in store.limit_events(hub=UNI) if e.username == "alice" and e.kind == "memory"]

    event = wait_for(recorded, timeout=30)[0]
    assert MEMORY_LIMIT in event.detail
    hub_log = (fleet / ".hubfleet" / "hubs" / UNI / "hub.log").read_text()
    assert f"user alice: memory limit {MEMORY_LIMIT} reached" in hub_log
    notice = fleet / ".hubfleet-data" / "homes" / UNI / "alice" / "LIMIT-REACHED.txt"
    assert f"memory limit {MEMORY_LIMIT} reached" in notice.read_text()
    # the console's hub page shows it to the operator
    assert any(e.username == "alice" for e in recorded())


def test_a_fork_bomb_stops_at_the_process_limit(fleet: Path, hubs: dict[str, Hub]) -> None:
    uni = hubs[UNI]
    bomb = (
        "import os, signal, time\n"
        "children, refused = [], 0\n"
        "for i in range(400):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except BlockingIOError:\n"
        "        refused += 1\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "for pid in children:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "    os.waitpid(pid, 0)\n"
        "print(len(children), refused)\n"
    )
    out = uni.run_once("alice", bomb)["stdout"].split()
    started, refused = int(out[0]), int(out[1])
    assert refused == 1 and started < PROCESS_LIMIT
    assert uni.run_once("bob", "print('still here')")["stdout"].strip() == "still here"

    def recorded() -> list:
        with open_store(fleet / ".hubfleet") as store:
            return [e for e in store.limit_events(hub=UNI) if e.username == "alice" and e.kind == "pids"]

    assert str(PROCESS_LIMIT) in wait_for(recorded, timeout=30)[0].detail


def test_servers_and_kernels_run_as_their_users_accounts_and_hubs_as_their_own(
    fleet: Path, hubs: dict[str, Hub]
) -> None:
    status = daemon_status(fleet)
    hub_users = {name: psutil.Process(h["pid"]).username() for name, h in status["hubs"].items()}
    assert all(user.startswith("hfh-") for user in hub_users.values()) and len(set(hub_users.values())) == 2
    data = fleet / ".hubfleet-data"
    for hub, user in ((UNI, "alice"), (UNI, "bob"), (HACK, "carol")):
        home = data / "homes" / hub / user
        owner = home.stat().st_uid
        assert home.stat().st_mode & 0o777 == 0o700 and owner != 0
        servers = [
            p
            for p in psutil.process_iter(["cmdline", "cwd", "uids"])
            if "jupyterhub-singleuser" in " ".join(p.info["cmdline"] or []) and p.info["cwd"] == str(home)
        ]
        assert len(servers) == 1 and servers[0].info["uids"].real == owner
        for child in servers[0].children(recursive=True):  # kernels
            assert child.uids().real == owner
    state = fleet / ".hubfleet"
    assert state.stat().st_mode & 0o777 == 0o700
    for path in state.rglob("*"):
        if path.is_file() and not path.is_socket():
            assert path.stat().st_mode & 0o077 == 0, path
