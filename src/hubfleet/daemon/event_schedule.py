"""Ready mode for local hubs: a task of the `hubfleet up` daemon that acts at each window's edges.

It sleeps until the next moment an event's ready window opens or ends (render/ready_mode.py says when), or
until an operator's `hubfleet event ready` (the control socket) wakes it, or at most `RELOAD_LOOK` seconds
(the fleet's files are read again when they change: an event added to a hub file is seen without a restart).
Then, per local hub the daemon runs, it does what render/ready_mode.py says:

- a window opens: the store's window is opened (`history` shows it), then, in the background, the broker
  warms the hub (`Broker.warm`: the fork template of the event's environment, the accounts and homes of the
  hub's known users and `allowed_users`) and the bounded readiness test runs (`readiness_test_users`
  attendees; 0: none). A failed test opens an incident (kind `event`, rule `readiness`) and alerts like
  every incident; a later passing test, or the window's end, resolves it;
- a window ends: the store's window is closed (a test still running is stopped; its test users removed).

No hub restarts: warming only does ahead what a start would do. Kubernetes hubs are not this task's:
`hubfleet events apply` (a scheduled CI job with the deploy pipeline's credentials) applies their ready mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hubfleet.checks.synthetic import is_test_user
from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_events import Event
from hubfleet.monitor.incidents import (
    IncidentAlerter,
    IncidentRecord,
    open_incident,
    resolve_incident,
)
from hubfleet.render.ready_mode import (
    SCHEDULE,
    fleet_next_change,
    operator,
    transitions,
    wanted,
)
from hubfleet.runtime.layout import layout
from hubfleet.settings import seconds_from_env
from hubfleet.store import events as stored
from hubfleet.store.api import Store

log = logging.getLogger("hubfleet.events")

KIND, RULE = "event", "readiness"
RELOAD_LOOK = 30.0
"""Longest sleep: how soon a changed fleet file (a new event) is noticed when no window edge is nearer."""
RELOAD_ENV = "HUBFLEET_EVENT_RELOAD_LOOK"
CONTROL_OP = "event_ready"


def reload_look() -> float:
    return seconds_from_env(RELOAD_ENV, RELOAD_LOOK)


def known_users(state_dir: Path, hub_name: str) -> list[str]:
    """Users in the hub's own database (those who signed in before, or an admin added); not a readiness
    test's simulated attendees (removed after their test, unless a test was cut short)."""
    db = layout(state_dir).hub_data(hub_name) / "jupyterhub.sqlite"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM users ORDER BY name")]
    except sqlite3.Error:
        return []
    return [name for name in names if not is_test_user(name)]


