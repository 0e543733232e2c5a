"""A person's server starts, read from their hub's log: JupyterHub's REST API keeps no spawn history, so the
hub's own log lines are the record of what went wrong when someone's server would not start.

Where the log is: a local hub's is `<state>/hubs/<hub>/hub.log` (the supervisor appends the hub's output and
the broker appends each user server's output there); a Kubernetes hub's is the hub pod's output, read with
`kubectl logs deployment/hub` through the cluster's credentials (as the backend reaches the cluster). Only
the tail is read (LOG_TAIL_BYTES / LOG_TAIL_LINES): a ticket is about the last few starts, not last year's.

The matching follows JupyterHub 5/6's own messages (jupyterhub/user.py, handlers/base.py): "Unhandled error
starting NAME's server", "Error starting NAME's server", "NAME's server failed to start in N seconds", "NAME's
server never showed up", "Spawner failed to start [status=N]", "User NAME server stopped, with exit code",
an HTTP 5xx answer to a start request, and the broker's "user NAME: ..." limit events. Lines are redacted
(token=..., Authorization, secrets) before they leave this module.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hubfleet.backends.local import hub_dir
from hubfleet.config.fleet import FleetConfig

LOG_TAIL_BYTES = 4 * 1024 * 1024
"""Bytes read from the end of a local hub's log (a few days of a busy hub)."""
LOG_TAIL_LINES = 20_000
"""Lines asked of `kubectl logs` for a Kubernetes hub."""
MAX_LINE = 1000
MAX_FAILURES = 10
MAX_MESSAGE = 500

# "[I 2026-12-01 12:52:02.078 JupyterHub base:1192] message" (JupyterHub, the single-user server, the proxy)
_PREFIX = re.compile(
    r"^\[(?P<level>[A-Z]) (?P<at>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:[.,]\d+)? "
    r"(?P<source>[^\]]*)\] ?(?P<msg>.*)$"
)
# "[hubfleet broker 2026-12-01 12:52:02] user bob: killed at the memory limit ..." (written in UTC)
_BROKER = re.compile(
    r"^\[hubfleet broker (?P<at>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\] user (?P<user>\S+): (?P<msg>.*)$"
)
_SECRETS = (
    (
        re.compile(r"(?i)(token|secret|password|passwd|api_key|apikey)(=|\"?\s*:\s*\"?)[^\s\"'&,;)]+"),
        r"\1\2***",
    ),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:token|bearer|basic)\s+)[^\s\"']+"), r"\1***"),
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), "***"),
)
_TELLING = re.compile(r"(?i)(fatal|error|exception|denied|not found|no such|refused|killed|cannot|failed)")


class LogUnavailable(Exception):
    """The hub's log cannot be read here; the message says why (recorded in a context's `problems`)."""


@dataclass(frozen=True)
class LogLine:
    text: str
    stamp: str | None
    """"YYYY-MM-DD HH:MM:SS" as written (lines without a timestamp of their own: None); see `at`."""
    hub_line: bool
    """Written by the hub itself (JupyterHub or its proxy), not by a user's server."""
    message: str
    continued: bool = False
    """An indented line under a hub line (its traceback, its headers): part of that record."""
    tz: Any = None
    """The stamp's time zone (None: this machine's local time)."""

    @property
    def at(self) -> datetime | None:
        """When it was written, in UTC (parsed only when asked: most lines never are)."""
        return _local_time(self.stamp, self.tz) if self.stamp else None


def redact(text: str) -> str:
    """The line without tokens, passwords or long hex secrets, cut to MAX_LINE characters."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"


def _local_time(stamp: str, tz: Any) -> datetime | None:
    try:
        naive = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return naive.replace(tzinfo=tz).astimezone(UTC) if tz is not None else naive.astimezone(UTC)


def parse(lines: Sequence[str], *, tz: Any = None) -> list[LogLine]:
    """The log's lines with their time and writer. JupyterHub writes its own local time (`tz` None: this
    machine's, as a local hub runs here; Kubernetes hubs log in UTC)."""
    parsed: list[LogLine] = []
    for raw in lines:
        text = raw.rstrip("\r\n")
        previous = parsed[-1] if parsed else None
        if previous is not None and previous.hub_line and text[:1] in (" ", "\t", "}", ""):
            parsed.append(
                LogLine(text, previous.stamp, True, previous.message, continued=True, tz=previous.tz)
            )
        elif text.startswith("[hubfleet broker ") and (broker := _BROKER.match(text)):
            parsed.append(
                LogLine(text, broker["at"], True, f"user {broker['user']}: {broker['msg']}", tz=UTC)
            )
        elif text.startswith("[") and (match := _PREFIX.match(text)):
            source = match["source"]
            hub_line = source.startswith(("JupyterHub", "configurable_http_proxy", "tornado"))
            parsed.append(LogLine(text, match["at"], hub_line, match["msg"], tz=tz))
        else:
            parsed.append(LogLine(text, None, False, text))
    return parsed


