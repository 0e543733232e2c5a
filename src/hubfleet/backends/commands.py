"""Running external tools (helm, kubectl, cloud CLIs): check they are installed, run with a timeout, capture
output, and never let a secret reach a log line or an exception."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from hubfleet.settings import UserError

log = logging.getLogger(__name__)

INSTALL_HINTS = {
    "helm": "install Helm 3: https://helm.sh/docs/intro/install/",
    "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/",
    "gcloud": "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install, "
    "then `gcloud components install gke-gcloud-auth-plugin`",
    "aws": "install the AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html",
    "az": "install the Azure CLI: https://learn.microsoft.com/cli/azure/install-azure-cli",
}


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    """As shown in logs: secrets replaced by ***."""
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> str:
        return "\n".join((self.stdout + "\n" + self.stderr).strip().splitlines()[-lines:])


Runner = Callable[..., Awaitable[CommandResult]]


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def require_binaries(names: Iterable[str]) -> None:
    """Raise one UserError naming every missing tool and how to install it."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        hints = "; ".join(f"{n} not found on PATH: {INSTALL_HINTS.get(n, f'install {n}')}" for n in missing)
        raise UserError(hints)


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float = 600,
    secrets: Iterable[str] = (),
    check: bool = False,
    hint: str = "",
) -> CommandResult:
    """Run argv (no shell) and capture its output; secrets become *** in the logged argv and the output.

    check: raise a UserError (ending with `hint`, what to run next) when the command fails or times out."""
    secrets = list(secrets)
    shown = [redact(a, secrets) for a in argv]
    log.info("running %s", shlex.join(shown))
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    except FileNotFoundError:
        raise UserError(
            f"{argv[0]} not found on PATH: {INSTALL_HINTS.get(argv[0], f'install {argv[0]}')}"
        ) from None
    try:
        out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout)
        code = proc.returncode if proc.returncode is not None else -1
        out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        code, out, err = -1, "", f"timed out after {timeout:g} s"
    result = CommandResult(shown, code, redact(out, secrets), redact(err, secrets), time.monotonic() - start)
    if check and not result.ok:
        last = result.tail(5) or f"exit code {code}"
        raise UserError(f"`{shlex.join(shown)}` failed: {last}" + (f"; {hint}" if hint else ""))
    return result
