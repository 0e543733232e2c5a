"""Internal ports come from outside the ephemeral range and never from ports written down for another hub.

In CI a hub's proxy failed with "Address already in use" on an API port that had been picked with a bind to
port 0 and was handed to something else before the proxy bound it."""

from __future__ import annotations

import json
import socket

import pytest

from fleet_helpers import copy_demo_fleet
from hubfleet.backends.local import LocalBackend
from hubfleet.config.validate import load_fleet
from hubfleet.ports import EPHEMERAL, RANGE_ENV, PortRangeError, _bindable, free_port, internal_range


def test_without_a_setting_ports_come_from_outside_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(RANGE_ENV, raising=False)
    low, high = (int(part) for part in EPHEMERAL.read_text().split())
    ports = {free_port() for _ in range(50)}
    assert all(not low <= port <= high for port in ports)
    assert all(1024 <= port <= 65535 for port in ports)
    assert len(ports) > 1, "picked at random, not the same port each time"


def _three_free_ports() -> int:
    """The first of three consecutive loopback ports free now, above the kernel's ephemeral range (a fixed
    port such as 39002 lies inside it, and an outgoing connection of a parallel test took it in CI)."""
    for first in range(64000, 65530, 3):
        if all(_bindable(first + offset) for offset in range(3)):
            return first
    pytest.fail("no three consecutive free ports in 64000-65532 on 127.0.0.1")


def test_a_set_range_is_kept_and_a_taken_port_is_skipped(monkeypatch: pytest.MonkeyPatch):
    first = _three_free_ports()
    monkeypatch.setenv(RANGE_ENV, f"{first}-{first + 2}")
    with socket.socket() as held:
        held.bind(("127.0.0.1", first + 1))
        held.listen()
        picked = {free_port() for _ in range(30)}
    assert picked <= {first, first + 2}
    assert free_port({first, first + 1}) == first + 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("40000", "is not LOW-HIGH"),
        ("abc-def", "is not LOW-HIGH"),
        ("80-90", "1024 <= LOW"),
        ("5-3", "LOW <= HIGH"),
    ],
)
def test_a_malformed_range_is_named(monkeypatch: pytest.MonkeyPatch, value: str, message: str):
    monkeypatch.setenv(RANGE_ENV, value)
    with pytest.raises(PortRangeError, match=message):
        internal_range()


def test_a_full_range_says_what_to_set(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(RANGE_ENV, "39010-39010")
    with pytest.raises(PortRangeError, match=f"no free port in 39010-39010.*{RANGE_ENV}"):
        free_port({39010})


def test_a_hub_never_gets_ports_written_down_for_a_stopped_hub(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Two hubs of a fleet in a range of six ports (each: hub, proxy API, support service): the second takes
    the three the first did not write down, although the first is not running and holds none of them."""
    root = copy_demo_fleet(
        tmp_path / "demo", {"communities/uni-a/hubs/staging.yaml", "communities/uni-a/hubs/prod.yaml"}
    )
    monkeypatch.setenv(RANGE_ENV, "39020-39025")
    fleet = load_fleet(root)
    backend = LocalBackend(fleet, root / ".hubfleet")
    first, second = (backend.runtime(hub) for hub in fleet.hubs.values())
    ports = [
        *(first.hub_port, first.proxy_api_port, first.support_port),
        *(second.hub_port, second.proxy_api_port, second.support_port),
    ]
    assert sorted(ports) == list(range(39020, 39026))
    stored = json.loads((root / ".hubfleet" / "hubs" / next(iter(fleet.hubs)) / "runtime.json").read_text())
    assert (stored["hub_port"], stored["proxy_api_port"]) == (first.hub_port, first.proxy_api_port)
    assert backend.runtime(next(iter(fleet.hubs.values()))).hub_port == first.hub_port, "kept once chosen"
