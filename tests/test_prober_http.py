"""The prober's own HTTP path (hubfleet.monitor.probe_http) against real loopback servers: the same results as
the httpx path it replaced, one connection per probe, and answers a hostile hub could give (oversized,
malformed, never-ending, disconnecting) turned into clear errors within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import FleetSettings
from hubfleet.monitor.incidents import list_incidents
from hubfleet.monitor.probe_http import MAX_BODY, MAX_HEAD, origin
from hubfleet.monitor.prober import (
    API_PATH,
    DEFAULT_CONCURRENCY,
    FD_HEADROOM,
    Prober,
    fit_file_limit,
    new_client,
    probe_concurrency,
    probe_hub,
    probe_url,
    run_in_daemon,
)
from hubfleet.monitor.uptime import ProbeResult, uptime
from hubfleet.store import open_store
from test_prober import FakeHub, tls_hub

TIMEOUT = 3.0
VERSION_BODY = b'{"version": "6.1.1"}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def answer(status: str = "200 OK", body: bytes = VERSION_BODY, *, headers: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


Reply = bytes | None | Callable[[asyncio.StreamWriter], Awaitable[None]]
"""What a scripted server sends for a path: bytes (then keeps the connection unless they say close), None
(close without answering), or a coroutine function writing what it likes."""


@dataclass
class Scripted:
    """A loopback HTTP server answering each request with `reply(path)`; counts connections and requests."""

    reply: Callable[[str], Reply]
    connections: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    port: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                path = head.split(" ", 2)[1]
                host = next(
                    line[5:].strip() for line in head.split("\r\n") if line.lower().startswith("host:")
                )
                self.requests.append((path, host))
                reply = self.reply(path)
                if reply is None:
                    break
                if callable(reply):
                    await reply(writer)
                    break
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def scripted(reply: Callable[[str], Reply]) -> AsyncIterator[Scripted]:
    state = Scripted(reply)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)


def plain() -> ssl.SSLContext:
    return ssl.create_default_context()


async def both_ways(url: str, timeout: float = TIMEOUT, verify: ssl.SSLContext | None = None) -> tuple:
    """(the prober's own path, the httpx path) for one URL."""
    lean = await probe_url(url, timeout, verify or plain(), hub="h")
    async with new_client(verify=verify or True) as client:
        old = await probe_hub(client, url, timeout, hub="h")
    return lean, old


def same(lean: ProbeResult, old: ProbeResult) -> None:
    fields = ("ok", "health_status", "api_status", "error", "version", "url", "hub")
    assert {f: getattr(lean, f) for f in fields} == {f: getattr(old, f) for f in fields}
    assert (lean.latency_ms is None) == (old.latency_ms is None)


# --------------------------------------------------------------------------- the same results as httpx


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["healthy", "down", "api_error"])
async def test_same_results_as_the_httpx_path(mode: str) -> None:
    hub = FakeHub()
    try:
        hub.mode = mode
        lean, old = await both_ways(hub.url)
        same(lean, old)
        assert lean.ok is (mode == "healthy")
    finally:
        hub.close()


@pytest.mark.anyio
async def test_same_results_when_refused_and_when_slow() -> None:
    gone = FakeHub()
    url = gone.url
    gone.close()
    lean, old = await both_ways(url)
    same(lean, old)
    assert lean.error == "GET /hub/health, /hub/api/: cannot connect (connection refused)"

    slow = FakeHub()
    try:
        slow.mode = "slow"
        lean, old = await both_ways(slow.url, timeout=0.5)
        assert not lean.ok and not old.ok
        assert lean.error == "no answer within 0.5 s"
    finally:
        slow.close()


