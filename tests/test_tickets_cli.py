"""`hubfleet tickets` through the real command (subprocesses) on a real store: a ticket's whole life cycle
(open with context, list, show --json, reply, note, escalate, log time, resolve) and the one-line errors for
a bad ticket number, a bad priority and an unknown account. No hub runs: the context records what it could
not read, which is part of what is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_helpers import copy_demo_fleet, drop_section, hubfleet

HUB = "uni-a-staging"
ACCOUNTS = """\
console:
  accounts:
    - {username: ada, role: operator, email: ada@hubfleet.example}
    - {username: lin, role: operator, email: lin@hubfleet.example}
    - {username: uni-a-lead, role: community-leader, communities: [uni-a]}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("tickets-cli") / "demo",
        keep={"communities/uni-a/hubs/staging.yaml", "communities/hackweek/hubs/staging.yaml"},
        desk=True,  # the demo's rota and second line (ada, lin)
    )
    (root / "fleet.yaml").write_text(drop_section((root / "fleet.yaml").read_text(), "console") + ACCOUNTS)
    return root


def tickets(fleet: Path, *args: str, input: str | None = None, as_: str = "ada", ok: bool = True):  # noqa: ANN201
    result = hubfleet("tickets", *args, fleet=fleet, env={"HUBFLEET_OPERATOR": as_}, input=input)
    if ok:
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def as_json(fleet: Path, *args: str, **kwargs: object) -> dict:
    return json.loads(tickets(fleet, *args, "--json", **kwargs).stdout)  # type: ignore[arg-type]


def one_line_error(fleet: Path, *args: str, as_: str = "ada") -> str:
    result = tickets(fleet, *args, as_=as_, ok=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_ticket_from_open_to_resolved(fleet: Path) -> None:
    opened = as_json(
        fleet,
        "open",
        "--hub", HUB, "--category", "server-start", "--urgency", "high",
        "--subject", "My server won't start",
        "--description", "-",
        "--user", "alice", "--email", "alice@uni-a.example",
        input="It says 'Spawner failed' since this morning.\n<b>not bold</b>",
    )  # fmt: skip
    ticket = str(opened["id"])
    assert opened["assignee"] in ("ada", "lin")  # the rota's account on duty this week
    assert any("never started" in p for p in opened["problems"]), opened["problems"]

    queue = as_json(fleet, "list")["tickets"]
    assert [t["id"] for t in queue] == [opened["id"]]
    assert queue[0]["state"] == "new" and queue[0]["priority"] == "high"

    shown = as_json(fleet, "show", ticket)
    assert shown["messages"][0]["body"].endswith("<b>not bold</b>")
    assert shown["context"]["hub"]["name"] == HUB and shown["context"]["hub"]["community"] == "uni-a"
    assert shown["context"]["user"]["username"] == "alice"
    assert shown["context"]["problems"], "an unreachable hub is named in problems"
    assert shown["history"][0]["action"] == "opened" and shown["history"][0]["actor"] == "ada"
    assert [m["kind"] for m in shown["mail"]][:1] == ["received"]

    replied = as_json(fleet, "reply", ticket, "Which environment do you start?")
    assert replied["done"] == "reply queued to the requester"
    tickets(fleet, "reply", ticket, "-", "--note", input="Looks like the broken environment.\n")
    escalated = as_json(fleet, "escalate", ticket, "--reason", "needs a fix to the environment", as_="lin")
    assert escalated["assignee"] == "ada"  # support.second_line
    tickets(fleet, "priority", ticket, "urgent")
    tickets(fleet, "log-time", ticket, "30", "--note", "read the hub's log")
    tickets(fleet, "resolve", ticket, "--summary", "Fixed the environment; start it again.")

    shown = as_json(fleet, "show", ticket)
    assert shown["state"] == "resolved" and shown["line"] == "second" and shown["priority"] == "urgent"
    assert shown["first_response_at"] is not None
    assert [(m["author_kind"], m["public"]) for m in shown["messages"]] == [
        ("requester", True),
        ("staff", True),
        ("staff", False),
        ("staff", True),
    ]
    assert shown["minutes_logged"] == 30 and shown["time_log"][0]["note"] == "read the hub's log"
    states = [
        (e["detail"]["before"], e["detail"]["after"]) for e in shown["history"] if e["action"] == "state"
    ]
    assert states == [("new", "waiting"), ("waiting", "escalated"), ("escalated", "resolved")]
    actions = [e["action"] for e in shown["history"]]
    for action in ("opened", "reply", "note", "escalated", "priority", "time"):
        assert action in actions, actions
    escalation = next(e for e in shown["history"] if e["action"] == "escalated")
    assert escalation["actor"] == "lin" and escalation["detail"]["reason"] == "needs a fix to the environment"
    assert {"received", "reply", "resolved"} <= {m["kind"] for m in shown["mail"]}
    assert "survey" not in json.dumps(shown["mail"]), "mail bodies (with their links) are not shown"

    assert as_json(fleet, "list")["tickets"] == []  # resolved: not in the active queue
    text = tickets(fleet, "show", ticket).stdout
    assert "needs a fix to the environment" in text and "<b>not bold</b>" in text
    assert "resolved" in text


def test_errors_are_one_line(fleet: Path) -> None:
    assert "there is no ticket #999" in one_line_error(fleet, "show", "999")
    assert "'abc' is not a ticket number" in one_line_error(fleet, "reply", "abc", "hello")
    ticket = str(
        as_json(
            fleet,
            "open",
            "--hub", HUB, "--category", "other", "--urgency", "low",
            "--subject", "A question", "--description", "Where are my files?",
        )["id"]
    )  # fmt: skip
    assert "'asap' is not a priority; choose one of: urgent, high, normal, low" in one_line_error(
        fleet, "priority", ticket, "asap"
    )
    assert "'mallory' is not an operator console account" in one_line_error(
        fleet, "assign", ticket, "mallory"
    )
    refused = one_line_error(fleet, "log-time", ticket, "10", as_="mallory")
    assert "'mallory' ($HUBFLEET_OPERATOR) is not an operator console account" in refused
    assert "ada, lin" in refused
    assert "'soon' is not a urgency" in one_line_error(
        fleet, "open", "--hub", HUB, "--category", "other", "--urgency", "soon",
        "--subject", "x", "--description", "y",
    )  # fmt: skip
    # nothing was lost or changed by the refused commands
    shown = as_json(fleet, "show", ticket)
    assert shown["priority"] == "low" and shown["time_log"] == [] and shown["assignee"] in ("ada", "lin")
    assert shown["hub"] == HUB and shown["community"] == "uni-a"

    # first line names the right hub: its context is captured, the ticket moves to that community
    moved = as_json(fleet, "attach-hub", ticket, "hackweek-staging")
    assert moved["done"] == "hub hackweek-staging attached, its context captured"
    tickets(fleet, "assign", ticket, "--none")
    shown = as_json(fleet, "list", "--community", "hackweek", "--assignee", "none")["tickets"]
    assert [t["id"] for t in shown] == [int(ticket)] and shown[0]["hub"] == "hackweek-staging"
