"""Sizes as people read them: one formatter for the CLI, the console, logs and the users' quota notices."""

from __future__ import annotations


def human_bytes(size: int | float) -> str:
    """1536 -> '1.5 KiB' (binary units, as `du -h`, restic and `home_quota` limits write them)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
