"""The uptime prober: GET /hub/health and /hub/api/ of every hub, concurrently, on one event loop.

One pass probes every hub at once (bounded by `concurrency`) through the prober's own HTTP path
(hubfleet.monitor.probe_http: one connection per hub, both GETs on it), records a ProbeSample per hub
(hubfleet.monitor.uptime) in one transaction and feeds the IncidentTracker. For https hubs the peer
certificate's expiry is read from the probe's own handshake (at most once an hour per hub) so that a
certificate incident opens `certificate_warning_days` ahead.

While the fleet's front door runs, a local hub is probed at its public URL: connected to the front door's
own listen address with the hub's name as Host and SNI, verified against the system CAs plus the front door's
local CA (or a private ACME CA's root), so that a bad route or an expiring public certificate is what the
prober sees. Without a running front door (failed, stopped) local hubs are probed at their internal address.

The daemon runs `Prober.run_forever()` as a task; `hubfleet probe` runs `Prober.probe_once()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from hubfleet.backends.local import daemon_front_door, front_door_cafiles, front_door_connect
from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.monitor.alerts import Alerter
from hubfleet.monitor.incidents import IncidentAlerter, IncidentTracker
from hubfleet.monitor.probe_http import (
    Connection,
    Origin,
    ProbeHTTPError,
    describe,
    not_after,
    origin,
    version_from_body,
)
from hubfleet.monitor.uptime import ProbeResult, prune_samples, record_samples
from hubfleet.settings import UserError
from hubfleet.store.api import Store

if TYPE_CHECKING:
    from hubfleet.secrets.store import SecretResolver

log = logging.getLogger("hubfleet.prober")

PATHS = ("/hub/health", "/hub/api/")
API_PATH = "/hub/api/"
"""Its answer carries the version; alone it also says whether the hub answers (`paths=(API_PATH,)`)."""
DEFAULT_CONCURRENCY = 200
"""Hubs probed at once (one connection each). The prober's own HTTP path costs the same CPU per request at
any concurrency; a higher one shortens a pass over distant hubs (three round trips each) at one file
descriptor per hub in flight."""
CERT_CACHE_SECONDS = 3600.0
PRUNE_EVERY = timedelta(hours=6)
AUTO = "auto"


@dataclass(frozen=True)
class ProbeTarget:
    """Where to probe a hub: `url` is what is requested (and recorded, and named in incidents); `connect`
    ("HOST:PORT") is where to connect instead of the URL's host, which is then sent as Host and SNI and is the
    name the certificate must carry, verified against the system CAs plus `cafiles`; `via` says in a failed
    probe's error which address failed; `expiry`: whether the certificate's expiry is read (not for the front
    door's local CA, whose 12-hour certificates Caddy renews itself: a failed renewal fails the probe)."""

    url: str
    connect: str = ""
    cafiles: tuple[str, ...] = ()
    via: str = ""
    expiry: bool = True


Target = str | ProbeTarget
Targets = Mapping[str, Target] | Callable[[], Mapping[str, Target]]


class ProbeSettings(BaseSettings):
    """HUBFLEET_PROBE_INTERVAL overrides fleet.yaml `monitoring.probe_interval` (seconds), e.g. in tests;
    HUBFLEET_PROBE_CONCURRENCY the hubs probed at once (DEFAULT_CONCURRENCY)."""

    model_config = SettingsConfigDict(env_prefix="HUBFLEET_", env_ignore_empty=True, extra="ignore")

    probe_interval: float | None = None


class ProbeSettingError(UserError, ValueError):
    """A probe setting from the environment that cannot be used (the CLI prints it as one line)."""


def probe_concurrency() -> int:
    """HUBFLEET_PROBE_CONCURRENCY when set (a whole number ≥ 1), else DEFAULT_CONCURRENCY."""
    text = os.environ.get("HUBFLEET_PROBE_CONCURRENCY", "").strip()
    if not text:
        return DEFAULT_CONCURRENCY
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ProbeSettingError(
            f"HUBFLEET_PROBE_CONCURRENCY must be a whole number of hubs probed at once, at least 1, not "
            f"{text[:20]!r}; unset it for the default ({DEFAULT_CONCURRENCY})"
        )
    return int(text)


FD_HEADROOM = 256
"""File descriptors kept for the rest of the process (store, logs, the daemon's own sockets)."""


def fit_file_limit(concurrency: int) -> int:
    """The concurrency the open-file limit allows: the soft limit is raised (up to the hard one) to hold one
    connection per hub in flight plus FD_HEADROOM; where it cannot be, fewer hubs are probed at once (with a
    warning) rather than probes failing with "Too many open files" and opening false incidents."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = concurrency + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < needed:
        fitted = max(1, soft - FD_HEADROOM)
        log.warning(
            "probing %d hubs at once instead of %d: the open-file limit is %d (raise it, e.g. LimitNOFILE= "
            "in a systemd unit)",
            fitted,
            concurrency,
            soft,
        )
        return fitted
    return concurrency


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError) and "All connection attempts failed" in str(exc):
        return "cannot connect (connection refused)"
    if isinstance(exc, httpx.TimeoutException):
        return f"{type(exc).__name__} (no answer in time)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _split_connect(connect: str) -> tuple[str, int]:
    """ "HOST:PORT" or "[V6]:PORT" -> (host, port)."""
    host, _, port = connect.rpartition(":")
    return host.strip("[]"), int(port)


async def certificate_expiry(url: str, timeout: float, connect: str = "") -> datetime | None:
    """notAfter of the certificate an https URL presents (read without verifying it, so that an expired
    or self-signed certificate still reports its date); None for http URLs or when unreachable.

    With `connect` ("HOST:PORT", e.g. the front door's listen address) the connection goes there and asks
    for the URL's host name (SNI), as a browser resolving that name to the front door would."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    host, port = _split_connect(connect) if connect else (parts.hostname, parts.port or 443)
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=parts.hostname)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).not_valid_after_utc if der else None
    except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
        log.debug("no certificate from %s: %s", url, _describe(exc))
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def probe_hub(
    client: httpx.AsyncClient,
    url: str,
    timeout: float,
    *,
    hub: str = "",
    check_certificate: bool = True,
    connect: str = "",
    via: str = "",
) -> ProbeResult:
    """GET <url>/hub/health and <url>/hub/api/ at once; ok when both answer 200 within `timeout`.

    With `connect` ("HOST:PORT") the requests go there, with the URL's host as Host and SNI (the front door
    serving the hub's public name); `via` is added to a failed probe's error (which address failed)."""
    base = url.rstrip("/")
    parts = urlsplit(base)
    request_base, headers, extensions = base, None, None
    if connect:
        request_base = f"{parts.scheme}://{connect}{parts.path}"
        headers = {"Host": parts.netloc}
        extensions = {"sni_hostname": parts.hostname or ""}
    at = utcnow()
    started = time.perf_counter()
    statuses: list[int | None] = [None, None]
    errors: list[str] = []
    version: list[str | None] = [None]

    async def get(index: int, path: str) -> None:
        try:
            response = await client.get(
                request_base + path, timeout=timeout, headers=headers, extensions=extensions
            )
            statuses[index] = response.status_code
            if path == "/hub/api/" and response.status_code == 200:
                version[0] = _version(response)
            if response.status_code != 200:
                errors.append(f"GET {path}: HTTP {response.status_code} {response.reason_phrase}".rstrip())
        except httpx.HTTPError as exc:
            errors.append(f"GET {path}: {_describe(exc)}")

    cert_task = (
        asyncio.create_task(certificate_expiry(base, timeout, connect))
        if check_certificate and base.startswith("https://")
        else None
    )
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(get(i, path) for i, path in enumerate(PATHS)))
    except TimeoutError:
        errors.append(f"no answer within {timeout:g} s")
    latency = (time.perf_counter() - started) * 1000
    cert_expires_at = await cert_task if cert_task else None
    ok = not errors and statuses == [200, 200]
    error = _merge(errors)
    return ProbeResult(
        hub=hub,
        url=base,
        at=at,
        ok=ok,
        health_status=statuses[0],
        api_status=statuses[1],
        latency_ms=latency if statuses[0] is not None or statuses[1] is not None else None,
        error=f"{error} ({via})" if error and via else error,
        cert_expires_at=cert_expires_at,
        version=version[0],
    )


