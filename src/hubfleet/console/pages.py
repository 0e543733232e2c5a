"""HTML pages of the console: fleet overview, a community, a hub, incidents, the caller's API tokens.

Pages are rendered on the server and work without JavaScript; static/console.js only draws the charts
(from the JSON API) and runs a synthetic check. Community leaders see their communities only: any other
hub or community is a 404 page, exactly as if it did not exist (access.hub_or_404, community_or_404).

Handlers are plain functions: FastAPI runs them in its thread pool, so the store reads behind a page never
stall the daemon's event loop (probes, supervision)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response

from hubfleet.clock import utcnow
from hubfleet.console import accounts, formatting
from hubfleet.console.access import (
    Principal,
    community_or_404,
    hub_or_404,
    require_operator,
    visible_communities,
    visible_hubs,
)
from hubfleet.console.data.charts import CHARTS
from hubfleet.console.data.details import community_detail, hub_detail, incidents
from hubfleet.console.data.overview import (
    ATTENTION,
    attention_order,
    attention_rank,
    fleet_totals,
    overview_rows,
)
from hubfleet.console.web import check_form_csrf, console_state, page_principal, render, templates

router = APIRouter(include_in_schema=False)
PagePrincipal = Annotated[Principal, Depends(page_principal)]
FormStr = Annotated[str, Form()]
formatting.install(templates.env)

DAY_CHOICES = (7, 30, 90, 365)
"""The periods a page's charts offer; `?days=` outside 1..365 is clamped."""
HUB_CHARTS = ("active-users", "running-servers", "spawn-duration", "probe-latency", "uptime")
COMMUNITY_CHARTS = ("active-users", "running-servers")
INCIDENT_STATES = ("open", "resolved")
INCIDENT_KINDS = ("down", "certificate", "anomaly", "quota", "backup", "event", "cost")
MAX_TOKEN_NAME = 200
PAGE_SIZE = 100
"""Hubs per overview page: 1,000 rows of 17 cells were most of a 1,000-hub overview's time (and of the
browser's); the hubs that need someone come first, so page 1 is what an operator must see."""


def _days(value: str | int | None, default: int | None = 30) -> int | None:
    """A `?days=` value clamped to 1..365; `default` when it is empty or not a number (a GET form sends
    `days=` for its "any time" choice)."""
    try:
        days = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        days = None
    return default if days is None else max(1, min(365, days))


def _chart_cards(base: str, names: tuple[str, ...], days: int) -> list[dict[str, str]]:
    """What a page needs to place its charts: JSON source for console.js and the CSV download link."""
    return [
        {
            "name": name,
            "title": CHARTS.get(name, name),
            "src": f"{base}/charts/{name}?days={days}",
            "csv": f"{base}/charts/{name}.csv?days={days}",
        }
        for name in names
    ]


def _day_choices(days: int) -> list[int]:
    return sorted({*DAY_CHOICES, days})


def _charts_context(base: str, names: tuple[str, ...], days: str) -> dict[str, Any]:
    """The period (`?days=`, default 30), its choices and the chart cards of a page."""
    period = _days(days) or 30
    return {"days": period, "day_choices": _day_choices(period), "charts": _chart_cards(base, names, period)}


def _page(value: str, pages: int) -> int:
    """A `?page=` value clamped to 1..pages; 1 when it is empty or not a number."""
    try:
        page = int(value) if value else 1
    except ValueError:
        page = 1
    return max(1, min(pages, page))


@router.get("/")
def overview(
    request: Request,
    principal: PagePrincipal,
    community: str = "",
    cluster: str = "",
    state: str = "",
    page: str = "",
) -> Response:
    source = console_state(request).source
    hubs = visible_hubs(source.fleet, principal)
    rows = overview_rows(source, hubs)
    totals = fleet_totals(rows)
    shown = [
        row
        for row in attention_order(rows)
        if (not community or row["community"] == community)
        and (not cluster or row["cluster"] == cluster)
        and (not state or row["state"] == state)
    ]
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    number = _page(page, pages)
    first = (number - 1) * PAGE_SIZE
    needing = sum(1 for row in shown if attention_rank(row) < len(ATTENTION))
    context = {
        "rows": shown[first : first + PAGE_SIZE],
        "shown_count": len(shown),
        "needing_attention": needing,
        "pager": {
            "page": number,
            "pages": pages,
            "first": first + 1,
            "last": min(first + PAGE_SIZE, len(shown)),
        },
        "total_count": len(rows),
        "totals": totals,
        "filters": {"community": community, "cluster": cluster, "state": state},
        "communities": visible_communities(source.fleet, principal),
        "clusters": sorted({hub.cluster for hub in hubs}),
        "states": sorted({str(row["state"]) for row in rows}),
        "charts": _chart_cards("/api/fleet", ("active-users",), 30) if principal.is_operator else [],
    }
    return render(request, "overview.html", context)


@router.get("/communities/{name}")
def community_page(request: Request, principal: PagePrincipal, name: str, days: str = "") -> Response:
    source = console_state(request).source
    community = community_or_404(source.fleet, principal, name)
    context = {
        "community": community_detail(source, community),
        **_charts_context(f"/api/communities/{community}", COMMUNITY_CHARTS, days),
    }
    return render(request, "community.html", context)


