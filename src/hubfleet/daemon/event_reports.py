"""Event reports: a task of the `hubfleet up` daemon that, once an event is over, makes its report
(hubfleet.events.report), stores it and mails it to the contacts of the hub's community who opted in
(`reports: true`), through the first email channel of fleet.yaml `monitoring.alerts.email` (its SMTP
server, sender and password; the channel's own `to` are operators' alert addresses and get no report).

Once: an event whose stored report is complete and was sent (or tried: `error`) is left alone. The report
waits `GRACE_COLLECTIONS` collections after the end, so the hub's last figures are in the store. Events
that ended more than `MAX_AGE` ago when first seen get none (the hub samples they need are pruned after
35 days; a report of nothing helps no one): `hubfleet event report HUB EVENT` still makes one by hand.

Each address is tried `alerts.retry_attempts` times with a short back-off; addresses that took it are
recorded in `sent_to`, the first failure's reason (SMTP reply or OS error, scrubbed of secrets) in `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_events import Event
from hubfleet.events.report import make_report, report_text
from hubfleet.monitor.alerts import Alerter, DeliveryError
from hubfleet.monitor.collector import collect_interval
from hubfleet.settings import seconds_from_env
from hubfleet.store import events as stored
from hubfleet.store.api import Store

log = logging.getLogger("hubfleet.events")

INTERVAL_ENV = "HUBFLEET_EVENT_REPORT_INTERVAL"
INTERVAL = 60.0
"""Seconds between looks for events that ended."""
GRACE_COLLECTIONS = 2
MAX_AGE = timedelta(days=7)
BACKOFF = 2.0


def recipients(fleet: FleetConfig, hub: str) -> list[str]:
    """The hub's community's contacts with `reports: true`, each address once."""
    found: list[str] = []
    config = fleet.hubs.get(hub)
    community = fleet.communities.get(config.community) if config else None
    for contact in community.contacts if community else []:
        if contact.reports and contact.email.lower() not in {a.lower() for a in found}:
            found.append(contact.email)
    return found


@dataclass(frozen=True)
class Sent:
    sent_to: list[str]
    error: str | None


async def send_report(
    fleet: FleetConfig, store: Store, hub: str, report: dict[str, Any], resolver: Any = None
) -> Sent:
    """Mail `report` to the opted-in contacts; never raises (a failure is in `error`)."""
    addresses = recipients(fleet, hub)
    if not addresses:
        return Sent([], None)
    channels = fleet.settings.monitoring.alerts.email
    if not channels:
        return Sent(
            [],
            "no email channel to send it through: add one to fleet.yaml monitoring.alerts.email "
            "(smtp_host, sender)",
        )
    channel = channels[0]
    alerter = Alerter(fleet, store, resolver)
    subject = f"Event report: {report['display_name']} on {hub}"
    body = report_text(report)
    sent: list[str] = []
    errors: list[str] = []
    attempts = fleet.settings.monitoring.alerts.retry_attempts
    for address in addresses:
        for attempt in range(1, attempts + 1):
            try:
                await alerter.send_mail(channel, address, subject, body)
            except DeliveryError as exc:
                if attempt == attempts:
                    errors.append(f"{address}: {exc}")
                    log.warning("event report %s/%s to %s failed: %s", hub, report["event"], address, exc)
                else:
                    await asyncio.sleep(min(30.0, BACKOFF * 2 ** (attempt - 1)))
                continue
            sent.append(address)
            break
    return Sent(sent, "; ".join(errors)[:2000] or None)


async def report_and_send(
    fleet: FleetConfig, store: Store, event: Event, hub: str, *, send: bool, resolver: Any = None
) -> stored.ReportRecord:
    """Make the report now, store it, and (with `send`) mail it and record to whom."""
    report = await asyncio.to_thread(make_report, store, event, hub, utcnow())
    before = stored.report(store, hub, event.name)  # made again by hand: whom it went to is kept
    kept = (before.sent_to, before.error) if before is not None else (None, None)
    stored.save_report(store, hub, event.name, report, sent_to=kept[0], error=kept[1])
    if send:
        result = await send_report(fleet, store, hub, report, resolver)
        stored.save_report(store, hub, event.name, report, sent_to=result.sent_to, error=result.error)
        log.info(
            "event report %s/%s: sent to %d contact(s)%s",
            hub, event.name, len(result.sent_to), f"; {result.error}" if result.error else "",
        )  # fmt: skip
    record = stored.report(store, hub, event.name)
    assert record is not None
    return record


def due(fleet: FleetConfig, store: Store, now: datetime, grace: timedelta) -> list[Event]:
    """Events over (and `grace` past their end) that have no complete report yet, or one not sent."""
    found = []
    for event in fleet.events():
        hub = event.hub or ""
        if hub not in fleet.hubs or not (event.end + grace <= now < event.end + MAX_AGE):
            continue
        made = stored.report(store, hub, event.name)
        unsent = made is not None and made.sent_to is None and made.error is None  # by hand, no --send
        if made is None or not made.report.get("complete", False) or unsent:
            found.append(event)
    return found


class EventReporter:
    """Looks every `interval` seconds for events that ended; reports and mails each once."""

    def __init__(
        self,
        fleet: FleetConfig | Callable[[], FleetConfig],
        store: Store,
        resolver: Any = None,
        interval: float | None = None,
    ) -> None:
        self._fleet = fleet
        self.store = store
        self.resolver = resolver
        self.interval = interval

    @property
    def fleet(self) -> FleetConfig:
        return self._fleet if isinstance(self._fleet, FleetConfig) else self._fleet()

    async def run_once(self, now: datetime | None = None) -> list[stored.ReportRecord]:
        fleet = self.fleet
        grace = timedelta(seconds=GRACE_COLLECTIONS * collect_interval(fleet))
        made = []
        for event in due(fleet, self.store, now or utcnow(), grace):
            try:
                made.append(
                    await report_and_send(
                        fleet, self.store, event, event.hub or "", send=True, resolver=self.resolver
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one event's failure must not stop the others' reports
                log.exception("event report %s/%s failed", event.hub, event.name)
        return made

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the daemon outlives any report error
                log.exception("event reports: a look failed")
            interval = self.interval or seconds_from_env(INTERVAL_ENV, INTERVAL, minimum=0.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def start_event_reports(
    fleet: FleetConfig | Callable[[], FleetConfig], store: Store, resolver: Any, stop: asyncio.Event
) -> asyncio.Task[None]:
    """The daemon's event-report task (hubfleet.up)."""
    return asyncio.create_task(EventReporter(fleet, store, resolver).run(stop), name="event-reports")
