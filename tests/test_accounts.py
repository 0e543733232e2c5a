"""OS accounts per hub user and per hub, their homes, and the launcher that starts a server as its account:
hostile names, real accounts (useradd/userdel, in parallel), real homes, real processes in a real cgroup."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hubfleet.isolation.accounts import (
    HUB_PREFIX,
    USER_PREFIX,
    Account,
    AccountError,
    check_hub_name,
    check_username,
    comment_for,
    ensure_account,
    ensure_home,
    fleet_accounts,
    home_dirname,
    hub_account,
    remove_account,
    user_account,
)
from hubfleet.isolation.launch import launcher_argv

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creates OS accounts: needs root")

TRICKY = [
    "alice", "Alice", "ALICE", "a.b@example.org", "A.b@example.org", "café", "cafe", "x\u0301", "用户",
    "%41", "A", "%2541", "%", ".x", "_x", "@x", "+x", "x.", "x~", "~x", "a" * 64, "a" * 65, "a" * 128,
    "A" * 128, "A" * 127 + "a", "😀" * 128, "😀" * 127 + "x", "x" + "😀" * 127, "%F0%9F%98%80", "😀",
]  # fmt: skip


def new_instance() -> str:
    return "t" + secrets.token_hex(4)[:7]


# --- names: no root needed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "a\\b", "a:b", "", "x" * 129, "\x00", "bob\n", " alice", "al ice", "alice\u00a0",
            "a\u200bb", "a\u202eb", "\x7f", "-rf", ".", "..", "e\u0301", 42, None, b"alice"],
)  # fmt: skip
def test_check_username_refuses(bad: object) -> None:
    with pytest.raises(AccountError) as caught:
        check_username(bad)
    assert len(str(caught.value)) < 160  # names the problem without echoing a long input


@pytest.mark.parametrize(
    "good", ["alice", "café", "用户", "a.b@example.org", "x" * 128, "Bob_1", ".x", "..."]
)
def test_check_username_accepts(good: str) -> None:
    assert check_username(good) == good


def test_check_username_quotes_a_short_prefix() -> None:
    with pytest.raises(AccountError, match=r"'x{40}'\.\.\.") as caught:
        check_username("x" * 100 + "/")
    assert "x" * 41 not in str(caught.value)


@pytest.mark.parametrize("bad", ["", "-a", "a-", "A", "a_b", "a" * 41, "a\n", "hub.x", 7])
def test_check_hub_name_refuses(bad: object) -> None:
    with pytest.raises(AccountError):
        check_hub_name(bad)


def test_check_hub_name_accepts() -> None:
    for name in ["a", "uni-a-staging", "a" * 40, "0x"]:
        assert check_hub_name(name) == name


def assert_account_name(name: str, prefix: str) -> None:
    assert name.startswith(prefix)
    assert 0 < len(name) <= 32
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert "--" not in name and not name.endswith("-")


def test_user_account_names() -> None:
    instance = "3fa2c9e1"
    assert user_account(instance, "staging", "alice").startswith("hfu-staging-alice-")
    long_hub, long_user = "h" * 39, "u" * 128
    for hub in ["staging", "uni-a-staging", long_hub, "a"]:
        for username in ["alice", long_user, "用户", "a.b@example.org", "Café", "x"]:
            name = user_account(instance, hub, username)
            assert_account_name(name, USER_PREFIX)
            assert user_account(instance, hub, username) == name  # deterministic
    assert "cafe" in user_account(instance, "hub", "Café")  # readable: accents stripped
    users = ["alice", "Alice", "ALICE", "café", "cafe", "cafè", "用户", "用戶", "a.b", "ab", "a-b", "a_b"]
    names = {user_account(instance, "hub", u) for u in users}
    assert len(names) == len(users)  # differ only in case or non-ASCII characters: still distinct
    assert user_account(instance, "hub", "alice") != user_account("3fa2c9e2", "hub", "alice")
    assert user_account(instance, "hub-a", "alice") != user_account(instance, "huba", "alice")
    with pytest.raises(AccountError):
        user_account(instance, "hub", "../x")
    with pytest.raises(AccountError):
        user_account("not hex!", "hub", "alice")


def test_hub_account_names() -> None:
    for hub in ["staging", "uni-a-staging", "h" * 40, "a"]:
        assert_account_name(hub_account("3fa2c9e1", hub), HUB_PREFIX)
    assert hub_account("3fa2c9e1", "hub") != hub_account("3fa2c9e2", "hub")
    assert hub_account("3fa2c9e1", "hub-a") != hub_account("3fa2c9e1", "huba")


def test_home_dirname_is_injective_and_safe() -> None:
    homes = {}
    for username in TRICKY:
        home = home_dirname(username)
        assert home not in (".", "..") and "/" not in home and "\0" not in home
        assert not home.startswith((".", "-"))
        assert 0 < len(home.encode()) <= 255
        assert homes.setdefault(home, username) == username, (
            f"{username!r} and {homes[home]!r} share {home!r}"
        )
    assert home_dirname("a.b@example.org") == "a.b@example.org"  # plain names stay readable
    assert home_dirname("Alice") == "%41lice"
    assert home_dirname("%41lice") == "%2541lice"


def test_home_dirname_worst_case_fits() -> None:
    """128 four-byte characters escape to 1536 bytes: the long form is cut and hashed, still distinct."""
    worst = ["😀" * 128, "😀" * 127 + "😁", "\U00020000" * 128]
    homes = [home_dirname(w) for w in worst]
    assert all(len(h.encode()) <= 255 for h in homes)
    assert len(set(homes)) == len(homes)


def test_comment_for() -> None:
    assert comment_for("3fa2c9e1", "staging", "user") == "hubfleet 3fa2c9e1 staging user"
    with pytest.raises(AccountError):
        comment_for("3fa2c9e1", "staging", "root")


def test_launcher_argv_is_isolated_python() -> None:
    argv = launcher_argv()
    assert argv[1:3] == ["-I", "-S"] and Path(argv[3]).name == "launch.py" and Path(argv[3]).is_absolute()
    source = Path(argv[3]).read_text()
    assert "hubfleet" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from"))
    )


# --- real accounts -----------------------------------------------------------------------------------------


@pytest.fixture
def instance() -> Iterator[str]:
    """A fleet instance of this test alone; every account it made is removed, pass or fail."""
    instance = new_instance()
    yield instance
    for account in fleet_accounts(instance):
        remove_account(account.name)
    assert fleet_accounts(instance) == []


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory accounts can traverse (pytest's tmp_path lies under root's private home)."""
    path = Path(tempfile.mkdtemp(prefix="hubfleet-accounts-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def make_user(instance: str, base: Path, username: str = "alice", hub: str = "hub") -> Account:
    name = user_account(instance, hub, username)
    return ensure_account(
        name, home=base / home_dirname(username), comment=comment_for(instance, hub, "user")
    )


@needs_root
def test_ensure_account_creates_a_nologin_account(instance: str, base: Path) -> None:
    account = make_user(instance, base)
    entry = pwd.getpwnam(account.name)
    assert (entry.pw_uid, entry.pw_gid, entry.pw_dir) == (account.uid, account.gid, str(base / "alice"))
    assert entry.pw_shell == "/usr/sbin/nologin"
    assert account.uid >= 1000 and account.gid >= 1000
    assert account.comment == f"hubfleet {instance} hub user"
    assert account.name not in Path("/etc/subuid").read_text()  # no subordinate uids for user namespaces
    assert make_user(instance, base) == account  # idempotent
    assert fleet_accounts(instance) == [account]
    hub = ensure_account(
        hub_account(instance, "hub"), home=base / "hub", comment=comment_for(instance, "hub", "hub")
    )
    assert hub.uid != account.uid and fleet_accounts(instance) == [hub, account]
    remove_account(account.name)
    with pytest.raises(KeyError):
        pwd.getpwnam(account.name)
    remove_account(account.name)  # already gone: fine


@needs_root
def test_ensure_account_never_adopts_a_foreign_account(instance: str, base: Path) -> None:
    account = make_user(instance, base)
    with pytest.raises(AccountError, match="comment"):
        ensure_account(account.name, home=account.home, comment=comment_for(instance, "other", "user"))
    for name in ["root", "alice", "hfx-alice", "hfu-../x", "hfu-" + "a" * 29]:
        with pytest.raises(AccountError):
            ensure_account(name, home=base / "x", comment=comment_for(instance, "hub", "user"))
        with pytest.raises(AccountError):
            remove_account(name)
    with pytest.raises(AccountError):
        ensure_account(account.name, home=account.home, comment="hubfleet x: y")
    assert pwd.getpwnam("root").pw_uid == 0


@needs_root
def test_ensure_account_follows_a_moved_home(instance: str, base: Path) -> None:
    account = make_user(instance, base)
    moved = ensure_account(account.name, home=base / "new" / "alice", comment=account.comment)
    assert moved.uid == account.uid and pwd.getpwnam(account.name).pw_dir == str(base / "new" / "alice")


@needs_root
def test_accounts_created_concurrently_by_threads(instance: str, base: Path) -> None:
    usernames = [f"user{i}" for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        accounts = list(pool.map(lambda u: make_user(instance, base, u), usernames))
    assert len({a.uid for a in accounts}) == 6
    assert sorted(a.name for a in fleet_accounts(instance)) == sorted(a.name for a in accounts)


@needs_root
def test_accounts_created_concurrently_by_processes(instance: str, base: Path) -> None:
    """Several daemons (or xdist workers) at once: every useradd succeeds, serialised by the lock file."""
    script = (
        "import sys; from pathlib import Path; from hubfleet.isolation.accounts import *\n"
        "instance, base = sys.argv[1], Path(sys.argv[2])\n"
        "comment = comment_for(instance, 'hub', 'user')\n"
        "for u in sys.argv[3:]:\n"
        "    ensure_account(user_account(instance, 'hub', u), home=base / u, comment=comment)\n"
    )  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, "-c", script, instance, str(base), f"p{i}a", f"p{i}b"])
        for i in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len(fleet_accounts(instance)) == 6


# --- homes -------------------------------------------------------------------------------------------------


@needs_root
def test_ensure_home_creates_a_private_home(instance: str, base: Path) -> None:
    account = make_user(instance, base)
    ensure_home(account.home, account)
    info = account.home.lstat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (account.uid, account.gid, 0o700)
    ensure_home(account.home, account)  # idempotent
    assert account.home.stat().st_mode & 0o7777 == 0o700


@needs_root
def test_ensure_home_hands_over_an_old_tree_without_following_symlinks(instance: str, base: Path) -> None:
    account = make_user(instance, base)
    home = account.home
    (home / "work" / "deep").mkdir(parents=True)
    (home / "work" / "deep" / "notes.txt").write_text("old layout\n")
    (home / "passwd").symlink_to("/etc/passwd")
    (home / "etc").symlink_to("/etc")
    os.mkfifo(home / "work" / "fifo")  # opening it would block the walk
    home.chmod(0o755)
    passwd_before = os.stat("/etc/passwd")
    ensure_home(home, account)
    for path in [
        home,
        home / "work",
        home / "work" / "fifo",
        home / "work" / "deep",
        home / "work" / "deep" / "notes.txt",
    ]:
        assert (path.lstat().st_uid, path.lstat().st_gid) == (account.uid, account.gid), path
    for link in [home / "passwd", home / "etc"]:
        assert link.lstat().st_uid == account.uid  # the link itself, not its target
    passwd_after = os.stat("/etc/passwd")
    assert (passwd_after.st_uid, passwd_after.st_gid, passwd_after.st_mode) == (
        passwd_before.st_uid, passwd_before.st_gid, passwd_before.st_mode,
    )  # fmt: skip
    assert os.stat("/etc").st_uid == 0 and home.stat().st_mode & 0o7777 == 0o700


@needs_root
def test_ensure_home_refuses_symlinks_and_foreign_homes(instance: str, base: Path) -> None:
    alice, bob = make_user(instance, base, "alice"), make_user(instance, base, "bob")
    real = base / "real"
    real.mkdir()
    (base / "link").symlink_to(real)
    with pytest.raises(AccountError, match="symlink"):
        ensure_home(base / "link", alice)
    with pytest.raises(AccountError, match="symlink"):
        ensure_home(base / "link" / "alice", alice)
    assert not (real / "alice").exists() and real.stat().st_uid == 0
    ensure_home(bob.home, bob)
    with pytest.raises(AccountError, match="another account"):
        ensure_home(bob.home, alice)
    assert bob.home.stat().st_uid == bob.uid


# --- the launcher ------------------------------------------------------------------------------------------


def launch(spec: dict, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        launcher_argv(), input=json.dumps(spec), capture_output=True, text=True, timeout=timeout,
        start_new_session=True,
    )  # fmt: skip


def spec_for(account: Account, argv: list[str], **extra: object) -> dict:
    spec = {"uid": account.uid, "gid": account.gid, "cgroup_procs": [], "cwd": "/", "argv": argv,
            "env": {"PATH": "/usr/bin:/bin"}, "umask": 0o077}  # fmt: skip
    return spec | extra


@pytest.fixture
def user(instance: str, base: Path) -> Account:
    account = make_user(instance, base)
    ensure_home(account.home, account)
    return account


def wait_for_exec(pid: int, program: bytes) -> None:
    deadline = time.monotonic() + 20
    while program not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the launcher did not exec"
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, 9)
    proc.wait(timeout=10)


