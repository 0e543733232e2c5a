"""Alerts: one message when an incident opens, one when it resolves, to every channel of fleet.yaml
`monitoring.alerts` — Slack-compatible webhooks and email (SMTP) — and, by email, to the contacts of the
hub's community who opted in (`alerts: true`). A community's incident (a `cost` incident with no hub) goes to
that community's opted-in contacts the same way.

Each delivery (one webhook, or one email recipient) runs as a background task: it is retried with
exponential backoff up to `retry_attempts` and every attempt is recorded in the store's `alert_deliveries`.
A failed delivery is logged and recorded, never raised. Secrets (webhook URLs embed a token, SMTP
passwords) never reach a log line, an error text or the store: webhooks are recorded as `https://host/***`.

    alerter = Alerter(fleet, store)            # resolver: a SecretResolver for {secret: KEY} channels
    await alerter.incident_opened(incident)    # returns at once; delivery goes on in the background
    await alerter.drain()                      # wait for pending deliveries (tests, shutdown)
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from hubfleet.clock import as_utc, utcnow
from hubfleet.config.models import Alerts, EmailChannel, WebhookChannel
from hubfleet.config.secret_refs import SecretRef
from hubfleet.store.models import AlertDelivery

if TYPE_CHECKING:
    from hubfleet.config.fleet import FleetConfig
    from hubfleet.secrets.store import SecretResolver
    from hubfleet.store.api import Store

log = logging.getLogger("hubfleet.alerts")

Event = Literal["opened", "resolved", "notice"]
"""notice: a message that is not about an incident (Alerter.notify; recorded with incident 0)."""
BACKOFF_BASE = 2.0
"""Seconds before the second attempt; doubled for each further one (capped at BACKOFF_MAX)."""
BACKOFF_MAX = 300.0
TIMEOUT = 15.0
"""Seconds a webhook request or SMTP conversation may take."""


class IncidentLike(Protocol):
    """The store's Incident row, hubfleet.monitor.incidents.IncidentRecord or any record with these."""

    id: int
    hub: str
    kind: str
    rule: str | None
    started_at: datetime
    resolved_at: datetime | None
    cause: str


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class AlertMessage:
    subject: str
    body: str

    @property
    def text(self) -> str:
        """Subject line, blank line, body: what a webhook receives."""
        return f"{self.subject}\n\n{self.body}"


def _when(value: datetime | None) -> str:
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def format_duration(seconds: float) -> str:
    """`45s`, `3m 12s`, `2h 05m`, `3d 4h`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _what(incident: IncidentLike) -> str:
    rule = incident.rule
    if incident.kind == "down":
        return "is down"
    if incident.kind == "certificate":
        return "TLS certificate expiring"
    if incident.kind == "anomaly":
        return f"abnormal activity ({rule})" if rule else "abnormal activity"
    if incident.kind == "quota":
        return f"home quota warning ({rule})" if rule else "home quota warning"
    if incident.kind == "backup":
        return {"failed": "backup failed", "late": "backup late"}.get(rule or "", "backup")
    if incident.kind == "cost":
        return f"cost alert ({rule})" if rule else "cost alert"
    return incident.kind + (f" ({rule})" if rule else "")


def hub_url(fleet: FleetConfig, hub_name: str) -> str | None:
    """The hub's public URL with a trailing slash (a link people click), None for an unknown hub."""
    hub = fleet.hubs.get(hub_name)
    url = fleet.public_url(hub) if hub is not None else None
    return f"{url}/" if url else None


