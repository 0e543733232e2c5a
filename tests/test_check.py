"""The synthetic check against a REAL JupyterHub (DummyAuthenticator, SimpleLocalProcessSpawner, PyPI CHP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from hubfleet.checks.synthetic import DEFAULT_USERNAME, REQUIRED_SCOPES, STEPS, check_hub, run_check
from hubfleet.ports import free_port
from hubfleet.store import open_store

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent


@dataclass
class Hub:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path


HUB_CONFIG = """
import os
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{tmp}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.pid_file = "{tmp}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/home/{{username}}"
c.Spawner.cmd = ["{venv}/jupyterhub-singleuser"]
c.Spawner.args = {args!r}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
# Exercise the "slow spawn" path: the REST API answers before the server is up, so the check must poll.
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0.2}}
c.ConfigurableHTTPProxy.command = ["{venv}/configurable-http-proxy"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.JupyterHub.services = [{{"name": "hubfleet", "api_token": os.environ["HUBFLEET_TEST_SERVICE_TOKEN"]}}]
c.JupyterHub.load_roles = [{{"name": "hubfleet-check", "scopes": {scopes!r}, "services": ["hubfleet"]}}]
"""


def _descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def _kill_group(pgid: int, sig: int) -> None:
    if pgid in (os.getpgrp(), 0, 1):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """Stop the hub's process group and every process group of its descendants (user servers, kernels)."""
    children = _descendants(proc.pid)
    groups = {proc.pid}
    for child in children:
        with contextlib.suppress(psutil.Error):
            groups.add(os.getpgid(child.pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            _kill_group(pgid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        _, alive = psutil.wait_procs(children, timeout=5)
        if not alive:
            break
    for child in children:  # anything that escaped its group
        with contextlib.suppress(psutil.Error):
            child.kill()


@contextlib.contextmanager
def running_hub(tmp: Path, scopes: list[str]) -> Iterator[Hub]:
    """A real JupyterHub on free loopback ports whose service 'hubfleet' holds `scopes`."""
    token = secrets.token_hex(32)
    # three different ports: each pick is random in the worker's range, so two can meet (they did in CI)
    port = free_port()
    hub_port = free_port({port})
    config = HUB_CONFIG.format(
        port=port,
        hub_port=hub_port,
        proxy_api_port=free_port({port, hub_port}),
        tmp=tmp,
        venv=VENV_BIN,
        args=["--allow-root"] if os.geteuid() == 0 else [],
        scopes=scopes,
    )
    (tmp / "jupyterhub_config.py").write_text(textwrap.dedent(config))
    (tmp / "home").mkdir()
    log = tmp / "hub.log"
    env = {**os.environ, "HUBFLEET_TEST_SERVICE_TOKEN": token, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(tmp / "jupyterhub_config.py")],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyterhub exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/hub/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"jupyterhub did not answer /hub/health:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Hub(url, token, proc, log)
    finally:
        _stop_tree(proc)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    # Only the least scopes the check needs (the fleet's control-plane token holds a superset of these).
    with running_hub(tmp_path_factory.mktemp("hub"), REQUIRED_SCOPES) as running:
        yield running


def _server_state(hub: Hub) -> dict[str, object]:
    response = httpx.get(
        f"{hub.url}/hub/api/users/{DEFAULT_USERNAME}", headers={"Authorization": f"token {hub.token}"}
    )
    response.raise_for_status()
    return response.json()["servers"]


def _user_servers(hub: Hub) -> list[psutil.Process]:
    found = []
    for proc in _descendants(hub.proc.pid):
        with contextlib.suppress(psutil.Error):
            if any("jupyterhub-singleuser" in part for part in proc.cmdline()):
                found.append(proc)
    return found


def _assert_stopped(hub: Hub) -> None:
    assert _server_state(hub) == {}
    deadline = time.monotonic() + 10
    while _user_servers(hub) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _user_servers(hub) == []


def test_check_passes_end_to_end_and_is_stored(hub: Hub, tmp_path: Path) -> None:
    """check_hub → run_check against the real hub; the result lands in the store and its history."""
    with open_store(tmp_path / "state") as store:
        result = asyncio.run(check_hub("demo-hub", hub.url, hub.token, store, timeout=90))
        assert result.ok and result.failed_step is None and result.hub == "demo-hub"
        assert [s.name for s in result.steps] == list(STEPS) and all(s.ok for s in result.steps)
        assert result.total_seconds > 0
        assert hub.token not in result.to_json()
        _assert_stopped(hub)
        [stored] = store.checks("demo-hub")
        assert stored.ok and [s["name"] for s in stored.steps] == list(STEPS)
        [event] = store.history("demo-hub")
        assert event.kind == "check" and event.ok


def test_code_that_raises_fails_the_execute_step_and_still_stops(hub: Hub) -> None:
    result = asyncio.run(run_check(hub.url, hub.token, code="raise RuntimeError('boom {a}')", timeout=90))

    assert not result.ok
    assert result.failed_step == "execute"
    by_name = {s.name: s for s in result.steps}
    assert "RuntimeError" in by_name["execute"].detail and "boom" in by_name["execute"].detail
    assert by_name["delete_kernel"].ok and by_name["stop_server"].ok
    assert "execute" in (result.error or "")
    assert hub.token not in result.to_json()
    _assert_stopped(hub)


def test_wrong_output_fails_the_execute_step(hub: Hub) -> None:
    result = asyncio.run(run_check(hub.url, hub.token, code="print('not the product')", timeout=90))

    assert result.failed_step == "execute"
    assert "expected output containing" in result.steps[3].detail
    assert result.steps[-1].name == "stop_server" and result.steps[-1].ok
    _assert_stopped(hub)


def test_bad_token_names_the_step_and_status_without_the_token(hub: Hub) -> None:
    bad = "not-a-real-token-" + secrets.token_hex(8)
    result = asyncio.run(run_check(hub.url, bad, timeout=30))

    assert result.failed_step == "create_user"
    assert "HTTP 403" in result.steps[0].detail
    assert [s.name for s in result.steps] == ["create_user"]  # no server was started, nothing to stop
    assert bad not in result.to_json() and hub.token not in result.to_json()


def test_unreachable_hub_fails_fast_with_a_clear_step() -> None:
    result = asyncio.run(run_check(f"http://127.0.0.1:{free_port()}", "secret-token", timeout=10))

    assert result.failed_step == "create_user"
    assert "Connect" in result.steps[0].detail
    assert "secret-token" not in result.to_json()


def _kernel_stand_in(answers: list[int]) -> tuple[object, list[int]]:
    """A websocket server standing in for the proxy and a kernel: the first openings get `answers` (HTTP
    statuses), then it runs one execute_request. A stand-in because a real proxy's 599 (its wait for a slow
    first kernel start ran out) cannot be made to happen on demand."""
    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    seen: list[int] = []

    def process_request(connection: object, request: object) -> Response | None:
        if len(seen) < len(answers):
            seen.append(answers[len(seen)])
            return Response(seen[-1], "gave up", Headers({"Content-Length": "0"}), b"")
        seen.append(101)
        return None

    async def kernel(ws: object) -> None:
        request = json.loads(await ws.recv())  # type: ignore[attr-defined]
        parent = {"msg_id": request["header"]["msg_id"]}
        for kind, content in (
            ("stream", {"name": "stdout", "text": "ok 42\n"}),
            ("execute_reply", {"status": "ok"}),
            ("status", {"execution_state": "idle"}),
        ):
            await ws.send(json.dumps({"parent_header": parent, "msg_type": kind, "content": content}))  # type: ignore[attr-defined]

    return serve(kernel, "127.0.0.1", 0, process_request=process_request), seen


async def _execute_through(answers: list[int], timeout: float) -> tuple[str, list[int]]:
    from hubfleet.checks.synthetic import StepFailed, _Check

    server_cm, seen = _kernel_stand_in(answers)
    async with server_cm as server:  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]
        check = _Check(f"http://127.0.0.1:{port}", "secret-token", DEFAULT_USERNAME, timeout)
        check.kernel_id = "k1"
        try:
            return await check.execute("print('ok', 6 * 7)", "ok 42"), seen
        except StepFailed as exc:
            return f"failed: {exc}", seen
        finally:
            await check.client.aclose()


def test_a_kernel_websocket_the_proxy_gave_up_on_is_opened_again() -> None:
    """R's first kernel start under load outlasted the proxy's 20 s wait (HTTP 599): the check opens the
    websocket again while its budget lasts, and says so; other refusals and a spent budget still fail."""
    detail, seen = asyncio.run(_execute_through([599, 502], timeout=30))
    assert seen == [599, 502, 101]
    assert detail == "output 'ok 42' (websocket opened at attempt 3)"
    detail, seen = asyncio.run(_execute_through([403], timeout=30))
    assert seen == [403] and detail == "failed: opening the kernel websocket: HTTP 403"
    detail, seen = asyncio.run(_execute_through([599, 599], timeout=0.5))  # no budget left for a retry
    assert seen == [599]
    assert (
        detail
        == "failed: opening the kernel websocket: HTTP 599 (the proxy could not reach the server in time)"
    )