@needs_root
def test_launch_runs_as_the_account_without_groups(user: Account) -> None:
    assert launch(spec_for(user, ["/usr/bin/id", "-u"])).stdout.split() == [str(user.uid)]
    assert launch(spec_for(user, ["/usr/bin/id", "-G"])).stdout.split() == [str(user.gid)]
    status = launch(spec_for(user, ["/bin/cat", "/proc/self/status"]))
    assert status.returncode == 0, status.stderr
    fields = dict(line.split(":", 1) for line in status.stdout.splitlines())
    assert fields["Uid"].split() == [str(user.uid)] * 4
    assert fields["Gid"].split() == [str(user.gid)] * 4
    assert fields["Groups"].split() == []
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    # Python's ignored SIGPIPE/SIGXFSZ are not inherited (other ignored signals come from who runs the test:
    # glibc's reserved 32 and 33 cannot be reset from Python)
    ignored = int(fields["SigIgn"], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)) == 0


@needs_root
def test_launch_gives_exactly_the_spec_env_cwd_and_umask(user: Account) -> None:
    env = {"PATH": "/usr/bin:/bin", "JUPYTERHUB_API_TOKEN": "tok", "ODD": "a b\nc"}
    done = launch(spec_for(user, ["/usr/bin/env", "-0"], env=env, cwd=str(user.home)))
    assert done.returncode == 0, done.stderr
    assert dict(item.split("=", 1) for item in done.stdout.split("\0") if item) == env
    done = launch(spec_for(user, ["/bin/sh", "-c", "pwd; umask; read x || echo eof"], cwd=str(user.home)))
    assert done.stdout.split() == [str(user.home), "0077", "eof"]  # stdin is /dev/null


