"""Helpers for integration tests: copies of the demo fleet on free ports, the real CLI, and leak checks."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from hubfleet.isolation.accounts import fleet_accounts, remove_account
from hubfleet.ports import RANGE_ENV, free_port

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo-fleet"
NO_STATE = shutil.ignore_patterns(".hubfleet", ".hubfleet-data")
"""copytree ignore for DEMO: after `make demo` it holds its state dir, which no copy may take along."""
HUBFLEET = Path(sys.executable).parent / "hubfleet"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [  # what Debian's Chromium needs on these machines (as root, no GPU, a closed network)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


TRACE = os.environ.get("HF_TEST_TRACE")
"""A file to which every CLI run and wait_for appends its wall time (finding where the suite waits)."""


def _trace(what: str, started: float) -> None:
    if TRACE:
        caller = sys._getframe(2)
        with open(TRACE, "a") as out:
            where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
            out.write(f"{time.monotonic() - started:8.2f} {where} {what}\n")


def wait_for(predicate: Callable[[], Any], timeout: float = 90, interval: float = 0.3) -> Any:
    """Poll until predicate() returns something true, and return it; fail the test after `timeout` s."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            _trace("wait_for", started)
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


WORKER_PORTS = 500
"""Each pytest-xdist worker has its own 1,000 ports of 20000-29999: the first half for the ports the tests
write into hub files, the second for the internal ports its fleets pick (HUBFLEET_INTERNAL_PORTS)."""
WORKER = int(re.sub(r"\D", "", os.environ.get("PYTEST_XDIST_WORKER", "")) or 0)
WORKER_BASE = 20000 + (WORKER % 10) * 2 * WORKER_PORTS
if "PYTEST_XDIST_WORKER" in os.environ:  # benchmarks and single runs keep the default (4,500 ports)
    os.environ[RANGE_ENV] = f"{WORKER_BASE + WORKER_PORTS}-{WORKER_BASE + 2 * WORKER_PORTS - 1}"
_picked = itertools.count(random.randrange(WORKER_PORTS))
"""From a random place in the slice: two sessions at once (without xdist, or both with a gw0) would otherwise
both try the same ports first, and both find them free before either hub binds."""


TEST_ENV = {"HUBFLEET_SERVER_TEMPLATE_DELAY": "120"}
"""What every fleet of the tests runs with (a test's own `env` overrides it). The servers' fork template
starts at once when a server starts, else 120 s after its hub instead of 10: most test fleets never start a
server, and the template's imports (~5 s of CPU, a fifth of a small fleet's start) were wasted."""


