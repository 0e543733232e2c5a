"""What a user server was started with (environment and resource requests) and, on local hubs run as root,
what it used (CPU time and peak memory of its control group): the usage that shared costs are split by.

Requests come from the fleet files, not from the hub: the environment the server's `user_options` name (as
JupyterHub 6's /hub/api/users shows them with `read:servers`: hubfleet's `{"environment": SLUG, OPTION:
CHOICE}`, or KubeSpawner's `{"profile": SLUG, ...}`), resolved as the hub resolves it, over the hub's
`resources`; the request is the guarantee, else the limit.

Measured use is read from the server's own group, `hubfleet/<instance>/<hub>/<account>` under each hierarchy
(hubfleet.daemon.broker creates it when the server starts and removes it when it stops): a few small files a
running server, so one pass over every server of every hub stays in the milliseconds.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubfleet.config.models import Hub
from hubfleet.environment_choice import ChoiceRefused, resolve
from hubfleet.isolation.accounts import user_account
from hubfleet.isolation.cgroups import CgroupDriver
from hubfleet.units import parse_bytes


@dataclass(frozen=True)
class Request:
    """What a server was started with; None where the fleet files set nothing."""

    environment: str | None = None
    cpu: float | None = None
    memory_bytes: int | None = None


def _options(user_options: Any) -> dict[str, Any]:
    """hubfleet's own user_options from the hub's (KubeSpawner names the environment `profile`)."""
    options = dict(user_options) if isinstance(user_options, dict) else {}
    if "environment" not in options and "profile" in options:
        options["environment"] = options.pop("profile")
    return options


def server_request(hub: Hub, user_options: Any, groups: list[str] | None = None) -> Request:
    """The environment and requests of a server of `hub` started with `user_options` by a member of
    `groups`. A choice the user may no longer pick (groups changed) still counts: the environment alone is
    resolved then, and an unknown environment keeps the hub's resources."""
    spec = [env.model_dump(mode="json") for env in hub.environments]
    options = _options(user_options)
    resources: dict[str, Any] = {}
    slug = options.get("environment")
    if spec:
        # every group the fleet files name: what is resolved here is what was started, not who may
        everyone = _groups_named(spec) | set(groups or ())
        for attempt in (options, {"environment": slug} if slug else {}):
            with contextlib.suppress(ChoiceRefused):
                resolved = resolve(spec, everyone, attempt)
                slug, resources = resolved["environment"], resolved["resources"]
                break
    base = hub.resources.model_dump()
    merged = {key: _first(resources.get(key), base.get(key)) for key in RESOURCE_KEYS}
    cpu = _first(merged["cpu_guarantee"], merged["cpu_limit"])
    memory = _first(merged["memory_guarantee"], merged["memory_limit"])
    return Request(
        environment=str(slug) if slug else None,
        cpu=float(cpu) if cpu is not None else None,
        memory_bytes=parse_bytes(memory) if memory is not None else None,
    )


RESOURCE_KEYS = ("cpu_guarantee", "cpu_limit", "memory_guarantee", "memory_limit")


def _groups_named(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {str(g) for g in node.get("groups") or [] if isinstance(node.get("groups"), list)}
        for value in node.values():
            found |= _groups_named(value)
        return found
    if isinstance(node, list):
        return set().union(*(_groups_named(item) for item in node)) if node else set()
    return set()


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


# --------------------------------------------------------------------------- measured use


@dataclass(frozen=True)
class Measured:
    cpu_seconds: float | None
    memory_peak_bytes: int | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def _keyed(path: Path, key: str) -> int | None:
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu_seconds(pids: list[int], proc: Path = Path("/proc")) -> float | None:
    """CPU time of these processes and of the children they reaped (utime, stime, cutime, cstime of
    /proc/PID/stat, fields 14-17): for a v1 host whose `cpu` hierarchy has no cpuacct beside it."""
    ticks = 0
    found = False
    for pid in pids:
        text = _read(proc / str(pid) / "stat")
        if not text:
            continue
        fields = text.rsplit(")", 1)[-1].split()
        with contextlib.suppress(ValueError, IndexError):
            ticks += sum(int(v) for v in fields[11:15])  # after "state": field 3 is fields[0]
            found = True
    return ticks / CLOCK_TICKS if found else None


class ServerMeter:
    """Reads each server's group of one fleet instance (the broker's naming)."""

    def __init__(self, driver: CgroupDriver, instance: str) -> None:
        self.driver = driver
        self.instance = instance

    def _dirs(self, hub: str, username: str) -> list[Path] | None:
        try:
            account = user_account(self.instance, hub, username)
        except ValueError:
            return None
        parts = ("hubfleet", self.instance, hub, account)
        return [base.joinpath(*parts) for base in self.driver.bases()]

    def measure(self, hub: str, username: str) -> Measured | None:
        """The group's CPU seconds and peak memory now; None when the user has no group (not running, or
        not a root hub)."""
        dirs = self._dirs(hub, username)
        if dirs is None or not dirs[0].is_dir():
            return None
        if self.driver.version == 2:
            usage = _keyed(dirs[0] / "cpu.stat", "usage_usec")
            return Measured(
                cpu_seconds=usage / 1e6 if usage is not None else None,
                memory_peak_bytes=_number(dirs[0] / "memory.peak"),
            )
        memory, cpu = dirs[0], dirs[1]
        nanos = _number(cpu / "cpuacct.usage")  # cpu and cpuacct mounted together
        if nanos is None:
            separate = self.driver.root / "cpuacct" / cpu.relative_to(self.driver.bases()[1])
            nanos = _number(separate / "cpuacct.usage")
        if nanos is not None:
            seconds: float | None = nanos / 1e9
        else:
            pids = [int(p) for p in (_read(memory / "cgroup.procs") or "").split() if p.isdigit()]
            seconds = _process_cpu_seconds(pids)
        return Measured(cpu_seconds=seconds, memory_peak_bytes=_number(memory / "memory.max_usage_in_bytes"))


def fleet_meter(state_dir: Path) -> ServerMeter | None:
    """The meter of the fleet whose state is in `state_dir`, when this process can read control groups
    (root, and the fleet's layout written); None otherwise."""
    from hubfleet.isolation.cgroups import detect
    from hubfleet.runtime.layout import layout

    if not (state_dir / "layout.json").exists():
        return None
    driver = detect()
    if driver is None:
        return None
    return ServerMeter(driver, layout(state_dir).instance)
