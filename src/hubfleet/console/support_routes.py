"""The support desk in the console: the queue (/tickets), a ticket (/tickets/{id}) with its forms, opening a
ticket (/tickets/new), a community's tickets and support-hours burn-down (/communities/{c}/tickets), the
JSON API under /api/tickets, and the requester's public pages (/help/confirm/{token}, /help/survey/{token}).

Who sees what: operators every ticket; a community leader the tickets of their communities, with the public
conversation only (no internal notes, history or time log), and may add a public message and open tickets
for their hubs. Any other ticket (and one without a community) is a 404, as if it did not exist. Every
change goes through support.tickets (one transaction each, with its history line and mail).

Request bodies are read by LimitedBody before FastAPI parses them: a huge body is a 413 without being held
in memory beyond the limit. Handlers are plain functions (FastAPI's thread pool runs their store work);
capturing a hub's context, a coroutine, runs on the loop through anyio.from_thread.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal
from urllib.parse import quote

import anyio.from_thread
from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from hubfleet.clock import utcnow
from hubfleet.console.access import Principal, community_or_404, hub_or_404, require_operator
from hubfleet.console.api import BEARER, Caller, CommunityName
from hubfleet.console.api_models import (
    AssignIn,
    ChartOut,
    EscalateIn,
    HubIn,
    NewTicketIn,
    NoteIn,
    PriorityIn,
    ReplyIn,
    ResolveIn,
    StateIn,
    SupportHoursOut,
    TicketAttachmentIn,
    TicketCreated,
    TicketDetail,
    TicketList,
    TimeIn,
    ticket_errors,
)
from hubfleet.console.data import support as data
from hubfleet.console.web import (
    SAFE_METHODS,
    ConsoleState,
    check_form_csrf,
    console_state,
    page_principal,
    render,
)
from hubfleet.console.web import templates as console_templates
from hubfleet.support import tickets as desk

HELP_CSRF_COOKIE = "hubfleet_help_csrf"
TicketId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The ticket's number.")]
AttachmentId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The attachment's id.")]
Token = Annotated[str, Path(max_length=200)]
FormStr = Annotated[str, Form()]
PagePrincipal = Annotated[Principal, Depends(page_principal)]


class LimitedBody(APIRoute):
    """Reads at most data.body_limit bytes of a request's body (413 beyond) before FastAPI parses it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            if request.method not in SAFE_METHODS:
                await _read_body(request, data.body_limit(console_state(request).fleet))
            return await handler(request)

        return limited


async def _read_body(request: Request, limit: int) -> None:
    too_large = HTTPException(
        status_code=413,
        detail=f"the request is larger than {limit / 1_048_576:.0f} MiB; send fewer or smaller attachments",
    )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    request._body = b"".join(chunks)  # what request.body() and request.form() read from now on


pages = APIRouter(include_in_schema=False, route_class=LimitedBody)
api = APIRouter(prefix="/api", tags=["tickets"], dependencies=[Depends(BEARER)], route_class=LimitedBody)


def ticket_nav(request: Request) -> int | None:
    """The nav link's count (a template global): active tickets assigned to the viewer, and new ones."""
    principal = getattr(request.state, "principal", None)
    if not principal:
        return None
    return data.nav_count(console_state(request).store, principal)


console_templates.env.globals["ticket_nav"] = ticket_nav


# --------------------------------------------------------------------------- the actions (pages and API)


def _visible(state: ConsoleState, principal: Principal, ticket_id: int) -> tuple[str | None, str | None]:
    """(community, hub) of a ticket the caller may see; 404 for any other, exactly as for a missing one."""
    found = desk.ticket_scope(state.store, ticket_id)
    if not data.sees(principal, found):
        raise HTTPException(status_code=404, detail=f"no ticket #{ticket_id}")
    assert found is not None
    return found


def _desk(call: Callable[[], Any]) -> Any:
    """Run a support.tickets call: its TicketError is the caller's mistake (400), TicketNotFound a 404."""
    try:
        return call()
    except desk.TicketNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except desk.TicketError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _capture(state: ConsoleState, hub: str, username: str | None, start_log: bool) -> dict[str, Any]:
    source = state.source
    return anyio.from_thread.run(
        lambda: data.capture(
            state.fleet, state.store, hub, username, state_dir=source.state_dir, start_log=start_log
        )
    )