@router.get("/hubs/{name}")
def hub_page(request: Request, principal: PagePrincipal, name: str, days: str = "") -> Response:
    source = console_state(request).source
    hub = hub_or_404(source.fleet, principal, name)
    context = {
        "hub": hub_detail(source, hub.name),
        **_charts_context(f"/api/hubs/{hub.name}", HUB_CHARTS, days),
        "can_run_check": principal.is_operator,
    }
    return render(request, "hub.html", context)


@router.get("/incidents")
def incidents_page(
    request: Request,
    principal: PagePrincipal,
    hub: str = "",
    community: str = "",
    kind: str = "",
    state: str = "",
    since_days: str = "",
) -> Response:
    source = console_state(request).source
    hubs = visible_hubs(source.fleet, principal)
    if community:
        community_or_404(source.fleet, principal, community)
        hubs = [h for h in hubs if h.community == community]
    if hub:
        chosen = hub_or_404(source.fleet, principal, hub)
        hubs = [h for h in hubs if h.name == chosen.name]
    if kind and kind not in INCIDENT_KINDS:
        raise HTTPException(status_code=400, detail=f"kind must be one of {', '.join(INCIDENT_KINDS)}")
    if state and state not in INCIDENT_STATES:
        raise HTTPException(status_code=400, detail="state must be open or resolved")
    within = _days(since_days, default=None)
    since = utcnow() - timedelta(days=within) if within else None
    names = [h.name for h in hubs]
    rows = incidents(
        source, names, state=state or None, kind=kind or None, since=since, communities=() if hub else None
    )
    context = {
        "incidents": rows,
        "filters": {
            "hub": hub,
            "community": community,
            "kind": kind,
            "state": state,
            "since_days": within,
        },
        "hub_names": [h.name for h in visible_hubs(source.fleet, principal)],
        "communities": visible_communities(source.fleet, principal),
        "kinds": INCIDENT_KINDS,
        "states": INCIDENT_STATES,
        "since_choices": (1, 7, 30, 90, 365),
    }
    return render(request, "incidents.html", context)


@router.get("/clusters")
def clusters_page(request: Request, principal: PagePrincipal) -> Response:
    """Kubernetes clusters, their upgrade plans and runs: operators only (clusters span communities)."""
    from hubfleet.console.data.clusters import clusters_page as clusters_context

    require_operator(principal)
    return render(request, "clusters.html", clusters_context(console_state(request).source))


# --------------------------------------------------------------------------- API tokens


def _tokens_page(
    request: Request,
    principal: Principal,
    *,
    new_token: str | None = None,
    new_info: accounts.TokenInfo | None = None,
    error: str = "",
    name: str = "",
    expires_days: str = "",
    status_code: int = 200,
) -> Response:
    store = console_state(request).store
    tokens = sorted(accounts.list_tokens(store, principal.username), key=lambda t: (not t.active, -t.id))
    context: dict[str, Any] = {
        "tokens": tokens,
        "new_token": new_token,
        "new_info": new_info,
        "error": error,
        "form": {"name": name, "expires_days": expires_days},
    }
    response = render(request, "tokens.html", context, status_code)
    response.headers["Cache-Control"] = "no-store"  # a new token is on the page once, never in a cache
    return response


@router.get("/tokens")
def tokens_page(request: Request, principal: PagePrincipal) -> Response:
    return _tokens_page(request, principal)


@router.post("/tokens")
def tokens_create(
    request: Request,
    principal: PagePrincipal,
    name: FormStr = "",
    expires_days: FormStr = "",
    csrf_token: FormStr = "",
) -> Response:
    check_form_csrf(principal, csrf_token)
    name = name.strip()
    days: float | None = None
    error = ""
    if len(name) > MAX_TOKEN_NAME:
        error = f"The name may have at most {MAX_TOKEN_NAME} characters."
    elif expires_days.strip():
        try:
            days = float(expires_days)
        except ValueError:
            error = "Expires after: a number of days, or empty for a token that does not expire."
        else:
            if not 0 < days <= 3650:
                error = "Expires after: more than 0 and at most 3650 days (empty: never expires)."
    if error:
        return _tokens_page(
            request, principal, error=error, name=name, expires_days=expires_days, status_code=400
        )
    token, info = accounts.create_token(console_state(request).store, principal.username, name, days)
    return _tokens_page(request, principal, new_token=token, new_info=info)


@router.post("/tokens/{token_id}/revoke")
def tokens_revoke(
    request: Request,
    principal: PagePrincipal,
    token_id: Annotated[int, Path(ge=1, le=accounts.MAX_TOKEN_ID)],
    csrf_token: FormStr = "",
) -> Response:
    check_form_csrf(principal, csrf_token)
    if not accounts.revoke_token(console_state(request).store, token_id, principal.username):
        raise HTTPException(status_code=404, detail=f"you have no active token {token_id}")
    return RedirectResponse("/tokens", status_code=303)
