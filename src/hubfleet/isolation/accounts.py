"""OS accounts for hub users and hubs, and their homes: names the privileged part accepts and produces.

Every hub user runs as an account of its own (as in The Littlest JupyterHub) and every hub as a service
account, so the kernel keeps tenants apart. Everything here runs as root on input that came from a hub, so it
validates first and touches the filesystem without following symlinks.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import pwd
import re
import stat
import subprocess
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

USER_PREFIX = "hfu-"  # one per (fleet instance, hub, hub username)
HUB_PREFIX = "hfh-"  # one per (fleet instance, hub): the hub's service account
DOOR_PREFIX = "hfd-"  # one per fleet instance: the front door (Caddy)

LOCK_PATH = Path("/run/lock/hubfleet-accounts.lock")
NAME_MAX = 32  # useradd refuses longer names
HASH_LEN = 10
USERNAME_MAX = 128
HOME_NAME_MAX = 255  # NAME_MAX of Linux filesystems, in bytes

_HUB_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
_INSTANCE_RE = re.compile(r"[a-z0-9]{1,16}")
_ACCOUNT_RE = re.compile(r"(hfu|hfh|hfd)-[a-z0-9]+(-[a-z0-9]+)*")
_PLAIN_HOME_RE = re.compile(r"[a-z0-9][a-z0-9._@+-]*")
_HOME_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._@+-")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# shadow's tools read English messages only in the C locale; PATH finds useradd even from a bare environment
_TOOL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class AccountError(ValueError):
    """A request the privileged part refuses; the message names what is wrong."""


def _show(value: str) -> str:
    """The start of a hostile input, quoted, short enough for a log line."""
    return repr(value[:40]) + ("..." if len(value) > 40 else "")


def check_username(username: object) -> str:
    """A hub username as the privileged part accepts it (it becomes part of account names and home paths)."""
    if not isinstance(username, str):
        raise AccountError(f"hub username must be a str, not {type(username).__name__}")
    if not 1 <= len(username) <= USERNAME_MAX:
        raise AccountError(f"hub username must have 1 to {USERNAME_MAX} characters, not {len(username)}")
    if unicodedata.normalize("NFC", username) != username:
        raise AccountError(f"hub username {_show(username)} is not in Unicode NFC form")
    for char in username:
        if char in "/\\:\0":
            raise AccountError(f"hub username {_show(username)} contains {char!r}")
        if char.isspace() or unicodedata.category(char)[0] in "CZ":
            raise AccountError(f"hub username {_show(username)} contains whitespace or control {char!r}")
    if username in (".", ".."):
        raise AccountError(f"hub username {_show(username)} is not a name")
    if username.startswith("-"):
        raise AccountError(f"hub username {_show(username)} starts with '-'")
    return username


def check_hub_name(name: object) -> str:
    """A hub name: a DNS label of at most 40 characters, as the fleet config allows."""
    if not isinstance(name, str) or not _HUB_RE.fullmatch(name):
        shown = _show(name) if isinstance(name, str) else type(name).__name__
        raise AccountError(f"hub name {shown} is not 1-40 of [a-z0-9-] starting and ending alphanumeric")
    return name


def _check_instance(instance: object) -> str:
    if not isinstance(instance, str) or not _INSTANCE_RE.fullmatch(instance):
        shown = _show(instance) if isinstance(instance, str) else type(instance).__name__
        raise AccountError(f"fleet instance id {shown} is not 1-16 of [a-z0-9]")
    return instance


def _slug(text: str) -> str:
    """Lowercase ASCII letters and digits of a name, accents stripped ("Café" -> "cafe"): for reading only."""
    return "".join(c for c in unicodedata.normalize("NFKD", text).lower() if c in _ALNUM)


def _digest(*parts: str) -> str:
    # no part may contain NUL (the checks above refuse it), so the joined text is unambiguous
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:HASH_LEN]


def user_account(instance: str, hub: str, username: str) -> str:
    """hfu-<hub slug>-<user slug>-<hash>: readable in ps/ls, unique through the hash of the exact inputs."""
    _check_instance(instance)
    check_hub_name(hub)
    check_username(username)
    budget = NAME_MAX - len(USER_PREFIX) - HASH_LEN - 2  # the two slugs share what is left
    hub_slug, user_slug = _slug(hub), _slug(username)
    hub_slug = hub_slug[: max(7, budget - len(user_slug))]
    user_slug = user_slug[: budget - len(hub_slug)]
    slugs = [hub_slug, user_slug] if user_slug else [hub_slug]
    return "-".join([USER_PREFIX.rstrip("-"), *slugs, _digest("user", instance, hub, username)])


def hub_account(instance: str, hub: str) -> str:
    """hfh-<hub slug>-<hash>: the hub's service account."""
    _check_instance(instance)
    check_hub_name(hub)
    hub_slug = _slug(hub)[: NAME_MAX - len(HUB_PREFIX) - HASH_LEN - 1]
    return f"{HUB_PREFIX}{hub_slug}-{_digest('hub', instance, hub)}"


