"""Handing incidents to the alerter from a daemon task: each open and resolve is logged and delivered in a
background task on the running loop, never raising into the task that found it.

    alerts = IncidentAlerts(alerter, logging.getLogger("hubfleet.costs"), "cost")
    alerts.send("opened", incident)
    await alerts.drain(timeout=5)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from hubfleet.monitor.incidents import IncidentAlerter, IncidentRecord


class IncidentAlerts:
    def __init__(self, alerter: IncidentAlerter | None, log: logging.Logger, what: str) -> None:
        self.alerter = alerter
        self.log = log
        self.what = what
        self._tasks: set[asyncio.Task[None]] = set()

    def send_all(self, changes: Iterable[tuple[str, IncidentRecord]]) -> None:
        for event, incident in changes:
            self.send(event, incident)

    def send(self, event: str, incident: IncidentRecord) -> None:
        """Log the change and deliver it in the background (on the running loop)."""
        owner = f"hub {incident.hub}" if incident.hub else f"community {incident.community}"
        level = logging.WARNING if event == "opened" else logging.INFO
        self.log.log(
            level, "%s incident %s on %s (%s): %s", self.what, event, owner, incident.rule, incident.cause
        )
        if self.alerter is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(event, incident))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: str, incident: IncidentRecord) -> None:
        assert self.alerter is not None
        method = self.alerter.incident_opened if event == "opened" else self.alerter.incident_resolved
        try:
            await method(incident)
        except Exception:  # the Alerter never raises; a bug in it must not stop the task
            self.log.exception("alerting about %s incident %s failed", self.what, incident.id)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for pending deliveries (the alerter's own background sends included)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        if self.alerter is not None:
            await self.alerter.drain(timeout)