# --------------------------------------------------------------------------- reading the log


def read_local_log(state_dir: Path, hub: str, max_bytes: int = LOG_TAIL_BYTES) -> list[str]:
    """The last `max_bytes` of a local hub's log, as lines (the first, likely cut, dropped)."""
    path = hub_dir(state_dir, hub) / "hub.log"
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        raise LogUnavailable(
            f"the hub has no log at {path} (it never ran from this state directory)"
        ) from None
    except OSError as exc:
        raise LogUnavailable(f"the hub's log {path} is unreadable: {exc.strerror or exc}") from None
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if size > max_bytes else lines


async def read_kubernetes_log(fleet: FleetConfig, hub: str, timeout: float) -> list[str]:
    """The hub pod's last LOG_TAIL_LINES lines (`kubectl logs deployment/hub`), with the cluster's
    credentials; LogUnavailable when kubectl, the credentials or the cluster do not answer in `timeout`."""
    from hubfleet.backends.commands import run_command
    from hubfleet.backends.kube_credentials import cluster_credentials, kube_context
    from hubfleet.config.models import KubernetesCluster
    from hubfleet.settings import UserError

    cluster = fleet.clusters[fleet.hubs[hub].cluster]
    assert isinstance(cluster, KubernetesCluster)
    context = kube_context(cluster)
    argv = ["kubectl", *(["--context", context] if context else []), "-n", hub, "logs", "deployment/hub"]
    argv.append(f"--tail={LOG_TAIL_LINES}")
    try:
        async with asyncio.timeout(timeout), cluster_credentials(cluster, fleet.root):
            result = await run_command(argv, timeout=timeout)
    except TimeoutError:
        raise LogUnavailable(f"kubectl logs did not answer within {timeout:g} s") from None
    except UserError as exc:
        raise LogUnavailable(f"the hub pod's log is unreadable: {exc}") from None
    if not result.ok:
        raise LogUnavailable(f"kubectl logs failed: {redact(result.tail(2)).strip() or 'no output'}")
    return result.stdout.splitlines()


async def read_hub_log(
    fleet: FleetConfig, hub: str, state_dir: Path | None, timeout: float
) -> tuple[list[LogLine], None] | tuple[None, str]:
    """(the parsed tail of the hub's log, None) or (None, why it could not be read)."""
    kind = fleet.clusters[fleet.hubs[hub].cluster].kind
    try:
        if kind == "local":
            if state_dir is None:
                return None, "no state directory given: the local hub's log was not read"
            parsed = await asyncio.wait_for(
                asyncio.to_thread(lambda: parse(read_local_log(state_dir, hub))), timeout
            )
            return parsed, None
        if kind == "kubernetes":
            return parse(await read_kubernetes_log(fleet, hub, timeout), tz=UTC), None
    except LogUnavailable as exc:
        return None, str(exc)
    except TimeoutError:
        return None, f"the hub's log was not read within {timeout:g} s"
    return None, f"hubfleet cannot read the log of a hub on a {kind} cluster"


# --------------------------------------------------------------------------- a user's starts


@dataclass(frozen=True)
class _Patterns:
    """The lines that concern one user's server, for that user's name."""

    start: re.Pattern[str]
    end: re.Pattern[str]
    failures: list[tuple[re.Pattern[str], str]]
    mentions: re.Pattern[str]
    others: re.Pattern[str]