@needs_root
@pytest.mark.parametrize(
    "change", [{"uid": 0}, {"gid": 0}, {"uid": True}, {"uid": -1}, {"argv": []}, {"cwd": "relative"},
               {"env": {"A=B": "x"}}, {"cgroup_procs": ["/etc/passwd"]}, {"extra": 1}],
)  # fmt: skip
def test_launch_refuses_a_bad_spec(user: Account, change: dict) -> None:
    done = launch(spec_for(user, ["/usr/bin/touch", "/tmp/hubfleet-launch-must-not-run"]) | change)
    assert done.returncode == 126 and done.stderr.startswith("hubfleet-launch: ") and done.stdout == ""
    assert not Path("/tmp/hubfleet-launch-must-not-run").exists()


@needs_root
def test_launch_refuses_what_is_not_a_spec() -> None:
    for data in [b"", b"{}", b"[]", b"{", b'{"uid": 1e400}', b"\xff\xfe", b" " * ((1 << 20) + 1)]:
        done = subprocess.run(launcher_argv(), input=data, capture_output=True, timeout=30)
        assert done.returncode == 126 and done.stderr.startswith(b"hubfleet-launch: bad spec"), data[:10]


@needs_root
def test_launch_reports_what_cannot_run(user: Account) -> None:
    done = launch(spec_for(user, ["/nonexistent/program"]))
    assert (
        done.returncode == 127
        and len(done.stderr.splitlines()) == 1
        and "/nonexistent/program" in done.stderr
    )
    done = launch(spec_for(user, ["/usr/bin/true"], cwd="/root"))  # root's home is private: chdir as the user
    assert done.returncode == 126 and "/root" in done.stderr


