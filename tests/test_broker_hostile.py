"""The broker under attack: a real fleet as root (two staging hubs of different communities, each hub run by
its own service account), then hostile requests straight at hub A's broker socket.

The broker is the only code that runs as root on a hub's behalf, and a hub's account is assumed compromised:
it may send anything on its socket. So these tests speak the socket's protocol directly instead of going
through the hub's spawner, and check what the broker promises: a request only ever acts for the socket's own
hub and its own users, nothing is created for a refused request, no process but the user's own server is ever
signalled, no other account can reach the socket at all, and a flood neither takes the daemon down nor jams
the hub's later requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fleet_helpers import alive, copy_demo_fleet, daemon_status, free_ports, hubfleet, running_fleet, wait_for
from hubfleet.daemon.broker import MAX_IN_FLIGHT
from hubfleet.isolation.accounts import fleet_accounts, home_dirname, hub_account, user_account
from hubfleet.runtime.layout import Layout, layout

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="hub service accounts and the broker need root"),
]

A, B = "uni-a-staging", "hackweek-staging"
ACCOUNT_NAME = r"hfu-[a-z0-9]+(-[a-z0-9]+)*"
REFUSED_NAMES = ["omar", "bea", "../etc", "a/b", "x" * 200, "a\x00b", "a\nb", "zoë", "用户"]
"""Hub B's users on hub A's socket, path tricks, an overlong name, NUL and newline, non-ASCII non-users."""


@dataclass
class Fleet:
    root: Path
    where: Layout

    @property
    def instance(self) -> str:
        return self.where.instance

    @property
    def data_dir(self) -> Path:
        return self.where.data_dir

    def sock(self, hub: str) -> Path:
        return self.where.broker_socket(hub)

    def status(self, hub: str) -> dict[str, Any]:
        return daemon_status(self.root)["hubs"][hub]

    def daemon_pid(self) -> int:
        return int(daemon_status(self.root)["pid"])

    def account(self, hub: str, user: str) -> str:
        return user_account(self.instance, hub, user)

    def client(self, hub: str) -> httpx.Client:
        token = hubfleet("token", hub, fleet=self.root, check=True).stdout.strip()
        return httpx.Client(
            base_url=self.status(hub)["url"], headers={"Authorization": f"token {token}"}, timeout=30
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("hostile") / "demo",
        keep={"communities/uni-a/hubs/staging.yaml", "communities/hackweek/hubs/staging.yaml"},
    )
    with running_fleet(root):
        fleet = Fleet(root, layout(root / ".hubfleet"))
        with fleet.client(A) as a, fleet.client(B) as b:
            for client, user in ((a, "café"), (a, "alice"), (b, "bea")):
                assert client.post(f"/hub/api/users/{user}").status_code == 201
        yield fleet


def send(path: Path, raw: bytes, timeout: float = 60) -> socket.socket:
    """Connect to a broker socket and send raw bytes. The broker may answer (and close) before it has read
    them all, e.g. when busy or for an overlong line: its answer can still be read."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(path))  # blocking: waits while the listen backlog is full (with a timeout: EAGAIN)
    conn.settimeout(timeout)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        conn.sendall(raw)
    return conn


def answer(conn: socket.socket) -> dict[str, Any]:
    """The broker's one-line answer on `conn`, which is closed then."""
    data = b""
    with conn:
        while not data.endswith(b"\n"):
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    assert data.endswith(b"\n"), f"no answer line, got {data[:200]!r}"
    reply = json.loads(data)
    assert "internal error" not in str(reply.get("error")), reply
    return reply


def ask(path: Path, raw: bytes) -> dict[str, Any]:
    return answer(send(path, raw))