def door_account(instance: str) -> tuple[str, str]:
    """hfd-<instance>: the front door's service account, and the comment that marks it."""
    _check_instance(instance)
    return f"{DOOR_PREFIX}{instance}", f"hubfleet {instance} front-door door"


def home_dirname(username: str) -> str:
    """The directory name of a user's home: the username when plain, else percent-escaped so that distinct
    usernames never share a home (escaping is invertible; '%' and a leading non-alphanumeric are escaped too,
    so no home is hidden or starts with '-')."""
    check_username(username)
    if len(username) <= 64 and _PLAIN_HOME_RE.fullmatch(username):
        return username
    escaped = "".join(
        chr(byte) if byte in _HOME_KEEP and (i or chr(byte) in _ALNUM) else f"%{byte:02X}"
        for i, byte in enumerate(username.encode())
    )
    if len(escaped) <= HOME_NAME_MAX:
        return escaped
    # 128 characters of up to 4 UTF-8 bytes escape to 1536 bytes: no escape fits a file name, so a long
    # one is cut and made unique by a 128-bit hash of the username ('~' is always escaped, so marks this form)
    digest = hashlib.sha256(username.encode()).hexdigest()[:32]
    head = escaped[: HOME_NAME_MAX - 1 - len(digest)]
    cut = head.rfind("%", len(head) - 2)
    return f"{head[:cut] if cut >= 0 else head}~{digest}"


@dataclass(frozen=True)
class Account:
    """An OS account as /etc/passwd has it."""

    name: str
    uid: int
    gid: int
    home: Path
    comment: str


def comment_for(instance: str, hub: str, kind: str) -> str:
    """The GECOS comment that marks an account as ours: how fleet_accounts finds them and how ensure_account
    tells our account from an unrelated one with the same name."""
    if kind not in ("user", "hub"):
        raise AccountError(f"account kind must be 'user' or 'hub', not {_show(str(kind))}")
    return f"hubfleet {_check_instance(instance)} {check_hub_name(hub)} {kind}"


def _check_account_name(name: object) -> str:
    if not isinstance(name, str) or len(name) > NAME_MAX or not _ACCOUNT_RE.fullmatch(name):
        shown = _show(name) if isinstance(name, str) else type(name).__name__
        raise AccountError(
            f"account name {shown} is not one of ours ({USER_PREFIX}*, {HUB_PREFIX}*, {DOOR_PREFIX}*)"
        )
    return name


def _lookup(name: str) -> Account | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), entry.pw_gecos)


@contextmanager
def _accounts_lock() -> Iterator[None]:
    """One account change at a time on this machine: useradd's lock on /etc/passwd only retries for a while.

    flock locks belong to the open file, so threads of one process exclude each other too. /run/lock is
    world-writable: the file must be ours and private, or anyone could hold the lock."""
    LOCK_PATH.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise AccountError(f"{LOCK_PATH} is not a private file of uid {os.geteuid()}: remove it")
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _run_tool(argv: list[str], *, ok: tuple[int, ...] = (0,), attempts: int = 5) -> int:
    """Run a shadow tool, retrying while another program (not holding our lock) has /etc/passwd locked:
    useradd exits 1 or 10 (passwd or group file) with "cannot lock" then."""
    for attempt in range(1, attempts + 1):
        done = subprocess.run(argv, capture_output=True, text=True, env=_TOOL_ENV, stdin=subprocess.DEVNULL)
        if done.returncode in ok:
            return done.returncode
        if done.returncode not in (1, 10) or "lock" not in done.stderr or attempt == attempts:
            message = done.stderr.strip().replace("\n", "; ")
            raise AccountError(f"{argv[0]} {argv[-1]} failed (exit {done.returncode}): {message}")
        time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _check_home_path(home: Path) -> Path:
    home = Path(home)
    if not home.is_absolute() or any(c in str(home) for c in ":\n\0"):
        raise AccountError(f"home {_show(str(home))} must be an absolute path without ':' or newlines")
    return home


