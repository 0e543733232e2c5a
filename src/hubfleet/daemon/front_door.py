"""The front door: Caddy, started, configured through its admin socket, reloaded and restarted by the daemon.

Caddy serves each local hub at its public name over HTTPS and proxies to the hub's loopback port. Whatever
goes wrong here (a port taken, a certificate that cannot be read, an ACME CA that does not answer) is one
line in `hubfleet status` and daemon.log; the hubs keep serving on their internal addresses.

As root Caddy runs as the fleet's front-door account (`hfd-<instance>`) with only the capability to bind
ports below 1024; its admin API is a unix socket in a directory only that account (and root) can enter.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hubfleet.backends.local import BIN_DIR, isolation_mode
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_front_door import FrontDoor as FrontDoorSettings
from hubfleet.config.secret_refs import SecretRef
from hubfleet.isolation.accounts import Account, AccountError, door_account, ensure_account
from hubfleet.ports import port_holder
from hubfleet.render.caddy import CaddyFiles, Site, admin_only, config_digest, render_caddy_config
from hubfleet.runtime.layout import BROKER_DIR, Layout
from hubfleet.runtime.processes import STABLE_AFTER, backoff_delay, stop_group
from hubfleet.secrets.store import SecretResolver

log = logging.getLogger("hubfleet.front_door")

CADDY = BIN_DIR / "caddy"
START_TIMEOUT = 20.0
MAX_RESTARTS = 5
LOCAL_CA = "pki/authorities/local/root.crt"
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes


class FrontDoorError(Exception):
    """Why the front door cannot serve; one line for the operator (never any certificate or key text)."""


@dataclass
class DoorStatus:
    state: str = "stopped"  # starting | running | restarting | failed | stopped
    pid: int | None = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    sites: dict[str, str] = field(default_factory=dict)
    """Public URL -> what it serves (a hub's name, or `console`)."""
    certificates: str = ""
    local_ca: str = ""
    """The local CA's root certificate (certificates: internal), for `curl --cacert` or a browser's trust."""
    config_digest: str = ""
    reload_error: str = ""
    """Why the last `front-door reload` was not applied (the running configuration stayed)."""
    log_path: str = ""
    access_log: str = ""


def port_problem(address: str, port: int) -> str | None:
    """Why the front door cannot listen on address:port, or None when it can (checked before Caddy starts,
    so the operator reads which program holds the port rather than Caddy's error)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except PermissionError:
            return (
                f"port {port} needs root: run `hubfleet up` as root, or set front_door ports of 1024 or more"
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {address} is already in use{port_holder(port)}; stop that program or "
                    "choose another port in fleet.yaml front_door"
                )
            return f"cannot listen on {address}:{port}: {exc.strerror}; check front_door.address"
    return None


def read_pem(fleet: FleetConfig, value: str | SecretRef, secrets: SecretResolver, what: str) -> str:
    """A PEM from a file or a fleet-level secret; errors name the file, not its PEM."""
    if isinstance(value, SecretRef):
        try:
            return secrets.fleet_value(value.secret)
        except Exception as exc:  # UserError from the resolver: which key, why
            raise FrontDoorError(f"front_door {what} {{secret: {value.secret}}}: {exc}") from None
    path = fleet.file(value)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text (PEM) file"
        raise FrontDoorError(f"cannot read the front door's {what} {path}: {reason}") from None


def pem_source(fleet: FleetConfig, value: str | SecretRef) -> str:
    """Where a PEM comes from, for messages: the file's path or `{secret: KEY}`."""
    if isinstance(value, SecretRef):
        return f"{{secret: {value.secret}}}"
    return str(fleet.file(value))


def certificate_pems(
    fleet: FleetConfig, secrets: SecretResolver, hosts: list[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The (chain, key) PEMs of `certificates.files`, checked: both parse, the key matches, and which names
    no certificate covers or which certificate has expired (warnings)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    door = fleet.settings.front_door
    assert door is not None
    pems: list[tuple[str, str]] = []
    covered: list[x509.Certificate] = []
    warnings: list[str] = []
    for i, item in enumerate(door.certificates.files):
        where = f"certificates.files[{i}]"
        chain = read_pem(fleet, item.certificate, secrets, f"{where}.certificate")
        key = read_pem(fleet, item.key, secrets, f"{where}.key")
        cert_from, key_from = pem_source(fleet, item.certificate), pem_source(fleet, item.key)
        try:
            certs = x509.load_pem_x509_certificates(chain.encode())
        except ValueError:
            raise FrontDoorError(
                f"front_door {where}.certificate {cert_from} is not a PEM certificate chain"
            ) from None
        try:
            private = serialization.load_pem_private_key(key.encode(), password=None)
        except (ValueError, TypeError):
            raise FrontDoorError(
                f"front_door {where}.key {key_from} is not an unencrypted PEM private key (a key with a "
                "passphrase must be decrypted first: openssl pkey -in KEY -out KEY.plain)"
            ) from None
        if private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != certs[0].public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise FrontDoorError(
                f"front_door {where}: the key {key_from} does not belong to the certificate {cert_from}"
            )
        if certs[0].not_valid_after_utc.timestamp() < time.time():
            warnings.append(
                f"front_door {where}: the certificate expired on {certs[0].not_valid_after_utc:%Y-%m-%d}; "
                "browsers refuse it: install a renewed one"
            )
        covered.append(certs[0])
        pems.append((chain, key))
    for host in hosts:
        if not any(_covers(cert, host) for cert in covered):
            warnings.append(
                f"front_door: no certificate in certificates.files covers {host}; browsers will refuse it"
            )
    return pems, warnings


def _covers(cert: Any, host: str) -> bool:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return any(n == host or (n.startswith("*.") and host.partition(".")[2] == n[2:]) for n in names)


async def acme_problem(directory: str, ca_root: Path | None, timeout: float = 10.0) -> str | None:
    """Whether the ACME directory answers with a directory document; None when it does."""
    verify: ssl.SSLContext | bool = True
    if ca_root is not None:
        verify = ssl.create_default_context(cafile=str(ca_root))
    try:
        async with httpx.AsyncClient(timeout=timeout, verify=verify, trust_env=False) as client:
            response = await client.get(directory)
        if response.status_code != 200 or "newOrder" not in response.text:
            return f"answered HTTP {response.status_code} without an ACME directory"
    except httpx.HTTPError as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


class FrontDoor:
    """One Caddy process for the fleet; `sites` are what it serves now."""

    def __init__(
        self,
        fleet: FleetConfig,
        where: Layout,
        secrets: SecretResolver,
        sites: list[Site],
        *,
        log_dir: Path,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        settings = fleet.settings.front_door
        assert settings is not None
        self.fleet = fleet
        self.settings: FrontDoorSettings = settings
        self.layout = where
        self.secrets = secrets
        self.sites = {(s.host, s.path): s for s in sites}
        self.log_dir = log_dir
        self.home = where.data_dir / "front-door"
        self.status = DoorStatus(
            certificates=settings.certificates.source,
            log_path=str(log_dir / "caddy.log"),
            access_log=str(self.home / "access.log") if settings.access_log else "",
        )
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._pems: list[tuple[str, str]] = []
        self._account: Account | None = None
        self._stopping = False
        self._lock = asyncio.Lock()
        self._ca_task: asyncio.Task[bool] | None = None
        self._on_change = on_change
        """Called when the status changes on its own (a restart, the local CA found): daemon.json follows."""

    # ------------------------------------------------------------------ files

    @property
    def socket_dir(self) -> Path:
        """Where the admin socket lives: /run/hubfleet/<instance>-door as root (short, and only the door's
        account may enter), else the state directory (private to whoever runs hubfleet)."""
        if os.geteuid() == 0:
            return BROKER_DIR / f"{self.layout.instance}-door"
        candidate = self.log_dir
        if len(str(candidate / "admin.sock")) <= SOCKET_PATH_MAX:
            return candidate
        return Path("/tmp") / f"hubfleet-{os.getuid()}-{self.layout.instance}-door"

    def files(self) -> CaddyFiles:
        ca_root = self.home / "acme-ca-root.pem" if self._ca_root_source() else None
        return CaddyFiles(
            storage=self.home / "caddy",
            admin_socket=self.socket_dir / "admin.sock",
            access_log=self.home / "access.log",
            ca_root=ca_root,
        )

    def _ca_root_source(self) -> Path | None:
        acme = self.settings.certificates.acme
        if self.settings.certificates.source != "acme" or acme is None or acme.ca_root is None:
            return None
        return self.fleet.file(acme.ca_root)

    def config(self) -> dict[str, Any]:
        return render_caddy_config(self.settings, sorted(self.sites.values()), self.files(), self._pems)

    def urls(self) -> dict[str, str]:
        return {
            self.fleet.front_door_origin(s.host) + s.path + "/": s.hub or "console"
            for s in sorted(self.sites.values())
        }

    def _prepare_files(self) -> None:
        """The door's directories (its account's, 0700) and what Caddy must read that only root may."""
        owner = self._account
        for directory in (self.home, self.home / "caddy", self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            if owner is not None:
                os.chown(directory, owner.uid, owner.gid)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        source = self._ca_root_source()
        target = self.files().ca_root
        if source is not None and target is not None:
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                raise FrontDoorError(
                    f"cannot read front_door.certificates.acme.ca_root {source}: {exc.strerror}"
                ) from None
            if owner is not None:
                os.chown(target, owner.uid, owner.gid)

    # ------------------------------------------------------------------ start, reload, stop

    async def start(self) -> DoorStatus:
        """Check what can be checked, start Caddy and load the config; failures end in `status.error`."""
        async with self._lock:
            self.status.state = "starting"
            try:
                await self._start()
            except FrontDoorError as exc:
                await self._kill()
                self._fail(str(exc))
            return self.status

    async def _start(self) -> None:
        door = self.settings
        problems = [
            p for port in (door.https_port, door.http_port) if (p := port_problem(door.address, port))
        ]
        if problems:
            raise FrontDoorError("; ".join(problems))
        hosts = sorted({s.host for s in self.sites.values()})
        warnings: list[str] = []
        if door.certificates.source == "files":
            self._pems, warnings = await asyncio.to_thread(certificate_pems, self.fleet, self.secrets, hosts)
        if isolation_mode() == "accounts":  # as root: an account of its own, as the hubs have
            name, comment = door_account(self.layout.instance)
            try:
                self._account = await asyncio.to_thread(ensure_account, name, home=self.home, comment=comment)
            except AccountError as exc:
                raise FrontDoorError(f"cannot make the front door's account: {exc}") from None
        await asyncio.to_thread(self._prepare_files)
        if door.certificates.source == "acme":
            acme = door.certificates.acme_settings
            if problem := await acme_problem(acme.directory, self._ca_root_source()):
                warnings.append(
                    f"front door: the ACME directory {acme.directory} does not answer ({problem}): no "
                    "certificate can be issued or renewed until it does; Caddy keeps trying. Hubs keep "
                    "serving on 127.0.0.1"
                )
        self.status.warnings = warnings
        for line in warnings:
            log.warning("%s", line)
        await self._spawn()
        await self._load()
        self.status.state = "running"
        self.status.error = ""
        self._watcher = asyncio.create_task(self._watch(), name="front-door")
        # Caddy makes its local CA with the first certificate, right after the load: wait for it briefly, so
        # that the status `up` writes next (daemon.json) names it; else keep looking in the background
        if door.certificates.source == "internal" and self.sites and not await self._publish_local_ca(50):
            self._ca_task = asyncio.create_task(self._publish_local_ca(), name="front-door-ca")

    async def _spawn(self) -> None:
        files = self.files()
        files.admin_socket.unlink(missing_ok=True)
        init = self.home / "caddy-init.json"  # Caddy must read it: not in the state directory
        init.write_text(json.dumps(admin_only(files.admin_socket)))
        if self._account is not None:
            os.chown(init, self._account.uid, self._account.gid)
        command = [str(CADDY), "run", "--config", str(init)]
        if self._account is not None:
            command = [
                "setpriv",
                f"--reuid={self._account.uid}",
                f"--regid={self._account.gid}",
                "--clear-groups",
                "--inh-caps=-all,+net_bind_service",
                "--ambient-caps=-all,+net_bind_service",
                "--",
                *command,
            ]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home),
        }
        with open(self.status.log_path, "ab") as logf:
            started = time.strftime("%Y-%m-%dT%H:%M:%S")
            logf.write(f"---- hubfleet: starting the front door at {started} ----\n".encode())
            logf.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.home,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        self.status.pid = self._proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                raise FrontDoorError(
                    f"Caddy exited with code {self._proc.returncode} at start; {self._log_tail()}"
                )
            if files.admin_socket.exists():
                with contextlib.suppress(httpx.HTTPError):
                    await self._admin("GET", "/config/")
                    return
            await asyncio.sleep(0.1)
        raise FrontDoorError(
            f"Caddy's admin socket did not answer within {START_TIMEOUT:.0f} s; {self._log_tail()}"
        )

    async def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(uds=str(self.files().admin_socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30) as client:
            # Caddy accepts an empty Host on its unix socket only (origin checks)
            return await client.request(method, path, json=body, headers={"Host": ""})

    async def _load(self) -> None:
        config = self.config()
        try:
            response = await self._admin("POST", "/load", config)
        except httpx.HTTPError as exc:
            raise FrontDoorError(f"Caddy's admin socket failed: {exc}") from None
        if response.status_code != 200:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text
            raise FrontDoorError(f"Caddy refused the configuration: {reason.strip()[:400]}")
        self.status.config_digest = config_digest(config)
        self.status.sites = self.urls()

    async def update(self, hub: str, site: Site | None) -> DoorStatus:
        """Serve `hub` at `site` (None: no longer serve it) and reload Caddy; open connections are kept."""
        async with self._lock:
            for key in [k for k, s in self.sites.items() if s.hub == hub]:
                del self.sites[key]
            if site is not None:
                self.sites[(site.host, site.path)] = site
            if self.status.state == "running":
                try:
                    await self._load()
                except FrontDoorError as exc:
                    self.status.warnings = [*self.status.warnings, f"front door reload failed: {exc}"]
                    log.warning("front door reload failed: %s", exc)
            return self.status

    async def _publish_local_ca(self, attempts: int = 200) -> bool:
        """Copy the local CA's root where the operator finds it (Caddy makes it at its first certificate);
        whether it was there within `attempts` tenths of a second."""
        source = self.files().storage / LOCAL_CA
        target = self.log_dir / "local-ca.crt"
        for _ in range(attempts):
            if source.is_file():
                with contextlib.suppress(OSError):
                    shutil.copyfile(source, target)
                    os.chmod(target, 0o644)
                    self.status.local_ca = str(target)
                    self._on_change()
                    return True
            await asyncio.sleep(0.1)
        return False

    async def reconfigure(self, fleet: FleetConfig, sites: list[Site]) -> DoorStatus:
        """New front door settings (fleet.yaml changed): certificates and names are reloaded in place, keeping
        open connections; a new address or port, or a front door that was down, means a fresh start."""
        settings = fleet.settings.front_door
        assert settings is not None
        async with self._lock:
            old = self.settings
            kept = (self.fleet, self.settings, self.secrets, self.sites, self._pems)
            self.fleet, self.settings = fleet, settings
            self.secrets = SecretResolver(fleet)  # decrypt afresh: a renewed certificate may be a secret
            self.sites = {(s.host, s.path): s for s in sites}
            self.status.reload_error = ""
            listen = ("address", "http_port", "https_port", "access_log")
            in_place = self.status.state == "running" and all(
                getattr(old, key) == getattr(settings, key) for key in listen
            )
            try:
                if not in_place:
                    if self._watcher is not None:
                        self._watcher.cancel()
                    await self._kill()
                    self.status.state = "starting"
                    self.status.certificates = settings.certificates.source
                    await self._start()
                    return self.status
                warnings: list[str] = []
                if settings.certificates.source == "files":
                    hosts = sorted({s.host for s in self.sites.values()})
                    self._pems, warnings = await asyncio.to_thread(
                        certificate_pems, self.fleet, self.secrets, hosts
                    )
                await asyncio.to_thread(self._prepare_files)
                await self._load()
                self.status.warnings = warnings
                self.status.certificates = settings.certificates.source
            except FrontDoorError as exc:
                if not in_place:
                    await self._kill()
                    self._fail(str(exc))
                    return self.status
                # Caddy still serves what it served: keep that, and say why the new settings were not taken
                self.fleet, self.settings, self.secrets, self.sites, self._pems = kept
                self.status.reload_error = f"settings not applied, the running ones kept: {exc}"
                log.warning("front door: %s", self.status.reload_error)
            return self.status

    async def _watch(self) -> None:
        """Restart Caddy with backoff when it dies (it never should); give up after MAX_RESTARTS in a row."""
        failures = 0
        while not self._stopping and self._proc is not None:
            began = time.monotonic()
            code = await self._proc.wait()
            if self._stopping:
                return
            failures = 1 if time.monotonic() - began > STABLE_AFTER else failures + 1
            log.warning("the front door (Caddy) exited with code %s; restart attempt %d", code, failures)
            self.status.state = "restarting"
            self.status.pid = None
            self._on_change()
            await asyncio.sleep(backoff_delay(failures))
            try:
                async with self._lock:
                    await self._spawn()
                    await self._load()
                self.status.state = "running"
                self._on_change()
            except FrontDoorError as exc:
                if failures >= MAX_RESTARTS:
                    self._fail(str(exc))
                    self._on_change()
                    return

    def _fail(self, reason: str) -> None:
        urls = ", ".join(f"{h.name}: {self.fleet.internal_url(h)}" for h in self.fleet.local_hubs()[:3])
        self.status.state = "failed"
        self.status.pid = None
        self.status.error = f"{reason} (hubs keep serving on their internal addresses, e.g. {urls})"
        log.error("front door: %s", self.status.error)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.status.log_path).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "no log"
        messages = []
        for line in text:
            try:
                entry = json.loads(line)
                messages.append(str(entry.get("error") or entry.get("msg")))
            except ValueError:
                messages.append(line)
        return f"log {self.status.log_path}: " + " | ".join(messages)

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._watcher, self._ca_task):
            if task is not None:
                task.cancel()
        await self._kill()
        if self.socket_dir != self.log_dir:  # /run/hubfleet/<instance>-door: nothing of it outlives Caddy
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.status.state = "stopped"
        self.status.pid = None

    async def _kill(self) -> None:
        if self._proc is not None:
            await stop_group(self._proc, timeout=10)

    def snapshot(self) -> dict[str, Any]:
        return asdict(self.status)
