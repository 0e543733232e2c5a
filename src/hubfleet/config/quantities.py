"""Memory and CPU sizes as operators write them, and as each spawner reads them.

Operators write Kubernetes-style quantities (`4Gi`, `512Mi`, `500m`) as often as JupyterHub's own (`4G`,
`0.5`). JupyterHub's and KubeSpawner's `mem_limit`/`mem_guarantee` (JupyterHub's ByteSpecification) accept
only integers and the suffixes K, M, G, T, read as powers of 1024; `4Gi` there fails every spawn. So the fleet
files accept both spellings (one reading: `hubfleet.units.parse_bytes`, shared with the local control groups)
and the renderers write `spawner_memory()`: the same byte count in a form every spawner accepts. CPU is cores
as a float (`cpu_cores()`), `500m` being Kubernetes' half a core.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from hubfleet.units import BYTE_SIZE_HINT, parse_bytes

_SPAWNER_SUFFIXES = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))
_CPU = re.compile(r"(\d+(?:\.\d+)?)(m?)")
MAX_CPU = 256.0
CPU_HINT = "write cores such as 2 or 0.5, or millicores such as 500m"


def memory_bytes(value: str | int) -> int:
    """The byte count of a memory size from a fleet file; ValueError says what to write instead."""
    return parse_bytes(value)


def spawner_memory(value: str | int) -> str | int:
    """The same byte count as JupyterHub's ByteSpecification reads it: `4Gi` -> '4G', `1.5G` -> '1536M',
    a size that is no whole number of KiB -> the integer of bytes (a string of digits would be refused)."""
    size = memory_bytes(value)
    for suffix, factor in _SPAWNER_SUFFIXES:
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return size


def cpu_cores(value: str | int | float) -> float:
    """Cores as a float from `2`, `0.5`, '1.5' or Kubernetes' millicores '500m'; ValueError otherwise."""
    cores = _cpu_number(value)
    if not 0 < cores <= MAX_CPU:
        raise ValueError(f"{value!r} CPU cores: must be more than 0 and at most {MAX_CPU:g}; {CPU_HINT}")
    return cores


def _cpu_number(value: Any) -> float:
    """The number of cores written, range unchecked (the model's Field says what is out of range)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of CPU cores; {CPU_HINT}")
    if isinstance(value, (int, float)):
        cores = float(value)
    elif isinstance(value, str):
        match = _CPU.fullmatch(value.strip())
        if match is None:
            hint = "m (lower case) is millicores: " if value.strip().endswith("M") else ""
            raise ValueError(f"{value!r} is not a number of CPU cores; {hint}{CPU_HINT}")
        cores = float(match[1]) / (1000 if match[2] else 1)
    else:
        raise ValueError(f"{value!r} is not a number of CPU cores; {CPU_HINT}")
    return cores


def _memory_text(value: Any) -> Any:
    """Plain integers of bytes (YAML `memory_limit: 1073741824`) are kept as their text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _valid_memory(value: str) -> str:
    memory_bytes(value)
    return value


MemorySize = Annotated[
    str,
    BeforeValidator(_memory_text),
    AfterValidator(_valid_memory),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?([KMGT]i?)?\s*$"},
            ],
            "description": f"Memory size: {BYTE_SIZE_HINT}.",
        }
    ),
]
"""A memory size as written in the fleet file (kept as written for messages; render with spawner_memory)."""

CpuCores = Annotated[
    float,
    BeforeValidator(_cpu_number),
    Field(gt=0, le=MAX_CPU),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CPU},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?m?\s*$"},
            ],
            "description": f"CPU cores: {CPU_HINT}.",
        }
    ),
]
"""CPU cores: 2, 0.5 or '500m', held as a float."""
