"""Stopping process trees by pid and process group (never by name)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import psutil


def process_tree(pids: list[int]) -> list[psutil.Process]:
    """The given processes and all their descendants that are still alive."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found[pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            continue
    return list(found.values())


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        # Processes started in their own session lead a group of their own: signal that group too.
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError, psutil.Error):
        pass


def terminate_tree(procs: list[psutil.Process], grace: float = 5.0) -> list[int]:
    """SIGTERM every process, wait up to `grace` seconds, SIGKILL the rest; returns pids that were killed."""
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=2)
    return [p.pid for p in alive]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


STABLE_AFTER = 60.0
"""A process that ran this long before it died starts its restart count afresh."""


def backoff_delay(attempt: int) -> float:
    """1, 2, 4, ... seconds, capped at one minute."""
    return float(min(60, 2 ** max(0, attempt - 1)))


async def stop_group(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGTERM to the process group a child leads (started with start_new_session), SIGKILL after `timeout`
    s; returns once the child is reaped."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
