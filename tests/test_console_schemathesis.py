"""Property-based tests of the console's JSON API against its own OpenAPI document (schemathesis).

Schemathesis reads /api/openapi.json from the real `hubfleet console` process (over the seeded demo fleet of
console_helpers), generates valid and invalid requests for every operation (examples, coverage and fuzzing
phases, a bounded number of cases each) and checks every response: no 5xx, a documented status code, a
documented content type, and a body that conforms to the documented schema. It runs once with an
operator's API token and once with a community leader's (whose foreign hubs and communities are 404s).

Left out on purpose:
- POST /api/hubs/{hub}/checks: it acts on the fleet (starts a server on a hub); test_console_api covers it.
- DELETE /api/tokens/{token_id}: generated ids could revoke the very token the run authenticates with.
POST /api/tokens is included: it only adds tokens to this throwaway console's store.

The schema is lazy (schemathesis.pytest.from_fixture: read from the live console when the test runs, each
operation a subtest): built at collection, its cases cost ~8 s of CPU in every xdist worker, all of which
collect every file, though only one runs this one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from console_helpers import ConsoleFleet, console_fleet, write_accounts
from fleet_helpers import copy_demo_fleet
from hubfleet.config.validate import load_fleet
from hubfleet.console.app import create_app
from hubfleet.store import open_store

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": 8},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    }
)
"""Both valid and invalid inputs; at most 8 fuzzed cases per operation (coverage adds its boundary cases)."""


def _openapi_document() -> dict[str, Any]:
    """The console's OpenAPI document made in this process; the live console must serve the same."""
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_demo_fleet(Path(tmp) / "fleet")
        write_accounts(root)
        with open_store("sqlite://") as store:
            return create_app(store, load_fleet(root)).openapi()


schema = schemathesis.pytest.from_fixture("console_schema")


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    with console_fleet(tmp_path_factory.mktemp("console-schemathesis")) as fleet:
        _seed_tickets(fleet)
        yield fleet


@pytest.fixture(autouse=True)
def _nodeid_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4's lazy schema reads and renames `node._nodeid`, which pytest 9 no longer has: a plain
    attribute for it (each operation's subtest names the operation)."""
    request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def console_schema(cf: ConsoleFleet) -> Any:
    return (
        schemathesis.openapi.from_dict(httpx.get(f"{cf.url}/api/openapi.json").json(), config=CONFIG)
        .exclude(method="POST", path="/api/hubs/{hub}/checks")
        .exclude(method="DELETE")
    )


def _seed_tickets(cf: ConsoleFleet) -> None:
    """Tickets 1 (uni-a: a reply with a PDF, an internal note with a PNG) and 2 (hackweek), so that the
    generated calls on /api/tickets/{ticket_id} meet real tickets, not only 404s."""
    from hubfleet.support import tickets as desk

    fleet = load_fleet(cf.root)
    with open_store(cf.state_dir) as store:
        for hub in ("uni-a", "hackweek"):
            new = desk.NewTicket(
                "hub", "server-start", "high", "", f"no server on {hub}", hub=hub, username="u0"
            )
            desk.open_ticket(store, fleet, new)
        desk.add_message(
            store,
            fleet,
            1,
            author="ops",
            author_kind="staff",
            body="a reply",
            attachments=[desk.Attachment("a.pdf", b"%PDF-1.4\n")],
        )
        desk.add_message(
            store,
            fleet,
            1,
            author="ops",
            author_kind="staff",
            body="a note",
            public=False,
            attachments=[desk.Attachment("b.png", b"\x89PNG\r\n\x1a\n" + bytes(16))],
        )


def test_the_live_console_serves_this_document(cf: ConsoleFleet) -> None:
    assert httpx.get(f"{cf.url}/api/openapi.json").json() == _openapi_document()


def _call(case: schemathesis.Case, cf: ConsoleFleet, username: str) -> None:
    headers = {"Authorization": f"Bearer {cf.tokens[username]}"}
    case.call_and_validate(base_url=cf.url, headers=headers, checks=CHECKS, timeout=30)


@schema.parametrize()
def test_the_api_conforms_to_its_schema_for_an_operator(case: schemathesis.Case, cf: ConsoleFleet) -> None:
    _call(case, cf, "ops")


@schema.parametrize()
def test_the_api_conforms_to_its_schema_for_a_community_leader(
    case: schemathesis.Case, cf: ConsoleFleet
) -> None:
    _call(case, cf, "lead-a")
