"""The support desk's store work at a size (`--tickets`, default 1,000, opened over the last 60 days with
every priority, a third answered and waiting, a third resolved); prints JSON.

Not part of the test suite; runs no hub (opening a ticket from a hub adds the context capture, measured in
docs/support.md). Timed: opening a ticket (mean over all), the queue (`list_tickets`, the 500 most urgent, as
the console's /tickets and /api/tickets read it), one ticket with its conversation and history, the daemon
watch's target pass (the first raises the warnings and misses; later ones find them raised) and one
community's support-hours budget. Best and median of `--repeat` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from cost_fixtures import best_and_median  # noqa: E402

from hubfleet.config.models_support import PRIORITIES, Rota, Support  # noqa: E402
from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from hubfleet.support import hours, sla  # noqa: E402
from hubfleet.support import tickets as t  # noqa: E402
from machine_info import machine  # noqa: E402

DEMO = HERE.parent / "examples" / "demo-fleet"
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(19)
    fleet = load_fleet(DEMO)
    fleet.settings = fleet.settings.model_copy(
        update={"support": Support(rota=Rota(first_line=["ada"], starting=datetime(2026, 9, 28).date()))}
    )
    hubs = sorted(fleet.hubs)
    with tempfile.TemporaryDirectory(prefix="hubfleet-bench-support-") as tmp:
        store = open_store(Path(tmp))
        started = time.perf_counter()
        ids = []
        for n in range(args.tickets):
            opened = NOW - timedelta(minutes=rng.randrange(60 * 24 * 60))
            user = f"user{n % 300}"
            new = t.NewTicket(
                source="hub", category="server-start", urgency=rng.choice(PRIORITIES), subject=f"Request {n}",
                description="My server does not start.\n" * 5, hub=rng.choice(hubs), username=user,
                requester_email=f"{user}@example.org", verified=True,
            )  # fmt: skip
            ticket = t.open_ticket(store, fleet, new, now=opened)
            ids.append(ticket)
            fate = n % 3
            if fate:
                later = opened + timedelta(minutes=rng.randrange(30, 600))
                t.add_message(
                    store, fleet, ticket, author="ada", author_kind="staff", body="Which one?", now=later
                )
                if fate == 2:
                    t.log_time(store, ticket, account="ada", minutes=20, now=later)
                    t.resolve(store, fleet, ticket, actor="ada", now=later + timedelta(hours=1))
        opening = (time.perf_counter() - started) / args.tickets
        first = time.perf_counter()
        raised = len(sla.check_targets(store, fleet, now=NOW))
        first_pass = time.perf_counter() - first
        repeat = args.repeat
        result = {
            "benchmark": "support_desk",
            "tickets": args.tickets,
            "open_and_work_one_ticket_mean_seconds": round(opening, 4),
            "queue_500": best_and_median(
                lambda: t.list_tickets(store, fleet, limit=500, now=NOW), args.repeat
            ),
            "one_ticket": best_and_median(lambda: t.get_ticket(store, fleet, ids[-1], now=NOW), repeat),
            "watch_first_pass_seconds": round(first_pass, 3),
            "watch_first_pass_raised": raised,
            "watch_pass": best_and_median(lambda: sla.check_targets(store, fleet, now=NOW), repeat),
            "support_hours_one_community": best_and_median(
                lambda: hours.budget_status(store, fleet, "uni-a", now=NOW), repeat
            ),
            "machine": machine(),
        }
        store.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
