"""The CI files `hubfleet init` writes: GitHub Actions workflows (`ci_github`) and the GitLab pipeline
(`ci_gitlab`), each a module with `files(cluster) -> {relative path: text}`. A module that is not there
contributes nothing, so init works whichever of them a checkout has."""

from __future__ import annotations

import importlib

PROVIDERS = ("hubfleet.scaffold.ci_github", "hubfleet.scaffold.ci_gitlab")


def files(cluster: str) -> dict[str, str]:
    """Relative path -> text of every CI file for a fleet on a cluster of kind `cluster` (local, gcp, aws,
    azure)."""
    found: dict[str, str] = {}
    for module_name in PROVIDERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the module is there but something it imports is not: a real bug
                raise
            continue
        found |= module.files(cluster)
    return found


ci_files = files
"""The name the shared contract uses."""
