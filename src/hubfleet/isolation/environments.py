"""What a picked environment means for a local user server: PATH, kernels, default page, variables and limits.

The broker applies it (from its own policy, never from what the hub says), and single-account hubs apply it in
their spawner; `up` and `check` use `missing` to say when an environment's directory or kernels are absent.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# where jupyter_client looks for kernels besides an environment's own share/jupyter (system-wide)
SYSTEM_KERNEL_DIRS = (Path("/usr/local/share/jupyter/kernels"), Path("/usr/share/jupyter/kernels"))
DEFAULT_PREFIX = Path(sys.executable).parent.parent
"""`local.path` unset: the Python environment hubfleet runs in."""
CHOICE_REFUSED = "environment refused: "
"""How the broker's refusal of a user's environment choice starts (the hub answers 400 with the rest)."""
HINTS = {"ir": "install r-base-core and r-cran-irkernel (scripts/install-debian-deps.sh)"}


@dataclass
class ServerSettings:
    """What the environment adds to a server's start: variables, PATH head, options, limits."""

    env: dict[str, str] = field(default_factory=dict)
    path_head: str = ""
    args: list[str] = field(default_factory=list)
    memory_limit: str | None = None
    cpu_limit: float | None = None


def server_settings(resolved: dict[str, Any]) -> ServerSettings:
    """The settings of a server for `environment_choice.resolve`'s answer."""
    settings = ServerSettings(env=dict(resolved.get("env") or {}))
    if resolved.get("environment") is None:
        return settings
    local = resolved.get("local") or {}
    if local.get("path"):
        prefix = Path(local["path"])
        settings.path_head = str(prefix / "bin")
        settings.env["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    kernels = list(local.get("kernels") or [])
    if kernels:
        settings.args += [f"--KernelSpecManager.allowed_kernelspecs={name}" for name in kernels]
        settings.args.append(f"--MappingKernelManager.default_kernel_name={kernels[0]}")
    if resolved.get("default_ui"):
        settings.env["JUPYTERHUB_DEFAULT_URL"] = "/lab" if resolved["default_ui"] == "lab" else "/tree"
    resources = resolved.get("resources") or {}
    settings.memory_limit = resources.get("memory_limit")
    settings.cpu_limit = resources.get("cpu_limit")
    return settings


def kernel_dirs(path: str | None) -> list[Path]:
    """Where a server of an environment finds kernels: its own share/jupyter/kernels, then the system's."""
    prefix = Path(path) if path else DEFAULT_PREFIX
    return [prefix / "share" / "jupyter" / "kernels", *SYSTEM_KERNEL_DIRS]


def missing(environment: dict[str, Any]) -> list[str]:
    """What an environment needs that this machine lacks (its directory, its kernels), each with the fix."""
    local = environment.get("local") or {}
    slug = environment.get("slug")
    path = local.get("path")
    if path and not Path(path).is_dir():
        return [f"environment {slug}: directory {path} does not exist; create it or fix `local.path`"]
    problems = []
    dirs = kernel_dirs(path)
    for kernel in local.get("kernels") or []:
        if kernel == "python3" and not path:
            continue  # ipykernel in hubfleet's own environment: the server's native kernel
        if any((d / kernel / "kernel.json").is_file() for d in dirs):
            continue
        hint = HINTS.get(kernel, "install it there, or fix `local.kernels`")
        problems.append(f"environment {slug}: kernel '{kernel}' not found in {dirs[0]}; {hint}")
    return problems


__all__ = ["CHOICE_REFUSED", "DEFAULT_PREFIX", "ServerSettings", "kernel_dirs", "missing", "server_settings"]
