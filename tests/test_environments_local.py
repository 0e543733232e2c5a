"""Environments on a local cluster end to end: a real root daemon, a real hub, real OS accounts and kernels.

uni-a-staging offers Python (sizes, GPU only for group gpu-users) and R (Debian's r-base-core and
r-cran-irkernel), and a staff-only environment. Users start each through the REST API with `user_options` and
run code in it over the kernel websocket (R: `1 + 1` answers `[1] 2` through the IR kernel); forbidden choices
are refused by the hub with the gate's message and by the broker when asked on its socket directly; the last
choice is the default next time; the spawn form is served and posted as a browser does; `hubfleet check` runs
in each environment.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from fleet_helpers import copy_demo_fleet, daemon_status, edit, hubfleet, running_fleet, wait_for
from hubfleet.runtime.layout import layout

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="the broker needs root; single-account mode is not tried here"
    ),
    pytest.mark.skipif(
        not Path("/usr/share/jupyter/kernels/ir/kernel.json").is_file(),
        reason="R's IR kernel is not installed: run scripts/install-debian-deps.sh",
    ),
]

HUB = "uni-a-staging"
PASSWORD = "demo-staging"
ENVIRONMENTS = """\
environments:
  - slug: python
    display_name: Python
    default: true
    local: {kernels: [python3]}
    options:
      size:
        display_name: Size
        choices:
          small:
            display_name: Small
            default: true
            env: {HUBFLEET_TEST_SIZE: small}
            resources: {memory_limit: 300M}
          gpu: {display_name: GPU, groups: [gpu-users], env: {HUBFLEET_TEST_SIZE: gpu}}
  - slug: r
    display_name: R
    default_ui: classic
    local: {path: /usr, kernels: [ir]}
  - slug: staff
    display_name: Staff only
    groups: [staff]