def _version(response: httpx.Response) -> str | None:
    """{"version": "6.1.1"} of /hub/api/; None for any other body (a proxy's HTML page, bad JSON)."""
    return version_from_body(response.content)


async def probe_url(
    url: str,
    timeout: float,
    context: ssl.SSLContext,
    *,
    hub: str = "",
    paths: tuple[str, ...] = PATHS,
    check_certificate: bool = True,
    connect: str = "",
    via: str = "",
) -> ProbeResult:
    """GET each of `paths` of the hub at `url` one after another on one connection (a new one only when
    the hub closes it); ok when every one answers 200 within `timeout`. https is verified with `context`,
    and the certificate's expiry read from the same handshake when `check_certificate`.

    The same result as `probe_hub` (httpx, both paths at once), at a fraction of the CPU
    (hubfleet.monitor.probe_http says why)."""
    base = url.rstrip("/")
    at = utcnow()
    started = time.perf_counter()
    statuses: dict[str, int | None] = dict.fromkeys(paths)
    errors: list[str] = []
    version: str | None = None
    der: bytes | None = None
    tls_failed = False
    try:
        where: Origin | None = _origin(base, connect)
    except ValueError as exc:
        where = None
        errors.append(f"GET {', '.join(paths)}: {exc}")
    connection: Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            for index, path in enumerate(paths):
                if where is None:
                    break
                if connection is None or not connection.reusable:
                    try:
                        connection = await Connection.open(where, context)
                    except Exception as exc:  # the rest of the paths fail alike (also a name IDNA rejects)
                        tls_failed = isinstance(exc, ssl.SSLError)
                        errors += [f"GET {rest}: {describe(exc)}" for rest in paths[index:]]
                        break
                    if check_certificate and der is None:
                        der = connection.peer_certificate()
                try:
                    answer = await connection.get(where.prefix + path, want_body=path == API_PATH)
                except (OSError, ssl.SSLError, ProbeHTTPError) as exc:
                    errors.append(f"GET {path}: {describe(exc)}")
                    continue
                except Exception as exc:  # an answer nobody foresaw must fail this hub, not the pass
                    log.debug("probe of %s: unexpected %r", hub, exc, exc_info=True)
                    errors.append(f"GET {path}: unreadable answer ({type(exc).__name__})")
                    continue
                statuses[path] = answer.status
                if answer.status != 200:
                    errors.append(f"GET {path}: HTTP {answer.status} {answer.reason}".rstrip())
                elif path == API_PATH:
                    version = version_from_body(answer.body)
    except TimeoutError:
        errors.append(f"no answer within {timeout:g} s")
    finally:
        if connection is not None:
            connection.close()
    latency = (time.perf_counter() - started) * 1000
    expires = not_after(der)
    if expires is None and check_certificate and tls_failed:  # unverified: an expired one still has a date
        expires = await certificate_expiry(base, timeout, connect)
    error = _merge(errors, paths)
    answered = any(status is not None for status in statuses.values())
    return ProbeResult(
        hub=hub,
        url=base,
        at=at,
        ok=not errors and all(status == 200 for status in statuses.values()),
        health_status=statuses.get(PATHS[0]),
        api_status=statuses.get(API_PATH),
        latency_ms=latency if answered else None,
        error=f"{error} ({via})" if error and via else error,
        cert_expires_at=expires,
        version=version,
    )


