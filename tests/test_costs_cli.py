"""`hubfleet costs` and `hubfleet costs allocate` as a person runs them (the real command in a subprocess) on
a real store: the table, JSON and CSV, the invariant line per account, a re-import picked up, and every bad
input refused with a message saying what to do."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from costs_alloc_helpers import at, put_groups, put_import, put_session, write_fleet
from fleet_helpers import hubfleet
from hubfleet.cli.main import app
from hubfleet.store import open_store

MONTH = "2026-10"


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def test_costs_report_allocate_and_errors(tmp_path: Path) -> None:
    root = write_fleet(tmp_path / "fleet").root
    state = tmp_path / "state"
    with open_store(state) as store:
        put_session(store, "h1", "ann", at(MONTH, 3, 8), 10)
        put_session(store, "h2", "cy", at(MONTH, 3, 8), 10)
        put_groups(store, "h1", {"ann": ["physics"]})
        put_import(
            store,
            "acct-1",
            MONTH,
            [
                (3, "a", "h1", "Usage", "Compute Engine", 1_234_567_891),
                (3, "a", None, "Usage", "Cloud Load Balancing", 100_000_001),
                (4, None, None, "Usage", "Support", 3_333_333),
            ],
        )

    def run(*args: str) -> Ran:
        """In this process (the real command in a subprocess costs seconds a call on a busy machine)."""
        result = CliRunner().invoke(app, ["costs", *args, "--state-dir", str(state), "--fleet", str(root)])
        return Ran(result.exit_code, result.stdout, result.stderr)

    # not allocated yet: `hubfleet costs` allocates first, then shows the month (the real command, once)
    shown = hubfleet("costs", "--month", MONTH, "--json", "--state-dir", str(state), fleet=root)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["month"] == MONTH and report["ok"] is True
    (account,) = report["accounts"]
    assert account == account | {"account": "acct-1", "billed": "1337.90", "allocated": "1337.90", "ok": True}
    assert account["unallocated"] == "3.33"
    hubs = {row["hub"]: row for row in report["hubs"]}
    assert hubs["h1"]["direct"] == "1234.57"
    assert hubs["h1"]["shared"] == "50.00" and hubs["h2"]["total"] == "50.00"
    assert {(r["community"], r["total"]) for r in report["communities"]} == {("c", "1334.57")}
    assert report["totals"] == [
        {"currency": "USD", "hubs": "1334.57", "unallocated": "3.33", "idle kept": "0.00", "total": "1337.90"}
    ]

    table = run("--month", MONTH)
    assert table.returncode == 0, table.stderr
    assert "acct-1: billed 1,337.90 USD = allocated 1,337.90 USD (unallocated 3.33)" in table.stdout
    assert "h1" in table.stdout and "1,284.57" in table.stdout

    by_user = run("--month", MONTH, "--hub", "h1", "--by", "user", "--csv")
    assert by_user.returncode == 0, by_user.stderr
    assert list(csv.DictReader(io.StringIO(by_user.stdout))) == [
        {"hub": "h1", "user": "ann", "currency": "USD", "amount": "1284.57"}
    ]
    by_group = json.loads(run("--month", MONTH, "--community", "c", "--by", "group", "--json").stdout)
    assert {(g["hub"], g["group"], g["amount"]) for g in by_group["groups"]} == {
        ("h1", "physics", "1284.57"),
        ("h2", "(no group)", "50.00"),
    }
    daily = json.loads(run("--month", MONTH, "--hub", "h2", "--daily", "--json").stdout)
    assert daily["days"] == [{"day": "2026-10-03", "hub": "h2", "currency": "USD", "amount": "50.000000"}]

    # a corrected export replaces the import: the next `hubfleet costs` allocates it again
    with open_store(state) as store:
        put_import(store, "acct-1", MONTH, [(3, "a", "h2", "Usage", "Compute Engine", 9_990_000)])
    again = json.loads(run("--month", MONTH, "--json").stdout)
    assert [(a["billed"], a["allocated"], a["ok"]) for a in again["accounts"]] == [("9.99", "9.99", True)]

    allocated = run("allocate", "--month", MONTH, "--json")
    assert allocated.returncode == 0, allocated.stderr
    assert json.loads(allocated.stdout)["ok"] is True

    for args, message in [
        (("--month", "2026-13"), "'2026-13' is not a month; write YYYY-MM"),
        (("--month", "2026-08"), "nothing to show for 2026-08"),
        (("--community", "nope"), "no community named 'nope'"),
        (("--hub", "nope"), "no hub named 'nope'"),
        (("--community", "d", "--hub", "h1"), "hub 'h1' is not a hub of community 'd'"),
        (("--by", "team"), "--by 'team': choose `user` or `group`"),
        (("--json", "--csv"), "choose one of --json and --csv"),
    ]:
        failed = run(*args)
        assert failed.returncode == 1, (args, failed.stdout)
        assert message in failed.stderr, (args, failed.stderr)
    nothing = hubfleet("costs", "--month", "2026-08", "--state-dir", str(state), fleet=root)
    assert nothing.returncode == 1
    assert (
        nothing.stderr.startswith("error: nothing to show for 2026-08")
        and "hubfleet costs import" in nothing.stderr
    )
    refused = run("allocate", "--month", "1999-02")
    assert refused.returncode == 1 and "nothing to allocate for 1999-02" in refused.stderr
