"""The daemon's control socket (daemon/control.py): names checked as in the fleet's files before anything
touches a directory, and clients that leave early are not the daemon's errors. A real socket served over a
real Supervisor (single-account mode, no hubs), so nothing here starts a hub."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from fleet_helpers import copy_demo_fleet
from hubfleet.config.validate import load_fleet
from hubfleet.daemon.control import name_problem, request_problem, serve_control
from hubfleet.daemon.supervisor import Supervisor
from hubfleet.store import open_store

BAD_NAMES = ["../outside", "..", "", "a/b", "UPPER", "-dash", "x" * 64, None, 3, ["a"]]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_the_fleet_files_refuse_are_refused(name: object) -> None:
    problem = name_problem(name)
    assert problem is not None and "is not a valid name; use 1-63 lower-case letters" in problem
    for op in ("remove", "rollback"):
        assert request_problem({"op": op, "hub": name, "purge": True}) == problem
    apply = {"op": "apply", "prepared": {"name": name}, "community": "uni-a", "stage": "prod"}
    assert request_problem(apply) == problem


def test_good_requests_pass() -> None:
    assert name_problem("uni-a-prod") is None and name_problem("a") is None
    assert request_problem({"op": "remove", "hub": "uni-a-prod", "purge": True}) is None
    assert request_problem({"op": "status"}) is None
    apply = {"op": "apply", "prepared": {"name": "h1"}, "community": "uni-a", "stage": "staging"}
    assert request_problem(apply) is None
    assert request_problem({**apply, "community": "../c"}) == name_problem("../c", "community")
    assert "stage 'qa' is not one of staging, prod" in str(request_problem({**apply, "stage": "qa"}))
    assert request_problem(["op", "remove"]) == "a request is one JSON object"


async def _ask(path: Path, payload: object) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(json.dumps(payload).encode() + b"\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    answer: dict[str, object] = json.loads(line)
    return answer


def test_a_real_socket_refuses_a_path_name_and_ignores_clients_that_leave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HUBFLEET_ISOLATION", "single")
    root = copy_demo_fleet(tmp_path / "fleet")
    state = tmp_path / "s"  # short: unix socket paths have a length limit
    victim = tmp_path / "victim"  # what `../../victim` would reach from <state>/hubs/<name>
    (victim / "hubs").mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    unhandled: list[dict[str, object]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unhandled.append(context))
        with open_store(state) as store:
            supervisor = Supervisor(load_fleet(root), state, store, hub_names=[])
            server = await serve_control(supervisor, state / "daemon.sock")
            try:
                for name in ("../../victim", "../victim", ".."):
                    answer = await _ask(state / "daemon.sock", {"op": "remove", "hub": name, "purge": True})
                    assert answer == {"ok": False, "error": name_problem(name)}
                assert (await _ask(state / "daemon.sock", {"op": "status"}))["ok"] is True
                # clients that connect and leave: without a word, and half-way through a line
                for payload in (b"", b'{"op": "sta'):
                    _, writer = await asyncio.open_unix_connection(str(state / "daemon.sock"))
                    writer.write(payload)
                    writer.transport.abort()  # a reset, not a clean close
                await asyncio.sleep(0.2)
                assert (await _ask(state / "daemon.sock", {"op": "status"}))["ok"] is True
            finally:
                server.close()
                await server.wait_closed()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert (victim / "keep.txt").read_text() == "mine"
    assert unhandled == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "request refused: hub name '../../victim' is not a valid name" in caplog.text