@functools.lru_cache(maxsize=65536)
def _origin(url: str, connect: str) -> Origin:
    """origin(), parsed once per URL (urlsplit was 2 % of a pass)."""
    return origin(url, connect)


def _merge(errors: list[str], paths: tuple[str, ...] = PATHS) -> str:
    """'GET /hub/health: X; GET /hub/api/: X' -> 'GET /hub/health, /hub/api/: X'."""
    causes = {e.split(": ", 1)[-1] for e in errors if e.startswith("GET ")}
    if len(paths) > 1 and len(errors) == len(paths) and len(causes) == 1:
        return f"GET {', '.join(paths)}: {causes.pop()}"
    return "; ".join(errors)


def hub_targets(
    fleet: FleetConfig, store: Store | None = None, door: Mapping[str, Any] | None = None
) -> dict[str, Target]:
    """Hub name -> where to probe it: local hubs through the running front door (`door`: daemon.json's
    `front_door`) or at http://127.0.0.1:PORT, kubernetes hubs at https://DOMAIN.

    Kubernetes hubs are probed once deployed (per the store) so that a hub not yet applied raises no alarm.
    """
    deployed = set(store.deployed()) if store is not None else None
    targets: dict[str, Target] = {}
    internal: dict[str, str] = {}
    for name, hub in sorted(fleet.hubs.items()):
        if fleet.clusters[hub.cluster].kind == "local":
            if url := fleet.internal_url(hub):
                internal[name] = url
        elif (url := fleet.public_url(hub)) and (deployed is None or name in deployed):
            targets[name] = url
    targets.update(local_targets(fleet, internal, door))
    return dict(sorted(targets.items()))