def do_open(
    state: ConsoleState,
    principal: Principal,
    new: NewTicketIn,
    attachments: list[desk.Attachment],
) -> int:
    """Open a ticket from the console: leaders for a hub of their community, operators for any hub (or
    none). The hub's context is captured first; every check runs before anything is written."""
    hub = (new.hub or "").strip() or None
    if hub is not None:
        hub = hub_or_404(state.fleet, principal, hub).name
    elif not principal.is_operator:
        raise HTTPException(
            status_code=400, detail="choose the hub the ticket is about (one of your community)"
        )
    if not new.description.strip():
        raise HTTPException(status_code=400, detail="the description is empty; write what happened")
    limit = desk.support_of(state.fleet).max_attachment_bytes
    _desk(lambda: [desk.attachment_type(a, limit) for a in attachments])
    username = (new.username or "").strip() or None
    context = _capture(state, hub, username, new.include_start_log) if hub else None
    ticket = desk.NewTicket(
        source="console",
        category=new.category,
        urgency=new.urgency,
        subject=new.subject,
        description=new.description,
        hub=hub,
        username=username,
        requester_name=new.requester_name.strip(),
        requester_email=(new.requester_email or "").strip() or None,
        verified=True,
        opened_by=principal.username,
        context=context,
        attachments=attachments,
    )
    ticket_id: int = _desk(lambda: desk.open_ticket(state.store, state.fleet, ticket))
    return ticket_id


def do_reply(
    state: ConsoleState,
    principal: Principal,
    ticket_id: int,
    body: str,
    *,
    public: bool = True,
    next_state: str | None = None,
    attachments: list[desk.Attachment] | None = None,
) -> None:
    """Operators reply (public) or write an internal note; a leader's message is the requester side's."""
    _visible(state, principal, ticket_id)
    if principal.is_operator:
        kind, chosen = "staff", next_state
    elif public:
        kind, chosen = "requester", None
    else:
        raise HTTPException(status_code=403, detail="only operators write internal notes")
    _desk(
        lambda: desk.add_message(
            state.store,
            state.fleet,
            ticket_id,
            author=principal.username,
            author_kind=kind,
            body=body,
            public=public,
            via="console",
            verified=True,
            attachments=attachments or (),
            state=chosen,
            now=utcnow(),
        )
    )


def _staff(state: ConsoleState, principal: Principal, ticket_id: int) -> tuple[str | None, str | None]:
    found = _visible(state, principal, ticket_id)
    require_operator(principal)
    return found


def do_assign(state: ConsoleState, principal: Principal, ticket_id: int, assignee: str | None) -> None:
    _staff(state, principal, ticket_id)
    who = (assignee or "").strip()
    who = principal.username if who == "me" else who
    _desk(
        lambda: desk.assign(
            state.store, state.fleet, ticket_id, who or None, actor=principal.username, now=utcnow()
        )
    )


def do_escalate(
    state: ConsoleState, principal: Principal, ticket_id: int, reason: str, to: str | None
) -> None:
    _staff(state, principal, ticket_id)
    _desk(
        lambda: desk.escalate(
            state.store,
            state.fleet,
            ticket_id,
            reason=reason,
            to=(to or "").strip() or None,
            actor=principal.username,
            now=utcnow(),
        )
    )


def do_priority(state: ConsoleState, principal: Principal, ticket_id: int, priority: str) -> None:
    _staff(state, principal, ticket_id)
    _desk(
        lambda: desk.set_priority(
            state.store, state.fleet, ticket_id, priority, actor=principal.username, now=utcnow()
        )
    )


def do_state(state: ConsoleState, principal: Principal, ticket_id: int, to: str, reason: str = "") -> None:
    _staff(state, principal, ticket_id)
    _desk(
        lambda: desk.set_state(
            state.store, state.fleet, ticket_id, to, actor=principal.username, reason=reason, now=utcnow()
        )
    )


def do_resolve(state: ConsoleState, principal: Principal, ticket_id: int, summary: str) -> None:
    _staff(state, principal, ticket_id)
    _desk(
        lambda: desk.resolve(
            state.store, state.fleet, ticket_id, actor=principal.username, summary=summary, now=utcnow()
        )
    )


def do_time(state: ConsoleState, principal: Principal, ticket_id: int, minutes: int, note: str) -> None:
    _staff(state, principal, ticket_id)
    _desk(
        lambda: desk.log_time(
            state.store, ticket_id, account=principal.username, minutes=minutes, note=note, now=utcnow()
        )
    )


