"""The support desk's pull: a task of the `hubfleet up` daemon that turns every hub's "Get help" requests
into tickets (hubfleet.support.intake.pull_hub), every HUBFLEET_SUPPORT_PULL_INTERVAL seconds (10 by
default: a person who just sent the form should see the ticket's "received" mail soon).

A hub that does not answer is skipped until the next round (its requests wait in its outbox); a hub never
deployed from this state directory is skipped quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from hubfleet.config.fleet import FleetConfig
from hubfleet.settings import UserError, seconds_from_env
from hubfleet.store.api import Store
from hubfleet.support.intake import IntakeError, pull_hub

log = logging.getLogger("hubfleet.support")

INTERVAL_ENV = "HUBFLEET_SUPPORT_PULL_INTERVAL"
INTERVAL = 10.0


def interval() -> float:
    return seconds_from_env(INTERVAL_ENV, INTERVAL, minimum=0.5)


async def pull_all(
    fleet: FleetConfig, store: Store, state_dir: Path, running_local: Iterable[str]
) -> list[int]:
    """One round: every running local hub and every deployed Kubernetes hub; returns the new tickets."""
    if not fleet.settings.support.help_button:
        return []
    local = set(running_local)
    opened: list[int] = []
    for name, hub in fleet.hubs.items():
        if fleet.clusters[hub.cluster].kind == "local" and name not in local:
            continue
        try:
            opened += await pull_hub(fleet, store, name, state_dir=state_dir)
        except (IntakeError, UserError) as exc:
            log.info("support intake: %s", exc)
        except Exception:  # noqa: BLE001 - one hub's failure must not stop the others' requests
            log.exception("support intake: hub %s", name)
    if opened:
        log.info("support intake: opened tickets %s", ", ".join(f"#{i}" for i in opened))
    return opened


async def run(
    fleet: FleetConfig | Callable[[], FleetConfig],
    state_dir: Path,
    store: Store,
    running_local: Callable[[], Iterable[str]],
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        current = fleet() if callable(fleet) else fleet
        await pull_all(current, store, state_dir, running_local())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval())


def start_support_intake(
    fleet: FleetConfig | Callable[[], FleetConfig],
    state_dir: Path,
    store: Store,
    running_local: Callable[[], Iterable[str]],
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """The daemon's support-intake task (hubfleet.up)."""
    return asyncio.create_task(run(fleet, state_dir, store, running_local, stop), name="support-intake")
