"""What one collection of a large hub costs with groups, sign-ins and resources recorded; prints JSON.

Not part of the test suite; runs no hub. A hub of `--users` users (each in `--groups` groups, `--running` of
them with a running server started with an environment, every one signed in through an OIDC provider) is
recorded with the collector's own `record_collection` into a real store in a temporary directory: the first
collection (everything new), then a steady-state one a minute later (what the daemon does every minute).
`people_in_month` over the month is timed too. Target: a steady-state collection of 5,000 users in well
under a second (the collector runs every minute over every hub).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hubfleet.config.validate import load_fleet  # noqa: E402
from hubfleet.monitor.collector import record_collection  # noqa: E402
from hubfleet.monitor.identities import SignIn  # noqa: E402
from hubfleet.monitor.resources import Measured, server_request  # noqa: E402
from hubfleet.monitor.usage import people_in_month  # noqa: E402
from hubfleet.store import open_store  # noqa: E402
from machine_info import machine  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def users_at(now: datetime, users: int, groups: int, running: int) -> list[dict]:
    models = []
    for i in range(users):
        servers = {}
        if i < running:
            servers[""] = {
                "started": iso(now - timedelta(hours=1)),
                "last_activity": iso(now),
                "ready": True,
                "stopped": False,
                "pending": None,
                "user_options": {"environment": "python"},
            }
        models.append(
            {
                "name": f"user{i:05d}",
                "last_activity": iso(now),
                "servers": servers,
                "groups": [f"group{(i + g) % 50}" for g in range(groups)],
            }
        )
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--running", type=int, default=500)
    options = parser.parse_args()
    hub = load_fleet(DEMO).hubs["uni-a-staging"]
    now = datetime.now(UTC).replace(microsecond=0)
    signed = [
        SignIn(f"user{i:05d}", f"oidc:https://issuer.example#s{i}", "https://issuer.example", "sub", now, now)
        for i in range(options.users)
    ]
    measured = {f"user{i:05d}": Measured(1.0 + i, 10_000_000) for i in range(options.running)}
    timings = {}
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp)) as store:
        for label, at, sign_ins in (("first", now, signed), ("steady", now + timedelta(minutes=1), [])):
            models = users_at(at, options.users, options.groups, options.running)
            start = time.perf_counter()
            with store.session() as session, session.begin():
                record_collection(
                    session,
                    hub.name,
                    "oidc",
                    models,
                    now=at,
                    since=at - timedelta(minutes=16),
                    signed_in=sign_ins,
                    measured=measured,
                    request_of=lambda u, s: server_request(hub, s.get("user_options"), u.get("groups")),
                )
            timings[f"{label}_collection_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        people = people_in_month(store, now.strftime("%Y-%m"))
        timings["people_in_month_s"] = round(time.perf_counter() - start, 3)
    print(
        json.dumps(
            {
                "users": options.users,
                "groups_per_user": options.groups,
                "running": options.running,
                "people": people.people,
                **timings,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
