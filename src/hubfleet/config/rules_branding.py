"""Cross-file rule on `branding`: the logo a hub shows is a file of its community's directory, a PNG, JPEG or
SVG by its content (not its name), and small enough for a page header (and, on kubernetes, for the hub's
Secret, which holds it).

`logo_kind` is also what the renderers use to name the copy the hub serves (its extension sets the type
JupyterHub's /hub/logo answers with).
"""

from __future__ import annotations

import re
from pathlib import Path

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig

LOGO_MAX_BYTES = 256 * 1024
"""A header logo is a few kilobytes; 256 KiB leaves room for a photo-like PNG and keeps the hub's Secret
(kubernetes: every hub.extraFiles entry, base64, in one object of at most 1 MiB) far from its limit."""

_SVG_PROLOGUE = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?(?:(?:<!--.*?-->|<!DOCTYPE[^>]*>)\s*)*<svg[\s>]",
    re.S | re.I,
)
_SVG_ACTIVE = re.compile(rb"<script|javascript:|\son[a-z]+\s*=|<foreignObject", re.I)


def logo_kind(data: bytes) -> str | None:
    """'png', 'jpeg' or 'svg' by the file's content; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if _SVG_PROLOGUE.match(data[:4096]):
        return "svg"
    return None


LOGO_SUFFIX = {"png": ".png", "jpeg": ".jpg", "svg": ".svg"}


def community_dir(root: Path, community: str) -> Path:
    return root / "communities" / community


def logo_problem(directory: Path, value: str) -> str | None:
    """Why `value` (relative to the community's `directory`) is no usable logo, or None."""
    path = directory / value
    if not path.is_file():
        return "is not a file" if path.exists() else "not found"
    if not path.resolve().is_relative_to(directory.resolve()):
        return "leads outside the community's directory (a symbolic link)"
    size = path.stat().st_size
    if size > LOGO_MAX_BYTES:
        return f"is {size // 1024} KiB; a logo may be at most {LOGO_MAX_BYTES // 1024} KiB"
    data = path.read_bytes()
    kind = logo_kind(data)
    if kind is None:
        return "is not a PNG, JPEG or SVG image (by its content)"
    if kind == "svg" and _SVG_ACTIVE.search(data):
        # the hub serves it from its own origin at /hub/logo: opened directly, a script in it would run there
        return "is an SVG with a script, an event handler or foreignObject; remove them (a logo is a picture)"
    return None


def logos_are_images(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Every hub's `branding.logo` names a small PNG, JPEG or SVG in its community's directory."""
    errors = []
    for entry in fleet.hub_entries:
        logo = entry.hub.branding.logo
        if logo is None:
            continue
        where = f"communities/{entry.directory}/"
        problem = logo_problem(community_dir(fleet.root, entry.directory), logo)
        if problem is not None:
            errors.append(
                fleet.hub_error(
                    entry,
                    "branding.logo",
                    f"branding.logo: '{logo}' {problem}; put a PNG, JPEG or SVG of at most "
                    f"{LOGO_MAX_BYTES // 1024} KiB in {where} and name it relative to that directory",
                )
            )
    return errors
