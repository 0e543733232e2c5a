"""The console's cost pages and their JSON: /costs (every community the caller may see: the month's cost,
budget, forecast and invoice; for operators the billed-vs-allocated check per billing account),
/communities/{c}/costs (per hub, user and group, the budget, the invoices), the daily cost chart per hub,
and invoice downloads, under /api too.

A community leader sees their communities only; any other answers 404 like a name that does not exist
(access.community_or_404). An invoice file is found from its stored record, never from a path in the request.
Handlers are plain functions: FastAPI runs their store reads in its thread pool.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response

from hubfleet.console.access import Principal, community_or_404, visible_communities
from hubfleet.console.api import BEARER, Caller, CommunityName
from hubfleet.console.api_models import ChartOut, CommunityCosts, CostsOverview, InvoiceList, errors
from hubfleet.console.data import costs as data
from hubfleet.console.data.charts import Chart
from hubfleet.console.data.source import ConsoleSource
from hubfleet.console.web import console_state, page_principal, render, templates

log = logging.getLogger("hubfleet.console")
pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["console"], dependencies=[Depends(BEARER)])
PagePrincipal = Annotated[Principal, Depends(page_principal)]
Month = Annotated[
    str | None,
    Query(pattern=data.MONTH_PATTERN, description="A calendar month, YYYY-MM (default: this month, UTC)."),
]
Currency = Annotated[
    str | None,
    Query(pattern=r"^[A-Z]{3}$", description="The chart's currency (default: the first with costs)."),
]
InvoiceNumber = Annotated[str, Path(description="The invoice's number.", max_length=100)]
FORMATS = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8", "json": "application/json"}


def money(value: Any) -> str:
    """An amount ({"amount", "currency"}) or a list of them as '1,234.50 USD' ('—' for none)."""
    if not value:
        return "—"
    if isinstance(value, dict):
        figure = value["amount"]
        whole, _, fraction = figure.partition(".")
        sign = "-" if whole.startswith("-") else ""
        return f"{sign}{int(whole.lstrip('-')):,}.{fraction or '00'} {value['currency']}"
    return " + ".join(money(item) for item in value)


templates.env.filters["money"] = money


def _month(value: str | None) -> str:
    try:
        return data.parse_month(value)
    except data.BadMonth as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _source(request: Request) -> ConsoleSource:
    return console_state(request).source


def _csv(table: Chart, filename: str) -> Response:
    return Response(
        content=table.to_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


def _community_hubs(source: ConsoleSource, principal: Principal, name: str) -> list[str]:
    community = community_or_404(source.fleet, principal, name)
    return sorted(h.name for h in source.fleet.hubs.values() if h.community == community)


def _visible_hubs(source: ConsoleSource, principal: Principal) -> list[str]:
    communities = set(visible_communities(source.fleet, principal))
    return sorted(h.name for h in source.fleet.hubs.values() if h.community in communities)


def cost_summary(request: Request, community: str) -> dict[str, Any] | None:
    """The cost box of a community's page (a template global: the page's own route stays as it is): the
    month's cost and budget. None when the costs cannot be read (the page shows the link alone)."""
    source = _source(request)
    month = data.this_month()
    try:
        cost = data.community_month_cost(source, community, month)
        budget = data.budget_of(source, community, month)
    except Exception:  # a page of hubs must not fail over its cost box
        log.warning("the cost box of community %s could not be read", community, exc_info=True)
        return None
    return {"month": month, "cost": cost, "budget": budget}


templates.env.globals["cost_summary"] = cost_summary


# --------------------------------------------------------------------------- pages


@pages.get("/costs")
def costs_page(request: Request, principal: PagePrincipal, month: str = "") -> Response:
    source = _source(request)
    chosen = _month(month)
    communities = visible_communities(source.fleet, principal)
    view = data.costs_overview(source, communities, chosen, operator=principal.is_operator)
    context = {
        "view": view,
        "months": data.month_choices(chosen),
        "charts": data.chart_cards("/api/costs", chosen, view["currencies"]),
    }
    return render(request, "costs.html", context)


@pages.get("/communities/{name}/costs")
def community_costs_page(request: Request, principal: PagePrincipal, name: str, month: str = "") -> Response:
    source = _source(request)
    community = community_or_404(source.fleet, principal, name)
    chosen = _month(month)
    view = data.community_costs(source, community, chosen)
    context = {
        "view": view,
        "months": data.month_choices(chosen),
        "charts": data.chart_cards(f"/api/communities/{community}/costs", chosen, view["currencies"]),
    }
    return render(request, "community_costs.html", context)


# --------------------------------------------------------------------------- API