def call(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    return ask(path, json.dumps(request).encode() + b"\n")


def user_accounts(fleet: Fleet) -> set[str]:
    return {a.name for a in fleet_accounts(fleet.instance) if a.name.startswith("hfu-")}


def run_as(uid: int, gid: int, code: str, *args: str) -> str:
    """A tiny python client run as another OS account (no groups, empty environment)."""
    done = subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            code,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


CONNECT = """
import socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.settimeout(30)
try:
    conn.connect(sys.argv[1])
except OSError as exc:
    print(type(exc).__name__)
    raise SystemExit(0)
try:
    conn.sendall(b'{"op": "poll", "user": "nobody-here", "pid": 12345}\\n')
except (BrokenPipeError, ConnectionResetError):
    pass  # the broker may turn a peer away before reading: its answer is still there
print(conn.makefile("rb").readline().decode().strip())
"""


def test_hostile_requests_are_refused_and_create_nothing(fleet: Fleet) -> None:
    """As root (which the peer check admits): every malformed or foreign request is refused with an error
    that names the problem, and no account, home or process is made for any of them."""
    sock = fleet.sock(A)
    for name in REFUSED_NAMES:
        for request in (
            {"op": "start", "user": name, "env": {}, "args": []},
            {"op": "poll", "user": name, "pid": os.getpid()},
            {"op": "stop", "user": name, "pid": os.getpid(), "now": True},
        ):
            reply = call(sock, request)
            assert reply["ok"] is False, (name, reply)
            assert "hub username" in reply["error"] or f"is not a user of hub {A}" in reply["error"], reply
    assert "contains '/'" in call(sock, {"op": "start", "user": "../etc", "env": {}, "args": []})["error"]
    assert "1 to 128 characters" in call(sock, {"op": "start", "user": "x" * 200})["error"]
    assert "'\\x00'" in call(sock, {"op": "start", "user": "a\x00b"})["error"]
    assert "whitespace or control" in call(sock, {"op": "start", "user": "a\nb"})["error"]
    assert call(sock, {"op": "start", "user": "omar"})["error"] == f"'omar' is not a user of hub {A}"
    assert call(sock, {"op": "start", "user": 7})["error"] == "hub username must be a str, not int"

    # a legitimate user of hub A, with everything else wrong
    grace = {"user": "grace"}
    refusals = {
        "env: variable name 'BAD-KEY' refused": {"op": "start", "env": {"BAD-KEY": "x"}, "args": []},
        "env: variable name 'A=B' refused": {"op": "start", "env": {"A=B": "x"}, "args": []},
        "env: value of LD_PRELOAD refused": {"op": "start", "env": {"LD_PRELOAD": "a\x00b"}, "args": []},
        "env must be an object": {"op": "start", "env": ["X=1"], "args": []},
        "args: 'rm' refused": {"op": "start", "env": {}, "args": ["rm"]},
        "args: '-c' refused": {"op": "start", "env": {}, "args": ["--ip=127.0.0.1", "-c"]},
        "args: '--x\\x00' refused": {"op": "start", "env": {}, "args": ["--x\x00"]},
        "args must be a list": {"op": "start", "env": {}, "args": "--ip=0.0.0.0"},
        "unknown op 'exec'": {"op": "exec", "pid": 4242},
        "unknown op None": {"pid": 4242},
        "pid must be a process id": {"op": "stop", "pid": "1"},
    }
    for expected, request in refusals.items():
        reply = call(sock, {**grace, **request})
        assert reply["ok"] is False and expected in reply["error"], (expected, reply)

    one_line = "bad request: one JSON object on one line"
    assert ask(sock, b"not json\n")["error"] == "bad request: JSONDecodeError"
    assert ask(sock, b'["start", "grace"]\n')["error"] == one_line
    assert ask(sock, b'"grace"\n')["error"] == one_line
    overlong = json.dumps({"op": "start", "user": "grace", "env": {"X": "y" * (1 << 16)}, "args": []})
    assert ask(sock, overlong.encode() + b"\n")["error"] == "bad request: ValueError"
    assert ask(sock, b"\n")["error"] == "bad request: JSONDecodeError"

    # nothing was made for any of it: no account of this fleet's users, no home, no server
    assert user_accounts(fleet) == set()
    for name in ("omar", "bea", "zoë", "用户", "grace"):
        with pytest.raises(KeyError):
            pwd.getpwnam(fleet.account(A, name))
    assert list((fleet.data_dir / "homes" / A).iterdir()) == []
    assert not (fleet.data_dir / "etc").exists() and not (fleet.data_dir / "homes" / "etc").exists()


def test_non_ascii_user_of_the_hub_gets_a_safe_account(fleet: Fleet) -> None:
    """The hub's own non-ASCII user ("café", created through the REST API) is accepted: run as an hfu- account
    whose name is plain ASCII, its home an escaped directory name in the hub's homes, owned and private."""
    sock = fleet.sock(A)
    # enough of a hub's environment that the server keeps running while it is looked at (a forked server
    # without it ends in a fraction of a second)
    port = free_ports(1)[0]
    env = {"JUPYTERHUB_X": "é", "JUPYTERHUB_API_TOKEN": "not-a-token", "JUPYTERHUB_API_URL": "http://127.0.0.1:9/",
           "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/caf%C3%A9/"}  # fmt: skip
    reply = call(sock, {"op": "start", "user": "café", "env": env, "args": ["--debug"]})
    assert reply["ok"] is True, reply
    name, pid = reply["account"], reply["pid"]
    assert name == fleet.account(A, "café")
    assert re.fullmatch(ACCOUNT_NAME, name) and len(name) <= 32 and name.startswith("hfu-uniastaging-cafe-")
    entry = pwd.getpwnam(name)
    home = fleet.data_dir / "homes" / A / home_dirname("café")
    assert home.name == "caf%C3%A9" and Path(entry.pw_dir) == home
    assert entry.pw_uid != 0 and entry.pw_shell == "/usr/sbin/nologin"
    st = home.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == entry.pw_uid and stat.S_IMODE(st.st_mode) == 0o700
    proc = psutil.Process(pid)  # the launcher, which becomes the server once it has dropped root
    assert wait_for(
        lambda: proc.uids().real == entry.pw_uid and "jupyterhub-singleuser" in str(proc.cmdline())
    )

    assert call(sock, {"op": "poll", "user": "café", "pid": pid})["ok"] is True
    assert call(sock, {"op": "stop", "user": "café", "pid": pid, "now": True}) == {"ok": True}
    assert call(sock, {"op": "poll", "user": "café", "pid": pid})["running"] is False
    assert not [
        p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == entry.pw_uid
    ]
    assert user_accounts(fleet) == {name}


def test_pids_that_are_not_the_users_server_are_never_signalled(fleet: Fleet) -> None:
    """poll and stop name a pid; the broker may signal it only when it runs as that user's account. The
    daemon, the hubs, their proxies, pid 1, a root process and a process of hub A's own service account are
    all offered (for a user with an account and one without): none of them is touched."""
    hub_entry = pwd.getpwnam(hub_account(fleet.instance, A))
    canaries = [
        subprocess.Popen(["sleep", "600"]),
        subprocess.Popen(
            ["setpriv", f"--reuid={hub_entry.pw_uid}", f"--regid={hub_entry.pw_gid}", "--clear-groups",
             "sleep", "600"]
        ),
    ]  # fmt: skip
    try:
        proxy = int((fleet.data_dir / "hubs" / A / "proxy.pid").read_text())
        victims = [
            fleet.daemon_pid(),
            fleet.status(A)["pid"],
            fleet.status(B)["pid"],
            proxy,
            os.getpid(),
            *(c.pid for c in canaries),
        ]
        wait_for(lambda: psutil.Process(canaries[1].pid).uids().real == hub_entry.pw_uid, timeout=10)
        for user in ("café", "grace"):  # café has an account (the test above), grace none
            for pid in [*victims, 1, 0, -1, True]:
                poll = call(fleet.sock(A), {"op": "poll", "user": user, "pid": pid})
                assert poll.get("running") is False or poll["error"] == "pid must be a process id", poll
                for now in (False, True):
                    stop = call(fleet.sock(A), {"op": "stop", "user": user, "pid": pid, "now": now})
                    assert stop == {"ok": True} or stop["error"] == "pid must be a process id", stop
        for pid in [*victims, 1]:
            process = psutil.Process(pid)
            assert alive(process), f"pid {pid} ({process.name()}) was signalled"
        assert all(c.poll() is None for c in canaries)
        assert httpx.get(f"{fleet.status(A)['url']}/hub/health").status_code == 200
    finally:
        for canary in canaries:
            canary.kill()
            canary.wait()


def test_other_accounts_cannot_reach_a_hubs_socket(fleet: Fleet) -> None:
    """The socket file is the hub account's (0600): hub A's account reaches its own broker and not hub B's;
    a user's account reaches neither. Behind the file mode, the broker checks the peer's uid itself."""
    hub_a = pwd.getpwnam(hub_account(fleet.instance, A))
    hub_b = pwd.getpwnam(hub_account(fleet.instance, B))
    user = pwd.getpwnam(fleet.account(A, "café"))
    for path in (fleet.sock(A), fleet.sock(B)):
        st = path.lstat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert fleet.sock(A).lstat().st_uid == hub_a.pw_uid and fleet.sock(B).lstat().st_uid == hub_b.pw_uid

    own = json.loads(run_as(hub_a.pw_uid, hub_a.pw_gid, CONNECT, str(fleet.sock(A))))
    assert own == {"ok": False, "error": f"'nobody-here' is not a user of hub {A}"}
    assert run_as(hub_a.pw_uid, hub_a.pw_gid, CONNECT, str(fleet.sock(B))) == "PermissionError"
    for path in (fleet.sock(A), fleet.sock(B)):
        assert run_as(user.pw_uid, user.pw_gid, CONNECT, str(path)) == "PermissionError"

    # with the file mode opened up, the peer check still turns hub B's account and the user's away
    os.chmod(fleet.sock(A), 0o666)
    try:
        for entry in (hub_b, user):
            reply = json.loads(run_as(entry.pw_uid, entry.pw_gid, CONNECT, str(fleet.sock(A))))
            assert reply == {"ok": False, "error": "this socket belongs to another hub's account"}
    finally:
        os.chmod(fleet.sock(A), 0o600)


def test_a_flood_is_answered_or_turned_away_and_the_daemon_keeps_serving(fleet: Fleet) -> None:
    """200 connections at once, MAX_IN_FLIGHT of them holding their request open to fill the hub's slots:
    each gets its own refusal or "busy", the daemon lives on, and the slots are all free again afterwards."""
    daemon = psutil.Process(fleet.daemon_pid())
    sock = fleet.sock(A)
    junk: list[tuple[bytes, str]] = [
        (b"junk\n", "bad request: JSONDecodeError"),
        (b"[]\n", "bad request: one JSON object on one line"),
        (
            json.dumps({"op": "start", "user": "omar", "env": {}, "args": []}).encode() + b"\n",
            "is not a user",
        ),
        (json.dumps({"op": "poll", "user": "../x", "pid": 5}).encode() + b"\n", "contains '/'"),
        (json.dumps({"op": "stop", "user": "grace", "pid": 1}).encode() + b"\n", "pid must be a process id"),
        (json.dumps({"op": "nope", "user": "grace", "pid": 9}).encode() + b"\n", "unknown op 'nope'"),
    ]
    # opened first, so the broker takes them first: they fill the slots until its read timeout (5 s)
    held = [send(sock, b'{"op": "poll", "user": "gra') for _ in range(MAX_IN_FLIGHT)]
    requests = [junk[i % len(junk)] for i in range(200 - MAX_IN_FLIGHT)]
    time.sleep(1.5)  # the broker has accepted them all (it takes a slot on accept), well within its 5 s

    def one(item: tuple[bytes, str]) -> tuple[str, str]:
        raw, expected = item
        return ask(sock, raw)["error"], expected

    try:
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            answers = list(pool.map(one, requests))
        answers += [(answer(conn)["error"], "bad request: TimeoutError") for conn in held]
    finally:
        for conn in held:  # even when the flood failed: a closed connection frees its slot at once
            conn.close()
    assert len(answers) == 200
    for error, expected in answers:
        assert error.startswith("busy: too many requests") or expected in error, (error, expected)
    busy = [error for error, _ in answers if error.startswith("busy")]
    assert len(busy) == len(requests), "the in-flight limit did not hold"

    assert alive(daemon) and daemon.pid == fleet.daemon_pid()
    for hub in (A, B):
        assert httpx.get(f"{fleet.status(hub)['url']}/hub/health").status_code == 200
        assert fleet.status(hub)["state"] == "running"
    # every slot was given back: eight requests at once are all answered in full again
    with ThreadPoolExecutor(max_workers=8) as pool:
        errors = list(pool.map(lambda _: call(sock, {"op": "start", "user": "omar"})["error"], range(8)))
    assert errors == [f"'omar' is not a user of hub {A}"] * 8


def start_server(client: httpx.Client, user: str) -> None:
    response = client.post(f"/hub/api/users/{user}/server")
    assert response.status_code in (201, 202), response.text


def ready_server(client: httpx.Client, user: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        server = client.get(f"/hub/api/users/{user}").json().get("servers", {}).get("")
        return server if server and server.get("ready") else None

    return wait_for(ready)


def test_after_all_of_it_both_hubs_serve_and_start_real_servers(fleet: Fleet) -> None:
    """The end of the story: both hubs still healthy, a real server starts through each hub (JupyterHub's
    spawner -> broker -> the user's account), and hub A still cannot touch hub B's user's server."""
    with fleet.client(A) as a, fleet.client(B) as b:
        start_server(a, "alice")
        start_server(b, "bea")
        servers = {hub: ready_server(client, user) for hub, client, user in ((A, a, "alice"), (B, b, "bea"))}
        for hub, user in ((A, "alice"), (B, "bea")):
            pid = servers[hub]["state"]["pid"]
            assert psutil.Process(pid).uids().real == pwd.getpwnam(fleet.account(hub, user)).pw_uid
        assert a.get(f"{servers[A]['url']}api/status").status_code == 200
        assert b.get(f"{servers[B]['url']}api/status").status_code == 200

        bea_pid = servers[B]["state"]["pid"]
        refused = call(fleet.sock(A), {"op": "stop", "user": "bea", "pid": bea_pid, "now": True})
        assert refused == {"ok": False, "error": f"'bea' is not a user of hub {A}"}
        assert call(fleet.sock(A), {"op": "stop", "user": "café", "pid": bea_pid, "now": True}) == {
            "ok": True
        }
        assert call(fleet.sock(A), {"op": "poll", "user": "grace", "pid": bea_pid})["running"] is False
        assert alive(psutil.Process(bea_pid))
        assert b.get(f"{servers[B]['url']}api/status").status_code == 200

        assert user_accounts(fleet) == {fleet.account(A, u) for u in ("café", "alice")} | {
            fleet.account(B, "bea")
        }
        for hub in (A, B):
            assert httpx.get(f"{fleet.status(hub)['url']}/hub/health").status_code == 200
