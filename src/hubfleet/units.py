"""Sizes as people read them: one formatter for the CLI, the console, logs and the users' quota notices."""

from __future__ import annotations

import re
from decimal import Decimal


def human_bytes(size: int | float) -> str:
    """1536 -> '1.5 KiB' (binary units, as `du -h`, restic and `home_quota` limits write them)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_BYTE_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]i?)?")
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4}
BYTE_SIZE_HINT = "write a number with K, M, G or T, such as 2G"


def parse_bytes(text: str | int) -> int:
    """'512M', '4Gi', '1.5G', 1048576 or '1048576' -> bytes; K, M, G, T (and Ki...Ti) are powers of 1024.

    One reading of a memory size for every consumer: JupyterHub's and KubeSpawner's mem_limit (which read
    K, M, G, T as powers of 1024), the local control groups and hubfleet's rendering. Raises ValueError
    naming the text and what to write instead."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not a memory size; {BYTE_SIZE_HINT}")
    if isinstance(text, int):
        size = text
    else:
        match = _BYTE_SIZE.fullmatch(text.strip())
        if match is None or (match[2] is None and "." in match[1]):
            raise ValueError(f"{text!r} is not a memory size; {_byte_size_hint(text.strip())}")
        number = Decimal(match[1])  # not float: '1.1G' must not depend on binary rounding
        size = int(number * 1024 ** _POWERS[match[2][0]]) if match[2] else int(number)
    if size <= 0:
        raise ValueError(f"{text!r} is not a memory size: it must be more than 0 bytes; {BYTE_SIZE_HINT}")
    return size


def _byte_size_hint(text: str) -> str:
    """What to write instead of a size that is not one, for the mistakes people make (4GB, 1g, 500k)."""
    number = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]+)", text)
    if number is not None:
        value, unit = number.groups()
        letter = unit[0].upper()
        if letter in _POWERS and unit.upper() in (letter, letter + "B", letter + "I", letter + "IB"):
            return f"write {value}{letter} or {value}{letter}i (both mean {letter}iB, powers of 1024)"
    if text.startswith("-"):
        return f"it must be more than 0 bytes; {BYTE_SIZE_HINT}"
    return BYTE_SIZE_HINT