def hubfleet_env() -> dict[str, str]:
    """This environment without the caller's HUBFLEET_* settings, but with the worker's port range and
    TEST_ENV."""
    own = {k: v for k, v in os.environ.items() if not k.startswith("HUBFLEET_") or k == RANGE_ENV}
    return own | TEST_ENV


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports, free now, for the hubs and front doors of a fleet a test writes.

    They come from this worker's own slice of 20000-29999, below the kernel's ephemeral range (32768-60999
    here), from which every bind to port 0 and every outgoing connection draws: a port picked from there
    and written into a hub file was, with six workers, taken by another worker's hub before this one
    started. Here no other worker picks it, and nothing else is handed it."""
    ports: list[int] = []
    for _ in range(WORKER_PORTS):
        port = WORKER_BASE + next(_picked) % WORKER_PORTS
        if port not in ports and _free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    return ports + [free_port(set(ports)) for _ in range(count - len(ports))]


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def copy_demo_fleet(
    dest: Path, keep: set[str] | None = None, *, front_door: bool = False, desk: bool = False
) -> Path:
    """The demo fleet in `dest` with every hub (and the console) on a free port; `keep` limits it to those
    hub files (paths relative to the fleet, e.g. 'communities/uni-a/hubs/staging.yaml').

    Without `front_door` the copy has none (hubs at http://127.0.0.1:PORT, as most tests want); with it, the
    demo's front door listens on two free loopback ports.

    The copy keeps the demo's support desk without its rota and second line, which name the console accounts
    the copy drops; with `desk` it keeps them too, and the caller writes accounts with ada and lin."""
    shutil.copytree(DEMO, dest, ignore=NO_STATE)
    hub_files = sorted(dest.glob("communities/*/hubs/*.yaml"))
    for path in hub_files:
        if keep is not None and str(path.relative_to(dest)) not in keep:
            path.unlink()
    remaining = sorted(dest.glob("communities/*/hubs/*.yaml"))
    for path, port in zip(remaining, free_ports(len(remaining)), strict=True):
        text = re.sub(r"(?m)^port: \d+$", f"port: {port}", path.read_text())
        path.write_text(text if front_door else re.sub(r"(?m)^domain: .*\n", "", text))
    # the demo's fixed console port would collide between tests (the copies take a free one), and its
    # console accounts name communities `keep` may drop (tests that need accounts write their own)
    fleet_yaml = dest / "fleet.yaml"
    text = drop_section(drop_section(fleet_yaml.read_text(), "monitoring"), "console")
    if front_door:
        http_port, https_port = free_ports(2)
        text = re.sub(r"(?m)^  http_port: \d+$", f"  http_port: {http_port}", text)
        text = re.sub(r"(?m)^  https_port: \d+$", f"  https_port: {https_port}", text)
    else:
        text = drop_section(text, "front_door")
    if not desk:
        rota = r"(?m)^  # first line takes turns.*\n  rota:\n(?:    .*\n)*  second_line: .*\n"
        text = re.sub(rota, "", text)
    # the support desk's SMTP listener: a free port too (a fixed one collides between tests and `make demo`)
    text = re.sub(r"(?m)^(  listen: \{host: 127\.0\.0\.1, port: )\d+\}$", rf"\g<1>{free_ports(1)[0]}}}", text)
    fleet_yaml.write_text(text)
    for community in dest.glob("communities/*"):
        if not list(community.glob("hubs/*.yaml")):
            shutil.rmtree(community)
        elif keep is not None and len(list(community.glob("hubs/*.yaml"))) < len(hub_files_of(community)):
            # the demo's events name its prod hubs: without them the community's events go too
            path = community / "community.yaml"
            path.write_text(drop_section(path.read_text(), "events"))
    return dest


def hub_files_of(community: Path) -> list[Path]:
    """The demo's hub files of the community `community` (a copy's directory of the same name)."""
    return sorted((DEMO / "communities" / community.name).glob("hubs/*.yaml"))


def copy_demo_without_front_door(dest: Path) -> Path:
    """The demo fleet without its front door: no `front_door` in fleet.yaml, no `domain` lines in the prod
    hubs (their files' last lines, so every other line keeps its number); for tests of config errors."""
    shutil.copytree(DEMO, dest, ignore=NO_STATE)
    fleet_yaml = dest / "fleet.yaml"
    fleet_yaml.write_text(drop_section(fleet_yaml.read_text(), "front_door"))
    for path in dest.glob("communities/*/hubs/*.yaml"):
        path.write_text(
            re.sub(r"(?m)^(# served by the fleet's front door.*\n)?domain: .*\n", "", path.read_text())
        )
    return dest


def drop_section(yaml_text: str, key: str) -> str:
    """`yaml_text` without the top-level `key:` and its indented (or comment) lines."""
    return re.sub(rf"(?m)^{re.escape(key)}:.*\n(?:(?:[ \t#].*)?\n)*", "", yaml_text)


def hubfleet(
    *args: str,
    fleet: Path,
    timeout: float = 240,
    check: bool = False,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `hubfleet` command, without the caller's HUBFLEET_* variables but with `env` added
    (e.g. HUBFLEET_AGE_IDENTITY) and `input` on stdin."""
    env = hubfleet_env() | (env or {})
    started = time.monotonic()
    result = subprocess.run(
        [str(HUBFLEET), *args, "--fleet", str(fleet)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
    )
    _trace(f"hubfleet {' '.join(args)[:80]}", started)
    if check and result.returncode != 0:
        raise AssertionError(
            f"hubfleet {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def daemon_status(fleet: Path) -> dict[str, Any]:
    return json.loads((fleet / ".hubfleet" / "daemon.json").read_text())


def fleet_processes(fleet: Path) -> list[psutil.Process]:
    """Every live process that belongs to this fleet: started from or working inside its directory.

    Used only to *find* leaks in assertions and teardown; processes are stopped by pid."""
    root = str(fleet.resolve())
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
        except (psutil.Error, OSError):
            continue
        if proc.pid != os.getpid() and (root in cmd or cwd.startswith(root)) and alive(proc):
            found.append(proc)
    return found


def command_of(proc: psutil.Process) -> str:
    """The command line, or "" once the process has gone (it may exit between a scan and a look)."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return ""


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a dead process whose parent, possibly init here, has not reaped it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_leftovers(fleet: Path) -> list[str]:
    """Stop (by pid) whatever a failed test left running in this fleet; returns what was found."""
    leftovers = fleet_processes(fleet)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=5)
    return [" ".join(p.info["cmdline"] or []) for p in leftovers]


@contextlib.contextmanager
def running_fleet(root: Path, env: dict[str, str] | None = None):  # noqa: ANN201 - Iterator[Path]
    """`hubfleet up --detach` (with extra `env`, e.g. HUBFLEET_AGE_IDENTITY) for the block; `down`
    afterwards, and a leak check even when the block fails."""
    try:
        hubfleet("up", "--detach", fleet=root, env=env, check=True)
        yield root
    finally:
        hubfleet("down", fleet=root, env=env)
        leaks = kill_leftovers(root)
        remove_accounts(root)
        assert not leaks, f"processes left after down: {leaks}"


def remove_accounts(root: Path) -> list[str]:
    """The OS accounts (hubs and users) a fleet created as root, once it is down."""
    layout_file = root / ".hubfleet" / "layout.json"
    if os.geteuid() != 0 or not layout_file.exists():
        return []
    accounts = fleet_accounts(json.loads(layout_file.read_text())["instance"])
    for account in accounts:
        remove_account(account.name)
    return [account.name for account in accounts]


@contextlib.contextmanager
def passable_tempdir(prefix: str = "hubfleet-bench-"):  # noqa: ANN201 - Iterator[Path]
    """A temporary directory that hub and user accounts may pass through (0711), as they must reach the
    fleet's data directory inside it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.chmod(tmp, 0o711)
        yield Path(tmp)


def mark_deployed(root: Path) -> None:
    """Record every hub as deployed with its current desired state, as `hubfleet up` does."""
    from hubfleet.backends import backends_for
    from hubfleet.config.validate import load_fleet
    from hubfleet.deploy.state import record
    from hubfleet.store import open_store

    fleet = load_fleet(root)
    state = root / ".hubfleet"
    backends = backends_for(fleet, state)
    with open_store(state) as store:
        for hub in fleet.hubs.values():
            backend = backends[fleet.clusters[hub.cluster].kind]
            rendered, digest = backend.render(hub), backend.config_hash(hub)
            record(store, fleet, hub, config_hash=digest, rendered=rendered, result="ok", actor="test")


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in a fleet file (which must hold it) with `new`."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def new_identity(path: Path) -> str:
    """A throwaway age identity file; returns its public recipient."""
    from pyrage import x25519

    key = x25519.Identity.generate()
    path.write_text(f"# test identity\n{key}\n")
    path.chmod(0o600)
    return str(key.to_public())


def press_start(client: Any, spawn_page: Any) -> Any:
    """On a hub with environments, GET /hub/spawn shows the options form: keep the preselected environment and
    press Start, as a person does (the form's action carries _xsrf). None when the page has no form."""
    import html
    import re
    from urllib.parse import urljoin

    form = re.search(r'id="spawn_form"\s+action="([^"]*)"', spawn_page.text)
    if not form:
        return None
    picked = re.search(r'name="environment" value="([^"]*)" checked', spawn_page.text)
    assert picked, spawn_page.text[:2000]
    started = client.post(
        urljoin(str(spawn_page.url), html.unescape(form.group(1))), data={"environment": picked.group(1)}
    )
    assert started.status_code in (200, 302), started.text[:500]
    return started
