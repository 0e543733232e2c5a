"""`hubfleet tickets`: the support desk's queue and every action on a ticket, for operators at a terminal.

The acting account (kept in each ticket's history) is `--as ACCOUNT`, else $HUBFLEET_OPERATOR, else the OS
login; when the fleet has console accounts it must be one of its operator accounts. The logic is in
hubfleet.support.tickets (one transaction per action; mail is queued, never sent here) and
hubfleet.support.context (the hub's state when a ticket is opened or given a hub).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hubfleet.cli.app import app
from hubfleet.cli.common import (
    FleetOption,
    JsonOption,
    StateDirOption,
    console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.config.fleet import FleetConfig
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

tickets_app = typer.Typer(
    help="The support desk: the queue, a ticket's conversation and context, and acting on tickets.",
    no_args_is_help=True,
)
app.add_typer(tickets_app, name="tickets")

OPERATOR_ENV = "HUBFLEET_OPERATOR"
AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help=f"The operator console account acting (default: ${OPERATOR_ENV}, else your login).",
        show_default=False,
    ),
]
TicketArg = Annotated[str, typer.Argument(help="The ticket's number (#N).", show_default=False)]


# --------------------------------------------------------------------------- shared


class _Desk:
    """The fleet, its state directory and an open store, for one command."""

    def __init__(self, fleet: Path | None, state_dir: Path | None):
        from hubfleet.store import open_store

        fleet_dir = resolve_fleet_dir(fleet)
        self.fleet: FleetConfig = load_or_explain(fleet_dir)
        self.state_dir = resolve_state_dir(fleet_dir, state_dir)
        self.store = open_store(self.state_dir)

    def __enter__(self) -> _Desk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _ticket_id(value: str) -> int:
    text = value.strip().removeprefix("#")
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"'{value}' is not a ticket number; give the number `hubfleet tickets list` shows")
    return int(text)


def _actor(fleet: FleetConfig, given: str | None) -> str:
    """--as, else $HUBFLEET_OPERATOR, else the OS login; an operator account when the fleet has accounts."""
    name = given or os.environ.get(OPERATOR_ENV) or ""
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = ""
    accounts = fleet.settings.console.accounts
    operators = [a.username for a in accounts if a.role == "operator"]
    if accounts and name not in operators:
        where = "--as" if given else (f"${OPERATOR_ENV}" if os.environ.get(OPERATOR_ENV) else "your login")
        choices = ", ".join(operators) or "(none: add one to console.accounts)"
        raise UserError(
            f"'{name}' ({where}) is not an operator console account of this fleet; pass --as ACCOUNT "
            f"or set {OPERATOR_ENV} to one of: {choices}"
        )
    if not name:
        raise UserError(f"no acting account: pass --as ACCOUNT or set {OPERATOR_ENV}")
    return name


def _text(value: str, what: str) -> str:
    """`value`, or standard input when it is `-`."""
    if value != "-":
        return value
    if sys.stdin.isatty():
        raise UserError(f"{what} '-' reads standard input; pipe the text in, or give it as an argument")
    return sys.stdin.read()


def _due_before(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"--due-before {value!r}: not a date; write YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC unless it says)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _capture(desk: _Desk, hub: str, username: str | None) -> dict[str, Any]:
    from hubfleet.support.context import capture_context

    return asyncio.run(capture_context(desk.fleet, desk.store, hub, username, state_dir=desk.state_dir))


def _done(as_json: bool, ticket_id: int, what: str, **extra: Any) -> None:
    if as_json:
        typer.echo(json.dumps({"id": ticket_id, "done": what, **extra}, indent=2))
    else:
        console.print(f"ticket #{ticket_id}: {escape(what)}", highlight=False)


def _short(at: str | None) -> str:
    return at[:16].replace("T", " ") if at else "-"


def _target(targets: dict[str, Any]) -> str:
    """The running target of a ticket, as the queue shows it."""
    for name, label in (("first_response", "reply"), ("resolution", "resolve")):
        target = targets.get(name) or {}
        if target.get("status") in ("running", "paused", "missed") and (
            name == "resolution" or target.get("due") or target.get("status") == "missed"
        ):
            return f"{label} {target['status']} {target['percent']:.0f}% (due {_short(target.get('due'))})"
    return "met" if targets else "-"


# --------------------------------------------------------------------------- reading


@tickets_app.command("list")
@friendly_errors
def list_cmd(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", help="Only tickets in this state (repeat for several); default: active ones."
        ),
    ] = None,
    priority: Annotated[str | None, typer.Option("--priority", help="urgent, high, normal or low.")] = None,
    community: Annotated[str | None, typer.Option("--community", help="Only this community's.")] = None,
    assignee: Annotated[
        str | None, typer.Option("--assignee", help="Only this account's; `none`: unassigned.")
    ] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub's.")] = None,
    due_before: Annotated[
        str | None, typer.Option("--due-before", help="Due (next target) before YYYY-MM-DD[THH:MM].")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 200,
    all_states: Annotated[bool, typer.Option("--all", help="Resolved and closed tickets too.")] = False,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """The queue, most urgent first (the earliest due target, then age)."""
    from hubfleet.store.tickets import ACTIVE_STATES
    from hubfleet.support.tickets import list_tickets

    with _Desk(fleet, state_dir) as desk:
        if community is not None and community not in desk.fleet.communities:
            raise UserError(
                f"--community {community!r}: no such community; choose one of: "
                f"{', '.join(sorted(desk.fleet.communities))}"
            )
        if hub is not None and hub not in desk.fleet.hubs:
            raise UserError(
                f"--hub {hub!r}: no such hub; choose one of: {', '.join(sorted(desk.fleet.hubs))}"
            )
        states = state or (None if all_states else list(ACTIVE_STATES))
        rows = list_tickets(
            desk.store,
            desk.fleet,
            states=states,
            priority=priority,
            community=community,
            assignee=assignee,
            hub=hub,
            due_before=_due_before(due_before),
            limit=limit,
        )
    if as_json:
        typer.echo(json.dumps({"tickets": rows}, indent=2))
        return
    if not rows:
        console.print("no tickets")
        return
    table = Table(title="tickets", title_justify="left")
    for column in ("#", "priority", "state", "line", "assignee", "hub", "requester", "subject", "target"):
        table.add_column(column, justify="right" if column == "#" else "left")
    for row in rows:
        requester = row["username"] or row["requester_email"] or row["requester_name"] or "-"
        table.add_row(
            str(row["id"]),
            row["priority"],
            row["state"],
            row["line"],
            escape(row["assignee"] or "-"),
            escape(row["hub"] or "-"),
            escape(requester + ("" if row["verified"] else " (unverified)")),
            escape(row["subject"][:60]),
            _target(row["targets"]),
        )
    console.print(table)


@tickets_app.command("show")
@friendly_errors
def show_cmd(
    ticket: TicketArg,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """A ticket: its conversation (internal notes marked), the hub's context when it was opened, targets,
    history, time log, linked incidents and the mail it queued."""
    from hubfleet.support.tickets import get_ticket

    with _Desk(fleet, state_dir) as desk:
        found = get_ticket(desk.store, desk.fleet, _ticket_id(ticket))
        found["mail"] = _outbox(desk, found["id"])
    if as_json:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    _print_ticket(found)


def _outbox(desk: _Desk, ticket_id: int) -> list[dict[str, Any]]:
    """The ticket's mail (never the bodies: they carry the requester's confirm and survey links)."""
    from sqlalchemy import select

    from hubfleet.store.tickets import TicketMail

    with desk.store.session() as session:
        rows = session.scalars(
            select(TicketMail).where(TicketMail.ticket_id == ticket_id).order_by(TicketMail.id)
        )
        return [
            {
                "kind": m.kind,
                "recipient": m.recipient,
                "subject": m.subject,
                "created_at": m.created_at.isoformat(),
                "sent_at": m.sent_at.isoformat() if m.sent_at else None,
                "attempts": m.attempts,
                "error": m.error or None,
            }
            for m in rows
        ]


def _print_ticket(t: dict[str, Any]) -> None:
    say = console.print
    say(f"[bold]#{t['id']} {escape(t['subject'])}[/bold]", highlight=False)
    requester = t["username"] or t["requester_name"] or "-"
    if t["requester_email"]:
        requester += f" <{t['requester_email']}>"
    say(
        escape(
            f"{t['state']} · {t['priority']} (asked {t['urgency']}) · {t['category']} · {t['line']} line · "
            f"assignee {t['assignee'] or '-'} · hub {t['hub'] or '-'} ({t['community'] or '-'}) · "
            f"from {requester}{'' if t['verified'] else ' (unverified)'} via {t['source']} · "
            f"opened {_short(t['created_at'])}"
        ),
        highlight=False,
    )
    for name, target in t["targets"].items():
        say(
            escape(
                f"  {name.replace('_', ' ')}: {target['status']}, {target['used_hours']:.1f} of "
                f"{target['target_hours']:g} working hours ({target['percent']:.0f}%), "
                f"due {_short(target['due'])}"
            ),
            highlight=False,
        )
    if t.get("page_url"):
        say(escape(f"  page: {t['page_url']}"), highlight=False)
    _print_context(t.get("context") or {})
    say("\n[bold]conversation[/bold]")
    for m in t["messages"]:
        kind = "note" if not m["public"] else m["author_kind"]
        say(
            escape(f"--- {_short(m['at'])} {m['author']} ({kind}, via {m['via']})"),
            highlight=False,
            style="dim" if not m["public"] else None,
        )
        say(escape(m["body"]), highlight=False, markup=True)
    for a in t.get("attachments", []):
        say(escape(f"  attachment {a['id']}: {a['filename']} ({a['content_type']}, {a['size']} bytes)"))
    if t.get("history"):
        table = Table(title="history", title_justify="left")
        for column in ("at", "actor", "action", "detail"):
            table.add_column(column)
        for e in t["history"]:
            detail = ", ".join(f"{k}={v}" for k, v in (e["detail"] or {}).items() if v not in (None, ""))
            table.add_row(_short(e["at"]), escape(e["actor"]), e["action"], escape(detail[:120]))
        say(table)
    if t.get("time_log"):
        table = Table(title=f"time log ({t['minutes_logged']} minutes)", title_justify="left")
        for column in ("at", "account", "minutes", "note"):
            table.add_column(column, justify="right" if column == "minutes" else "left")
        for entry in t["time_log"]:
            table.add_row(
                _short(entry["at"]), escape(entry["account"]), str(entry["minutes"]), escape(entry["note"])
            )
        say(table)
    for link in t.get("incidents", []):
        noted = (
            f", resolution noted {_short(link['resolution_noted_at'])}" if link["resolution_noted_at"] else ""
        )
        say(escape(f"incident {link['incident_id']} linked {_short(link['linked_at'])}{noted}"))
    if t.get("mail"):
        table = Table(title="mail", title_justify="left")
        for column in ("queued", "kind", "to", "subject", "sent"):
            table.add_column(column)
        for m in t["mail"]:
            sent = _short(m["sent_at"]) if m["sent_at"] else f"not yet ({m['attempts']} attempts)"
            if m["error"]:
                sent += f": {m['error'][:60]}"
            table.add_row(
                _short(m["created_at"]), m["kind"], escape(m["recipient"]), escape(m["subject"]), escape(sent)
            )
        say(table)


def _print_context(c: dict[str, Any]) -> None:
    if not c:
        return
    say = console.print
    say(f"\n[bold]context[/bold] (captured {_short(c.get('captured_at'))})")
    hub = c.get("hub") or {}
    if hub:
        say(
            escape(
                f"  hub {hub.get('name')}: {hub.get('state')}, JupyterHub {hub.get('version') or '?'}, "
                f"{hub.get('stage')} on {hub.get('cluster')}, {hub.get('url') or '-'}"
            ),
            highlight=False,
        )
    incidents = c.get("incidents") or {}
    for label in ("open", "recent"):
        for i in incidents.get(label, []):
            say(
                escape(
                    f"  incident {i['id']} ({label}): {i['kind']} since {_short(i['started_at'])}: "
                    f"{i['cause']}"
                )
            )
    for d in c.get("deploys", [])[:3]:
        say(
            escape(f"  deploy {_short(d['at'])}: {d['result']} by {d['actor']} {d['message'][:80]}"),
            highlight=False,
        )
    user = c.get("user")
    if user:
        say(
            escape(
                f"  user {user['username']}: server {user.get('server')}, "
                f"started {_short(user.get('started'))}, last active {_short(user.get('last_activity'))}"
            ),
            highlight=False,
        )
    if c.get("environment"):
        say(escape(f"  environment: {c['environment']}"), highlight=False)
    for f in c.get("spawn_failures", []):
        detail = f" ({f['detail']})" if f.get("detail") else ""
        say(escape(f"  failed start {_short(f['at'])}: {f['message']}{detail}"), highlight=False)
    for problem in c.get("problems", []):
        say(escape(f"  not known: {problem}"), style="yellow", highlight=False)
    if c.get("start_log"):
        lines = str(c["start_log"]).splitlines()
        more = ", the last 40 here; all in --json" if len(lines) > 40 else ""
        say(f"  their last server start ({len(lines)} lines{more}):")
        say(escape("\n".join("    " + line for line in lines[-40:])), style="dim", highlight=False)


# --------------------------------------------------------------------------- acting


@tickets_app.command("open")
@friendly_errors
def open_cmd(
    hub: Annotated[str, typer.Option("--hub", help="The hub it is about.", show_default=False)],
    category: Annotated[
        str,
        typer.Option(
            "--category", help="sign-in, server-start, environment, data, performance, billing, other."
        ),
    ],
    urgency: Annotated[str, typer.Option("--urgency", help="urgent, high, normal or low.")],
    subject: Annotated[str, typer.Option("--subject", help="One line.")],
    description: Annotated[
        str, typer.Option("--description", help="What happened; `-` reads standard input.")
    ],
    user: Annotated[str | None, typer.Option("--user", help="The person's username on the hub.")] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="Where replies go (the person's address).")
    ] = None,
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Open a ticket for someone (on the phone, in a corridor) with the hub's context captured now."""
    from hubfleet.support.tickets import NewTicket, TicketError, open_ticket

    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        if hub not in desk.fleet.hubs:
            raise TicketError(
                f"--hub {hub!r}: no such hub; choose one of: {', '.join(sorted(desk.fleet.hubs))}"
            )
        text = _text(description, "--description")
        context = _capture(desk, hub, user)
        ticket_id = open_ticket(
            desk.store,
            desk.fleet,
            NewTicket(
                source="cli",
                category=category,
                urgency=urgency,
                subject=subject,
                description=text,
                hub=hub,
                username=user,
                requester_email=email,
                verified=True,
                opened_by=actor,
                environment=context.get("environment"),
                context=context,
            ),
        )
        from hubfleet.support.tickets import get_ticket

        assignee = get_ticket(desk.store, desk.fleet, ticket_id)["assignee"]
    if as_json:
        typer.echo(
            json.dumps({"id": ticket_id, "assignee": assignee, "problems": context["problems"]}, indent=2)
        )
        return
    console.print(f"opened ticket #{ticket_id}, assigned to {escape(assignee or 'nobody')}", highlight=False)
    for problem in context["problems"]:
        console.print(escape(f"  context not known: {problem}"), style="yellow", highlight=False)


