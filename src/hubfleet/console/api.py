"""The console's JSON API under /api (OpenAPI document at /api/openapi.json).

Every route depends on `api_principal`: a bearer API token (`Authorization: Bearer hf_...`) or the
console's session cookie (which must also send `X-CSRF-Token` on POST/DELETE). Operators see the whole
fleet; community leaders only their communities: anything else answers 404 with the same body as a name
that does not exist. The handlers are thin: `hubfleet.console.data` computes every row.

Handlers are plain functions (not coroutines) so FastAPI runs their store queries in its thread pool and
the daemon's event loop never waits on the database; only the synthetic check is a coroutine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.security import HTTPBearer

from hubfleet.clock import utcnow
from hubfleet.config.models import Hub
from hubfleet.console import accounts
from hubfleet.console.access import (
    Principal,
    community_or_404,
    hub_or_404,
    require_operator,
    visible_communities,
    visible_hubs,
)
from hubfleet.console.api_models import (
    ChartOut,
    CheckList,
    CheckRun,
    CommunityDetail,
    CommunityList,
    DeploymentList,
    HubDetail,
    HubList,
    IncidentList,
    PrincipalOut,
    TokenCreated,
    TokenList,
    TokenRequest,
    errors,
)
from hubfleet.console.data.charts import CHARTS, MAX_DAYS, Chart, chart
from hubfleet.console.data.details import community_detail, hub_detail, incidents
from hubfleet.console.data.overview import fleet_totals, overview_rows
from hubfleet.console.web import ConsoleState, api_principal, console_state

MAX_LIMIT = 1000
CHECK_TIMEOUT = 120.0

# --------------------------------------------------------------------------- plumbing

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (`hf_...`). The console's session cookie works too (with an X-CSRF-Token "
    "header on POST and DELETE).",
)
"""Only documents the scheme in the OpenAPI document: `api_principal` does the checking."""
router = APIRouter(prefix="/api", tags=["console"], dependencies=[Depends(BEARER)])

Caller = Annotated[Principal, Depends(api_principal)]


async def _state(request: Request) -> ConsoleState:
    return console_state(request)  # a coroutine: FastAPI would send a plain function to a thread


State = Annotated[ConsoleState, Depends(_state)]
HubName = Annotated[str, Path(description="A hub's name.", max_length=200)]
CommunityName = Annotated[str, Path(description="A community's name.", max_length=200)]
ChartName = Annotated[str, Path(description=f"One of: {', '.join(CHARTS)}.", max_length=200)]
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description="How many days back the chart goes.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many rows, newest first.")]
OptionalName = Annotated[str | None, Query(max_length=200)]


def _chart(state: ConsoleState, name: str, hubs: Sequence[Hub], days: int) -> Chart:
    if name not in CHARTS:
        raise HTTPException(404, f"no chart named '{name}'; charts: {', '.join(CHARTS)}")
    return chart(state.source, name, [h.name for h in hubs], days=days)


def _csv(table: Chart, filename: str) -> Response:
    return Response(
        content=table.to_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


def _hubs_in_scope(
    state: ConsoleState, principal: Principal, hub: str | None = None, community: str | None = None
) -> list[Hub]:
    """The caller's visible hubs, narrowed to `hub` and/or `community` (404 for anything not visible)."""
    if hub is not None:
        found = hub_or_404(state.fleet, principal, hub)
        if community is not None and found.community != community_or_404(state.fleet, principal, community):
            return []
        return [found]
    hubs = visible_hubs(state.fleet, principal)
    if community is not None:
        community_or_404(state.fleet, principal, community)
        hubs = [h for h in hubs if h.community == community]
    return hubs


def _visible_records(
    state: ConsoleState, principal: Principal, hub: str | None, limit: int, fetch: Any, key: str
) -> list[dict[str, Any]]:
    """`fetch(hub_name | None, limit)` (a Store listing) over the hubs the caller may see, newest first.
    Operators without a hub filter read the whole table: it also holds hubs since removed from the fleet."""
    if hub is None and principal.is_operator:
        records = fetch(None, limit)
    else:
        found = [r for h in _hubs_in_scope(state, principal, hub) for r in fetch(h.name, limit)]
        records = sorted(found, key=lambda r: (getattr(r, key), r.id), reverse=True)[:limit]
    return [vars(r) for r in records]


# --------------------------------------------------------------------------- who am I


@router.get("/me", response_model=PrincipalOut, responses=errors(401), summary="The caller")
def me(principal: Caller) -> dict[str, object]:
    return principal.to_dict()


# --------------------------------------------------------------------------- hubs


