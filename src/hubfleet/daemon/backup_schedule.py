"""Scheduled backups: a task of the `hubfleet up` daemon, and the `backup` incidents it keeps.

Like anacron, the schedule is a catch-up, not a clock: a local hub whose last good backup (backup_runs) is
older than its policy's `every_hours`, or that has none, is due. The first look comes `FIRST_DELAY` seconds
after the hubs started (`HUBFLEET_BACKUP_DELAY` overrides it, for tests), so a fleet that was down over its
backup time is backed up soon after `up`, and a restart loop does not back up every time (a good run is
younger than `every_hours`). Due hubs are backed up one at a time, the one waiting longest first, each with
`back_up_hub` (trigger "schedule") in a thread: restic runs for minutes to hours and must not block the
daemon. A fleet without `backups` runs nothing (one log line). The fleet's files are read again when they
change (as the console does): a hub deployed while the daemon runs is backed up, and a changed schedule,
`backup.enabled` or password applies without a restart.

A failed run is not retried in a tight loop: the hub waits min(every_hours, 1 h) before its next try, twice
that after a second failure in a row, and so on up to every_hours; a good run (also a manual `hubfleet
backup`) ends the back-off. A restarted daemon tries again at once.

Incidents (kind `backup`, alerted like every incident):
    failed  opened when a scheduled run fails, its error as the cause (one line, secrets removed); resolved
            when the hub's newest finished run is good (the schedule's or a manual one)
    late    the last good backup is older than `late_after_hours`, or there is none and this daemon has
            been up longer than that (hubfleet.backup.status.is_late); resolved by a good run

When the daemon stops, a running restic is asked to stop (SIGTERM) and the run is recorded as failed with
"was stopped"; the next daemon backs the hub up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from hubfleet.backup.hub_backup import back_up_hub, backup_setup
from hubfleet.backup.records import finish_run, latest_good_runs, start_run
from hubfleet.backup.restic import stop_running
from hubfleet.backup.status import HubBackupState, age_text, backup_states, one_line, size_text
from hubfleet.clock import as_utc, utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.monitor.incidents import (
    IncidentAlerter,
    IncidentRecord,
    open_incident,
    open_keys,
    resolve_incident,
)
from hubfleet.secrets.store import SecretResolver
from hubfleet.settings import UserError, seconds_from_env
from hubfleet.store.api import Store
from hubfleet.store.retirements import retirements

log = logging.getLogger("hubfleet.backup")

KIND = "backup"
DELAY_ENV = "HUBFLEET_BACKUP_DELAY"
FIRST_DELAY = 300.0
"""Seconds after the hubs started before the first look (anacron's usual delay): the fleet settles first, and
a daemon up for a few minutes (a test's, a quick restart) takes no backup."""
INTERVAL = 60.0
"""Longest sleep between two looks when nothing is due (manual runs and `late` are noticed this often)."""
RETRY_FIRST = 3600.0
"""Seconds before the first retry of a failed hub (or every_hours, if shorter)."""
STOP_WAIT = 20.0
"""Seconds the daemon waits, when it stops, for a stopped restic to end and its run to be recorded."""


def first_delay() -> float:
    return seconds_from_env(DELAY_ENV, FIRST_DELAY)


# --------------------------------------------------------------------------- incidents


def check_incidents(
    fleet: FleetConfig,
    store: Store,
    hubs: Iterable[str],
    *,
    now: datetime | None = None,
    up_since: datetime | None = None,
) -> list[tuple[str, IncidentRecord]]:
    """Open `backup/late` for hubs that are late, resolve it for those that are not; resolve
    `backup/failed` of hubs whose newest finished run is good (or that are no longer backed up here: gone
    from the fleet, backups turned off, retired).
    Returns ("opened"|"resolved", incident) for each change; alerting is the caller's."""
    now = now or utcnow()
    names = list(hubs)
    states = backup_states(fleet, store, names, now=now, up_since=up_since)
    already = {(hub, rule) for hub, kind, rule in open_keys(store) if kind == KIND}
    changes: list[tuple[str, IncidentRecord]] = []
    for name, state in states.items():
        if state.state == "late" and (name, "late") not in already:
            incident, opened = open_incident(store, name, KIND, _late_cause(state), rule="late", at=now)
            if opened:
                changes.append(("opened", incident))
    for hub, rule in sorted(already, key=lambda key: (key[0], key[1] or "")):
        state = states.get(hub)
        still = state is not None and (
            (rule == "late" and state.state == "late") or (rule == "failed" and state.state == "failed")
        )
        if not still and (done := resolve_incident(store, hub, KIND, rule=rule, at=now)):
            changes.append(("resolved", done))
    return changes


def _late_cause(state: HubBackupState) -> str:
    assert state.policy is not None
    limit = f"late after {state.policy.late_after_hours:g} h, every {state.policy.every_hours:g} h"
    if state.last_good is None or state.age_seconds is None:
        return f"no good backup yet, and the daemon has been up longer than allowed ({limit})"
    return f"last good backup {age_text(state.age_seconds)} ago ({limit})"


# --------------------------------------------------------------------------- the schedule


@dataclass
class BackupScheduler:
    """Backs up due hubs one at a time and keeps their `backup` incidents; see the module docstring."""

    source: FleetConfig | Callable[[], FleetConfig]
    """The fleet, or a callable giving it as it is now (hubfleet.console.reload.FleetReloader: a hub deployed
    while the daemon runs, a changed schedule or password, are used without a restart)."""
    state_dir: Path
    store: Store
    hubs: Callable[[], Iterable[str]]
    """The local hubs the daemon runs now."""
    resolver: SecretResolver | None = None
    """Decrypts the password of the fleet as the daemon started (a changed fleet gets a new resolver)."""
    alerter: IncidentAlerter | None = None
    started_at: datetime = field(default_factory=utcnow)
    _retry: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    """hub -> (failures in a row, not before)."""
    _alerts: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._started_with = self.fleet

    @property
    def fleet(self) -> FleetConfig:
        return self.source if isinstance(self.source, FleetConfig) else self.source()

    def due(self, now: datetime) -> tuple[list[str], datetime]:
        """The hubs due now (longest waiting first) and when the next one will be."""
        fleet = self.fleet
        good = latest_good_runs(self.store)
        retired = set(retirements(self.store))  # its final backup was `hubfleet retire`'s
        due: list[tuple[datetime, str]] = []
        soonest = now + timedelta(seconds=INTERVAL)
        for name in self.hubs():
            if name in retired:
                continue
            hub = fleet.hubs.get(name)
            policy = fleet.backup_policy(hub) if hub is not None else None
            if policy is None:
                continue
            last = good.get(name)
            when = now if last is None else as_utc(last.started_at) + timedelta(hours=policy.every_hours)
            if name in self._retry:
                when = max(when, self._retry[name][1])
            if when <= now:
                due.append(
                    (as_utc(last.started_at) if last else datetime.min.replace(tzinfo=now.tzinfo), name)
                )
            else:
                soonest = min(soonest, when)
        return [name for _, name in sorted(due)], soonest

    def check(self, now: datetime | None = None) -> None:
        for event, incident in check_incidents(
            self.fleet, self.store, self.hubs(), now=now, up_since=self.started_at
        ):
            self._alert(event, incident)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set (or the task is cancelled)."""
        said = False
        try:
            if await _stopped(stop, first_delay()):
                return
            while not stop.is_set():
                if self.fleet.settings.backups is None:  # nothing to do, until fleet.yaml gets a `backups:`
                    if not said:
                        log.info("this fleet has no `backups` in fleet.yaml: no scheduled backups")
                        said = True
                    if await _stopped(stop, INTERVAL):
                        return
                    continue
                try:
                    self.check()
                    now = utcnow()
                    due, soonest = self.due(now)
                    if due:
                        await self.back_up(due[0])
                        continue
                    wait = max(1.0, (soonest - now).total_seconds())
                except Exception:
                    log.exception("the backup schedule failed; trying again in %.0f s", INTERVAL)
                    wait = INTERVAL
                if await _stopped(stop, wait):
                    return
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.drain(timeout=5)

    async def back_up(self, name: str) -> bool:
        """One scheduled backup of hub `name` in a thread; True when it was good."""
        log.info("backing up hub %s (scheduled)", name)
        work = asyncio.ensure_future(asyncio.to_thread(self._back_up, self.fleet, name))
        try:
            error = await asyncio.shield(work)
        except asyncio.CancelledError:
            await self._stop_thread(work)
            raise
        now = utcnow()
        if error is None:
            self._retry.pop(name, None)
            self.check(now)
            return True
        failures = self._retry.get(name, (0, now))[0] + 1
        self._retry[name] = (failures, now + timedelta(seconds=self._backoff(name, failures)))
        log.warning("scheduled backup of hub %s failed (%d in a row): %s", name, failures, error)
        incident, opened = open_incident(self.store, name, KIND, error, rule="failed", at=now)
        if opened:
            self._alert("opened", incident)
        self.check(now)
        return False

    def _backoff(self, name: str, failures: int) -> float:
        hub = self.fleet.hubs.get(name)
        policy = self.fleet.backup_policy(hub) if hub is not None else None
        every = policy.every_hours * 3600 if policy else RETRY_FIRST
        return min(every, min(every, RETRY_FIRST) * 2 ** (failures - 1))

    def _back_up(self, fleet: FleetConfig, name: str) -> str | None:
        """In a thread: the backup; None when good, else its error on one line without a secret."""
        hub = fleet.hubs[name]
        secrets: list[str] = []
        resolver = self.resolver if fleet is self._started_with else None  # None: a new one for `fleet`
        try:
            setup = backup_setup(fleet, self.state_dir, resolver)
        except UserError as exc:  # e.g. the password's secret cannot be decrypted: recorded like a failure
            error = one_line(str(exc))
            finish_run(self.store, start_run(self.store, name, "schedule"), None, error=error)
            return error
        repository = setup.repository
        secrets = [s for s in (repository.password, repository.s3_secret, repository.s3_key_id) if s]
        try:
            summary = back_up_hub(setup, self.store, hub, "schedule")
        except Exception as exc:  # recorded by back_up_hub (ResticError, OSError, sqlite3.Error)
            text = str(exc) or type(exc).__name__
            for secret in secrets:
                text = text.replace(secret, "***")
            return one_line(text)
        log.info(
            "backed up hub %s: snapshot %s, %s in %d files",
            name, summary.snapshot_id[:8], size_text(summary.size_bytes), summary.files,
        )  # fmt: skip
        return None

    @staticmethod
    async def _stop_thread(work: asyncio.Future[str | None]) -> None:
        """The daemon stops: stop restic (again, for one started meanwhile) until the thread ends."""
        log.info("the daemon stops: stopping the backup that runs")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT
        while not work.done() and loop.time() < deadline:
            stop_running()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait({work}, timeout=0.5)
        if not work.done():
            log.warning("a backup still runs after %.0f s; the daemon stops without it", STOP_WAIT)

    # -- alerts ----------------------------------------------------------------------------------
    def _alert(self, event: str, incident: IncidentRecord) -> None:
        level = logging.WARNING if event == "opened" else logging.INFO
        log.log(
            level, "backup incident %s on hub %s (%s): %s", event, incident.hub, incident.rule, incident.cause
        )
        if self.alerter is None:
            return
        method = self.alerter.incident_opened if event == "opened" else self.alerter.incident_resolved
        task = asyncio.get_running_loop().create_task(_deliver(method, incident))
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for pending alert deliveries."""
        if self._alerts:
            await asyncio.wait(set(self._alerts), timeout=timeout)
        if self.alerter is not None:
            await self.alerter.drain(timeout)


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def _deliver(method: Callable[[IncidentRecord], Awaitable[None]], incident: IncidentRecord) -> None:
    try:
        await method(incident)
    except Exception:  # the Alerter never raises; a bug in it must not stop the schedule
        log.exception("alerting about backup incident %s failed", incident.id)


def start_backup_schedule(
    fleet: FleetConfig | Callable[[], FleetConfig],
    state_dir: Path,
    store: Store,
    hubs: Callable[[], Iterable[str]],
    resolver: SecretResolver | None,
    alerter: IncidentAlerter | None,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """The daemon's backup task (hubfleet.up)."""
    scheduler = BackupScheduler(fleet, state_dir, store, hubs, resolver, alerter)
    return asyncio.create_task(scheduler.run(stop), name="backup-schedule")