@pytest.mark.anyio
async def test_tls_verified_with_expiry_from_the_same_handshake(tmp_path: Path) -> None:
    server, trust = tls_hub(tmp_path, days=30)
    try:
        lean, old = await both_ways(server.url, verify=trust)
        same(lean, old)
        assert lean.ok and lean.cert_expires_at == old.cert_expires_at is not None
        # the expiry comes from a request's own handshake (httpx: a third TLS connection for it); this server
        # answers HTTP/1.0 and closes, so each request has its connection
        before = server.connections
        await probe_url(server.url, TIMEOUT, trust, hub="h")
        assert server.connections - before == 2

        # untrusted: the probe fails, and the expiry is still read (on an unverified connection)
        lean, old = await both_ways(server.url)
        assert not lean.ok and "CERTIFICATE_VERIFY_FAILED" in lean.error
        assert lean.cert_expires_at == old.cert_expires_at is not None
        skipped = await probe_url(server.url, TIMEOUT, plain(), hub="h", check_certificate=False)
        assert skipped.cert_expires_at is None and not skipped.ok
    finally:
        server.close()


# --------------------------------------------------------------------------- connections and requests


@pytest.mark.anyio
async def test_one_connection_per_probe_and_one_request_per_path() -> None:
    async with scripted(lambda path: answer()) as hub:
        result = await probe_url(hub.url, TIMEOUT, plain(), hub="h")
        assert result.ok and result.version == "6.1.1"
        assert hub.connections == 1
        assert hub.requests == [
            ("/hub/health", f"127.0.0.1:{hub.port}"),
            ("/hub/api/", f"127.0.0.1:{hub.port}"),
        ]

        one = await probe_url(hub.url, TIMEOUT, plain(), hub="h", paths=(API_PATH,))
        assert one.ok and one.version == "6.1.1" and (one.health_status, one.api_status) == (None, 200)
        assert hub.connections == 2 and hub.requests[-1][0] == "/hub/api/" and len(hub.requests) == 3


@pytest.mark.anyio
async def test_connect_elsewhere_sends_the_urls_host_and_path() -> None:
    """A front-door target: connect to its listen address, ask for the hub's public name and path."""
    async with scripted(lambda path: answer()) as door:
        result = await probe_url(
            "http://hubs.example:8443/uni-a/", TIMEOUT, plain(), hub="h", connect=f"127.0.0.1:{door.port}"
        )
        assert result.ok and result.url == "http://hubs.example:8443/uni-a"
        assert door.requests == [
            ("/uni-a/hub/health", "hubs.example:8443"),
            ("/uni-a/hub/api/", "hubs.example:8443"),
        ]
    assert origin("https://[::1]/").host_header == "[::1]"
    assert origin("http://hub.example:80").host_header == "hub.example"


@pytest.mark.anyio
async def test_a_closed_connection_is_replaced_for_the_next_path() -> None:
    async with scripted(lambda path: answer(headers="Connection: close\r\n")) as hub:
        result = await probe_url(hub.url, TIMEOUT, plain(), hub="h")
        assert result.ok and result.version == "6.1.1" and hub.connections == 2


@pytest.mark.anyio
async def test_chunked_unframed_and_informational_answers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"ver\r\nf;ext=1\r\nsion": "6.1.1"}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    unframed = b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + VERSION_BODY  # the body ends with it
    informational = b"HTTP/1.1 100 Continue\r\n\r\n" + answer()
    for reply in (chunked, unframed, informational):
        async with scripted(lambda path, reply=reply: reply) as hub:
            result = await probe_url(hub.url, TIMEOUT, plain(), hub="h")
            assert result.ok and result.version == "6.1.1", (reply, result.error)
    async with scripted(lambda path: chunked) as hub:  # chunked keeps the connection
        await probe_url(hub.url, TIMEOUT, plain(), hub="h")
        assert hub.connections == 1


# --------------------------------------------------------------------------- what a hostile hub may answer