@router.get(
    "/hubs",
    response_model=HubList,
    responses=errors(401, 404, 422),
    summary="Hubs the caller may see, with totals",
)
def list_hubs(
    principal: Caller,
    state: State,
    community: Annotated[str | None, Query(max_length=200, description="Only this community's hubs.")] = None,
    cluster: Annotated[str | None, Query(max_length=200, description="Only hubs on this cluster.")] = None,
    hub_state: Annotated[
        str | None, Query(alias="state", max_length=50, description="Only hubs in this state (e.g. running).")
    ] = None,
) -> dict[str, Any]:
    """`{"hubs": [overview row, ...], "totals": {...}}`, by community then name. A community the caller may
    not see answers 404."""
    hubs = _hubs_in_scope(state, principal, community=community)
    if cluster is not None:
        hubs = [h for h in hubs if h.cluster == cluster]
    rows = overview_rows(state.source, hubs)
    if hub_state is not None:
        rows = [row for row in rows if row["state"] == hub_state]
    return {"hubs": rows, "totals": fleet_totals(rows)}


@router.get(
    "/hubs/{hub}", response_model=HubDetail, responses=errors(401, 404, 422), summary="One hub in detail"
)
def get_hub(hub: HubName, principal: Caller, state: State) -> dict[str, Any]:
    return hub_detail(state.source, hub_or_404(state.fleet, principal, hub).name)


@router.get(
    "/hubs/{hub}/charts/{chart}.csv",
    response_class=Response,
    responses=errors(401, 404, 422, csv=True),
    summary="A chart of one hub, as CSV",
)
def hub_chart_csv(
    hub: HubName, chart: ChartName, principal: Caller, state: State, days: Days = 30
) -> Response:
    found = hub_or_404(state.fleet, principal, hub)
    return _csv(_chart(state, chart, [found], days), f"{found.name}-{chart}")


@router.get(
    "/hubs/{hub}/charts/{chart}",
    response_model=ChartOut,
    responses=errors(401, 404, 422),
    summary="A chart of one hub",
)
def hub_chart(
    hub: HubName, chart: ChartName, principal: Caller, state: State, days: Days = 30
) -> dict[str, Any]:
    found = hub_or_404(state.fleet, principal, hub)
    return _chart(state, chart, [found], days).to_json()


@router.post(
    "/hubs/{hub}/checks",
    response_model=CheckRun,
    responses=errors(401, 403, 404, 409, 422),
    summary="Run the synthetic user check now",
)
async def run_hub_check(
    hub: HubName,
    principal: Caller,
    state: State,
    timeout: Annotated[
        float, Query(ge=5, le=600, description="Give up after this many seconds.")
    ] = CHECK_TIMEOUT,
) -> dict[str, Any]:
    """Operators only. Creates the check user on the hub, starts its server, runs code in a kernel and stops
    the server, like `hubfleet check HUB`; the result is recorded. 409 when the hub is on a kubernetes
    cluster, is not running, or is being checked already (one check of a hub at a time)."""
    found = hub_or_404(state.fleet, principal, hub)
    require_operator(principal)
    url, token = _check_target(state, found)
    from hubfleet.checks.synthetic import check_hub
    from hubfleet.render.local import dummy_password

    running = state.checks_running
    if found.name in running:
        raise HTTPException(409, f"a check of hub '{found.name}' is running already; wait for its result")
    running.add(found.name)
    if state.secrets is None:
        from hubfleet.secrets.store import SecretResolver

        state.secrets = SecretResolver(state.fleet)
    password = dummy_password(found, state.secrets)
    try:
        result = await check_hub(
            found.name, url, token, state.store, timeout=timeout, dummy_password=password
        )
    finally:
        running.discard(found.name)
    return {**result.to_dict(), "error": result.error}


def _check_target(state: ConsoleState, hub: Hub) -> tuple[str, str]:
    """URL and control token of a running local hub; 409 otherwise."""
    from hubfleet.backends.local import hub_endpoint
    from hubfleet.settings import UserError

    kind = state.fleet.clusters[hub.cluster].kind
    if kind != "local":
        raise HTTPException(
            409,
            f"hub '{hub.name}' runs on {kind} cluster '{hub.cluster}'; the console checks local hubs only",
        )
    state_dir = state.source.state_dir
    hub_state = str(state.source.hub_states().get(hub.name, {}).get("state") or "stopped")
    if hub_state != "running" or state_dir is None:
        raise HTTPException(
            409, f"hub '{hub.name}' is not running ({hub_state}); start it with `hubfleet up`"
        )
    try:
        endpoint = hub_endpoint(state_dir, hub.name)
    except UserError as exc:
        raise HTTPException(409, str(exc)) from None
    return endpoint.url, endpoint.token


# --------------------------------------------------------------------------- communities


@router.get(
    "/communities",
    response_model=CommunityList,
    responses=errors(401),
    summary="Communities the caller may see",
)
def list_communities(principal: Caller, state: State) -> dict[str, Any]:
    fleet = state.fleet
    hubs = visible_hubs(fleet, principal)
    return {
        "communities": [
            {
                "name": name,
                "display_name": fleet.communities[name].display_name or name,
                "hubs": [h.name for h in hubs if h.community == name],
            }
            for name in visible_communities(fleet, principal)
        ]
    }


@router.get(
    "/communities/{name}",
    response_model=CommunityDetail,
    responses=errors(401, 404, 422),
    summary="One community in detail",
)
def get_community(name: CommunityName, principal: Caller, state: State) -> dict[str, Any]:
    return community_detail(state.source, community_or_404(state.fleet, principal, name))