def format_message(
    event: Event, incident: IncidentLike, fleet: FleetConfig, now: datetime | None = None
) -> AlertMessage:
    """One subject line and a few body lines: hub, community, kind, cause, times, duration, URL."""
    hub = fleet.hubs.get(incident.hub)
    owner = getattr(incident, "community", None)  # a community's incident (kind `cost`) has no hub
    community = owner or (hub.community if hub else "?")
    about = f"hub {incident.hub}" if incident.hub else f"community {community}"
    started = as_utc(incident.started_at)  # naive from SQLite rows: UTC
    resolved = as_utc(incident.resolved_at) if incident.resolved_at else None
    end = resolved or (as_utc(now) if now else utcnow())
    duration = format_duration((end - started).total_seconds())
    what = _what(incident)
    cause = " ".join((incident.cause or "").split()) or "-"
    if event == "opened":
        subject = f"[{fleet.settings.name}] OPEN: {about} {what}: {cause[:120]}"
    else:
        subject = f"[{fleet.settings.name}] RESOLVED: {about} {what} (after {duration})"
    lines = [
        f"Hub: {incident.hub or '-'}" + (f" ({hub.display_name})" if hub and hub.display_name else ""),
        f"Community: {community}",
        f"Kind: {incident.kind}" + (f" / {incident.rule}" if incident.rule else ""),
        f"Cause: {cause}",
        f"Started: {_when(started)}",
        f"Resolved: {_when(resolved) if resolved else 'not yet (open)'}",
        f"Duration: {duration}" + ("" if resolved else " so far"),
        f"URL: {hub_url(fleet, incident.hub) or '-'}",
        f"Incident: #{incident.id}",
    ]
    return AlertMessage(subject, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- secrets and masking


def mask_url(url: str) -> str:
    """`https://hooks.slack.com/***`: what logs and the store show instead of a webhook URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme or 'http'}://{host}{port}/***"
    except ValueError:
        return "***"


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class _RedactFilter(logging.Filter):
    """Replaces registered secrets with *** in records of a library logger: httpx logs every request's
    full URL at INFO, and a webhook URL embeds its token."""

    def __init__(self) -> None:
        super().__init__("hubfleet-redact")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            scrubbed = _scrub(message, self.secrets)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
        return True


_REDACT = _RedactFilter()


def redact_in_library_logs(secret: str) -> None:
    """Never let `secret` appear in the log records of httpx (request lines carry the full URL)."""
    if secret and secret not in _REDACT.secrets:
        _REDACT.secrets.add(secret)
        for name in ("httpx", "httpcore"):
            logger = logging.getLogger(name)
            if _REDACT not in logger.filters:
                logger.addFilter(_REDACT)


class DeliveryError(Exception):
    """A delivery attempt failed; the message never contains a secret."""


# --------------------------------------------------------------------------- the alerter


@dataclass(frozen=True)
class Delivery:
    """One thing to deliver: a webhook, or one email recipient of one channel."""

    channel: str
    """`webhook:<name>` or `email:<name>`."""
    recipient: str
    """An email address, or the masked webhook URL."""
    send: Callable[[], Awaitable[None]]


class Alerter:
    """Sends incident alerts through the fleet's channels; never raises into its caller.

    `backoff_base` (seconds before the 2nd attempt, doubled after each failure, capped at `backoff_max`)
    and `timeout` are small in tests. `resolver` decrypts `{secret: KEY}` channel settings (fleet-level
    secrets, secrets/fleet.yaml); without one, a SecretResolver with the default identity is made when
    first needed.
    """

    def __init__(
        self,
        fleet: FleetConfig,
        store: Store,
        resolver: SecretResolver | None = None,
        *,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        timeout: float = TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.resolver = resolver
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def alerts(self) -> Alerts:
        return self.fleet.settings.monitoring.alerts

    # -- public API ------------------------------------------------------------------------------
    async def incident_opened(self, incident: IncidentLike, *, wait: bool = False) -> None:
        """Alert that `incident` opened. Deliveries run in the background unless `wait`."""
        await self._schedule("opened", incident, wait)

    async def incident_resolved(self, incident: IncidentLike, *, wait: bool = False) -> None:
        """Alert that `incident` resolved. Deliveries run in the background unless `wait`."""
        await self._schedule("resolved", incident, wait)

    async def notify(
        self, subject: str, body: str, *, community: str | None = None, wait: bool = False
    ) -> None:
        """A message that is not an incident (the support desk's response-time and support-hours warnings)
        to every channel: each webhook, each email channel's `to` and, with `community`, its opted-in
        contacts. Retried and recorded like an alert (event `notice`, incident 0)."""
        message = AlertMessage(f"[{self.fleet.settings.name}] {subject}", body)
        tasks = []
        for delivery in self._deliveries("", message, community):
            task = asyncio.get_running_loop().create_task(self._run(delivery, "notice", 0))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        if wait and tasks:
            await asyncio.wait(tasks)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every pending delivery finished (or `timeout` seconds passed)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return
            await asyncio.wait(set(self._tasks), timeout=left)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def recipients(
        self, channel: EmailChannel, hub_name: str, community_name: str | None = None
    ) -> list[str]:
        """The channel's `to`, then (if alerts.community_contacts) the opted-in contacts of the hub's
        community, or of `community_name` (a community's incident has no hub)."""
        found: list[str] = []
        extra: list[str] = []
        hub = self.fleet.hubs.get(hub_name)
        owner = community_name or (hub.community if hub is not None else None)
        if self.alerts.community_contacts and owner is not None:
            community = self.fleet.communities.get(owner)
            extra = [c.email for c in community.contacts if c.alerts] if community else []
        for address in [*channel.to, *extra]:
            if address.lower() not in {a.lower() for a in found}:
                found.append(address)
        return found

    # -- scheduling ------------------------------------------------------------------------------
    async def _schedule(self, event: Event, incident: IncidentLike, wait: bool) -> None:
        try:
            message = format_message(event, incident, self.fleet)
            deliveries = self._deliveries(incident.hub, message, getattr(incident, "community", None))
        except Exception:  # a bug here must not reach the prober
            log.exception("cannot prepare the %s alert of incident %s", event, incident.id)
            return
        if not deliveries:
            log.info("incident %s %s: no alert channels configured", incident.id, event)
            return
        tasks = []
        for delivery in deliveries:
            task = asyncio.get_running_loop().create_task(self._run(delivery, event, int(incident.id)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        if wait:
            await asyncio.wait(tasks)

    def _deliveries(
        self, hub_name: str, message: AlertMessage, community: str | None = None
    ) -> list[Delivery]:
        out: list[Delivery] = []
        for hook in self.alerts.webhooks:
            out.append(self._webhook_delivery(hook, message))
        for channel in self.alerts.email:
            for address in self.recipients(channel, hub_name, community):
                out.append(self._email_delivery(channel, address, message))
        return out

    async def _run(self, delivery: Delivery, event: Event, incident_id: int) -> None:
        attempts = self.alerts.retry_attempts
        for attempt in range(1, attempts + 1):
            error = ""
            try:
                await delivery.send()
            except DeliveryError as exc:
                error = str(exc)
            except Exception as exc:  # never raise into the loop; the message is scrubbed by the senders
                error = f"unexpected {type(exc).__name__}"
                log.debug("alert delivery crashed", exc_info=False)
            ok = not error
            self._record(delivery, event, incident_id, attempt, ok, error)
            if ok:
                log.info(
                    "alert %s of incident %s delivered to %s %s (attempt %d)",
                    event, incident_id, delivery.channel, delivery.recipient, attempt,
                )  # fmt: skip
                return
            final = attempt == attempts
            log.warning(
                "alert %s of incident %s to %s %s failed (attempt %d of %d)%s: %s",
                event, incident_id, delivery.channel, delivery.recipient, attempt, attempts,
                "; giving up" if final else "", error,
            )  # fmt: skip
            if not final:
                await asyncio.sleep(min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))

    def _record(
        self, delivery: Delivery, event: Event, incident_id: int, attempt: int, ok: bool, error: str
    ) -> None:
        row = AlertDelivery(
            incident_id=incident_id,
            event=event,
            channel=delivery.channel[:200],
            recipient=delivery.recipient[:400],
            at=utcnow(),
            attempt=attempt,
            ok=ok,
            error=error[:2000],
        )
        try:
            with self.store.session() as session, session.begin():
                session.add(row)
        except Exception as exc:
            log.warning("cannot record an alert delivery: %s", type(exc).__name__)

    # -- secrets ---------------------------------------------------------------------------------
    def _secret(self, value: SecretStr | SecretRef | str | None, what: str) -> str | None:
        """The plain value of a channel setting; DeliveryError (naming the key, never a value) if unset."""
        if value is None:
            return None
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, SecretRef):
            if self.resolver is None:
                from hubfleet.secrets.store import SecretResolver

                self.resolver = SecretResolver(self.fleet)
            try:
                return self.resolver.fleet_value(value.secret)
            except Exception as exc:
                from hubfleet.settings import UserError

                reason = str(exc) if isinstance(exc, UserError) else type(exc).__name__
                raise DeliveryError(f"{what}: {reason}") from None
        return str(value)

    # -- webhooks --------------------------------------------------------------------------------
    def _webhook_delivery(self, hook: WebhookChannel, message: AlertMessage) -> Delivery:
        shown = "***"
        if isinstance(hook.url, SecretStr):
            shown = mask_url(hook.url.get_secret_value())
        elif isinstance(hook.url, SecretRef):
            shown = f"{{secret: {hook.url.secret}}}"

        async def send() -> None:
            url = self._secret(hook.url, f"webhook {hook.name} url")
            assert url is not None
            redact_in_library_logs(url)
            try:
                async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                    response = await client.post(url, json={"text": message.text})
            except httpx.HTTPError as exc:
                detail = _scrub(str(exc), [url]) or type(exc).__name__
                raise DeliveryError(f"{type(exc).__name__}: {detail}"[:500]) from None
            except Exception as exc:
                raise DeliveryError(f"{type(exc).__name__}") from None
            if response.status_code >= 300:
                raise DeliveryError(f"HTTP {response.status_code} {response.reason_phrase}".strip())

        return Delivery(f"webhook:{hook.name}", shown, send)

    # -- email -----------------------------------------------------------------------------------
    async def send_mail(self, channel: EmailChannel, address: str, subject: str, body: str) -> None:
        """One mail through `channel` (for other messages than incidents: event reports); raises
        DeliveryError with a scrubbed reason, never a secret."""
        await self._email_delivery(channel, address, AlertMessage(subject, body)).send()

    def _email_delivery(self, channel: EmailChannel, address: str, message: AlertMessage) -> Delivery:
        async def send() -> None:
            password = self._secret(channel.password, f"email {channel.name} password")
            mail = EmailMessage()
            mail["Subject"] = message.subject
            mail["From"] = channel.sender
            mail["To"] = address
            mail["Date"] = formatdate(localtime=False)
            mail["Message-ID"] = make_msgid(domain=channel.sender.rsplit("@", 1)[-1])
            mail.set_content(message.body)
            await self._send_with(channel, password, mail)

        return Delivery(f"email:{channel.name}", address, send)

    async def send_message(self, channel: EmailChannel, mail: EmailMessage) -> None:
        """A mail made by the caller, its headers as they are (the support desk's Message-ID and threading)
        through `channel`'s SMTP server; raises DeliveryError with a scrubbed reason, never a secret."""
        password = self._secret(channel.password, f"email {channel.name} password")
        await self._send_with(channel, password, mail)

    async def _send_with(self, channel: EmailChannel, password: str | None, mail: EmailMessage) -> None:
        try:
            await asyncio.to_thread(self._smtp_send, channel, password, mail)
        except DeliveryError:
            raise
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise DeliveryError(_smtp_error(exc, [password, channel.username])) from None

    def _smtp_send(self, channel: EmailChannel, password: str | None, mail: EmailMessage) -> None:
        """Blocking (smtplib): runs in a worker thread."""
        context = self.ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if channel.security == "tls":
            smtp = smtplib.SMTP_SSL(
                channel.smtp_host, channel.smtp_port, timeout=self.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if channel.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if channel.username:
                if password is None:
                    raise DeliveryError(f"email {channel.name}: username set but no password")
                smtp.login(channel.username, password)
            smtp.send_message(mail)


def _smtp_error(exc: BaseException, secrets: list[str | None]) -> str:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        text = f"SMTP authentication failed ({exc.smtp_code})"
    elif isinstance(exc, smtplib.SMTPResponseException):
        reply = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        text = f"SMTP {exc.smtp_code}: {reply}"
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = "SMTP recipient refused"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{type(exc).__name__}: {exc.strerror}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _scrub(" ".join(text.split()), secrets)[:500]
