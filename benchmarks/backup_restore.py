"""What backups cost: a hub's first and later backups, one file restored, restic's memory; prints JSON.

Not part of the test suite; runs no hub (the homes and the database are written straight to disk) and stops
by itself. A hub of `--users` users, each with `--files` incompressible files of 64 KiB (so deduplication and
compression gain nothing), and a hub database of `--db-users` rows, backed up with hubfleet's own functions to
a restic repository in a temporary directory:

1. the first backup (everything new), then one with nothing changed, then one after 1 % of the files changed.
   Targets: an unchanged hub backed up in at most 5 s; a changed 1 % adds about 1 % to the repository.
2. `hubfleet restore --user --path` of one notebook as of the first backup. Target: at most 5 s.
3. restic's peak resident memory over all of it (RUSAGE_CHILDREN). Target: at most 500 MB.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import copy_demo_fleet, edit  # noqa: E402
from hubfleet.backup.hub_backup import back_up_hub, backup_setup, hub_snapshots, restore_user  # noqa: E402
from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.runtime.layout import layout  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

HUB = "uni-a"
FILE_SIZE = 64 * 1024
UNCHANGED_TARGET_S = 5.0
RESTORE_TARGET_S = 5.0
RSS_TARGET_MB = 500


def write_hub(homes: Path, database: Path, users: int, files: int, db_users: int) -> int:
    """Homes of random files and a database with a users table; the bytes written."""
    total = 0
    for u in range(users):
        home = homes / f"user{u:04d}"
        (home / "work").mkdir(parents=True)
        for f in range(files):
            (home / "work" / f"notebook{f:03d}.ipynb").write_bytes(os.urandom(FILE_SIZE))
            total += FILE_SIZE
    database.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, last_activity TEXT)")
    db.executemany("INSERT INTO users (name) VALUES (?)", [(f"user{i}",) for i in range(db_users)])
    db.commit()
    db.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--db-users", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hf-bench-backup-") as tmp:
        fleet_dir = copy_demo_fleet(
            Path(tmp) / "fleet",
            keep={"communities/uni-a/hubs/staging.yaml", "communities/uni-a/hubs/prod.yaml"},
        )
        repo = Path(tmp) / "repository"
        edit(fleet_dir / "fleet.yaml", "repository: .hubfleet-backups", f"repository: {repo}")
        config = load_fleet(fleet_dir)
        state = fleet_dir / ".hubfleet"
        where = layout(state)
        written = write_hub(
            where.homes(HUB), where.hub_data(HUB) / "jupyterhub.sqlite", args.users, args.files, args.db_users
        )
        setup = backup_setup(config, state)
        hub = config.hubs[HUB]
        with open_store(state) as store:
            began = time.perf_counter()
            first = back_up_hub(setup, store, hub, "manual")
            first_s = time.perf_counter() - began

            began = time.perf_counter()
            unchanged = back_up_hub(setup, store, hub, "manual")
            unchanged_s = time.perf_counter() - began

            changed_files = max(1, args.users * args.files // 100)
            homes = sorted(where.homes(HUB).iterdir())
            for i in range(changed_files):
                home = homes[i % len(homes)]
                (home / "work" / f"notebook{i // len(homes):03d}.ipynb").write_bytes(os.urandom(FILE_SIZE))
            began = time.perf_counter()
            changed = back_up_hub(setup, store, hub, "manual")
            changed_s = time.perf_counter() - began

            began = time.perf_counter()
            snapshots = hub_snapshots(setup, HUB)
            list_s = time.perf_counter() - began

            (homes[0] / "work" / "notebook000.ipynb").unlink()
            began = time.perf_counter()
            folder, _ = restore_user(
                setup, HUB, homes[0].name, path="work/notebook000.ipynb", at=snapshots[0].id
            )
            restore_s = time.perf_counter() - began
            assert (folder / "work" / "notebook000.ipynb").stat().st_size == FILE_SIZE
        repo_bytes = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
        shutil.rmtree(where.data_dir, ignore_errors=True)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "benchmark": "backup_restore",
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "hub": {
            "users": args.users,
            "files": args.users * args.files,
            "bytes": written,
            "db_users": args.db_users,
        },
        "first_backup_s": round(first_s, 2),
        "first_backup_added_mb": round(first.added_bytes / 2**20, 1),
        "unchanged_backup_s": round(unchanged_s, 2),
        "unchanged_backup_added_kb": round(unchanged.added_bytes / 1024, 1),
        "changed_1pct_backup_s": round(changed_s, 2),
        "changed_1pct_files": changed_files,
        "changed_1pct_added_mb": round(changed.added_bytes / 2**20, 2),
        "list_snapshots_s": round(list_s, 2),
        "restore_one_file_s": round(restore_s, 2),
        "repository_mb": round(repo_bytes / 2**20, 1),
        "restic_peak_rss_mb": round(rss_mb, 1),
        "targets": {
            "unchanged_backup_s": UNCHANGED_TARGET_S,
            "restore_one_file_s": RESTORE_TARGET_S,
            "restic_peak_rss_mb": RSS_TARGET_MB,
        },
        "met": {
            "unchanged_backup_s": unchanged_s <= UNCHANGED_TARGET_S,
            "restore_one_file_s": restore_s <= RESTORE_TARGET_S,
            "restic_peak_rss_mb": rss_mb <= RSS_TARGET_MB,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