@tickets_app.command("reply")
@friendly_errors
def reply_cmd(
    ticket: TicketArg,
    text: Annotated[str, typer.Argument(help="The reply; `-` reads standard input.", show_default=False)],
    note: Annotated[
        bool, typer.Option("--note", help="An internal note, not sent to the requester.")
    ] = False,
    keep_open: Annotated[
        bool, typer.Option("--keep-open", help="Do not wait for the requester (their clock keeps running).")
    ] = False,
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Answer the requester (mailed to them; the ticket then waits for them) or add an internal note."""
    from hubfleet.support.tickets import add_message

    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        ticket_id = _ticket_id(ticket)
        message = add_message(
            desk.store,
            desk.fleet,
            ticket_id,
            author=actor,
            author_kind="staff",
            body=_text(text, "the reply"),
            public=not note,
            via="cli",
            state="open" if keep_open else None,
        )
    _done(as_json, ticket_id, "note added" if note else "reply queued to the requester", message=message)


@tickets_app.command("assign")
@friendly_errors
def assign_cmd(
    ticket: TicketArg,
    account: Annotated[
        str | None, typer.Argument(help="An operator console account.", show_default=False)
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="Nobody (back to the queue).")] = False,
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Give the ticket to an operator account (mailed to them), or to nobody with --none."""
    from hubfleet.support.tickets import assign

    if (account is None) == (not none):
        raise UserError("name one account to give the ticket to, or pass --none (not both)")
    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        ticket_id = _ticket_id(ticket)
        assign(desk.store, desk.fleet, ticket_id, None if none else account, actor=actor)
    _done(as_json, ticket_id, f"assigned to {account or 'nobody'}", assignee=account)


@tickets_app.command("escalate")
@friendly_errors
def escalate_cmd(
    ticket: TicketArg,
    reason: Annotated[
        str, typer.Option("--reason", help="Why second line must take it.", show_default=False)
    ],
    to: Annotated[
        str | None,
        typer.Option("--to", help="A second-line account (default: the first of support.second_line)."),
    ] = None,
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Hand the ticket to second line, with a reason (kept in its history)."""
    from hubfleet.support.tickets import escalate, get_ticket

    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        ticket_id = _ticket_id(ticket)
        escalate(desk.store, desk.fleet, ticket_id, reason=reason, actor=actor, to=to)
        assignee = get_ticket(desk.store, desk.fleet, ticket_id)["assignee"]
    _done(as_json, ticket_id, f"escalated to {assignee or 'the second-line queue'}", assignee=assignee)


@tickets_app.command("resolve")
@friendly_errors
def resolve_cmd(
    ticket: TicketArg,
    summary: Annotated[str, typer.Option("--summary", help="What was done (sent to the requester).")] = "",
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Resolve the ticket: the requester is told and asked one question about how it went."""
    from hubfleet.support.tickets import resolve

    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        ticket_id = _ticket_id(ticket)
        resolve(
            desk.store,
            desk.fleet,
            ticket_id,
            actor=actor,
            summary=_text(summary, "--summary") if summary else "",
        )
    _done(as_json, ticket_id, "resolved")


@tickets_app.command("priority")
@friendly_errors
def priority_cmd(
    ticket: TicketArg,
    priority: Annotated[str, typer.Argument(help="urgent, high, normal or low.", show_default=False)],
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Change the priority (its response-time targets follow)."""
    from hubfleet.support.tickets import set_priority

    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        ticket_id = _ticket_id(ticket)
        set_priority(desk.store, desk.fleet, ticket_id, priority, actor=actor)
    _done(as_json, ticket_id, f"priority {priority}", priority=priority)


@tickets_app.command("log-time")
@friendly_errors
def log_time_cmd(
    ticket: TicketArg,
    minutes: Annotated[str, typer.Argument(help="Minutes spent (1-1440).", show_default=False)],
    note: Annotated[str, typer.Option("--note", help="What the time went on.")] = "",
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Time spent on the ticket (it counts against the community's support-hours budget)."""
    from hubfleet.support.tickets import log_time

    if not minutes.strip().isdigit():
        raise UserError(f"'{minutes}' is not a number of minutes; give a whole number from 1 to 1440")
    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        ticket_id = _ticket_id(ticket)
        log_time(desk.store, ticket_id, account=actor, minutes=int(minutes), note=note)
    _done(as_json, ticket_id, f"{int(minutes)} minutes logged", minutes=int(minutes))


@tickets_app.command("attach-hub")
@friendly_errors
def attach_hub_cmd(
    ticket: TicketArg,
    hub: Annotated[str, typer.Argument(help="The hub the ticket is about.", show_default=False)],
    as_account: AsOption = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Name the hub of a ticket that came without one (mail); the hub's context is captured now."""
    from hubfleet.support.tickets import TicketError, attach_hub, get_ticket

    with _Desk(fleet, state_dir) as desk:
        actor = _actor(desk.fleet, as_account)
        ticket_id = _ticket_id(ticket)
        if hub not in desk.fleet.hubs:
            raise TicketError(
                f"there is no hub '{hub}' in this fleet; choose one of: {', '.join(sorted(desk.fleet.hubs))}"
            )
        username = get_ticket(desk.store, desk.fleet, ticket_id)["username"]
        context = _capture(desk, hub, username)
        attach_hub(desk.store, desk.fleet, ticket_id, hub, actor=actor, context=context)
    _done(as_json, ticket_id, f"hub {hub} attached, its context captured", problems=context["problems"])