"""


class Hub:
    def __init__(self, root: Path):
        self.root = root
        self.token = hubfleet("token", HUB, fleet=root, check=True).stdout.strip()
        self.url = daemon_status(root)["hubs"][HUB]["url"]
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=60
        )

    def start(self, user: str, body: dict[str, Any] | None) -> httpx.Response:
        self.api.post(f"/hub/api/users/{user}")
        kwargs = {"json": body} if body is not None else {}
        response = self.api.post(f"/hub/api/users/{user}/server", **kwargs)
        if response.status_code in (201, 202):
            wait_for(lambda: self.server(user).get("ready"), timeout=120)
        return response

    def server(self, user: str) -> dict[str, Any]:
        return self.api.get(f"/hub/api/users/{user}").json().get("servers", {}).get("") or {}

    def stop(self, user: str) -> None:
        self.api.delete(f"/hub/api/users/{user}/server")
        wait_for(lambda: not self.server(user), timeout=60)

    def kernelspecs(self, user: str) -> dict[str, Any]:
        response = self.api.get(f"/user/{user}/api/kernelspecs")
        assert response.status_code == 200, response.text
        return response.json()

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
                elif kind in ("execute_result", "display_data"):  # IRkernel displays its results
                    result = content.get("data", {}).get("text/plain", "")
                elif kind == "error":
                    error = f"{content.get('ename')}: {content.get('evalue')}"
                elif kind == "status" and content.get("execution_state") == "idle":
                    break
        return {"stdout": "".join(out), "result": result, "error": error}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("environments") / "demo", keep={"communities/uni-a/hubs/staging.yaml"}
    )
    hub_file = root / "communities/uni-a/hubs/staging.yaml"
    edit(
        hub_file,
        "  admin_users: [grace]",
        "  admin_users: [grace]\n  groups:\n    gpu-users: [alice]\n    staff: [grace]",
    )
    hub_file.write_text(hub_file.read_text() + ENVIRONMENTS)
    with running_fleet(root):
        yield Hub(root)


def test_rendered_config_holds_the_environments(hub: Hub) -> None:
    """`hubfleet plan` sees environments: they are in the rendered config, groups with the check user."""
    rendered = hubfleet("render", HUB, fleet=hub.root, check=True).stdout
    assert "c.EnvironmentsMixin.environments = [" in rendered
    assert "'gpu-users': {'users': ['alice', 'hubfleet-check']}" in rendered


def test_each_environment_runs_its_kernel(hub: Hub) -> None:
    assert hub.start("bob", {"user_options": {"environment": "python"}}).status_code in (201, 202)
    assert hub.server("bob")["user_options"] == {"environment": "python"}
    python = hub.run("bob", "import os, sys; print('py', 6 * 7, os.environ.get('HUBFLEET_TEST_SIZE'))")
    assert python["kernel"] == "python3" and python["stdout"].strip() == "py 42 small", python
    assert set(hub.kernelspecs("bob")["kernelspecs"]) == {"python3"}
    hub.stop("bob")

    assert hub.start("bob", {"user_options": {"environment": "r"}}).status_code in (201, 202)
    specs = hub.kernelspecs("bob")
    assert specs["default"] == "ir" and set(specs["kernelspecs"]) == {"ir"}
    r = hub.run("bob", "1 + 1")
    assert r["kernel"] == "ir" and r["result"] == "[1] 2", r
    assert "R version" in hub.run("bob", "cat(R.version.string)")["stdout"]
    hub.stop("bob")


MEMORY_LIMIT_FILE = """
import os
for line in open("/proc/self/cgroup").read().splitlines():
    _, controllers, path = line.split(":", 2)
    if "memory" in controllers.split(","):
        print(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
    elif controllers == "" and os.path.exists(f"/sys/fs/cgroup{path}/memory.max"):
        print(f"/sys/fs/cgroup{path}/memory.max")
"""
"""Where the kernel's memory limit is (the user may not read it; the test, as root, does)."""


def test_choice_sets_the_memory_limit_of_the_users_group(hub: Hub) -> None:
    """The broker puts the server in a control group with the picked choice's memory limit (300M)."""
    assert hub.start("erin", {"user_options": {"environment": "python", "size": "small"}}).status_code in (
        201,
        202,
    )
    try:
        done = hub.run("erin", MEMORY_LIMIT_FILE)
        [limit_file] = done["stdout"].split()
        assert "hfu-" in limit_file, done  # the user's own group, not the hub's
        assert Path(limit_file).read_text().strip() == str(300 * 1024 * 1024)
    finally:
        hub.stop("erin")


def test_forbidden_choices_are_refused_by_the_hub(hub: Hub) -> None:
    response = hub.start("bob", {"user_options": {"environment": "python", "size": "gpu"}})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "choice 'gpu' of option 'size' is only for members of group(s) gpu-users" in message
    assert "pick one of: small" in message
    assert not hub.server("bob")
    response = hub.start("bob", {"user_options": {"environment": "staff"}})
    assert response.status_code == 400 and "only for members of group(s) staff" in response.json()["message"]
    response = hub.start("bob", {"user_options": {"environment": "julia"}})
    assert response.status_code == 400
    assert response.json()["message"] == "no environment 'julia' on this hub; pick one of: python, r"

    # alice is in gpu-users (auth.groups in the hub file): the same choice is hers
    assert hub.start("alice", {"user_options": {"environment": "python", "size": "gpu"}}).status_code in (
        201,
        202,
    )
    assert hub.run("alice", "import os; print(os.environ['HUBFLEET_TEST_SIZE'])")["stdout"].strip() == "gpu"
    hub.stop("alice")


def _broker(request: dict[str, Any], path: Path) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(str(path))
        conn.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_broker_resolves_again_and_refuses(hub: Hub) -> None:
    """A hub that passed a forbidden choice on (compromised, or a bug) still gets no such server: the broker
    reads the user's groups from the hub's database itself."""
    hub.api.post("/hub/api/users/bob")
    path = layout(hub.root / ".hubfleet").broker_socket(HUB)
    for options, expect in (
        ({"environment": "python", "size": "gpu"}, "only for members of group(s) gpu-users"),
        ({"environment": "staff"}, "only for members of group(s) staff"),
        ({"environment": "r", "colour": "red"}, "has no option 'colour'"),
    ):
        reply = _broker({"op": "start", "user": "bob", "env": {}, "args": [], "user_options": options}, path)
        assert reply["ok"] is False and reply["error"].startswith("environment refused: "), reply
        assert expect in reply["error"]
    reply = _broker({"op": "start", "user": "bob", "env": {}, "args": [], "user_options": "r"}, path)
    assert reply == {"ok": False, "error": "user_options must be an object"}


def test_last_choice_is_the_default_next_time(hub: Hub) -> None:
    assert hub.start("carol", {"user_options": {"environment": "r"}}).status_code in (201, 202)
    hub.stop("carol")
    assert hub.start("carol", None).status_code in (201, 202)  # no body: JupyterHub's saved user_options
    assert hub.kernelspecs("carol")["default"] == "ir"
    hub.stop("carol")
    with _signed_in("carol", hub) as browser:
        form = browser.get("/hub/spawn").text
    assert 'value="r" checked' in form and 'value="python" checked' not in form


@contextlib.contextmanager
def _signed_in(user: str, hub: Hub):  # noqa: ANN202 - Iterator[httpx.Client]
    with httpx.Client(base_url=hub.url, timeout=60, follow_redirects=False) as browser:
        page = browser.get("/hub/login")
        xsrf = html.unescape(re.search(r'name="_xsrf"\s+value="([^"]*)"', page.text).group(1))
        response = browser.post("/hub/login", data={"username": user, "password": PASSWORD, "_xsrf": xsrf})
        assert response.status_code in (302, 303), response.text[:500]
        yield browser


def test_spawn_form_is_served_and_posted_like_a_browser(hub: Hub) -> None:
    with _signed_in("dave", hub) as browser:
        page = browser.get("/hub/spawn")
        assert page.status_code == 200
        assert 'name="environment" value="python" checked' in page.text
        assert 'value="r"' in page.text and "Staff only" not in page.text and "GPU" not in page.text
        # the form posts to its action, which carries _xsrf (with the _xsrf cookie), as a browser does
        action = html.unescape(re.search(r'id="spawn_form"\s+action="([^"]*)"', page.text).group(1))
        assert "_xsrf=" in action and browser.cookies.get("_xsrf")
        refused = browser.post(action, files={"environment": (None, "python"), "python--size": (None, "gpu")})
        assert refused.status_code == 400 and "gpu-users" in html.unescape(refused.text)
        posted = browser.post(action, files={"environment": (None, "r")})
        assert posted.status_code in (302, 303), posted.text[:500]
    wait_for(lambda: hub.server("dave").get("ready"), timeout=120)
    assert hub.server("dave")["user_options"] == {"environment": "r"}
    assert hub.run("dave", "1 + 1")["result"] == "[1] 2"
    hub.stop("dave")


def test_check_runs_in_each_environment(hub: Hub) -> None:
    done = hubfleet("check", HUB, "--json", fleet=hub.root)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    # the check user is in every group of auth.groups, so even the staff-only environment is checked
    assert [r["environment"] for r in report["environments"]] == ["python", "r", "staff"]
    assert all(r["ok"] for r in report["environments"])
    assert report["skipped"] == {}
    only = hubfleet("check", HUB, "--environment", "r", fleet=hub.root)
    assert only.returncode == 0 and "environment r" in only.stdout, only.stdout + only.stderr
    missing = hubfleet("check", HUB, "--environment", "julia", fleet=hub.root)
    assert missing.returncode != 0 and "has no environment 'julia'" in missing.stderr
