"""Test-wide set-up for hubs that run as OS accounts of their own (hubfleet as root).

pytest makes its temporary directories private to the account running it (0700). A hub's service account and
its users' accounts must pass through them to reach the fleet's data directory, so every temporary directory
is made passable (0711: enter, never list). The accounts the fleets of this session created (their homes lie
under its temporary directories) are removed when the session ends; the `hfu-`/`hfh-` prefixes make any
leftover of a killed session easy to spot, and the next session removes those whose homes are gone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.tmpdir import TempPathFactory

import fleet_helpers  # noqa: F401  (gives this worker its own range of internal ports)
from hubfleet.isolation.accounts import DOOR_PREFIX, HUB_PREFIX, USER_PREFIX, remove_account

AS_ROOT = os.geteuid() == 0
_mktemp = TempPathFactory.mktemp


def _passable(path: Path) -> None:
    """0711 on `path` and on its ancestors up to the first one others may already pass (such as /tmp)."""
    for directory in (path, *path.parents):
        with contextlib.suppress(OSError):
            st = directory.stat()
            if st.st_mode & 0o001 or st.st_uid != os.geteuid():
                return
            os.chmod(directory, st.st_mode & 0o7777 | 0o711)


def _mktemp_passable(self: TempPathFactory, basename: str, numbered: bool = True) -> Path:
    path = _mktemp(self, basename, numbered)
    _passable(path)
    return path


if AS_ROOT:
    TempPathFactory.mktemp = _mktemp_passable  # type: ignore[method-assign]


def _test_accounts(under: Path) -> list[str]:
    return [
        entry.pw_name
        for entry in pwd.getpwall()
        if entry.pw_name.startswith((USER_PREFIX, HUB_PREFIX, DOOR_PREFIX))
        and entry.pw_gecos.startswith("hubfleet ")
        and Path(entry.pw_dir).is_relative_to(under)
    ]


@pytest.fixture(autouse=True, scope="session")
def _remove_test_accounts(tmp_path_factory: TempPathFactory) -> Iterator[None]:
    if not AS_ROOT:
        yield
        return
    base = tmp_path_factory.getbasetemp()
    root = next((p for p in base.parents if p.name.startswith("pytest-of-")), base)
    session = next((p for p in (base, *base.parents) if p.parent == root), base)  # this session's pytest-N
    for name in _test_accounts(root):  # left by a killed session (not this one's workers): homes gone
        home = Path(pwd.getpwnam(name).pw_dir)
        if not home.is_relative_to(session) and not home.exists():
            remove_account(name)
    yield
    for name in _test_accounts(base):
        remove_account(name)


SLOWEST_FIRST = (
    "test_event_ready_mode.py",
    "test_faults.py",
    "test_retire.py",
    "test_local_fleet.py",
    "test_staging_per_cluster.py",
    "test_plan_front_door.py",
    "test_backup_schedule.py",
    "test_monitor_integration.py",
    "test_support_demo.py",
    "test_event_report.py",
    "test_tickets_cli.py",
    "test_layout_migration.py",
    "test_deploy.py",
    "test_backup.py",
    "test_backup_faults.py",
    "test_front_door.py",
    "test_front_door_faults.py",
    "test_prober_front_door.py",
    "test_user_database.py",
    "test_login_forms.py",
    "test_auth_oidc.py",
    "test_isolation.py",
    "test_console_api.py",
    "test_single_account.py",
    "test_costs_demo.py",
    "test_console_daemon.py",
    "test_disk_usage.py",
    "test_metrics_export.py",
    "test_store_faults.py",
    "test_broker_hostile.py",
    "test_cost_watch.py",
    "test_usage_identity.py",
    "test_console_costs.py",
    "test_support_context.py",
    "test_support_hub.py",
)
"""The test files that take longest, started first so that `-n 4 --dist loadfile` does not end with one worker
still on a long file; the rest keep their order. From `pytest --durations=0` (2026-11-30) and the slowest
tests of the CI run of 2026-12-01 (a file with one test over a minute comes early)."""


def pytest_configure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:  # once, in the process that starts the workers
        _compile_sources()
    # pytest-xdist's --dist loadfile hands out the files with the most tests first unless told not to, which
    # put the slow integration files (a few long tests each) last: SLOWEST_FIRST was ignored and the run ended
    # with four fleets at once on two cores
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _compile_sources() -> None:
    """Byte-compile src/ once for the whole run. The tests start thousands of Python processes that import
    hubfleet (every CLI run, every daemon, the hubs' configs); where PYTHONDONTWRITEBYTECODE is set, as on
    the CI machines, none of them writes its .pyc, so each compiled every module it imported again: about
    0.15 s of CPU per process, minutes over the suite. py_compile writes them whatever that variable says,
    and skips the files that are up to date."""
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parent.parent / "src", quiet=2)  # errors show on import


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's order is kept