def local_targets(
    fleet: FleetConfig, internal: Mapping[str, str], door: Mapping[str, Any] | None
) -> dict[str, Target]:
    """Where to probe the local hubs (`internal`: name -> loopback URL): at the public URL the front door
    serves them at while it runs (`door`: daemon.json's `front_door`, None when no front door runs), else at
    the internal URL, saying so in a failed probe's error when the fleet has a front door."""
    settings = fleet.settings.front_door
    state = str((door or {}).get("state") or "not running")
    public: dict[str, str] = {}
    if door is not None and settings is not None and state == "running":
        public = {hub: url.rstrip("/") for url, hub in (door.get("sites") or {}).items()}
    cafiles = front_door_cafiles(fleet, door) if public else ()
    internal_ca = settings is not None and settings.certificates.source == "internal"
    targets: dict[str, Target] = {}
    for name, url in internal.items():
        if name in public:  # the port the front door serves it at (fleet.yaml may have changed since)
            connect = front_door_connect(fleet, urlsplit(public[name]).port or 443)
            via = f"through the front door at {connect}"
            targets[name] = ProbeTarget(public[name], connect, cafiles, via=via, expiry=not internal_ca)
        elif settings is not None:
            targets[name] = ProbeTarget(url, via=f"internal address {url}; the front door is {state}")
        else:
            targets[name] = url
    return targets


def _trust(cafiles: tuple[str, ...]) -> ssl.SSLContext:
    """The system CAs plus `cafiles` (one that cannot be read is logged and left out)."""
    context = ssl.create_default_context()
    for path in cafiles:
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            log.warning("cannot trust %s for probes: %s", path, exc)
    return context