@dataclass
class EventSchedule:
    """See the module docstring. `hubs` gives the local hubs the daemon runs now; `broker` is the daemon's
    (None in single-account mode: nothing to warm ahead then, the test still runs)."""

    source: FleetConfig | Callable[[], FleetConfig]
    state_dir: Path
    store: Store
    hubs: Callable[[], Iterable[str]]
    broker: Any | None = None
    alerter: IncidentAlerter | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _work: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """hub -> its warming and readiness test (one at a time per hub)."""
    _alerts: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def fleet(self) -> FleetConfig:
        return self.source if isinstance(self.source, FleetConfig) else self.source()

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set (or the task is cancelled)."""
        try:
            while not stop.is_set():
                now = utcnow()
                upcoming: datetime | None = None
                try:
                    fleet = self.fleet
                    self.step(fleet, now)
                    upcoming = fleet_next_change(fleet, self.hubs(), now)
                except Exception:
                    log.exception("the event schedule failed; looking again in %.0f s", reload_look())
                wait = reload_look()
                if upcoming is not None:
                    wait = min(wait, max(0.0, (upcoming - utcnow()).total_seconds()))
                    log.debug("event schedule: next window edge at %s", upcoming.isoformat())
                await _sleep(stop, self.wake, wait)
                self.wake.clear()
        finally:
            for task in list(self._work.values()):
                task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.gather(*self._work.values(), return_exceptions=True)
                await self.drain(timeout=5)

    def step(self, fleet: FleetConfig, now: datetime) -> list[str]:
        """Open and close the windows the clock says for every local hub run here; what was done, as lines."""
        done = []
        for hub in self.hubs():
            events = fleet.events_of(hub)
            windows = stored.windows(self.store, hub, limit=50)
            if not events and not any(w.open for w in windows):
                continue
            want = wanted(hub, events, windows, now)
            for change in transitions(want, windows):
                done.append(change.describe())
                log.info("ready mode: %s", change.describe())
                if change.kind == "end":
                    self.end(hub, SCHEDULE)
                elif want.event is not None:
                    self.start(hub, want.event, SCHEDULE)
        return done

    # -- the edges -------------------------------------------------------------------------------
    def start(self, hub: str, event: Event, by: str) -> tuple[stored.Window, asyncio.Future[dict[str, Any]]]:
        """Open the window, then warm and test in the background; the future is the warming's result."""
        window = stored.start_window(self.store, hub, event.name, by, {"backend": "local"})
        self._cancel(hub)
        loop = asyncio.get_running_loop()
        warmed: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._work[hub] = loop.create_task(self._prepare(hub, event, window.id, warmed), name=f"ready-{hub}")
        return window, warmed

    def end(self, hub: str, by: str) -> stored.Window | None:
        self._cancel(hub)
        window = stored.end_window(self.store, hub, by)
        if (resolved := resolve_incident(self.store, hub, KIND, rule=RULE)) is not None:
            self._alert("resolved", resolved)
        return window

    def _cancel(self, hub: str) -> None:
        task = self._work.pop(hub, None)
        if task is not None and not task.done():
            task.cancel()  # a readiness test removes its test users when cancelled

    async def _prepare(
        self, hub: str, event: Event, window_id: int, warmed: asyncio.Future[dict[str, Any]]
    ) -> None:
        """Warm the hub, then run the bounded readiness test; what happened goes into the window's details."""
        try:
            try:
                done = await self.warm(hub, event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one hub's warming stop the schedule (the test still runs)
                log.exception("ready mode: warming hub %s for event %s failed", hub, event.name)
                done = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            stored.update_window(self.store, window_id, {"warm": done})
            if not warmed.done():
                warmed.set_result(done)
            if event.readiness_test_users > 0:
                result = await self._test(hub, event)
                stored.update_window(self.store, window_id, {"readiness_test": result})
        except asyncio.CancelledError:
            if not warmed.done():
                warmed.cancel()
            raise
        except Exception as exc:
            log.exception("ready mode of hub %s for event %s failed", hub, event.name)
            stored.update_window(self.store, window_id, {"error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            if not warmed.done():
                warmed.set_result({})

    async def warm(self, hub: str, event: Event) -> dict[str, Any]:
        """Broker.warm with the hub's known users and `allowed_users`."""
        if self.broker is None:
            return {"skipped": "single-account mode: no per-user accounts to make ahead"}
        warm = getattr(self.broker, "warm", None)
        if warm is None:  # an older broker
            log.warning("ready mode: this daemon's broker cannot warm hubs; hub %s is not warmed", hub)
            return {"skipped": "the broker has no warm()"}
        config = self.fleet.hubs.get(hub)
        allowed = list(config.auth.allowed_users) if config is not None and config.auth is not None else []
        users = sorted(set(await asyncio.to_thread(known_users, self.state_dir, hub)) | set(allowed))
        done = await warm(hub, event.environment, users)
        log.info("ready mode: hub %s warmed for event %s: %s", hub, event.name, done)
        return dict(done)

    async def _test(self, hub: str, event: Event) -> dict[str, Any]:
        """The bounded readiness test; on fail an incident (alerted), on pass the incident resolved."""
        try:
            from hubfleet.events.readiness import record, run_readiness_test
        except ImportError:
            log.warning("ready mode: no readiness test in this hubfleet; hub %s is not tested", hub)
            return {"skipped": "no readiness test available"}
        fleet = self.fleet
        try:
            report = await run_readiness_test(
                fleet,
                hub,
                state_dir=self.state_dir,
                users=event.readiness_test_users,
                arrival=event.rush(),
                event=event,
            )
        except Exception as exc:  # cannot start (hub down, too many users): that is a failed test too
            cause = f"the readiness test of event {event.name} could not run: {exc}"[:500]
            self._failed(hub, cause)
            return {"passed": False, "verdict": cause}
        test_id = await asyncio.to_thread(record, self.store, report)
        if report.passed:
            if (resolved := resolve_incident(self.store, hub, KIND, rule=RULE)) is not None:
                self._alert("resolved", resolved)
        else:
            self._failed(hub, f"readiness test of event {event.name} failed: {report.verdict}"[:500])
        log.info("ready mode: readiness test of hub %s: %s", hub, report.verdict)
        return {"id": test_id, "passed": report.passed, "verdict": report.verdict}

    def _failed(self, hub: str, cause: str) -> None:
        log.warning("ready mode: hub %s: %s", hub, cause)
        incident, opened = open_incident(self.store, hub, KIND, cause, rule=RULE)
        if opened:
            self._alert("opened", incident)

    # -- by hand (the control socket) ---------------------------------------------------------------
    async def manual(self, request: dict[str, Any]) -> dict[str, Any]:
        """`hubfleet event ready HUB EVENT --on|--off` for a local hub: {hub, event, on, actor}."""
        hub, name, on = request.get("hub"), request.get("event"), request.get("on")
        actor = str(request.get("actor") or "unknown")[:150]
        if not isinstance(on, bool):
            return {"ok": False, "error": "event_ready needs `on`: true or false"}
        if hub not in set(self.hubs()):
            return {"ok": False, "error": f"hub {hub!r} is not run by this daemon"}
        event = next((e for e in self.fleet.events_of(str(hub)) if e.name == name), None)
        if event is None:
            return {"ok": False, "error": f"hub {hub} has no event {name!r} in the daemon's fleet files"}
        now, by = utcnow(), operator(actor)
        current = stored.open_window(self.store, event.hub or str(hub))
        if on:
            if now >= event.end:
                over = f"event {event.name} is over (it ended {event.end.isoformat()})"
                return {"ok": False, "error": over}
            if current is not None and current.event == event.name:
                return {"ok": True, "window": current.to_json(), "already": True}
            if current is not None:
                self.end(str(hub), by)
            window, warmed = self.start(str(hub), event, by)
            self.wake.set()
            await asyncio.shield(warmed)  # the readiness test goes on in the background
            found = stored.windows(self.store, str(hub), event.name, limit=1)
            return {"ok": True, "window": (found[0] if found else window).to_json()}
        if current is None or current.event != event.name:
            what = f"in ready mode for event {current.event}" if current else "not in ready mode"
            return {"ok": False, "error": f"hub {hub} is {what}; nothing to switch off for {event.name}"}
        window = self.end(str(hub), by)
        self.wake.set()
        return {"ok": True, "window": window.to_json() if window else None}

    # -- alerts ----------------------------------------------------------------------------------
    def _alert(self, kind: str, incident: IncidentRecord) -> None:
        if self.alerter is None:
            return
        method = self.alerter.incident_opened if kind == "opened" else self.alerter.incident_resolved
        task = asyncio.get_running_loop().create_task(_deliver(method, incident))
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    async def drain(self, timeout: float | None = None) -> None:
        if self._alerts:
            await asyncio.wait(set(self._alerts), timeout=timeout)
        if self.alerter is not None:
            await self.alerter.drain(timeout)


async def _sleep(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Up to `seconds`, or until `stop` or `wake` is set."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _deliver(method: Callable[[IncidentRecord], Awaitable[None]], incident: IncidentRecord) -> None:
    try:
        await method(incident)
    except Exception:  # the Alerter never raises; a bug in it must not stop the schedule
        log.exception("alerting about event incident %s failed", incident.id)


def start_event_schedule(schedule: EventSchedule, stop: asyncio.Event) -> asyncio.Task[None]:
    """The daemon's ready-mode task (hubfleet.up)."""
    return asyncio.create_task(schedule.run(stop), name="event-schedule")