@needs_root
def test_launch_keeps_the_token_out_of_the_command_line(user: Account) -> None:
    token = secrets.token_hex(16)
    env = {"JUPYTERHUB_API_TOKEN": token}
    proc = subprocess.Popen(launcher_argv(), stdin=subprocess.PIPE, start_new_session=True)
    try:
        assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # waiting for its spec
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec_for(user, ["/bin/sleep", "30"], env=env)).encode())
        proc.stdin.close()
        wait_for_exec(proc.pid, b"sleep")
        assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert f"JUPYTERHUB_API_TOKEN={token}".encode() in Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert os.getsid(proc.pid) == proc.pid  # the caller's session, not ours
    finally:
        stop(proc)


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    group = Path(f"/sys/fs/cgroup/pids/hubfleet-test-{secrets.token_hex(6)}")
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot create a v1 pids cgroup: {error}")
    yield group
    for _ in range(100):  # the group empties once its last process is reaped
        try:
            group.rmdir()
            break
        except OSError:
            time.sleep(0.05)
    assert not group.exists()


@needs_root
def test_launch_puts_the_server_in_its_cgroup(user: Account, pids_cgroup: Path) -> None:
    procs = str(pids_cgroup / "cgroup.procs")
    proc = subprocess.Popen(launcher_argv(), stdin=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec_for(user, ["/bin/sleep", "30"], cgroup_procs=[procs])).encode())
        proc.stdin.close()
        wait_for_exec(proc.pid, b"sleep")
        lines = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
        assert any(line.split(":", 1)[1] == f"pids:/{pids_cgroup.name}" for line in lines), lines
        assert str(proc.pid) in (pids_cgroup / "cgroup.procs").read_text().split()
    finally:
        stop(proc)
