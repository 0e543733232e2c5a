"""The fork spawner end to end: a real root daemon, real hubs, servers forked from a real template.

uni-a-staging (the default, `spawner: fork`) offers Python and R; hackweek-staging keeps `spawner: process`.
A forked server runs as the user's own account with no other groups, in its control group, with the user's
HOME and environment, and runs code in a kernel; R still runs the IR kernel; the hub's restart keeps it; a
stop leaves no process and no zombie. The template never holds a server's token: its memory and a later user's
server's memory are searched for it. Without a fleet, a ForkServer in this process shows the template refuses
to fork with a thread running and keeps its children when the daemon goes away.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.sync.client import connect as ws_connect

from fleet_helpers import (
    copy_demo_fleet,
    daemon_status,
    drop_section,
    edit,
    hubfleet,
    running_fleet,
    wait_for,
)
from hubfleet.isolation.forkserver import ForkServer, TemplateError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker and its templates need root"),
]

UNI, HACK = "uni-a-staging", "hackweek-staging"
ENVIRONMENTS = """\
environments:
  - slug: python
    display_name: Python
    default: true
    local: {kernels: [python3]}
    env: {HUBFLEET_TEST_ENV: python-env}
  - slug: r
    display_name: R
    local: {path: /usr, kernels: [ir]}
"""
HAVE_R = Path("/usr/share/jupyter/kernels/ir/kernel.json").is_file()


class Hub:
    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name
        self.token = hubfleet("token", name, fleet=root, check=True).stdout.strip()
        self.url = daemon_status(root)["hubs"][name]["url"]
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=60
        )

    def start(self, user: str, options: dict[str, Any] | None = None) -> None:
        """The user's server, started unless it runs (the tests of this module share the fleet)."""
        if self.server(user).get("ready"):
            return
        self.api.post(f"/hub/api/users/{user}")
        body = {"user_options": options} if options else None
        response = self.api.post(f"/hub/api/users/{user}/server", json=body)
        assert response.status_code in (201, 202), response.text
        wait_for(lambda: self.server(user).get("ready"), timeout=120)

    def server(self, user: str) -> dict[str, Any]:
        return self.api.get(f"/hub/api/users/{user}").json().get("servers", {}).get("") or {}

    def stop(self, user: str) -> None:
        self.api.delete(f"/hub/api/users/{user}/server")
        wait_for(lambda: not self.server(user), timeout=60)

    def run(self, user: str, code: str) -> dict[str, str]:
        """`code` in a new kernel of the server's default kind: its name, stdout and displayed result."""
        response = self.api.post(f"/user/{user}/api/kernels", json={})
        assert response.status_code == 201, response.text
        kernel = response.json()
        try:
            return {"kernel": kernel["name"], **self._execute(user, kernel["id"], code)}
        finally:
            self.api.delete(f"/user/{user}/api/kernels/{kernel['id']}")

    def _execute(self, user: str, kernel: str, code: str) -> dict[str, str]:
        session, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
        request = {
            "header": {"msg_id": msg_id, "username": user, "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }  # fmt: skip
        out, result, error = [], "", ""
        base = "ws" + self.url.removeprefix("http")
        url = f"{base}/user/{user}/api/kernels/{kernel}/channels?session_id={session}"
        deadline = time.monotonic() + 120
        with ws_connect(
            url, additional_headers={"Authorization": f"token {self.token}"}, open_timeout=60
        ) as ws:
            ws.send(json.dumps(request))
            while time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message.get("msg_type"), message.get("content", {})
                if kind == "stream":
                    out.append(content.get("text", ""))
                elif kind in ("execute_result", "display_data"):
                    result = content.get("data", {}).get("text/plain", "")
                elif kind == "error":
                    error = f"{content.get('ename')}: {content.get('evalue')}"
                elif kind == "status" and content.get("execution_state") == "idle":
                    break
        return {"stdout": "".join(out), "result": result, "error": error}

    def server_process(self, user: str) -> psutil.Process:
        """The user's server: the one jupyterhub-singleuser process running in the user's home."""
        home = self.root / ".hubfleet-data/homes" / self.name / user
        found = []
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "jupyterhub-singleuser" in cmd and proc.info["cwd"] == str(home):
                found.append(proc)
        assert len(found) == 1, (home, found)
        return found[0]


def templates() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "hubfleet.isolation.forktemplate" in " ".join(p.info["cmdline"] or [])
        and p.status() != psutil.STATUS_ZOMBIE
    ]


def template_of(proc: psutil.Process) -> psutil.Process:
    parent = proc.parent()
    assert parent is not None and "hubfleet.isolation.forktemplate" in " ".join(parent.cmdline()), parent
    return parent


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of the process holds `needle` (read as root through /proc/PID/mem)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except OSError:
                continue
    return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("fork") / "demo",
        keep={"communities/uni-a/hubs/staging.yaml", "communities/hackweek/hubs/staging.yaml"},
    )
    for community in root.glob("communities/*/community.yaml"):  # the demo's events name the prod hubs
        community.write_text(drop_section(community.read_text(), "events"))
    uni = root / "communities/uni-a/hubs/staging.yaml"
    uni.write_text(uni.read_text() + ENVIRONMENTS)
    edit(root / "communities/hackweek/hubs/staging.yaml", "auth:", "spawner: process\nauth:")
    with running_fleet(root):
        yield root