def ensure_account(name: str, *, home: Path, comment: str) -> Account:
    """The account `name`, created if missing (no password, nologin shell, its own group, a normal uid since
    a big hub has more users than the system range holds, and no subordinate uids for user namespaces).

    An existing account is reused only when its comment is `comment`: never adopt someone else's account."""
    _check_account_name(name)
    home = _check_home_path(home)
    if not comment.startswith("hubfleet ") or any(c in comment for c in ":,\n\0"):
        raise AccountError(f"comment {_show(comment)} is not a hubfleet comment (see comment_for)")
    with _accounts_lock():
        account = _lookup(name)
        if account is None:
            _run_tool(
                ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
                 "--user-group", "--comment", comment, "--key", "UMASK=077",
                 "--key", "SUB_UID_COUNT=0", "--key", "SUB_GID_COUNT=0", name]
            )  # fmt: skip
            account = _lookup(name)
            if account is None:
                raise AccountError(f"useradd {name} succeeded but the account cannot be looked up")
        elif account.comment != comment:
            raise AccountError(f"account {name} has comment {_show(account.comment)}: not {comment!r}")
        elif account.home != home:
            _run_tool(["usermod", "--home", str(home), name])  # the layout moved: follow, move no files
            account = Account(account.name, account.uid, account.gid, home, account.comment)
    if account.uid == 0 or account.gid == 0:
        raise AccountError(f"account {name} has uid or gid 0")
    return account


def remove_account(name: str) -> None:
    """Delete one of our accounts and its group (not its home: that belongs to the code that made it).
    A missing account is fine; userdel refuses while a process of the account still runs."""
    _check_account_name(name)
    with _accounts_lock():
        account = _lookup(name)
        if account is None:
            return
        if not account.comment.startswith("hubfleet "):
            raise AccountError(f"account {name} has comment {_show(account.comment)}: not ours, kept")
        _run_tool(["userdel", name], ok=(0, 6))  # 6: it vanished meanwhile


def fleet_accounts(instance: str) -> list[Account]:
    """Every account of one fleet installation, found by comment: what to clean up or audit."""
    marker = f"hubfleet {_check_instance(instance)} "
    return sorted(
        (
            Account(e.pw_name, e.pw_uid, e.pw_gid, Path(e.pw_dir), e.pw_gecos)
            for e in pwd.getpwall()
            if e.pw_gecos.startswith(marker) and e.pw_name.startswith((USER_PREFIX, HUB_PREFIX, DOOR_PREFIX))
        ),
        key=lambda a: a.name,
    )


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _hand_over(top: int, uid: int, gid: int) -> None:
    """chown everything below the directory open as `top`, never following a symlink.

    Works relative to open directory fds: a path-based walk (os.walk + lchown) follows symlinks in every
    component but the last, so a directory swapped for a symlink mid-walk would redirect root's chown."""
    stack = [(top, [e.name for e in os.scandir(top)])]
    try:
        while stack:
            fd, names = stack[-1]
            if not names:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            name = names.pop()
            try:
                os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)  # fails on anything but a real directory
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as error:
                if error.errno == errno.ELOOP:  # a symlink: chowned itself above
                    continue
                raise
            stack.append((child, [e.name for e in os.scandir(child)]))
    finally:
        for fd, _ in stack:
            if fd != top:
                os.close(fd)


def ensure_home(path: Path, account: Account) -> None:
    """The home exists as a real directory, mode 0700, owned by the account. A home owned by root or by a
    deleted uid (an older layout, a re-created account) is handed over with all it holds."""
    path = Path(path)
    if not path.is_absolute() or path.name in ("", ".", ".."):
        raise AccountError(f"home {_show(str(path))} must be an absolute path to a directory")
    try:
        parent = os.open(path.parent, _DIR_FLAGS)
    except OSError as error:
        raise AccountError(f"home parent {_show(str(path))}: {error.strerror} (symlinks refused)") from None
    try:
        with suppress(FileExistsError):
            os.mkdir(path.name, 0o700, dir_fd=parent)
        try:
            home = os.open(path.name, _DIR_FLAGS, dir_fd=parent)
        except OSError as error:
            raise AccountError(f"home {_show(str(path))}: {error.strerror} (symlinks refused)") from None
    finally:
        os.close(parent)
    try:
        owner = os.fstat(home).st_uid
        if owner != account.uid:
            if owner != 0 and _uid_exists(owner):
                raise AccountError(f"home {_show(str(path))} belongs to another account (uid {owner})")
            os.fchmod(home, 0o700)  # closed to everyone but root while its contents change owner
            _hand_over(home, account.uid, account.gid)
        os.fchown(home, account.uid, account.gid)
        os.fchmod(home, 0o700)
    finally:
        os.close(home)


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