def _patterns(username: str) -> _Patterns:
    u = re.escape(username)
    me = rf"{u}(?::[^\s']*)?"  # NAME or NAME:servername (JupyterHub's spawner._log_name)
    api = rf"/hub/api/users/{u}/server(?:s/\S*)?"
    spawn = rf"/hub/spawn(?:-pending)?/{u}(?:/\S*)?"
    return _Patterns(
        start=re.compile(
            rf"(Creating oauth client jupyterhub-user-{u}\b|Received unhandled user_options for {me}\b|"
            rf"Initiating spawn for {me}\b|Calling Spawner\.start for {me}\b)"
        ),
        end=re.compile(
            rf"(User {me} took [\d.]+ seconds to start|Server {me} is ready|Server {me} is already started)"
        ),
        failures=[
            (
                re.compile(rf"Unhandled error starting {u}'s server: (?P<why>.*)"),
                "the server failed to start: {why}",
            ),
            (
                re.compile(rf"Not starting {u}'s server[^:]*: (?P<why>.*)"),
                "the hub refused to start the server: {why}",
            ),
            (
                re.compile(rf"(?<!Unhandled )Error starting {u}'s server: (?P<why>.*)"),
                "the server was refused: {why}",
            ),
            (
                re.compile(rf"{u}'s server failed to start in (?P<why>\d+) seconds"),
                "the server did not start within {why} seconds",
            ),
            (
                re.compile(rf"{u}'s server never showed up at \S+ after (?P<why>\d+) seconds"),
                "the server started but never answered (gave up after {why} seconds)",
            ),
            (
                re.compile(rf"Unhandled error waiting for {u}'s server to show up at \S+: (?P<why>.*)"),
                "the server started but never answered: {why}",
            ),
            (
                re.compile(rf"Spawner failed to start \[status=(?P<why>[^\]]*)\]\. The logs for {me} "),
                "the server exited while starting (exit status {why})",
            ),
            (
                re.compile(rf"User {me} server stopped, with exit code: (?P<why>\S+)"),
                "the server stopped by itself (exit code {why})",
            ),
            (
                re.compile(rf"^(?P<why>5\d\d) (?:POST|GET) (?:{api}|{spawn}) \("),
                "the hub answered HTTP {why} to the start of the server",
            ),
            (re.compile(rf"^user {u}: (?P<why>.*)"), "{why}"),
        ],
        mentions=re.compile(rf"(?<![\w.]){u}(?![\w.-])"),
        others=re.compile(rf"(/user/|/homes/[^/\s]+/|jupyterhub-user-)(?!{u}(?:[/\s'\"]|$))[^/\s'\"]+"),
    )


def _about(line: LogLine, username: str) -> bool:
    """A hub line that may concern `username` (a cheap test before the patterns)."""
    return line.hub_line and username in line.message


def _tail_cause(lines: Sequence[LogLine], upto: int, start: int, pats: _Patterns) -> str:
    """The telling lines of the server's own output in this attempt (e.g. "Fatal Python error: ...")."""
    found = [
        line.text.strip()
        for line in lines[start:upto]
        if not line.hub_line and _TELLING.search(line.text) and not pats.others.search(line.text)
    ]
    return " / ".join(redact(text) for text in found[-3:])


def _attempt_start(lines: Sequence[LogLine], before: int, pats: _Patterns, username: str) -> int:
    for index in range(before, -1, -1):
        if _about(lines[index], username) and pats.start.search(lines[index].message):
            return index
    return max(0, before - 50)


def spawn_failures(
    lines: Sequence[LogLine], username: str, *, limit: int = MAX_FAILURES
) -> list[dict[str, Any]]:
    """The user's failed server starts (and limit events) in the log, newest last: {at, message, line}
    (`detail`: what the server itself printed, when it says why)."""
    pats = _patterns(username)
    found: list[dict[str, Any]] = []
    seen: set[tuple[str | None, str]] = set()
    for index, line in enumerate(lines):
        if not line.hub_line or line.continued or username not in line.message:
            continue
        for pattern, template in pats.failures:
            match = pattern.search(line.message)
            if match is None:
                continue
            message = template.format(why=match["why"].strip())
            at = line.at.isoformat() if line.at else None
            key = (at[:19] if at else None, message)
            if key in seen:  # JupyterHub and tornado log the same 500 twice
                break
            seen.add(key)
            entry: dict[str, Any] = {
                "at": at,
                "message": redact(message)[:MAX_MESSAGE],
                "line": redact(line.text),
            }
            cause = _tail_cause(lines, index, _attempt_start(lines, index, pats, username), pats)
            if cause:
                entry["detail"] = cause[:MAX_MESSAGE]
            found.append(entry)
            break
    return found[-limit:]


def start_lines(lines: Sequence[LogLine], username: str, *, max_lines: int = 200) -> list[str] | None:
    """The user's last server start: from its first line to the line that says it ended (started, failed)
    and a little after, keeping the hub's lines about this user and the server output of that moment, never
    lines that name another user's server or home. None when the log holds no start of theirs."""
    pats = _patterns(username)
    begin = None
    for index in range(len(lines) - 1, -1, -1):
        if _about(lines[index], username) and pats.start.search(lines[index].message):
            begin = index
            break
    if begin is None:
        failures = [
            i
            for i, line in enumerate(lines)
            if _about(line, username) and any(p.search(line.message) for p, _ in pats.failures)
        ]
        if not failures:
            return None
        begin = max(0, failures[-1] - 50)
    while begin > 0 and _about(lines[begin - 1], username) and pats.start.search(lines[begin - 1].message):
        begin -= 1
    end = len(lines)
    for index in range(begin, len(lines)):
        line = lines[index]
        if _about(line, username) and (
            pats.end.search(line.message) or any(p.search(line.message) for p, _ in pats.failures)
        ):
            end = min(len(lines), index + 5)
    kept = []
    for line in lines[begin:end]:
        if pats.others.search(line.text):
            continue
        if line.hub_line and not pats.mentions.search(line.message):
            continue
        kept.append(redact(line.text))
    return kept[-max_lines:]
