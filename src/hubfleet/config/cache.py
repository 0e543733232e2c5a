"""A content-addressed cache of parsed fleet files and of each hub's desired-state hash, in <state>/cache/.

A plan of 5,000 hubs spent most of its time parsing YAML and rendering hubs whose files had not changed. The
cache keeps, per file, the data its YAML parses to, keyed by the sha256 of the file's bytes; and per hub, its
config hash keyed by the sha256 of everything its rendering reads (deploy/plan_cache.py builds that key). So:

- nothing is trusted by name or date: a file whose bytes changed has another key; every key also holds the
  code fingerprint (hubfleet's version and the size and mtime of each of its source files, the versions of
  JupyterHub and Python), so an upgrade or an edited default misses every entry;
- what comes out of it is validated as if it had just been parsed (pydantic still checks every file, and every
  cross-file rule runs over the whole fleet each time);
- a missing, unreadable, corrupt or foreign cache is ignored and rebuilt, never an error; it is written
  atomically (a temporary file renamed over the old one), 0600 in a 0700 directory;
- it holds no secret: parsed files hold what the fleet files hold (secrets files are not cached: their values
  are age ciphertext, read fresh each time), hub entries hold hashes.

`FleetCache.stats` says which files were read from the cache and which were parsed (the tests count misses).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

FORMAT = 1
"""Bumped when the layout of the cache files changes: an older or newer file is ignored."""
FILES = "files"
HUBS = "hubs"
SHARDS = "0123456789abcdef"
CACHE_DIR = "cache"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run a block without the cyclic garbage collector. Loading 5,000 hubs creates a few hundred thousand
    objects that all live on, and the collector's repeated passes over them were a fifth of a plan's CPU
    time; the block makes little cyclic garbage, which the next collection after it frees."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@cache
def code_fingerprint() -> str:
    """What the cached results depend on beyond the fleet files: hubfleet's code (its version and the path,
    size and mtime of every file of the package, so an edited default or renderer misses), the Python and
    JupyterHub it runs with. Computed once per process (one stat per file of the package)."""
    import hubfleet

    package = Path(hubfleet.__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("hubfleet", "jupyterhub", "pydantic", "pydantic-core", "ruamel.yaml", "PyYAML"):
        try:
            digest.update(f"{name}=={version(name)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{name} absent\n".encode())
    digest.update(f"python {sys.version} {sys.executable}\n".encode())
    for directory, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for file in sorted(files):
            path = os.path.join(directory, file)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            digest.update(f"{os.path.relpath(path, package)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass
class CacheStats:
    """Which files came from the cache (`hits`) and which were parsed (`misses`), by fleet-relative name;
    hub entries likewise by hub name."""

    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    hub_hits: list[str] = field(default_factory=list)
    hub_misses: list[str] = field(default_factory=list)


class FleetCache:
    """The cache of one state directory (`directory` is <state>/cache). Load, validate and plan with the same
    instance; `save()` (done by `load_fleet` and `make_plan`) writes what changed and drops entries this run
    did not use, so the cache holds one fleet's worth of files and hubs.

    Each kind is kept in 16 shards by the key's first hex digit (`files-a.json`, `hubs-3.json`): a change to
    one file rewrites one sixteenth of the cache, not all of it."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.stats = CacheStats()
        self.digests: dict[str, str] = {}
        """Fleet-relative file name -> sha256 of its bytes, for every file read through the cache."""
        self._loaded: dict[str, dict[str, Any]] = {}
        """Kind (FILES, HUBS) -> every entry read from its shards (read on first use)."""
        self._loaded_per_shard: dict[tuple[str, str], int] = {}
        self._used: dict[str, dict[str, Any]] = {FILES: {}, HUBS: {}}
        self._dirty: set[tuple[str, str]] = set()
        """(kind, shard) holding an entry this run added."""

    @classmethod
    def in_state(cls, state_dir: Path) -> FleetCache:
        return cls(Path(state_dir) / CACHE_DIR)

    # ----------------------------------------------------------------- parsed files

    def parsed(self, rel: str, raw: bytes) -> tuple[str, dict[str, Any] | None]:
        """(the file's content key, its cached data or None); notes the file's digest and the hit or miss."""
        key = content_key(raw)
        self.digests[rel] = key
        data = self._entries(FILES).get(key)
        if isinstance(data, dict):
            self._used[FILES][key] = data
            self.stats.hits.append(rel)
            return key, data
        self.stats.misses.append(rel)
        return key, None

    def remember_parsed(self, key: str, data: dict[str, Any]) -> None:
        """Keep what a file parsed to: the libyaml fast path's result, plain JSON data by construction
        (dicts with str keys, lists, str, int, float, bool, None; yaml_source.fast_load)."""
        self._remember(FILES, key, data)

    # ----------------------------------------------------------------- hubs' config hashes

    def hub_hash(self, name: str, key: str) -> str | None:
        found = self._entries(HUBS).get(key)
        if isinstance(found, str):
            self._used[HUBS][key] = found
            self.stats.hub_hits.append(name)
            return found
        self.stats.hub_misses.append(name)
        return None

    def remember_hub_hash(self, key: str, config_hash: str) -> None:
        self._remember(HUBS, key, config_hash)

    # ----------------------------------------------------------------- storage

    def _remember(self, kind: str, key: str, value: Any) -> None:
        self._used[kind][key] = value
        self._dirty.add((kind, key[:1]))

    def _entries(self, kind: str) -> dict[str, Any]:
        found = self._loaded.get(kind)
        if found is None:
            found = self._loaded[kind] = {}
            for shard in SHARDS:
                entries = self._read(_shard_file(kind, shard))
                self._loaded_per_shard[(kind, shard)] = len(entries)
                found.update(entries)
        return found

    def save(self) -> None:
        """Write each shard that got a new entry or holds one this run did not use; errors ignored (a
        read-only or not yet made state directory only costs the next run its speed)."""
        for kind, used in self._used.items():
            by_shard: dict[str, dict[str, Any]] = {shard: {} for shard in SHARDS}
            for key, value in used.items():
                if key[:1] in by_shard:
                    by_shard[key[:1]][key] = value
            for shard, entries in by_shard.items():
                stale = kind in self._loaded and self._loaded_per_shard[(kind, shard)] != len(entries)
                if ((kind, shard) in self._dirty or stale) and self._write(_shard_file(kind, shard), entries):
                    self._dirty.discard((kind, shard))
                    self._loaded_per_shard[(kind, shard)] = len(entries)
            if kind in self._loaded:
                self._loaded[kind] = dict(used)

    def _read(self, name: str) -> dict[str, Any]:
        try:
            with open(self.directory / name, "rb") as f:
                document = json.loads(f.read())
        except (OSError, ValueError, RecursionError):
            return {}
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or document.get("code") != code_fingerprint()
            or not isinstance(document.get("entries"), dict)
        ):
            return {}
        return document["entries"]

    def _write(self, name: str, entries: dict[str, Any]) -> bool:
        document = {"format": FORMAT, "code": code_fingerprint(), "entries": entries}
        try:
            # the state directory is made by the commands that own it (`plan`, `up`), never here: a
            # mistyped --fleet must not come into being as <typo>/.hubfleet/cache
            self.directory.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)  # mode 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(document, separators=(",", ":")))  # C encoder: json.dump is not
                os.replace(tmp, self.directory / name)
            except BaseException:
                os.unlink(tmp)
                raise
        except (OSError, TypeError, ValueError):
            return False
        return True


def _shard_file(kind: str, shard: str) -> str:
    return f"{kind}-{shard}.json"