def do_hub(state: ConsoleState, principal: Principal, ticket_id: int, hub: str) -> None:
    """Name the ticket's hub (and capture its context now)."""
    _staff(state, principal, ticket_id)
    name = hub_or_404(state.fleet, principal, hub.strip()).name
    username = desk.get_ticket(state.store, state.fleet, ticket_id)["username"]
    context = _capture(state, name, username, False)
    _desk(
        lambda: desk.attach_hub(
            state.store, state.fleet, ticket_id, name, actor=principal.username, context=context, now=utcnow()
        )
    )


def _view(state: ConsoleState, principal: Principal, ticket_id: int) -> dict[str, Any]:
    view: dict[str, Any] = _desk(lambda: data.ticket_view(state.store, state.fleet, principal, ticket_id))
    return view


def _attachments_in(state: ConsoleState, items: list[TicketAttachmentIn]) -> list[desk.Attachment]:
    limit = desk.support_of(state.fleet).max_attachment_bytes
    return [
        _desk(lambda i=item: data.decode_attachment(i.filename, i.content_base64, limit)) for item in items
    ]


def _download(state: ConsoleState, principal: Principal, ticket_id: int, attachment_id: int) -> Response:
    """An attachment's bytes with the type checked when it was stored, always as a download."""
    _visible(state, principal, ticket_id)
    found = data.visible_attachment(state.store, state.fleet, principal, ticket_id, attachment_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"ticket #{ticket_id} has no attachment {attachment_id}")
    fallback = found.filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return Response(
        content=found.data,
        media_type=found.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{fallback}"; '
            f"filename*=UTF-8''{quote(found.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


# --------------------------------------------------------------------------- pages


def _queue_page(
    request: Request,
    principal: Principal,
    *,
    community: str | None,
    state: str,
    priority: str,
    assignee: str,
    due: str,
    hub: str,
    filter_community: str,
) -> Response:
    console = console_state(request)
    try:
        filters = data.parse_filters(
            principal,
            state=state,
            priority=priority,
            community=community or filter_community,
            assignee=assignee,
            hub=hub,
            due=due,
        )
    except data.BadFilter as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    if filters["community"]:
        community_or_404(console.fleet, principal, filters["community"])
    context: dict[str, Any] = {
        "rows": data.queue(console.store, console.fleet, principal, filters),
        "filters": {
            "state": state or "active",
            "priority": priority,
            "community": filter_community,
            "assignee": assignee,
            "due": due,
            "hub": hub,
        },
        "community": community,
        "choices": data.form_choices(console.fleet, principal),
        "state_choices": data.STATE_CHOICES,
        "due_choices": data.DUE_CHOICES,
        "communities": sorted(c for c in console.fleet.communities if principal.sees_community(c)),
    }
    if community is not None:
        status, note = data.hours_status(console.store, console.fleet, community)
        context["hours"] = {"status": status, "note": note}
        context["chart"] = {
            "src": f"/api/communities/{community}/support-hours/chart",
            "title": f"Support hours left, {community}",
        }
    return render(request, "tickets.html", context)


@pages.get("/tickets")
def tickets_page(
    request: Request,
    principal: PagePrincipal,
    state: str = "",
    priority: str = "",
    community: str = "",
    assignee: str = "",
    due: str = "",
    hub: str = "",
) -> Response:
    return _queue_page(
        request,
        principal,
        community=None,
        state=state,
        priority=priority,
        assignee=assignee,
        due=due,
        hub=hub,
        filter_community=community,
    )


@pages.get("/communities/{name}/tickets")
def community_tickets_page(
    request: Request,
    principal: PagePrincipal,
    name: str,
    state: str = "",
    priority: str = "",
    assignee: str = "",
    due: str = "",
    hub: str = "",
) -> Response:
    community = community_or_404(console_state(request).fleet, principal, name)
    return _queue_page(
        request,
        principal,
        community=community,
        state=state,
        priority=priority,
        assignee=assignee,
        due=due,
        hub=hub,
        filter_community="",
    )


def _new_page(
    request: Request, principal: Principal, form: dict[str, Any], error: str = "", status: int = 200
) -> Response:
    console = console_state(request)
    context = {"form": form, "error": error, "choices": data.form_choices(console.fleet, principal)}
    return render(request, "ticket_new.html", context, status)


@pages.get("/tickets/new")
def new_ticket_page(request: Request, principal: PagePrincipal, hub: str = "") -> Response:
    if hub:
        hub_or_404(console_state(request).fleet, principal, hub)
    return _new_page(request, principal, {"hub": hub, "urgency": "normal", "category": "other"})


def _upload(upload: UploadFile | None, limit: int) -> list[desk.Attachment]:
    """The form's file (none when no file was chosen); read up to one byte beyond the limit."""
    if upload is None or not upload.filename:
        return []
    content = upload.file.read(limit + 1)
    if not content:
        return []
    return [desk.Attachment(filename=upload.filename, data=content, content_type=upload.content_type or "")]


@pages.post("/tickets/new")
def new_ticket_submit(
    request: Request,
    principal: PagePrincipal,
    hub: FormStr = "",
    category: FormStr = "other",
    urgency: FormStr = "normal",
    subject: FormStr = "",
    description: FormStr = "",
    username: FormStr = "",
    requester_name: FormStr = "",
    requester_email: FormStr = "",
    include_start_log: FormStr = "",
    csrf_token: FormStr = "",
    attachment: Annotated[UploadFile | None, File()] = None,
) -> Response:
    check_form_csrf(principal, csrf_token)
    console = console_state(request)
    form = {
        "hub": hub,
        "category": category,
        "urgency": urgency,
        "subject": subject,
        "description": description,
        "username": username,
        "requester_name": requester_name,
        "requester_email": requester_email,
        "include_start_log": bool(include_start_log),
    }
    try:
        new = NewTicketIn.model_validate({**form, "requester_email": requester_email.strip() or None})
        files = _upload(attachment, desk.support_of(console.fleet).max_attachment_bytes)
        ticket_id = do_open(console, principal, new, files)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise
        return _new_page(
            request, principal, form, _with_file_note(str(exc.detail), attachment), exc.status_code
        )
    except ValueError as exc:  # pydantic's ValidationError
        return _new_page(request, principal, form, _validation_text(exc), 400)
    return RedirectResponse(f"/tickets/{ticket_id}", status_code=303)


def _with_file_note(text: str, upload: UploadFile | None) -> str:
    if upload is not None and upload.filename:
        return f"{text} (choose the file again: a browser does not keep it)"
    return text


def _validation_text(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
    return str(exc)


def _ticket_page(
    request: Request,
    principal: Principal,
    ticket_id: int,
    *,
    error: str = "",
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    console = console_state(request)
    _visible(console, principal, ticket_id)
    context = {
        "ticket": _view(console, principal, ticket_id),
        "choices": data.form_choices(console.fleet, principal),
        "error": error,
        "form": form or {},
    }
    return render(request, "ticket.html", context, status)


@pages.get("/tickets/{ticket_id}")
def ticket_page(request: Request, principal: PagePrincipal, ticket_id: TicketId) -> Response:
    return _ticket_page(request, principal, ticket_id)


@pages.get("/tickets/{ticket_id}/attachments/{attachment_id}")
def ticket_attachment_page(
    request: Request, principal: PagePrincipal, ticket_id: TicketId, attachment_id: AttachmentId
) -> Response:
    return _download(console_state(request), principal, ticket_id, attachment_id)


PAGE_ACTIONS = ("reply", "assign", "escalate", "priority", "state", "resolve", "time", "hub")


@pages.post("/tickets/{ticket_id}/{action}")
def ticket_action(
    request: Request,
    principal: PagePrincipal,
    ticket_id: TicketId,
    action: Annotated[str, Path(max_length=20)],
    csrf_token: FormStr = "",
    body: FormStr = "",
    kind: FormStr = "public",
    keep_open: FormStr = "",
    assignee: FormStr = "",
    reason: FormStr = "",
    to: FormStr = "",
    priority: FormStr = "",
    state: FormStr = "",
    summary: FormStr = "",
    minutes: FormStr = "",
    note: FormStr = "",
    hub: FormStr = "",
    attachment: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Every form of the ticket page. A mistake re-renders the page with the message and what was typed."""
    check_form_csrf(principal, csrf_token)
    console = console_state(request)
    if action not in PAGE_ACTIONS:
        raise HTTPException(status_code=404, detail=f"no form '{action}' on a ticket")
    _visible(console, principal, ticket_id)
    typed = {"action": action, "body": body, "kind": kind, "reason": reason, "summary": summary, "note": note}
    typed.update(minutes=minutes, to=to)
    try:
        if action == "reply":
            files = _upload(attachment, desk.support_of(console.fleet).max_attachment_bytes)
            public = kind != "note"
            do_reply(
                console,
                principal,
                ticket_id,
                body,
                public=public,
                next_state="open" if keep_open and public else None,
                attachments=files,
            )
        elif action == "assign":
            do_assign(console, principal, ticket_id, assignee)
        elif action == "escalate":
            do_escalate(console, principal, ticket_id, reason, to)
        elif action == "priority":
            do_priority(console, principal, ticket_id, priority)
        elif action == "state":
            do_state(console, principal, ticket_id, state, reason)
        elif action == "resolve":
            do_resolve(console, principal, ticket_id, summary)
        elif action == "time":
            do_time(console, principal, ticket_id, _minutes(minutes), note)
        else:
            do_hub(console, principal, ticket_id, hub)
    except HTTPException as exc:
        if exc.status_code not in (400, 403):
            raise
        message = str(exc.detail)
        if action == "reply":
            message = _with_file_note(message, attachment)
        return _ticket_page(request, principal, ticket_id, error=message, form=typed, status=exc.status_code)
    return RedirectResponse(f"/tickets/{ticket_id}#{action}", status_code=303)


def _minutes(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise HTTPException(
            status_code=400, detail=f"'{value}' is not a number of minutes; write 1 to 1440"
        ) from None


# --------------------------------------------------------------------------- the requester's pages


def _help_page(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """A /help/ page with a fresh double-submit CSRF token (cookie and form field), as the sign-in form."""
    console = console_state(request)
    csrf = secrets.token_urlsafe(24)
    response = render(request, template, {**context, "help_csrf": csrf}, status)
    response.set_cookie(
        HELP_CSRF_COOKIE,
        csrf,
        max_age=3600,
        path="/help",
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
    )
    return response


def _help_missing(request: Request) -> Response:
    return render(request, "help_missing.html", {}, 404)


def _help_csrf_ok(request: Request, sent: str) -> bool:
    cookie = request.cookies.get(HELP_CSRF_COOKIE, "")
    return bool(cookie and sent and hmac.compare_digest(cookie, sent))


@pages.get("/help/confirm/{token}")
def help_confirm_page(request: Request, token: Token) -> Response:
    ticket_id = desk.token_ticket(console_state(request).store, token, "confirm")
    if ticket_id is None:
        return _help_missing(request)
    return _help_page(request, "help_confirm.html", {"ticket_id": ticket_id, "done": False})


@pages.post("/help/confirm/{token}")
def help_confirm_submit(request: Request, token: Token, help_csrf: FormStr = "") -> Response:
    store = console_state(request).store
    if desk.token_ticket(store, token, "confirm") is None:
        return _help_missing(request)
    if not _help_csrf_ok(request, help_csrf):
        return _help_page(
            request,
            "help_confirm.html",
            {"done": False, "error": "The page expired; press Confirm again."},
            400,
        )
    ticket_id = desk.confirm_requester(store, token, now=utcnow())
    if ticket_id is None:
        return _help_missing(request)
    return render(request, "help_confirm.html", {"ticket_id": ticket_id, "done": True})


def _survey_form(request: Request, status: int = 200, **context: Any) -> Response:
    defaults = {"done": False, "score": None, "comment": "", "error": ""}
    return _help_page(request, "help_survey.html", {**defaults, **context}, status)


@pages.get("/help/survey/{token}")
def help_survey_page(request: Request, token: Token) -> Response:
    ticket_id = desk.token_ticket(console_state(request).store, token, "survey")
    if ticket_id is None:
        return _help_missing(request)
    return _survey_form(request, ticket_id=ticket_id)


@pages.post("/help/survey/{token}")
def help_survey_submit(
    request: Request, token: Token, score: FormStr = "", comment: FormStr = "", help_csrf: FormStr = ""
) -> Response:
    store = console_state(request).store
    ticket_id = desk.token_ticket(store, token, "survey")
    if ticket_id is None:
        return _help_missing(request)
    kept = {"ticket_id": ticket_id, "comment": comment, "score": score}
    if not _help_csrf_ok(request, help_csrf):
        return _survey_form(request, 400, error="The page expired; send your answer again.", **kept)
    try:
        value = int(score)
    except ValueError:
        value = 0
    try:
        desk.record_survey(store, token, value, comment, now=utcnow())
    except desk.TicketError as exc:
        return _survey_form(request, 400, error=str(exc), **kept)
    return render(request, "help_survey.html", {"done": True, "ticket_id": ticket_id})


# --------------------------------------------------------------------------- API


StateFilter = Annotated[
    Literal["active", "all", "new", "open", "waiting", "escalated", "resolved", "closed"],
    Query(description="active (new, open, waiting, escalated; the default), all, or one state."),
]
PriorityFilter = Annotated[Literal["urgent", "high", "normal", "low"] | None, Query()]
NameFilter = Annotated[str | None, Query(max_length=200)]
DueFilter = Annotated[
    str | None,
    Query(
        max_length=20,
        pattern=r"^(overdue|\d{1,4}(\.\d+)?)$",
        description="`overdue`, or a number of hours: due within that many hours (or overdue).",
    ),
]


def _state(request: Request) -> ConsoleState:
    return console_state(request)


@api.get(
    "/tickets",
    response_model=TicketList,
    responses=ticket_errors(400, 401, 404, 422),
    summary="Tickets the caller may see, most urgent first",
)
def list_tickets(
    request: Request,
    principal: Caller,
    state: StateFilter = "active",
    priority: PriorityFilter = None,
    community: NameFilter = None,
    assignee: Annotated[
        str | None, Query(max_length=200, description="An account, `mine`, or `unassigned`.")
    ] = None,
    hub: NameFilter = None,
    due: DueFilter = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    console = _state(request)
    if community:
        community_or_404(console.fleet, principal, community)
    try:
        filters = data.parse_filters(
            principal,
            state=state,
            priority=priority or "",
            community=community or "",
            assignee=assignee or "",
            hub=hub or "",
            due=due or "",
        )
    except data.BadFilter as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return {"tickets": data.queue(console.store, console.fleet, principal, filters, limit=limit)}


@api.post(
    "/tickets",
    response_model=TicketCreated,
    status_code=201,
    responses=ticket_errors(400, 401, 403, 404, 413, 422),
    summary="Open a ticket (leaders: for a hub of their community)",
)
def create_ticket(request: Request, principal: Caller, new: NewTicketIn) -> dict[str, Any]:
    """The hub's context is captured as the ticket opens. Attachments are base64 (`content_base64`);
    each is checked for size before it is decoded, and by its bytes for its type."""
    console = _state(request)
    ticket_id = do_open(console, principal, new, _attachments_in(console, new.attachments))
    return {"id": ticket_id, "ticket": _view(console, principal, ticket_id)}


@api.get(
    "/tickets/{ticket_id}",
    response_model=TicketDetail,
    responses=ticket_errors(401, 404, 422),
    summary="A ticket: conversation, attachments, context (and for operators history and time log)",
)
def get_ticket(request: Request, principal: Caller, ticket_id: TicketId) -> dict[str, Any]:
    console = _state(request)
    _visible(console, principal, ticket_id)
    return _view(console, principal, ticket_id)


def _after(
    request: Request, principal: Principal, ticket_id: int, act: Callable[[ConsoleState], None]
) -> dict[str, Any]:
    console = _state(request)
    act(console)
    return _view(console, principal, ticket_id)


ACTION_ERRORS = ticket_errors(400, 401, 403, 404, 413, 422)


@api.post(
    "/tickets/{ticket_id}/reply",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="A public reply (operators), or a leader's message on the requester's side",
)
def api_reply(request: Request, principal: Caller, ticket_id: TicketId, reply: ReplyIn) -> dict[str, Any]:
    return _after(
        request,
        principal,
        ticket_id,
        lambda c: do_reply(
            c,
            principal,
            ticket_id,
            reply.body,
            next_state=reply.state,
            attachments=_attachments_in(c, reply.attachments),
        ),
    )


@api.post(
    "/tickets/{ticket_id}/note",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="An internal note (operators; never shown to leaders or requesters)",
)
def api_note(request: Request, principal: Caller, ticket_id: TicketId, note: NoteIn) -> dict[str, Any]:
    return _after(
        request,
        principal,
        ticket_id,
        lambda c: do_reply(
            c, principal, ticket_id, note.body, public=False, attachments=_attachments_in(c, note.attachments)
        ),
    )


@api.post(
    "/tickets/{ticket_id}/assign",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="Give the ticket to an operator account (operators)",
)
def api_assign(request: Request, principal: Caller, ticket_id: TicketId, body: AssignIn) -> dict[str, Any]:
    return _after(request, principal, ticket_id, lambda c: do_assign(c, principal, ticket_id, body.assignee))


@api.post(
    "/tickets/{ticket_id}/escalate",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="Escalate to second line with a reason (operators)",
)
def api_escalate(
    request: Request, principal: Caller, ticket_id: TicketId, body: EscalateIn
) -> dict[str, Any]:
    return _after(
        request, principal, ticket_id, lambda c: do_escalate(c, principal, ticket_id, body.reason, body.to)
    )


@api.post(
    "/tickets/{ticket_id}/resolve",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="Resolve; the requester gets the summary and the one-question survey (operators)",
)
def api_resolve(request: Request, principal: Caller, ticket_id: TicketId, body: ResolveIn) -> dict[str, Any]:
    return _after(request, principal, ticket_id, lambda c: do_resolve(c, principal, ticket_id, body.summary))


@api.post(
    "/tickets/{ticket_id}/priority",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="Change the priority (and with it the targets) (operators)",
)
def api_priority(
    request: Request, principal: Caller, ticket_id: TicketId, body: PriorityIn
) -> dict[str, Any]:
    return _after(
        request, principal, ticket_id, lambda c: do_priority(c, principal, ticket_id, body.priority)
    )


@api.post(
    "/tickets/{ticket_id}/state",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="Set open or waiting for the requester (operators)",
)
def api_state(request: Request, principal: Caller, ticket_id: TicketId, body: StateIn) -> dict[str, Any]:
    return _after(
        request, principal, ticket_id, lambda c: do_state(c, principal, ticket_id, body.state, body.reason)
    )


@api.post(
    "/tickets/{ticket_id}/time",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="Log time spent (counts against the community's support hours) (operators)",
)
def api_time(request: Request, principal: Caller, ticket_id: TicketId, body: TimeIn) -> dict[str, Any]:
    return _after(
        request, principal, ticket_id, lambda c: do_time(c, principal, ticket_id, body.minutes, body.note)
    )


@api.post(
    "/tickets/{ticket_id}/hub",
    response_model=TicketDetail,
    responses=ACTION_ERRORS,
    summary="Name the ticket's hub and capture its context (operators)",
)
def api_hub(request: Request, principal: Caller, ticket_id: TicketId, body: HubIn) -> dict[str, Any]:
    return _after(request, principal, ticket_id, lambda c: do_hub(c, principal, ticket_id, body.hub))


@api.get(
    "/tickets/{ticket_id}/attachments/{attachment_id}",
    response_class=Response,
    responses={
        **ticket_errors(401, 404, 422),
        200: {
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in desk.ATTACHMENT_TYPES},
            "description": "The file, always as a download (Content-Disposition: attachment).",
        },
    },
    summary="Download an attachment",
)
def api_attachment(
    request: Request, principal: Caller, ticket_id: TicketId, attachment_id: AttachmentId
) -> Response:
    return _download(_state(request), principal, ticket_id, attachment_id)


@api.get(
    "/communities/{name}/support-hours",
    response_model=SupportHoursOut,
    responses=ticket_errors(401, 404, 422),
    summary="A community's support-hours budget: used, remaining, the burn-down",
)
def support_hours(request: Request, principal: Caller, name: CommunityName) -> dict[str, Any]:
    console = _state(request)
    community = community_or_404(console.fleet, principal, name)
    status, note = data.hours_status(console.store, console.fleet, community)
    return {"community": community, "status": status, "note": note}


@api.get(
    "/communities/{name}/support-hours/chart",
    response_model=ChartOut,
    responses=ticket_errors(401, 404, 422),
    summary="A community's support hours left per day against the ideal line (a chart)",
)
def support_hours_chart(request: Request, principal: Caller, name: CommunityName) -> dict[str, Any]:
    console = _state(request)
    community = community_or_404(console.fleet, principal, name)
    status, _ = data.hours_status(console.store, console.fleet, community)
    return data.burn_chart(community, status)
