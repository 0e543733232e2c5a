"""The support desk's watch: a task of the `hubfleet up` daemon.

Every `HUBFLEET_SUPPORT_WATCH_INTERVAL` seconds (60 by default) it
- raises response-time warnings and misses of active tickets (hubfleet.support.sla), each once, through the
  alert channels (Alerter.notify) and by mail to the ticket's assignee (queued in the desk's outbox);
- closes tickets resolved more than support.auto_close_days ago;
- links incidents of a ticket's hub to the ticket and notes their resolution on it
  (hubfleet.support.incident_links);
- warns once per period when a community used 90 % and 100 % of its support hours (hubfleet.support.hours).

Each step runs on its own: one that fails is logged and the others still run; all are tried again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.settings import seconds_from_env
from hubfleet.store.api import Store
from hubfleet.support.hours import check_budgets
from hubfleet.support.incident_links import link_incidents, note_resolutions
from hubfleet.support.sla import Notice, check_targets, digest
from hubfleet.support.tickets import close_resolved

log = logging.getLogger("hubfleet.support")

INTERVAL_ENV = "HUBFLEET_SUPPORT_WATCH_INTERVAL"
INTERVAL = 60.0
DIGEST_OVER = 10
"""More response-time notices than this in one pass go out as one message (hubfleet.support.sla.digest)."""


def interval() -> float:
    return seconds_from_env(INTERVAL_ENV, INTERVAL, minimum=0.1)


class Notifier(Protocol):
    """hubfleet.monitor.alerts.Alerter, or a recording stand-in."""

    async def notify(
        self, subject: str, body: str, *, community: str | None = None, wait: bool = False
    ) -> None: ...

    async def drain(self, timeout: float | None = None) -> None: ...


@dataclass
class SupportWatch:
    source: FleetConfig | Callable[[], FleetConfig]
    """The fleet, or a callable giving it as it is now (hubfleet.console.reload.FleetReloader)."""
    store: Store
    alerter: Notifier | None = None
    last: dict[str, Any] = field(default_factory=dict)
    """What the last pass did (closed, linked, noted ids; notices): for logs and tests."""

    @property
    def fleet(self) -> FleetConfig:
        return self.source if isinstance(self.source, FleetConfig) else self.source()

    def check(self, now: datetime | None = None) -> list[Notice]:
        """One pass (blocking: the daemon runs it in a thread); returns the notices to send."""
        now = now or utcnow()
        fleet = self.fleet
        notices: list[Notice] = []
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("targets", lambda: check_targets(self.store, fleet, now=now)),
            ("closed", lambda: close_resolved(self.store, fleet, now=now)),
            ("linked", lambda: link_incidents(self.store, now=now)),
            ("noted", lambda: note_resolutions(self.store, now=now)),
            ("hours", lambda: check_budgets(self.store, fleet, now=now)),
        ]
        self.last = {}
        for name, step in steps:
            try:
                result = step()
            except Exception:
                log.exception("support watch: %s failed; trying again next time", name)
                continue
            self.last[name] = result
            if name == "targets":
                notices += digest(result, DIGEST_OVER)
            elif name == "hours":
                notices += result
            elif result:
                log.info("support watch: %s %s", name, result)
        for notice in notices:
            log.warning("%s", notice.subject)
        return notices

    async def send(self, notices: list[Notice]) -> None:
        """Hand the notices to the alerter (it delivers in the background)."""
        if self.alerter is None:
            return
        for notice in notices:
            try:
                await self.alerter.notify(notice.subject, notice.body, community=notice.community)
            except Exception:  # the Alerter never raises; a bug in it must not stop the watch
                log.exception("alerting %r failed", notice.subject)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set (or the task is cancelled)."""
        every = interval()
        try:
            while not stop.is_set():
                try:
                    await self.send(await asyncio.to_thread(self.check))
                except Exception:
                    log.exception("the support watch failed; trying again in %.0f s", every)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=every)
        finally:
            if self.alerter is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await self.alerter.drain(timeout=5)


def start_support_watch(
    fleet: FleetConfig | Callable[[], FleetConfig],
    store: Store,
    alerter: Notifier | None,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """The daemon's support task (hubfleet.up)."""
    return asyncio.create_task(SupportWatch(fleet, store, alerter).run(stop), name="support-watch")
