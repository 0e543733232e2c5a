"""The three-way merge of two CI states saved from the same one (`hubfleet.deploy.ci_state`): theirs (saved
first), with what changed from the common base to ours on top. Hub state files: ours where ours changed them.
The store: row by row, table by table; a new row of ours whose integer id they also used gets the next free
id, and the rows of other tables that point at it (foreign keys) follow."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubfleet.store.db import DB_FILENAME


def merge(base: dict[str, bytes], ours: dict[str, bytes], theirs: dict[str, bytes]) -> dict[str, bytes]:
    """Theirs, with what changed from base to ours on top: hub files ours changed (or removed), and the
    store's rows ours added, changed or removed."""
    merged = dict(theirs)
    for name in set(base) | set(ours):
        if name == DB_FILENAME or base.get(name) == ours.get(name):
            continue
        if name in ours:
            merged[name] = ours[name]
        else:
            merged.pop(name, None)
    if DB_FILENAME in ours and base.get(DB_FILENAME) != ours[DB_FILENAME]:
        if DB_FILENAME not in theirs:
            merged[DB_FILENAME] = ours[DB_FILENAME]
        else:
            merged[DB_FILENAME] = merge_databases(
                base.get(DB_FILENAME), ours[DB_FILENAME], theirs[DB_FILENAME]
            )
    return merged


@contextlib.contextmanager
def _databases(base: bytes | None, ours: bytes, theirs: bytes) -> Iterator[tuple[sqlite3.Connection, Path]]:
    with tempfile.TemporaryDirectory(prefix="hubfleet-merge-") as scratch:
        root = Path(scratch)
        for name, data in (("base", base), ("ours", ours), ("theirs", theirs)):
            (root / f"{name}.sqlite").write_bytes(data or b"")
        conn = sqlite3.connect(root / "theirs.sqlite")
        try:
            conn.execute("ATTACH DATABASE ? AS ours", (str(root / "ours.sqlite"),))
            conn.execute("ATTACH DATABASE ? AS base", (str(root / "base.sqlite"),))
            yield conn, root / "theirs.sqlite"
        finally:
            conn.close()


def _tables(conn: sqlite3.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name != 'alembic_version' ORDER BY name"
    )
    return [row[0] for row in rows]


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> tuple[list[str], list[str]]:
    info = conn.execute(f'PRAGMA {schema}.table_info("{table}")').fetchall()
    columns = [row[1] for row in info]
    keys = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
    return columns, keys


def _parents_first(conn: sqlite3.Connection, tables: list[str]) -> list[str]:
    """Tables ordered so that one a foreign key points at comes before the table that points."""
    needs = {
        t: {row[2] for row in conn.execute(f'PRAGMA ours.foreign_key_list("{t}")')} & set(tables) - {t}
        for t in tables
    }
    ordered: list[str] = []
    while needs:
        ready = sorted(t for t, deps in needs.items() if deps <= set(ordered)) or sorted(needs)[:1]
        for table in ready:
            ordered.append(table)
            needs.pop(table)
    return ordered


def merge_databases(base: bytes | None, ours: bytes, theirs: bytes) -> bytes:
    """Theirs plus ours' row changes since base, table by table (same schema: both are this hubfleet's)."""
    with _databases(base, ours, theirs) as (conn, path):
        in_theirs = set(_tables(conn, "main"))
        in_base = set(_tables(conn, "base"))
        remapped: dict[str, dict[Any, Any]] = {}
        for table in _parents_first(conn, [t for t in _tables(conn, "ours") if t in in_theirs]):
            remapped[table] = _merge_table(conn, table, table in in_base, remapped)
        conn.commit()
        conn.execute("DETACH DATABASE ours")
        conn.execute("DETACH DATABASE base")
        conn.close()
        return path.read_bytes()


def _merge_table(
    conn: sqlite3.Connection, table: str, has_base: bool, remapped: dict[str, dict[Any, Any]]
) -> dict[Any, Any]:
    columns, keys = _columns(conn, "ours", table)
    theirs_columns = set(_columns(conn, "main", table)[0])
    columns = [c for c in columns if c in theirs_columns]
    keys = [k for k in keys if k in columns] or columns
    listed = ", ".join(f'"{c}"' for c in columns)

    base_columns = set(_columns(conn, "base", table)[0]) if has_base else set()
    shared = [c for c in columns if c in base_columns]  # an older base: compare what it has

    def rows(schema: str, chosen: list[str]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        if not chosen or not set(keys) <= set(chosen):
            return {}
        picked = ", ".join(f'"{c}"' for c in chosen)
        found = conn.execute(f'SELECT {picked} FROM {schema}."{table}"').fetchall()
        return {tuple(row[chosen.index(k)] for k in keys): tuple(row) for row in found}

    base, ours = rows("base", shared), rows("ours", columns)
    ours_as_base = {key: tuple(row[columns.index(c)] for c in shared) for key, row in ours.items()}
    theirs_keys = set(rows("main", columns))
    where = " AND ".join(f'"{k}" IS ?' for k in keys)
    for key in base:
        if key not in ours:  # ours removed it
            conn.execute(f'DELETE FROM main."{table}" WHERE {where}', key)
    foreign = {row[3]: (row[2], row[4]) for row in conn.execute(f'PRAGMA ours.foreign_key_list("{table}")')}
    single_int = len(keys) == 1 and keys != columns
    mapping: dict[Any, Any] = {}
    for key, row in ours.items():
        if key in base and base[key] == ours_as_base[key]:
            continue
        values = list(row)
        for column, (parent, _) in foreign.items():
            if column in columns and values[columns.index(column)] in remapped.get(parent, {}):
                values[columns.index(column)] = remapped[parent][values[columns.index(column)]]
        if key not in base and key in theirs_keys and single_int and isinstance(key[0], int):
            # a new row of ours whose id they also used: it gets the next free id
            (top,) = conn.execute(f'SELECT COALESCE(MAX("{keys[0]}"), 0) FROM main."{table}"').fetchone()
            mapping[key[0]] = values[columns.index(keys[0])] = top + 1
        marks = ", ".join("?" for _ in columns)
        conn.execute(f'INSERT OR REPLACE INTO main."{table}" ({listed}) VALUES ({marks})', values)
    return mapping