def _trust_key(cafiles: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """cafiles with their modification times: a renewed CA file makes a new client."""
    key = []
    for path in cafiles:
        try:
            key.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            key.append((path, 0))
    return tuple(key)


def _target(value: Target) -> ProbeTarget:
    return value if isinstance(value, ProbeTarget) else ProbeTarget(value)


def new_client(
    concurrency: int = DEFAULT_CONCURRENCY, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncClient:
    """An httpx client for `probe_hub` (the prober itself uses its own HTTP path unless given one). No
    keep-alive pool: every hub is its own origin and is probed again only after the interval."""
    limits = httpx.Limits(max_connections=2 * concurrency, max_keepalive_connections=0)
    return httpx.AsyncClient(limits=limits, verify=verify, trust_env=False, follow_redirects=False)


def default_context() -> ssl.SSLContext:
    """What https hubs are verified against (front-door targets aside): certifi's CAs, as the prober's
    httpx client did (trust_env off)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


Contexts = dict[tuple[str, ...], tuple[Any, ssl.SSLContext]]
"""cafiles -> (their modification times, the context trusting them): a renewed CA file makes a new one."""


def _contexts_for(wanted: Mapping[str, ProbeTarget], contexts: Contexts) -> None:
    for cafiles in {t.cafiles for t in wanted.values() if t.connect}:
        key = _trust_key(cafiles)
        held = contexts.get(cafiles)
        if held is None or held[0] != key:
            contexts[cafiles] = (key, _trust(cafiles))


async def probe_targets(
    wanted: Mapping[str, ProbeTarget],
    timeout: float,
    *,
    verify: ssl.SSLContext | None = None,
    client: httpx.AsyncClient | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    cert_cache: dict[str, tuple[float, datetime | None]] | None = None,
    contexts: Contexts | None = None,
    paths: tuple[str, ...] = PATHS,
) -> list[ProbeResult]:
    """Probe every target once, `concurrency` at a time; no store, no incidents.

    Front-door targets (`connect`) are verified against the system CAs plus their `cafiles` (a context per
    set of files, kept in `contexts` across passes when given), the others against `verify` (default:
    certifi's CAs). With an httpx `client` the others go through it instead (`probe_hub`: both PATHS)."""
    contexts = contexts if contexts is not None else {}
    _contexts_for(wanted, contexts)
    verify = verify or default_context()
    cache = cert_cache if cert_cache is not None else {}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str, target: ProbeTarget) -> ProbeResult:
        url = target.url
        async with semaphore:
            cached = cache.get(url)
            fresh = cached is not None and time.monotonic() - cached[0] < CERT_CACHE_SECONDS
            check = target.expiry and not fresh
            if client is not None and not target.connect:
                result = await probe_hub(
                    client, url, timeout, hub=name, check_certificate=check, via=target.via
                )
            else:
                context = contexts[target.cafiles][1] if target.connect else verify
                result = await probe_url(
                    url,
                    timeout,
                    context,
                    hub=name,
                    paths=paths,
                    check_certificate=check,
                    connect=target.connect,
                    via=target.via,
                )
        if result.cert_expires_at is not None:
            cache[url] = (time.monotonic(), result.cert_expires_at)
        elif fresh and cached is not None:
            result = _with_cert(result, cached[1])
        return result

    return list(await asyncio.gather(*(one(name, target) for name, target in wanted.items())))


async def probe_all(
    fleet: FleetConfig,
    state_dir: Path | None,
    store: Store,
    *,
    targets: Mapping[str, Target] | None = None,
    client: httpx.AsyncClient | None = None,
    tracker: IncidentTracker | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    cert_cache: dict[str, tuple[float, datetime | None]] | None = None,
    contexts: Contexts | None = None,
    verify: ssl.SSLContext | None = None,
    paths: tuple[str, ...] = PATHS,
) -> list[ProbeResult]:
    """Probe every hub once, concurrently; record the samples and run the incident logic.

    Without `targets` the hubs come from the fleet files, local ones through the front door when
    `state_dir`'s daemon runs one. See `probe_targets` for the rest.
    """
    monitoring = fleet.settings.monitoring
    timeout = timeout or monitoring.probe_timeout
    if targets is None:
        targets = hub_targets(fleet, store, daemon_front_door(state_dir))
    wanted = {name: _target(value) for name, value in targets.items()}
    results = await probe_targets(
        wanted,
        timeout,
        verify=verify,
        client=client,
        concurrency=concurrency,
        cert_cache=cert_cache,
        contexts=contexts,
        paths=paths,
    )
    record_samples(store, results)
    if tracker is None:
        tracker = IncidentTracker(
            store,
            failures_to_open=monitoring.failures_to_open,
            certificate_warning_days=monitoring.certificate_warning_days,
        )
    tracker.observe(results)
    return results


def _with_cert(result: ProbeResult, expires: datetime | None) -> ProbeResult:
    return replace(result, cert_expires_at=expires)


class Prober:
    """Probes the fleet every `interval` seconds (run_forever) or once (probe_once).

    `client`: probe non-front-door hubs through this httpx client (e.g. a test's mock transport) instead of
    the prober's own HTTP path; `verify`: the context https hubs are verified against (default: certifi's
    CAs); `paths`: what each probe requests (both PATHS by default); `concurrency`: hubs probed at once
    (default: HUBFLEET_PROBE_CONCURRENCY, else DEFAULT_CONCURRENCY; lowered to fit the open-file limit)."""

    def __init__(
        self,
        fleet: FleetConfig,
        state_dir: Path | None,
        store: Store,
        *,
        targets: Targets | None = None,
        alerter: IncidentAlerter | Literal["auto"] | None = AUTO,
        client: httpx.AsyncClient | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        verify: ssl.SSLContext | None = None,
        paths: tuple[str, ...] = PATHS,
    ) -> None:
        self.fleet = fleet
        self.state_dir = state_dir
        self.store = store
        self.targets = targets
        self.concurrency = fit_file_limit(concurrency or probe_concurrency())
        self.timeout = timeout
        self.paths = paths
        monitoring = fleet.settings.monitoring
        self.tracker = IncidentTracker(
            store,
            failures_to_open=monitoring.failures_to_open,
            certificate_warning_days=monitoring.certificate_warning_days,
            alerter=Alerter(fleet, store) if alerter == AUTO else alerter,
        )
        self._client = client
        self._verify = verify
        self._cert_cache: dict[str, tuple[float, datetime | None]] = {}
        self._contexts: Contexts = {}
        self._last_prune: datetime | None = None
        self.passes = 0

    @property
    def verify(self) -> ssl.SSLContext:
        """Made once: loading the CA bundle costs ≈ 50 ms, a quarter of a pass over 1,000 hubs."""
        if self._verify is None:
            self._verify = default_context()
        return self._verify

    def current_targets(self) -> dict[str, Target]:
        if self.targets is None:
            return hub_targets(self.fleet, self.store, daemon_front_door(self.state_dir))
        return dict(self.targets() if callable(self.targets) else self.targets)

    async def probe_once(self) -> list[ProbeResult]:
        """One pass over every hub: probe, record samples, open/resolve incidents (alerts run as tasks)."""
        results = await probe_all(
            self.fleet,
            self.state_dir,
            self.store,
            targets=self.current_targets(),
            client=self._client,
            tracker=self.tracker,
            concurrency=self.concurrency,
            timeout=self.timeout,
            cert_cache=self._cert_cache,
            contexts=self._contexts,
            verify=self.verify,
            paths=self.paths,
        )
        self.passes += 1
        now = utcnow()
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            if deleted := prune_samples(self.store, now):
                log.info("deleted %d probe samples older than 31 days", deleted)
        return results

    async def run_forever(self, interval: float | None = None, stop: asyncio.Event | None = None) -> None:
        """Probe every `interval` s (default: HUBFLEET_PROBE_INTERVAL, else monitoring.probe_interval)
        until cancelled or `stop` is set. A failing pass is logged and the next one runs on time."""
        interval = interval or probe_interval(self.fleet)
        stop = stop or asyncio.Event()
        log.info("probing hubs every %g s", interval)
        while not stop.is_set():
            began = time.monotonic()
            try:
                results = await self.probe_once()
                failing = [r.hub for r in results if not r.ok]
                if failing:
                    log.info("probe pass: %d hubs, failing: %s", len(results), ", ".join(failing))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("probe pass failed; trying again in %g s", interval)
            delay = max(0.0, interval - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def aclose(self, alert_timeout: float | None = 30) -> None:
        """Wait (bounded) for pending alerts (a client given to the prober stays the caller's to close)."""
        await self.tracker.drain(alert_timeout)
        self._contexts.clear()


def probe_interval(fleet: FleetConfig) -> float:
    """HUBFLEET_PROBE_INTERVAL when set, else fleet.yaml monitoring.probe_interval."""
    return ProbeSettings().probe_interval or fleet.settings.monitoring.probe_interval


async def run_in_daemon(
    fleet: FleetConfig,
    state_dir: Path,
    store: Store,
    local_urls: Callable[[], dict[str, str]],
    resolver: SecretResolver | None,
    front_door: Callable[[], tuple[FleetConfig, Mapping[str, Any]] | None] | None = None,
) -> None:
    """The daemon's prober task: the supervised local hubs (`local_urls`: name -> internal URL; probed
    through the front door while `front_door()` says it runs: the fleet it was last configured from, which
    `hubfleet front-door reload` renews, and its status) plus deployed kubernetes hubs, alerts through the
    fleet's channels (secrets from `resolver`). Never raises (except cancellation): the daemon must outlive
    any monitoring bug."""
    try:

        def targets() -> dict[str, Target]:
            remote = hub_targets(fleet, store).items()
            found = {n: u for n, u in remote if fleet.clusters[fleet.hubs[n].cluster].kind != "local"}
            door = front_door() if front_door is not None else None
            door_fleet, status = door if door is not None else (fleet, None)
            found.update(local_targets(door_fleet, local_urls(), status))
            return found

        try:
            concurrency = probe_concurrency()
        except ProbeSettingError as exc:  # monitoring goes on: a bad knob must not leave hubs unwatched
            log.error("%s; probing with the default meanwhile", exc)
            concurrency = DEFAULT_CONCURRENCY
        alerter = Alerter(fleet, store, resolver)
        prober = Prober(fleet, state_dir, store, targets=targets, alerter=alerter, concurrency=concurrency)
        try:
            await prober.run_forever()
        finally:
            await prober.aclose(alert_timeout=5)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the prober stopped; hubs are no longer probed until the daemon restarts")
