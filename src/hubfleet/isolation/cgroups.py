"""Memory, CPU and process-count limits per user server, through the kernel's cgroup files.

Only the files: no cgcreate, no systemd, so the same code runs on a bare v1 host, a v2 host, and in
containers where neither tool exists. The daemon (root) creates one group per server, the launcher writes
its own pid into `procs_files()` before it drops privileges and execs, and the daemon reads the kill
counters to record "limit reached" events.

Where groups live: directly under each hierarchy's root (e.g. /sys/fs/cgroup/memory/hubfleet/...). Checked
on a v1 kernel whose own processes sit in /process_api/<id>: a group created at the memory root enforces its
limit (a process limited to 100M is OOM-killed at ~100M). The "killed at 300M" report is v1 charge
accounting, not the group's place: pages a process touched before it was moved stay charged to its old
group (memory.move_charge_at_immigrate is gone from recent kernels: writing it gives EINVAL), so a process
added after allocating 200M dies at 200M + the limit. Hence the launcher joins the group before it execs
the server; `Group.add` on a running process limits only what it allocates afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from hubfleet.units import parse_bytes

PERIOD_US = 100_000
CONTROLLERS = ("memory", "cpu", "pids")
ENABLE = "+memory +cpu +pids"  # for cgroup.subtree_control (v2)
V1_CPU_NAMES = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Writes raced by a concurrent remove() of a shared ancestor are retried this many times.
_CREATE_ATTEMPTS = 5


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None  # hard memory limit; swap must not let a group exceed it
    cpu_cores: float | None = None  # CFS quota, e.g. 0.5 = half a core
    pids: int | None = None  # max processes+threads in the group

    def __post_init__(self) -> None:
        # Zero or negative values would make the kernel refuse the write or wedge the server at start.
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ValueError(f"memory limit must be positive, not {self.memory_bytes}")
        if self.cpu_cores is not None and not self.cpu_cores >= 0.01:
            raise ValueError(
                f"cpu limit must be at least 0.01 cores (the kernel's 1 ms quota), not {self.cpu_cores}"
            )
        if self.pids is not None and self.pids < 1:
            raise ValueError(f"pids limit must be at least 1, not {self.pids}")

    def cpu_quota_us(self) -> int | None:
        return None if self.cpu_cores is None else max(1000, round(self.cpu_cores * PERIOD_US))


def parse_memory(text: str) -> int:
    """'512M', '2G', '1Gi', '100K', '3T', '1.5G', plain bytes '1048576' -> bytes.

    K/M/G/T are powers of 1024, as JupyterHub's mem_limit reads them; the one parser of memory sizes
    (`hubfleet.units.parse_bytes`, also behind the fleet files' validation and rendering), so one config value
    means the same limit to the hub, to KubeSpawner and to the cgroup.
    """
    return parse_bytes(text)


def _check_parts(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The only guard between a hub or user name and a directory the daemon (root) creates and removes."""
    if not parts:
        raise ValueError("a cgroup needs at least one name")
    for part in parts:
        if not isinstance(part, str) or not _PART.fullmatch(part):
            raise ValueError(
                f"cgroup name {part!r}: 1-64 letters, digits, '.', '_' or '-', first a letter or digit"
            )
    return parts


def _write(path: Path, value: str) -> None:
    """One write(2) per value, as cgroup files expect. O_CREAT is a no-op on cgroupfs (the kernel made the
    file with the group) and lets a plain directory laid out like a cgroup root stand in for it in tests."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_keyed(path: Path) -> dict[str, int]:
    """'key N' lines (memory.events, pids.events, memory.oom_control); {} when the file is missing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    values = {}
    for line in text.splitlines():
        key, _, number = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(number)
    return values


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


class Group(ABC):
    """One user server's group: a directory per hierarchy (v1: memory, cpu, pids; v2: one)."""

    def __init__(self, driver: CgroupDriver, parts: tuple[str, ...]) -> None:
        self.driver = driver
        self.parts = _check_parts(parts)
        self.dirs = [base.joinpath(*self.parts) for base in driver.bases()]
        # Ancestors this object made, the only ones remove() may take away (an operator may have put a
        # limit for all of hubfleet on a pre-existing parent).
        self._made: list[Path] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'/'.join(self.parts)!r})"

    def create(self, limits: Limits) -> None:
        """Idempotent, so a restarted daemon can re-apply limits to a server that is still running."""
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                for base in self.driver.bases():
                    self._mkdirs(base)
                self._apply(limits)
                return
            except FileNotFoundError:
                # Another group's remove() took a shared empty ancestor between our mkdirs: start over.
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise

    def _mkdirs(self, base: Path) -> None:
        for depth in range(1, len(self.parts) + 1):
            directory = base.joinpath(*self.parts[:depth])
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            if depth < len(self.parts):
                self._made.append(directory)

    @abstractmethod
    def _apply(self, limits: Limits) -> None: ...

    def procs_files(self) -> list[Path]:
        """Where a launcher writes its own pid, before it allocates anything (see the module docstring)."""
        return [path / "cgroup.procs" for path in self.dirs]

    def add(self, pid: int) -> None:
        """Moves a running process; v1 keeps charging memory it already touched to its old group."""
        for procs in self.procs_files():
            _write(procs, str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(FileNotFoundError):
                found.update(int(line) for line in procs.read_text().split())
        return sorted(found)

    @abstractmethod
    def oom_kills(self) -> int: ...

    def pids_refused(self) -> int:
        """Forks refused at pids.max, which the process sees only as EAGAIN from fork/clone."""
        return sum(_read_keyed(path / "pids.events").get("max", 0) for path in self.dirs)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Signals every process, round after round, since a process may fork between a read and a kill;
        each pid once, so a server shutting down on SIGTERM is not interrupted by more of them.

        Bounded (about 2 s) so a stuck process cannot hang the daemon; remove() then reports the group busy.
        """
        signalled: set[int] = set()
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in set(pids) - signalled:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                signalled.add(pid)
            time.sleep(0.02)

    def remove(self) -> None:
        """Kills what is left, then rmdirs the group; idempotent. Never touches an ancestor that holds
        anything (the kernel refuses to rmdir a group with children or processes)."""
        self.kill_all()
        for path in self.dirs:
            self._rmdir(path)
        for directory in sorted(self._made, key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError:
                continue  # busy with another group, or gone: best effort
            self._made.remove(directory)

    @staticmethod
    def _rmdir(path: Path) -> None:
        # A SIGKILLed process leaves the group only once it has exited; give it a moment.
        for attempt in range(50):
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as error:
                if error.errno != errno.EBUSY or attempt == 49:
                    raise
                time.sleep(0.02)


class GroupV1(Group):
    @property
    def _memory(self) -> Path:
        return self.dirs[0]

    @property
    def _cpu(self) -> Path:
        return self.dirs[1]

    @property
    def _pids(self) -> Path:
        return self.dirs[2]

    def _apply(self, limits: Limits) -> None:
        self._apply_memory(limits.memory_bytes)
        quota = limits.cpu_quota_us()
        _write(self._cpu / "cpu.cfs_period_us", str(PERIOD_US))
        _write(self._cpu / "cpu.cfs_quota_us", str(-1 if quota is None else quota))
        _write(self._pids / "pids.max", "max" if limits.pids is None else str(limits.pids))

    def _apply_memory(self, limit: int | None) -> None:
        """memory+swap equal to memory, so swap cannot stretch the limit. The kernel keeps memory <= memsw at
        every step: raising writes memsw first, lowering (including the first write) memory first."""
        memory = self._memory / "memory.limit_in_bytes"
        memsw = self._memory / "memory.memsw.limit_in_bytes"
        value = "-1" if limit is None else str(limit)
        if not memsw.exists():
            _write(memory, value)
        elif limit is None or limit > _read_int(memsw):
            _write(memsw, value)
            _write(memory, value)
        else:
            _write(memory, value)
            _write(memsw, value)
        # Swapping a group at its limit only delays the OOM kill while slowing the machine for everyone.
        with contextlib.suppress(OSError):
            _write(self._memory / "memory.swappiness", "0")

    def oom_kills(self) -> int:
        control = _read_keyed(self._memory / "memory.oom_control")
        if "oom_kill" in control:  # kernel >= 4.13
            return control["oom_kill"]
        # Older kernels count only limit hits, not kills: report "at least one" once the limit was reached.
        failed = _read_int(self._memory / "memory.failcnt") + _read_int(self._memory / "memory.memsw.failcnt")
        return int(failed > 0 or control.get("under_oom", 0) > 0)


class GroupV2(Group):
    driver: CgroupV2

    def _apply(self, limits: Limits) -> None:
        path = self.dirs[0]
        # A group gets a controller's files only if every ancestor enables it for its children, top down;
        # existing ancestors too (made by an operator, or before a controller was added here).
        self.driver.enable_at_root()
        for depth in range(1, len(self.parts)):
            _write(self.driver.root.joinpath(*self.parts[:depth], "cgroup.subtree_control"), ENABLE)
        if limits.memory_bytes is None:
            _write(path / "memory.max", "max")
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "max")
        else:
            _write(path / "memory.max", str(limits.memory_bytes))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
        quota = limits.cpu_quota_us()
        _write(path / "cpu.max", f"{'max' if quota is None else quota} {PERIOD_US}")
        _write(path / "pids.max", "max" if limits.pids is None else str(limits.pids))

    def oom_kills(self) -> int:
        return _read_keyed(self.dirs[0] / "memory.events").get("oom_kill", 0)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """cgroup.kill (Linux >= 5.14) kills the whole subtree atomically, forks included."""
        kill = self.dirs[0] / "cgroup.kill"
        if sig == signal.SIGKILL and kill.exists():
            _write(kill, "1")
            for _ in range(100):
                if not self.pids():
                    return
                time.sleep(0.02)
        super().kill_all(sig)


class CgroupDriver(ABC):
    version: int

    def __init__(self, root: Path) -> None:
        self.root = root

    @abstractmethod
    def bases(self) -> list[Path]:
        """The hierarchy roots a group has a directory under, in a fixed order."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def group(self, *parts: str) -> Group: ...


class CgroupV1(CgroupDriver):
    version = 1

    def __init__(self, root: Path, cpu_name: str = "cpu") -> None:
        super().__init__(root)
        self.cpu_name = cpu_name  # "cpu" or "cpu,cpuacct", whichever this host mounts

    def bases(self) -> list[Path]:
        return [self.root / "memory", self.root / self.cpu_name, self.root / "pids"]

    def describe(self) -> str:
        return f"cgroup v1 (memory, cpu, pids) at {self.root}"

    def group(self, *parts: str) -> GroupV1:
        return GroupV1(self, parts)


class CgroupV2(CgroupDriver):
    version = 2

    def bases(self) -> list[Path]:
        return [self.root]

    def describe(self) -> str:
        return f"cgroup v2 (memory, cpu, pids) at {self.root}"

    def group(self, *parts: str) -> GroupV2:
        return GroupV2(self, parts)

    def enable_at_root(self) -> None:
        """Only when missing: the root's subtree_control is the host's (systemd's) to manage."""
        enabled = set((self.root / "cgroup.subtree_control").read_text().replace("+", "").split())
        if not set(CONTROLLERS) <= enabled:
            _write(self.root / "cgroup.subtree_control", ENABLE)


def _writable_dir(path: Path, marker: str) -> bool:
    return (path / marker).exists() and os.access(path, os.W_OK)


def detect(root: Path = Path("/sys/fs/cgroup")) -> CgroupDriver | None:
    """The driver for this host's cgroups, or None when limits cannot be applied (not root, no cgroups).

    A hybrid host (v1 controllers plus an empty cgroup2 at root/unified) is v1: v2 counts only when the
    root itself lists all three controllers.
    """
    try:
        controllers = set((root / "cgroup.controllers").read_text().split())
    except OSError:
        controllers = set()
    if set(CONTROLLERS) <= controllers and os.access(root, os.W_OK):
        return CgroupV2(root)
    if not (
        _writable_dir(root / "memory", "memory.limit_in_bytes")
        and _writable_dir(root / "pids", "cgroup.procs")
    ):
        return None
    for name in V1_CPU_NAMES:
        if _writable_dir(root / name, "cpu.cfs_quota_us"):
            return CgroupV1(root, name)
    return None