@router.get(
    "/communities/{name}/charts/{chart}.csv",
    response_class=Response,
    responses=errors(401, 404, 422, csv=True),
    summary="A chart over one community's hubs, as CSV",
)
def community_chart_csv(
    name: CommunityName, chart: ChartName, principal: Caller, state: State, days: Days = 30
) -> Response:
    hubs = _hubs_in_scope(state, principal, community=name)
    return _csv(_chart(state, chart, hubs, days), f"{name}-{chart}")


@router.get(
    "/communities/{name}/charts/{chart}",
    response_model=ChartOut,
    responses=errors(401, 404, 422),
    summary="A chart over one community",
)
def community_chart(
    name: CommunityName, chart: ChartName, principal: Caller, state: State, days: Days = 30
) -> dict[str, Any]:
    hubs = _hubs_in_scope(state, principal, community=name)
    return _chart(state, chart, hubs, days).to_json()


# --------------------------------------------------------------------------- fleet


@router.get(
    "/fleet/charts/{chart}.csv",
    response_class=Response,
    responses=errors(401, 404, 422, csv=True),
    summary="A chart over every hub the caller may see, as CSV",
)
def fleet_chart_csv(chart: ChartName, principal: Caller, state: State, days: Days = 30) -> Response:
    return _csv(_chart(state, chart, visible_hubs(state.fleet, principal), days), f"fleet-{chart}")


@router.get(
    "/fleet/charts/{chart}",
    response_model=ChartOut,
    responses=errors(401, 404, 422),
    summary="A chart over every hub the caller may see",
)
def fleet_chart(chart: ChartName, principal: Caller, state: State, days: Days = 30) -> dict[str, Any]:
    return _chart(state, chart, visible_hubs(state.fleet, principal), days).to_json()


# --------------------------------------------------------------------------- events


@router.get(
    "/incidents",
    response_model=IncidentList,
    responses=errors(401, 404, 422),
    summary="Incidents of the hubs the caller may see",
)
def list_incidents(
    principal: Caller,
    state: State,
    hub: OptionalName = None,
    community: OptionalName = None,
    kind: Annotated[str | None, Query(max_length=50, description="Only this kind (e.g. down).")] = None,
    incident_state: Annotated[Literal["open", "resolved"] | None, Query(alias="state")] = None,
    since_days: Annotated[
        int | None,
        Query(ge=1, le=MAX_DAYS, description="Only incidents open at some time in this many last days."),
    ] = None,
    limit: Limit = 200,
) -> dict[str, Any]:
    """Newest first. A hub or community the caller may not see answers 404."""
    hubs = _hubs_in_scope(state, principal, hub, community)
    since = utcnow() - timedelta(days=since_days) if since_days else None
    names = [h.name for h in hubs]
    return {
        "incidents": incidents(
            state.source,
            names,
            state=incident_state,
            kind=kind,
            since=since,
            limit=limit,
            communities=() if hub else None,  # a hub's own; else its communities' budget incidents too
        )
    }


@router.get(
    "/deployments",
    response_model=DeploymentList,
    responses=errors(401, 404, 422),
    summary="Deployments of the hubs the caller may see",
)
def list_deployments(
    principal: Caller, state: State, hub: OptionalName = None, limit: Limit = 100
) -> dict[str, Any]:
    """Newest first (without the rendered configuration)."""
    records = _visible_records(state, principal, hub, limit, state.store.deployments, "started_at")
    return {"deployments": records}


@router.get(
    "/checks",
    response_model=CheckList,
    responses=errors(401, 404, 422),
    summary="Synthetic check results of the hubs the caller may see",
)
def list_checks(
    principal: Caller, state: State, hub: OptionalName = None, limit: Limit = 100
) -> dict[str, Any]:
    """Newest first."""
    return {"checks": _visible_records(state, principal, hub, limit, state.store.checks, "at")}


# --------------------------------------------------------------------------- API tokens


@router.get("/tokens", response_model=TokenList, responses=errors(401), summary="The caller's API tokens")
def list_tokens(principal: Caller, state: State) -> dict[str, Any]:
    return {"tokens": [t.to_dict() for t in accounts.list_tokens(state.store, principal.username)]}


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses=errors(400, 401, 403, 422),
    summary="Create an API token for the caller",
)
def create_token(body: TokenRequest, principal: Caller, state: State) -> dict[str, Any]:
    """The token is in this response only; the console keeps its hash."""
    token, info = accounts.create_token(state.store, principal.username, body.name, body.expires_days)
    return {**info.to_dict(), "token": token}


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    responses=errors(401, 403, 404, 422),
    summary="Revoke one of the caller's tokens",
)
def revoke_token(
    token_id: Annotated[
        int, Path(ge=1, le=accounts.MAX_TOKEN_ID, description="The token's id (GET /api/tokens).")
    ],
    principal: Caller,
    state: State,
) -> Response:
    """Only the caller's own active tokens; anything else answers 404."""
    if not accounts.revoke_token(state.store, token_id, principal.username):
        raise HTTPException(404, f"no active token {token_id} of yours")
    return Response(status_code=204)