@pytest.fixture(scope="module")
def uni(fleet: Path) -> Hub:
    return Hub(fleet, UNI)


def test_a_forked_server_is_the_users_own(uni: Hub) -> None:
    uni.start("alice", {"environment": "python"})
    server = uni.server_process("alice")
    template = template_of(server)
    account = psutil.Process(server.pid).username()
    assert account.startswith("hf") and account != "root", account
    uid = server.uids()
    assert uid.real == uid.effective == uid.saved != 0
    assert server.gids().real == server.gids().effective != 0
    status = Path(f"/proc/{server.pid}/status").read_text()
    assert re.search(r"^Groups:\s*$", status, re.M), "supplementary groups left"
    assert os.getsid(server.pid) == server.pid, "not in a session of its own"
    assert os.stat(f"/proc/{server.pid}").st_uid == uid.real, "not dumpable: its /proc files are root's"
    ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.M)[1], 16)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # as in any Python: a closed socket raises EPIPE
        assert ignored & (1 << (signum - 1)), f"{signum.name} would kill the server"
    assert account in Path(f"/proc/{server.pid}/cgroup").read_text()
    home = str(uni.root / ".hubfleet-data/homes" / UNI / "alice")
    assert os.readlink(f"/proc/{server.pid}/fd/2").endswith("/hub.log")
    assert os.readlink(f"/proc/{server.pid}/fd/0") == "/dev/null"
    # the template: root, one thread, pre-imported (hubfleet's own environment), not the daemon's group
    assert template.uids().real == 0 and template.num_threads() == 1
    # the kernel inherits the server's environment (os.environ replaced wholly in the child)
    out = uni.run("alice", KERNEL_SEES)
    assert out["error"] == "", out
    seen = json.loads(out["stdout"])
    assert seen["ids"] == [server.uids().real] * 2 and seen["groups"] == [] and seen["cwd"] == home
    env = seen["env"]
    assert env["HOME"] == home and env["USER"] == account and env["HUBFLEET_TEST_ENV"] == "python-env"
    assert env["JUPYTERHUB_API_TOKEN"] and env["PATH"].split(":")[0].endswith("/bin")


KERNEL_SEES = (
    "import os, json; print(json.dumps({'ids': [os.getuid(), os.geteuid()], 'groups': os.getgroups(), "
    "'cwd': os.getcwd(), 'env': dict(os.environ)}))"
)