async def _endless(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    while True:  # headers that never end
        writer.write(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.001)


async def _huge_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
    while True:
        writer.write(b"x" * 65536)
        await writer.drain()


async def _trickle(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    while True:
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


async def _silent(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


HOSTILE: dict[str, tuple[Callable[[str], Reply], str]] = {
    "head too large": (lambda p: _endless, f"response head larger than {MAX_HEAD // 1024} KiB"),
    "not HTTP": (lambda p: b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP/1.x response"),
    "bad status": (lambda p: b"HTTP/1.1 abc OK\r\n\r\n", "not an HTTP/1.x response"),
    "bad header": (lambda p: b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed response header"),
    "bad length": (lambda p: b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "malformed Content-Length"),
    "two lengths": (
        lambda p: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        "conflicting Content-Length headers",
    ),
    "bad chunk": (
        lambda p: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "malformed chunked body",
    ),
    "negative chunk": (
        lambda p: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n",
        "malformed chunked body",
    ),
    "odd digits": (
        lambda p: b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",  # a superscript 2 in latin-1
        "malformed Content-Length",
    ),
    "cut short": (
        lambda p: b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\nabc",
        "server disconnected in the middle of its answer",
    ),
    "hangs up": (lambda p: None, "server disconnected without sending a response"),
    "silent": (lambda p: _silent, "no answer within 1 s"),
    "trickles": (lambda p: _trickle, "no answer within 1 s"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_answers_fail_clearly_within_the_timeout(case: str) -> None:
    reply, expected = HOSTILE[case]
    async with scripted(reply) as hub:
        started = asyncio.get_running_loop().time()
        result = await probe_url(hub.url, 1, plain(), hub="h")
        took = asyncio.get_running_loop().time() - started
    assert not result.ok and result.version is None
    assert expected in result.error, result.error
    assert took < 5  # a bound, not a timing: the hub cannot hold the probe beyond its timeout


@pytest.mark.anyio
async def test_an_oversized_body_is_not_read_and_a_bad_reason_is_cleaned() -> None:
    async with scripted(lambda p: _huge_body) as hub:
        result = await probe_url(hub.url, 2, plain(), hub="h", paths=(API_PATH,))
    assert result.ok and result.version is None  # it answered 200; its 1 GB body is not JupyterHub's version
    assert result.error == ""

    big = answer(body=b'{"version": "' + b"9" * MAX_BODY + b'"}')
    async with scripted(lambda p: big) as hub:
        result = await probe_url(hub.url, 2, plain(), hub="h")
    assert result.ok and result.version is None and hub.connections == 2  # not reused after it

    evil = b"HTTP/1.1 503 \x1b[31mDown\x00\r\nContent-Length: 0\r\n\r\n"
    async with scripted(lambda p: evil) as hub:
        result = await probe_url(hub.url, 2, plain(), hub="h")
    assert result.error == "GET /hub/health, /hub/api/: HTTP 503 [31mDown"
    assert "\x1b" not in result.error and "\x00" not in result.error

    escape = answer(body=b'{"version": "\\u001b[2J6.1.1\\u0007"}')  # a terminal escape in the version
    async with scripted(lambda p: escape) as hub:
        result = await probe_url(hub.url, 2, plain(), hub="h")
    assert result.ok and result.version == "[2J6.1.1"

    deep = answer(body=b"[" * 50_000)  # JSON nested deeper than Python recurses
    async with scripted(lambda p: deep) as hub:
        result = await probe_url(hub.url, 2, plain(), hub="h")
    assert result.ok and result.version is None

    bad = await probe_url("ftp://hub.example", 2, plain(), hub="h")
    assert not bad.ok and "not an http(s) URL" in bad.error and bad.latency_ms is None
    label = await probe_url("http://" + "a" * 70 + ".example", 2, plain(), hub="h")  # no DNS: IDNA refuses
    assert not label.ok and "label empty or too long" in label.error


# --------------------------------------------------------------------------- a pass over many hubs


@pytest.mark.anyio
async def test_a_pass_over_many_hubs_probes_each_once_and_opens_one_incident_each(tmp_path: Path) -> None:
    """120 hubs, 25 at a time, a third of them down: one sample per hub per pass, one incident per down hub
    after two failures, none twice, and each resolves once."""
    down: set[int] = set()
    hubs: list[Scripted] = []
    async with contextlib.AsyncExitStack() as stack:
        for index in range(120):

            def reply(path: str, index: int = index) -> bytes:
                return answer("503 Service Unavailable") if index in down else answer()

            hubs.append(await stack.enter_async_context(scripted(reply)))
        targets = {f"hub-{i:03d}": hub.url for i, hub in enumerate(hubs)}
        fleet = FleetConfig(root=tmp_path, settings=FleetSettings(name="t"))
        with open_store(tmp_path / "state") as store:
            prober = Prober(fleet, None, store, targets=targets, alerter=None, concurrency=25)
            assert all(r.ok for r in await prober.probe_once())
            down.update(range(0, 120, 3))
            for _ in range(3):
                results = await prober.probe_once()
                assert sorted(r.hub for r in results) == sorted(targets)
                assert {r.hub for r in results if not r.ok} == {f"hub-{i:03d}" for i in down}
            opened = list_incidents(store, open_only=True)
            assert sorted(i.hub for i in opened) == sorted(f"hub-{i:03d}" for i in down)
            down.clear()
            await prober.probe_once()
            await prober.aclose()
            assert not list_incidents(store, open_only=True) and len(list_incidents(store)) == 40
        assert [hub.connections for hub in hubs] == [5] * 120  # one connection per hub and pass


# --------------------------------------------------------------------------- the concurrency knob


def test_concurrency_from_the_environment_and_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HUBFLEET_PROBE_CONCURRENCY", "500")
    assert probe_concurrency() == 500
    for bad in ("0", "-3", "many", "2.5"):
        monkeypatch.setenv("HUBFLEET_PROBE_CONCURRENCY", bad)
        with pytest.raises(ValueError, match="HUBFLEET_PROBE_CONCURRENCY must be a whole number"):
            probe_concurrency()
    monkeypatch.delenv("HUBFLEET_PROBE_CONCURRENCY")
    assert probe_concurrency() == DEFAULT_CONCURRENCY

    # more than even the hard limit allows: the soft limit goes up to it, fewer hubs are probed at once,
    # and a warning says why
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert fit_file_limit(100) == 100
        if hard == resource.RLIM_INFINITY:
            return
        with caplog.at_level(logging.WARNING, logger="hubfleet.prober"):
            fitted = fit_file_limit(hard + 1000)
        assert fitted == hard - FD_HEADROOM
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert (
            f"probing {fitted} hubs at once instead of {hard + 1000}: the open-file limit is {hard}"
            in caplog.text
        )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.anyio
async def test_the_daemon_probes_with_the_default_when_the_knob_is_bad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`hubfleet probe` refuses a bad HUBFLEET_PROBE_CONCURRENCY (one line, see above); the daemon says so in
    its log and keeps probing, since a typo must not leave every hub unwatched."""
    monkeypatch.setenv("HUBFLEET_PROBE_CONCURRENCY", "lots")
    monkeypatch.setenv("HUBFLEET_PROBE_INTERVAL", "0.2")
    fleet = FleetConfig(root=tmp_path, settings=FleetSettings(name="t"))
    async with scripted(lambda path: answer()) as hub:
        logged = caplog.at_level(logging.ERROR, logger="hubfleet.prober")
        with open_store(tmp_path / "state") as store, logged:
            task = asyncio.create_task(run_in_daemon(fleet, tmp_path, store, lambda: {"h": hub.url}, None))
            for _ in range(100):
                if uptime(store, "h")["24h"] is not None:
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert uptime(store, "h")["24h"] == 100.0
    assert "HUBFLEET_PROBE_CONCURRENCY must be a whole number" in caplog.text
    assert "probing with the default meanwhile" in caplog.text