@api.get(
    "/costs",
    response_model=CostsOverview,
    responses=errors(401, 422),
    summary="A month's costs, budgets and invoices of the communities the caller may see",
)
def get_costs(request: Request, principal: Caller, month: Month = None) -> dict[str, Any]:
    """Per community: the month's cost per currency (to the cent, as strings), its budget, forecast and
    status, and the month's invoice once issued. `checks` (operators only; null for community leaders):
    per billing account, the billed total against what was allocated and what could not be."""
    source = _source(request)
    communities = visible_communities(source.fleet, principal)
    return data.costs_overview(source, communities, _month(month), operator=principal.is_operator)


@api.get(
    "/costs/charts/daily-cost.csv",
    response_class=Response,
    responses=errors(401, 422, csv=True),
    summary="Daily cost per hub over the hubs the caller may see, as CSV",
)
def costs_chart_csv(
    request: Request, principal: Caller, month: Month = None, currency: Currency = None
) -> Response:
    source = _source(request)
    chosen = _month(month)
    table, _ = data.daily_chart(source, _visible_hubs(source, principal), chosen, currency)
    return _csv(table, f"costs-{chosen}")


@api.get(
    "/costs/charts/daily-cost",
    response_model=ChartOut,
    responses=errors(401, 422),
    summary="Daily cost per hub over the hubs the caller may see",
)
def costs_chart(
    request: Request, principal: Caller, month: Month = None, currency: Currency = None
) -> dict[str, Any]:
    """One row per day of the month (up to today), one column per hub with a cost in `currency`."""
    source = _source(request)
    table, _ = data.daily_chart(source, _visible_hubs(source, principal), _month(month), currency)
    return table.to_json()


@api.get(
    "/communities/{name}/costs",
    response_model=CommunityCosts,
    responses=errors(401, 404, 422),
    summary="A community's costs for a month: per hub, user and group, its budget and invoices",
)
def get_community_costs(
    request: Request, name: CommunityName, principal: Caller, month: Month = None
) -> dict[str, Any]:
    source = _source(request)
    return data.community_costs(source, community_or_404(source.fleet, principal, name), _month(month))


@api.get(
    "/communities/{name}/costs/charts/daily-cost.csv",
    response_class=Response,
    responses=errors(401, 404, 422, csv=True),
    summary="Daily cost per hub of one community, as CSV",
)
def community_chart_csv(
    request: Request, name: CommunityName, principal: Caller, month: Month = None, currency: Currency = None
) -> Response:
    source = _source(request)
    hubs = _community_hubs(source, principal, name)
    chosen = _month(month)
    table, _ = data.daily_chart(source, hubs, chosen, currency)
    return _csv(table, f"{name}-costs-{chosen}")


@api.get(
    "/communities/{name}/costs/charts/daily-cost",
    response_model=ChartOut,
    responses=errors(401, 404, 422),
    summary="Daily cost per hub of one community",
)
def community_chart(
    request: Request, name: CommunityName, principal: Caller, month: Month = None, currency: Currency = None
) -> dict[str, Any]:
    source = _source(request)
    hubs = _community_hubs(source, principal, name)
    table, _ = data.daily_chart(source, hubs, _month(month), currency)
    return table.to_json()


@api.get(
    "/communities/{name}/invoices",
    response_model=InvoiceList,
    responses=errors(401, 404, 422),
    summary="A community's invoices and credit notes, newest first",
)
def list_invoices(request: Request, name: CommunityName, principal: Caller) -> dict[str, Any]:
    source = _source(request)
    return {"invoices": data.invoices_of(source, community_or_404(source.fleet, principal, name))}


@api.get(
    "/communities/{name}/invoices/{number}/{fmt}",
    response_class=Response,
    responses={
        **errors(401, 404, 422),
        200: {
            "content": {media.split(";")[0]: {"schema": {"type": "string"}} for media in FORMATS.values()},
            "description": "The invoice's file as issued (never changed afterwards).",
        },
    },
    summary="Download one of a community's invoices as PDF, CSV or JSON",
)
def download_invoice(
    request: Request,
    name: CommunityName,
    number: InvoiceNumber,
    fmt: Annotated[Literal["pdf", "csv", "json"], Path(description="pdf, csv or json.")],
    principal: Caller,
) -> Response:
    """The file written when the invoice was issued. An invoice of another community answers 404 like one
    that does not exist."""
    source = _source(request)
    community = community_or_404(source.fleet, principal, name)
    path = data.invoice_file(source, community, number, fmt)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no invoice {number} of community '{community}'")
    return FileResponse(
        path, media_type=FORMATS[fmt], filename=f"{path.stem}.{fmt}", headers={"Cache-Control": "no-store"}
    )