def test_the_template_never_holds_a_token(uni: Hub) -> None:
    """A hostile user's server is forked after alice's: neither it nor the template holds alice's token."""
    uni.start("alice", {"environment": "python"})
    alice = uni.server_process("alice")
    token = json.loads(uni.run("alice", KERNEL_SEES)["stdout"])["env"]["JUPYTERHUB_API_TOKEN"].encode()
    assert memory_holds(alice.pid, token)  # the search works: alice's own server holds it
    template = template_of(alice)
    assert not memory_holds(template.pid, token), "the template read a spec"
    uni.start("mallory", {"environment": "python"})
    mallory = uni.server_process("mallory")
    assert template_of(mallory).pid == template.pid
    assert not memory_holds(mallory.pid, token), "a later child inherited another user's token"
    # and mallory's kernel cannot look at alice's server
    probe = textwrap.dedent(f"""
        import os
        for name in ("environ", "mem", "cmdline"):
            try:
                data = open("/proc/{alice.pid}/" + name, "rb").read()
                print(name, {token!r} in data)
            except OSError as e:
                print(name, type(e).__name__)
    """)
    out = uni.run("mallory", probe)
    assert "True" not in out["stdout"], out
    uni.stop("mallory")


def test_environments_still_apply(uni: Hub) -> None:
    if not HAVE_R:
        pytest.skip("R's IR kernel is not installed: run scripts/install-debian-deps.sh")
    uni.start("bob", {"environment": "r"})
    assert template_of(uni.server_process("bob"))
    r = uni.run("bob", "1 + 1")
    assert r["kernel"] == "ir" and r["result"] == "[1] 2", r
    uni.stop("bob")


