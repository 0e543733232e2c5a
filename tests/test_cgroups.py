"""Per-server limits through cgroups: real processes hitting real limits on this host's cgroups (skipped when
not root or without cgroups), the v2 driver against a directory laid out like a cgroup2 root, and the parsing
and name checks that stand between a hub's config and directories the daemon creates as root."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from hubfleet.isolation.cgroups import CgroupDriver, CgroupV1, CgroupV2, Group, Limits, detect, parse_memory

MiB = 1024**2
GiB = 1024**3


# ---------------------------------------------------------------------------------------------------------
# Real processes in real groups (root only)


@pytest.fixture
def driver() -> CgroupDriver:
    if os.geteuid() != 0:
        pytest.skip("cgroup limits need root (the daemon creates groups as root)")
    found = detect()
    if found is None:
        pytest.skip("no writable cgroup v2 root or v1 memory/cpu/pids hierarchies at /sys/fs/cgroup")
    return found


@pytest.fixture
def make_group(driver: CgroupDriver) -> Iterator[Callable[[Limits], Group]]:
    """Groups unique to this test (tests run in parallel), removed even when the test fails."""
    made: list[Group] = []

    def make(limits: Limits) -> Group:
        group = driver.group("hubfleet-test", f"{os.getpid()}-{uuid4().hex[:8]}")
        made.append(group)
        group.create(limits)
        return group

    yield make
    for group in made:
        group.remove()
        # The shared parent may be left by a parallel test that made it; the kernel refuses to rmdir it
        # while another test's group is inside, so this never takes anything from under a running test.
        for procs in group.procs_files():
            with contextlib.suppress(OSError):
                procs.parent.parent.rmdir()


@pytest.fixture
def spawn(make_group: Callable[[Limits], Group]) -> Iterator[Callable[[Group, str], subprocess.Popen[str]]]:
    """A Python child moved into the group while it waits on stdin, so everything it allocates after "go"
    is charged to the group; stopped by its pid at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(group: Group, code: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        group.add(process.pid)
        members = group.pids()
        assert process.pid in members
        assert os.getpid() not in members  # the test itself never runs under the limits
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_memory_limit_kills_the_process_near_the_limit(
    make_group: Callable[[Limits], Group], spawn: Callable[[Group, str], subprocess.Popen[str]]
) -> None:
    """300 MB in 10 MB steps against a 100M limit: the OOM killer ends it near 100 MB, not at 300 MB."""
    group = make_group(Limits(memory_bytes=parse_memory("100M")))
    assert group.oom_kills() == 0
    process = spawn(
        group,
        "import sys\n"
        "sys.stdin.readline()\n"
        "blocks = []\n"
        "for step in range(30):\n"
        "    blocks.append(b'x' * (10 << 20))\n"
        "    print(step + 1, flush=True)\n"
        "print('survived', flush=True)\n",
    )
    out, _ = process.communicate("go\n", timeout=120)
    assert process.returncode == -signal.SIGKILL, out
    steps = [int(line) for line in out.split() if line.isdigit()]
    assert "survived" not in out
    assert max(steps, default=0) <= 12, f"reached {max(steps)} x 10 MB under a 100M limit"
    assert group.oom_kills() >= 1


def test_pids_limit_refuses_forks(
    make_group: Callable[[Limits], Group], spawn: Callable[[Group, str], subprocess.Popen[str]]
) -> None:
    """At most 100 sleeping children, each blocked on a pipe and killed by the parent at the end, so even a
    broken limit leaves nothing behind."""
    group = make_group(Limits(pids=20))
    process = spawn(
        group,
        "import os, sys\n"
        "sys.stdin.readline()\n"
        "children, refused = [], 0\n"
        "r, w = os.pipe()\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except BlockingIOError:\n"
        "        refused += 1\n"
        "        continue\n"
        "    if pid == 0:\n"
        "        os.close(w)\n"
        "        os.read(r, 1)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "for pid in children:\n"
        "    os.kill(pid, 9)\n"
        "for pid in children:\n"
        "    os.waitpid(pid, 0)\n"
        "print(len(children), refused, flush=True)\n",
    )
    out, _ = process.communicate("go\n", timeout=120)
    assert process.returncode == 0, out
    started, refused = map(int, out.split())
    assert started < 20
    assert refused >= 1
    assert group.pids_refused() >= 1


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_cpu_limit_throttles_a_busy_loop(
    make_group: Callable[[Limits], Group], spawn: Callable[[Group, str], subprocess.Popen[str]]
) -> None:
    """An enforcement check with a wide margin (0.2 cores allowed, fail above 0.6), not a benchmark."""
    group = make_group(Limits(cpu_cores=0.2))
    process = spawn(
        group,
        "import sys, time\n"
        "sys.stdin.readline()\n"
        "print('start', flush=True)\n"
        "end = time.monotonic() + 1.5\n"
        "while time.monotonic() < end:\n"
        "    pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n",
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.stdout.readline() == "start\n"
    cpu0, wall0 = _cpu_seconds(process.pid), time.monotonic()
    assert process.stdout.readline() == "done\n"
    cpu1, wall1 = _cpu_seconds(process.pid), time.monotonic()
    process.stdin.write("\n")
    process.stdin.flush()
    assert process.wait(timeout=30) == 0
    assert cpu1 - cpu0 < 0.6 * (wall1 - wall0), f"{cpu1 - cpu0:.2f} s of CPU in {wall1 - wall0:.2f} s"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # exited, waiting for its new parent to reap it


def test_kill_all_and_remove_leave_nothing(
    make_group: Callable[[Limits], Group], spawn: Callable[[Group, str], subprocess.Popen[str]]
) -> None:
    group = make_group(Limits(memory_bytes=parse_memory("200M"), cpu_cores=0.5, pids=50))
    group.create(Limits(memory_bytes=parse_memory("200M"), cpu_cores=0.5, pids=50))  # idempotent
    process = spawn(
        group,
        "import subprocess, sys\n"
        "sys.stdin.readline()\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) for _ in range(3)]\n"
        "print(*[kid.pid for kid in kids], flush=True)\n"
        "sys.stdin.readline()\n",
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    grandchildren = [int(pid) for pid in process.stdout.readline().split()]
    assert len(grandchildren) == 3
    assert {process.pid, *grandchildren} <= set(group.pids())

    group.kill_all()
    group.remove()
    assert process.wait(timeout=10) == -signal.SIGKILL
    assert all(_gone(pid) for pid in grandchildren)
    assert not any(procs.parent.exists() for procs in group.procs_files())
    assert group.pids() == []
    group.remove()  # idempotent


def test_host_driver_describes_itself(driver: CgroupDriver) -> None:
    assert driver.describe() == f"cgroup v{driver.version} (memory, cpu, pids) at /sys/fs/cgroup"
    assert len(driver.group("hubfleet-test", "x").procs_files()) == (3 if driver.version == 1 else 1)


# ---------------------------------------------------------------------------------------------------------
# cgroup v2 files, in a directory laid out like a cgroup2 root


def _kernel_files(group_dir: Path) -> None:
    """What the kernel puts in a new v2 group once its parent enables memory, cpu and pids."""
    group_dir.mkdir(parents=True, exist_ok=True)
    for name, text in {
        "cgroup.procs": "",
        "cgroup.kill": "",
        "memory.max": "max\n",
        "memory.swap.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        "cpu.max": "max 100000\n",
        "pids.max": "max\n",
        "pids.events": "max 0\n",
    }.items():
        (group_dir / name).write_text(text)


def _v2_root(tmp_path: Path, subtree_control: str = "") -> Path:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text(subtree_control)
    return tmp_path


def test_v2_writes_limits_and_reads_counters(tmp_path: Path) -> None:
    """The kernel's cgroup2 is not mounted on this machine (v1 controllers, plus an empty cgroup2 at
    /sys/fs/cgroup/unified), so the driver runs against a directory laid out like a cgroup2 root, with each
    group's files created by the test as the kernel would; the test checks the exact bytes written."""
    driver = detect(_v2_root(tmp_path))
    assert isinstance(driver, CgroupV2) and driver.version == 2
    assert driver.describe() == f"cgroup v2 (memory, cpu, pids) at {tmp_path}"
    leaf = tmp_path / "hubfleet" / "inst" / "acct"
    _kernel_files(leaf)
    group = driver.group("hubfleet", "inst", "acct")

    group.create(Limits(memory_bytes=parse_memory("100M"), cpu_cores=0.2, pids=20))
    assert (leaf / "memory.max").read_bytes() == b"104857600"
    assert (leaf / "memory.swap.max").read_bytes() == b"0"
    assert (leaf / "cpu.max").read_bytes() == b"20000 100000"
    assert (leaf / "pids.max").read_bytes() == b"20"
    for ancestor in (tmp_path, tmp_path / "hubfleet", tmp_path / "hubfleet" / "inst"):
        assert (ancestor / "cgroup.subtree_control").read_bytes() == b"+memory +cpu +pids"
    # The leaf holds the processes: v2 allows no processes in a group that enables controllers below it.
    assert not (leaf / "cgroup.subtree_control").exists()

    assert group.procs_files() == [leaf / "cgroup.procs"]
    group.add(4242)
    assert (leaf / "cgroup.procs").read_bytes() == b"4242"
    (leaf / "cgroup.procs").write_text("4242\n4243\n")
    assert group.pids() == [4242, 4243]

    assert (group.oom_kills(), group.pids_refused()) == (0, 0)
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n")
    (leaf / "pids.events").write_text("max 7\n")
    assert (group.oom_kills(), group.pids_refused()) == (2, 7)

    (leaf / "cgroup.procs").write_text("")  # nothing to signal: cgroup.kill alone must do it
    group.kill_all()
    assert (leaf / "cgroup.kill").read_bytes() == b"1"


def test_v2_no_limits_means_max_and_root_controllers_are_left_alone(tmp_path: Path) -> None:
    """A root that already enables the controllers (as systemd's does) is not written to."""
    driver = detect(_v2_root(tmp_path, "cpu memory pids\n"))
    assert isinstance(driver, CgroupV2)
    leaf = tmp_path / "hub" / "acct"
    _kernel_files(leaf)
    driver.group("hub", "acct").create(Limits())
    assert (tmp_path / "cgroup.subtree_control").read_text() == "cpu memory pids\n"
    assert (tmp_path / "hub" / "cgroup.subtree_control").read_bytes() == b"+memory +cpu +pids"
    assert (leaf / "memory.max").read_bytes() == b"max"
    assert (leaf / "memory.swap.max").read_bytes() == b"max"
    assert (leaf / "cpu.max").read_bytes() == b"max 100000"
    assert (leaf / "pids.max").read_bytes() == b"max"


def test_detect(tmp_path: Path) -> None:
    assert detect(tmp_path / "missing") is None
    assert detect(tmp_path) is None
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")  # no pids: cannot enforce every limit
    assert detect(tmp_path) is None

    # A hybrid host: v1 controllers, cpu mounted together with cpuacct, and an empty cgroup2 beside them.
    v1 = tmp_path / "v1"
    (v1 / "unified").mkdir(parents=True)
    (v1 / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    for hierarchy, marker in (
        ("memory", "memory.limit_in_bytes"),
        ("cpu,cpuacct", "cpu.cfs_quota_us"),
        ("pids", "cgroup.procs"),
    ):
        (v1 / hierarchy).mkdir()
        (v1 / hierarchy / marker).write_text("")
    driver = detect(v1)
    assert isinstance(driver, CgroupV1) and driver.version == 1
    assert [procs.parent for procs in driver.group("a", "b").procs_files()] == [
        v1 / "memory" / "a" / "b",
        v1 / "cpu,cpuacct" / "a" / "b",
        v1 / "pids" / "a" / "b",
    ]
    (v1 / "pids" / "cgroup.procs").unlink()
    assert detect(v1) is None


# ---------------------------------------------------------------------------------------------------------
# Names and sizes


@pytest.mark.parametrize(
    "parts",
    [
        (),
        ("",),
        ("..",),
        (".",),
        ("a/b",),
        ("ok", ".."),
        ("x" * 65,),
        (".hidden",),
        ("-x",),
        ("a b",),
        ("a\n",),
    ],
)
def test_group_rejects_unsafe_names(tmp_path: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="cgroup"):
        CgroupV2(tmp_path).group(*parts)


def test_group_accepts_plain_names_and_stays_under_the_root(tmp_path: Path) -> None:
    for driver in (CgroupV2(tmp_path), CgroupV1(tmp_path)):
        group = driver.group("hubfleet", "x" * 64, "uni-a.staging_2", "Ada")
        for procs in group.procs_files():
            assert procs.resolve().is_relative_to(tmp_path.resolve())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MiB),
        ("2G", 2 * GiB),
        ("1Gi", GiB),
        ("100K", 100 * 1024),
        ("3T", 3 * 1024**4),
        ("1048576", 1048576),
        ("1.5G", 3 * GiB // 2),
        (" 64Mi\n", 64 * MiB),
    ],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "G", "12X", "1.5", "-1G", "1 G", "1g", "1GB", "abc", "1e9", "0x10"])
def test_parse_memory_names_the_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_memory(text)


@pytest.mark.parametrize(
    "kwargs",
    [{"memory_bytes": 0}, {"cpu_cores": 0.0}, {"cpu_cores": -1.0}, {"cpu_cores": float("nan")}, {"pids": 0}],
)
def test_limits_reject_values_the_kernel_would_refuse(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Limits(**kwargs)  # type: ignore[arg-type]
