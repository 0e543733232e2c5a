"""An event's whole day on a demo hub, end to end, with nothing done by hand between `up` and the report;
prints JSON. This is issue 17's "done when", run as a script (not part of the test suite: it waits for a
clock).

A copy of the demo fleet (its `uni-a-staging` hub only: dummy auth, Python and R) gets an event that starts
`--start-in` seconds from now and ends `--length` seconds later, `--attendees` people arriving all within a
minute, with the default target (p95 spawn ≤ 10 s) and a readiness test of `--test-users` simulated attendees.
Its ready window (30 minutes' lead) is therefore open at once. Then:

1. `hubfleet up --detach`; the daemon must open ready mode by itself and run the readiness test (polled with
   `hubfleet events --json`);
2. once the event has started: a burst of `--attendees` attendees at once, through the hub's real login form
   (`hubfleet event test HUB --users N --arrival 'N in 1s'`: sign in, start, run code in a kernel, stop);
3. after the end: ready mode closed by the daemon (`hubfleet history`), and its report made (and stored) by
   the daemon (`hubfleet event report HUB EVENT --json` reads it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_helpers import copy_demo_fleet, hubfleet, passable_tempdir, running_fleet  # noqa: E402
from machine_info import machine  # noqa: E402

HUB = "uni-a-staging"
HUB_FILE = "communities/uni-a/hubs/staging.yaml"
EVENT = "lab-burst"


def events_json(fleet: Path) -> dict[str, Any]:
    result = hubfleet("events", "--json", "--hub", HUB, fleet=fleet, check=True)
    return next(e for e in json.loads(result.stdout)["events"] if e["name"] == EVENT)


def wait(what: str, predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attendees", type=int, default=30)
    parser.add_argument("--test-users", type=int, default=10)
    parser.add_argument("--start-in", type=float, default=120, help="Seconds from now to the event's start.")
    parser.add_argument("--length", type=float, default=180, help="The event's length in seconds.")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    start = now + datetime.timedelta(seconds=args.start_in)
    end = start + datetime.timedelta(seconds=args.length)
    out: dict[str, Any] = {
        "benchmark": "event_day",
        "machine": machine(),
        "hub": HUB,
        "event": {"start": start.isoformat(), "end": end.isoformat(), "attendees": args.attendees},
    }
    with passable_tempdir() as tmp:
        fleet = copy_demo_fleet(tmp / "fleet", {HUB_FILE})
        hub_file = fleet / HUB_FILE
        hub_file.write_text(
            hub_file.read_text()
            + f"max_users: {args.attendees + args.test_users}\n"
            + "events:\n"
            + f"  - name: {EVENT}\n"
            + "    display_name: A lab's first minutes\n"
            + f"    start: '{start.isoformat()}'\n"
            + f"    end: '{end.isoformat()}'\n"
            + f"    attendees: {args.attendees}\n"
            + f"    arrival: {args.attendees} in 1m\n"
            + "    environment: python\n"
            + f"    readiness_test_users: {args.test_users}\n"
        )
        t0 = time.monotonic()
        with running_fleet(fleet):
            out["up_seconds"] = round(time.monotonic() - t0, 2)
            opened = wait("ready mode", lambda: events_json(fleet)["ready_mode"], 120)
            out["ready_mode"] = opened
            tested = wait("the readiness test", lambda: events_json(fleet)["last_test"], 300)
            out["readiness_test"] = tested
            wait(
                "the event's start", lambda: datetime.datetime.now(datetime.UTC) >= start, args.start_in + 60
            )
            burst = hubfleet(
                "event", "test", HUB, "--event", EVENT, "--users", str(args.attendees),
                "--arrival", f"{args.attendees} in 1s", "--json", fleet=fleet, timeout=900,
            )  # fmt: skip
            out["burst"] = json.loads(burst.stdout) if burst.stdout.strip() else {"error": burst.stderr}
            remaining = (end - datetime.datetime.now(datetime.UTC)).total_seconds()
            closed = wait(
                "ready mode to end",
                lambda: events_json(fleet)["ready_mode"] is None and events_json(fleet)["phase"] == "past",
                max(remaining, 0) + 120,
            )
            del closed
            history = hubfleet("history", HUB, "--json", fleet=fleet, check=True)
            out["ready_history"] = [
                e["summary"] for e in json.loads(history.stdout)["events"] if e["kind"] == "ready"
            ]
            report = wait("the report", lambda: events_json(fleet)["report"], 180)
            out["report"] = report
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