def test_a_server_survives_the_hubs_restart(fleet: Path, uni: Hub) -> None:
    uni.start("alice", {"environment": "python"})
    server = uni.server_process("alice")
    old = daemon_status(fleet)["hubs"][UNI]["pid"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        hub = daemon_status(fleet)["hubs"][UNI]
        return hub["state"] == "running" and hub["pid"] != old

    wait_for(restarted, timeout=90)
    assert server.is_running() and server.status() != psutil.STATUS_ZOMBIE
    wait_for(lambda: uni.server("alice").get("ready"), timeout=60)
    assert uni.run("alice", "print(6 * 7)")["stdout"].strip() == "42"


def test_a_stop_leaves_nothing(uni: Hub) -> None:
    uni.start("carol", {"environment": "python"})
    server = uni.server_process("carol")
    template = template_of(server)
    uni.run("carol", "print(1)")
    uni.stop("carol")
    wait_for(lambda: not server.is_running(), timeout=30)
    zombies = [c for c in template.children() if c.status() == psutil.STATUS_ZOMBIE]
    assert not zombies
    # a server that dies by itself is seen by the hub (the template reported its end)
    uni.start("carol", {"environment": "python"})
    os.kill(uni.server_process("carol").pid, signal.SIGKILL)
    wait_for(lambda: not uni.server("carol"), timeout=90)
    assert not [c for c in template.children() if c.status() == psutil.STATUS_ZOMBIE]


def test_a_stop_while_the_server_starts_leaves_nothing(uni: Hub) -> None:
    """A stop that interrupts a pending spawn (the hub cancels the start while the broker starts the
    server) still stops that server: the spawner waits for the broker's answer to learn its pid."""
    user = "dave"
    home = str(uni.root / ".hubfleet-data/homes" / uni.name / user)
    uni.api.post(f"/hub/api/users/{user}")

    async def start_then_stop() -> None:
        headers = {"Authorization": f"token {uni.token}"}
        async with httpx.AsyncClient(base_url=uni.url, headers=headers, timeout=60) as client:
            body = {"user_options": {"environment": "python"}}
            start = asyncio.ensure_future(client.post(f"/hub/api/users/{user}/server", json=body))
            await asyncio.sleep(0.3)  # the spawn is pending: the broker is starting the server
            await client.delete(f"/hub/api/users/{user}/server")
            await start

    asyncio.run(start_then_stop())
    wait_for(lambda: not uni.server(user), timeout=90)

    def servers_in_home() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            if "jupyterhub-singleuser" in " ".join(proc.info["cmdline"] or []) and proc.info["cwd"] == home:
                found.append(proc)
        return found

    wait_for(lambda: not servers_in_home(), timeout=60)
    time.sleep(3)  # a server the stop missed would be listening by now
    assert not servers_in_home()


def test_spawner_process_still_works(fleet: Path) -> None:
    hack = Hub(fleet, HACK)
    hack.start("dave")
    server = hack.server_process("dave")
    parent = server.parent()
    assert parent is None or "forktemplate" not in " ".join(parent.cmdline())
    assert hack.run("dave", "print(6 * 7)")["stdout"].strip() == "42"
    hack.stop("dave")


# ---------------------------------------------------------------------- the template alone (no fleet)

CHILD = {
    "uid": 65534,
    "gid": 65534,
    "cgroup_procs": [],
    "cwd": "/",
    "env": {},
    "argv": ["pause"],
    "umask": 18,
}


def test_the_template_refuses_to_fork_with_a_thread(tmp_path: Path) -> None:
    (tmp_path / "threaded.py").write_text("import threading, time\nthreading.Thread(target=time.sleep, "
                                          "args=(600,), daemon=True).start()\n")  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": str(tmp_path)}

    async def main() -> str:
        template = ForkServer("threaded", ["threaded"], env=env, log_path=tmp_path / "log")
        try:
            await template.start()
        except TemplateError as exc:
            return str(exc)
        finally:
            await template.stop()
        return "started"

    assert "2 Python threads" in asyncio.run(main())


def test_children_outlive_the_daemon_and_are_reaped(tmp_path: Path) -> None:
    """The daemon's end of the socket closes (the daemon died): the template exits, its child runs on."""

    async def main() -> tuple[int, int, int]:
        template = ForkServer("alone", [], log_path=tmp_path / "log")
        await template.start()
        first = await template.spawn(CHILD, "signal:pause", log_path=tmp_path / "child.log")
        os.kill(first.pid, signal.SIGTERM)
        code = await asyncio.wait_for(first.wait(), 10)  # reported by the template
        second = await template.spawn(CHILD, "signal:pause")
        assert template.pid is not None and psutil.Process(template.pid).num_threads() == 1
        pid = template.pid
        template._sock.close()  # as when the daemon is killed
        await asyncio.sleep(0)
        return code, pid, second.pid

    code, template_pid, child = asyncio.run(main())
    assert code == -signal.SIGTERM
    wait_for(lambda: not psutil.pid_exists(template_pid) or psutil.Process(template_pid).status() == "zombie")
    assert psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    assert psutil.Process(child).uids().real == 65534
    os.kill(child, signal.SIGKILL)


def test_warm_makes_the_template_and_the_accounts_ahead(tmp_path: Path) -> None:
    """Ready mode's part on a local hub (Broker.warm): the template is up and the users' accounts and homes
    exist before anyone arrives; asked again, it finds them. A real broker in this process, real accounts."""
    import secrets as random_ids

    from hubfleet.backends.local import BIN_DIR, PATH
    from hubfleet.daemon.broker import Broker, HubPolicy
    from hubfleet.isolation.accounts import fleet_accounts, remove_account
    from hubfleet.isolation.cgroups import Limits
    from hubfleet.runtime.layout import Layout

    os.chmod(tmp_path, 0o711)
    where = Layout(tmp_path / "state", tmp_path / "data", random_ids.token_hex(6))
    where.state_dir.mkdir()
    policy = HubPolicy(
        hub="warm-hub",
        hub_uid=0,
        limits=Limits(),
        memory_text=None,
        db_path=tmp_path / "none.sqlite",
        homes=where.homes("warm-hub"),
        log_path=tmp_path / "hub.log",
        command=[str(BIN_DIR / "jupyterhub-singleuser")],
        path_env=PATH,
        spawner="fork",
    )

    async def main() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        broker = Broker(where, None)
        await broker.serve(policy)
        try:
            first = await broker.warm("warm-hub", None, ["ann", "bo", "../x"])
            again = await broker.warm("warm-hub", None, ["ann", "bo"])
            return first, again, broker.templates()
        finally:
            await broker.close_all()

    try:
        first, again, state = asyncio.run(main())
    finally:
        for account in fleet_accounts(where.instance):
            remove_account(account.name)
    assert first["template"] == "running" and state[0]["running"]
    assert (first["accounts_created"], first["homes"], len(first["refused"])) == (2, 2, 1)
    assert (again["accounts_created"], again["accounts_existing"], again["homes"]) == (0, 2, 0)
    assert (where.homes("warm-hub") / "ann").is_dir()
    assert not psutil.pid_exists(state[0]["pid"]) or psutil.Process(state[0]["pid"]).status() == "zombie"
