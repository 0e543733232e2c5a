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
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from hubfleet.config.models import Hub
from hubfleet.console import accounts, data
from hubfleet.console.access import (
    Principal,
    community_or_404,
    hub_or_404,
    require_operator,
    visible_communities,
    visible_hubs,
)
from hubfleet.console.web import ConsoleState, api_principal, console_state

MAX_DAYS = 400
MAX_LIMIT = 1000
MAX_TOKEN_DAYS = 3650
CHECK_TIMEOUT = 120.0

# --------------------------------------------------------------------------- response models


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Problem(Model):
    """Any error: what went wrong, in one sentence."""

    detail: str


class ValidationProblem(Model):
    """Bad query, path or body values (422): every problem as `field: message`."""

    detail: str
    errors: list[str]


ERROR_TEXT = {
    400: (Problem, "The body is not JSON."),
    401: (Problem, "No valid API token or session cookie."),
    403: (Problem, "Not allowed: operators only, or a session caller without the X-CSRF-Token header."),
    404: (Problem, "No such hub, community, chart or token (or none the caller may see: the same answer)."),
    409: (Problem, "The hub cannot be checked now: on a kubernetes cluster, not running, or being checked."),
    422: (ValidationProblem, "Invalid parameters."),
}


def _errors(*codes: int, csv: bool = False) -> dict[int | str, dict[str, Any]]:
    """The `responses` of an endpoint: its possible errors (and its CSV body)."""
    documented: dict[int | str, dict[str, Any]] = {
        code: {"model": ERROR_TEXT[code][0], "description": ERROR_TEXT[code][1]} for code in codes
    }
    if csv:
        documented[200] = {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "The chart's table as CSV (RFC 4180): a header row, then one row per x value.",
        }
    return documented


class PrincipalOut(Model):
    username: str
    role: Literal["operator", "community-leader"]
    communities: list[str] = Field(description="The communities of a community leader (empty for operators).")
    display_name: str
    via: Literal["session", "token"] = Field(description="How the caller authenticated.")


class LastDeploy(Model):
    at: datetime | None
    result: str
    actor: str
    message: str


class HubRow(Model):
    """One hub as the overview table shows it."""

    name: str
    display_name: str
    community: str
    cluster: str
    cluster_kind: Literal["local", "kubernetes"]
    stage: Literal["staging", "prod"]
    url: str
    state: str = Field(
        description="Local hubs: the daemon's state (running, starting, restarting, failed, stopped); "
        "kubernetes hubs: up, down or unknown from the newest probe."
    )
    version: str | None = Field(description="JupyterHub version the newest probe saw.")
    uptime_30d: float | None = Field(description="Percent of successful probes over 30 days (null: none).")
    running_servers: int | None = Field(description="From the newest hub sample (null: none yet).")
    dau: int = Field(description="Distinct active users today (UTC).")
    wau: int = Field(description="Distinct active users over 7 days.")
    mau: int = Field(description="Distinct active users over 30 days.")
    open_incidents: int
    last_deploy: LastDeploy | None
    last_probe_at: datetime | None
    last_probe_ok: bool | None


class Totals(Model):
    hubs: int
    running: int = Field(description="Hubs running (local) or up (kubernetes).")
    running_servers: int
    open_incidents: int
    by_state: dict[str, int]


class HubList(Model):
    hubs: list[HubRow]
    totals: Totals = Field(description="Over the listed hubs.")


class Active(Model):
    dau: int
    wau: int
    mau: int


class ContactOut(Model):
    name: str
    email: str
    role: str


class IncidentOut(Model):
    id: int
    hub: str
    community: str | None = Field(description="Null for a hub no longer in the fleet.")
    kind: str
    rule: str | None
    started_at: datetime
    resolved_at: datetime | None
    open: bool
    duration_seconds: float
    cause: str


class IncidentList(Model):
    incidents: list[IncidentOut]


class DeploymentOut(Model):
    id: int
    hub: str
    community: str | None
    stage: str | None
    config_hash: str
    started_at: datetime
    finished_at: datetime | None
    result: str
    actor: str
    message: str


class DeploymentList(Model):
    deployments: list[DeploymentOut]


class StepOut(Model):
    name: str
    ok: bool
    seconds: float = 0.0
    detail: str = ""


class CheckOut(Model):
    id: int
    hub: str
    at: datetime
    ok: bool
    failed_step: str | None
    total_seconds: float
    steps: list[StepOut]


class CheckList(Model):
    checks: list[CheckOut]


class CheckRun(Model):
    """The result of a synthetic check run now (also recorded in the store)."""

    hub: str
    at: datetime
    ok: bool
    failed_step: str | None
    error: str | None = Field(description="The failing step and why; null when the check passed.")
    total_seconds: float
    steps: list[StepOut]


class HubDeploy(Model):
    id: int
    started_at: datetime
    finished_at: datetime | None
    result: str
    actor: str
    message: str
    stage: str | None
    config_hash: str


class HubCheck(Model):
    id: int
    at: datetime
    ok: bool
    failed_step: str | None
    total_seconds: float
    steps: list[StepOut]


class HubRestart(Model):
    at: datetime
    reason: str
    exit_code: int | None
    attempt: int


class Uptime(Model):
    """Percent of successful probes per window (null: no probe in it)."""

    h24: float | None = Field(alias="24h")
    d7: float | None = Field(alias="7d")
    d30: float | None = Field(alias="30d")


class HubDetail(HubRow):
    uptime: Uptime
    deploys: list[HubDeploy] = Field(description="The newest 20.")
    checks: list[HubCheck] = Field(description="The newest 20.")
    incidents: list[IncidentOut] = Field(description="The newest 50.")
    restarts: list[HubRestart] = Field(description="The newest 20.")
    auth_type: str
    contacts: list[ContactOut] = Field(description="The community's contacts.")


class CommunitySummary(Model):
    name: str
    display_name: str
    hubs: list[str]


class CommunityList(Model):
    communities: list[CommunitySummary]


class CommunityDetail(Model):
    name: str
    display_name: str
    contacts: list[ContactOut]
    hubs: list[HubRow]
    active: Active = Field(description="Distinct people over the community's hubs (one person counts once).")
    incidents: list[IncidentOut] = Field(description="The newest 50.")


class ChartOut(Model):
    name: str
    title: str
    y_title: str
    columns: list[str] = Field(
        description="Column names; the first is the x axis: `day` (ISO date) or `at` (ISO date-time)."
    )
    rows: list[list[str | int | float | None]] = Field(description="One list per x value; null is a gap.")


class TokenOut(Model):
    id: int
    username: str
    name: str
    prefix: str = Field(description="The first characters of the token, to recognise it.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    active: bool


class TokenList(Model):
    tokens: list[TokenOut]


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown only in this response.")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200, description="What the token is for.")
    expires_days: int | None = Field(
        default=None, ge=1, le=MAX_TOKEN_DAYS, description="Days until it expires (null: never)."
    )


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
ChartName = Annotated[str, Path(description=f"One of: {', '.join(data.CHARTS)}.", max_length=200)]
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description="How many days back the chart goes.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many rows, newest first.")]
OptionalName = Annotated[str | None, Query(max_length=200)]


def _chart(state: ConsoleState, name: str, hubs: Sequence[Hub], days: int) -> data.Chart:
    if name not in data.CHARTS:
        raise HTTPException(404, f"no chart named '{name}'; charts: {', '.join(data.CHARTS)}")
    return data.chart(state.source, name, [h.name for h in hubs], days=days)


def _csv(chart: data.Chart, filename: str) -> Response:
    return Response(
        content=chart.to_csv(),
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


@router.get("/me", response_model=PrincipalOut, responses=_errors(401), summary="The caller")
def me(principal: Caller) -> dict[str, object]:
    return principal.to_dict()


# --------------------------------------------------------------------------- hubs


@router.get(
    "/hubs",
    response_model=HubList,
    responses=_errors(401, 404, 422),
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
    rows = data.overview_rows(state.source, hubs)
    if hub_state is not None:
        rows = [row for row in rows if row["state"] == hub_state]
    return {"hubs": rows, "totals": data.fleet_totals(rows)}


@router.get(
    "/hubs/{hub}", response_model=HubDetail, responses=_errors(401, 404, 422), summary="One hub in detail"
)
def get_hub(hub: HubName, principal: Caller, state: State) -> dict[str, Any]:
    return data.hub_detail(state.source, hub_or_404(state.fleet, principal, hub).name)


@router.get(
    "/hubs/{hub}/charts/{chart}.csv",
    response_class=Response,
    responses=_errors(401, 404, 422, csv=True),
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
    responses=_errors(401, 404, 422),
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
    responses=_errors(401, 403, 404, 409, 422),
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

    running = state.checks_running
    if found.name in running:
        raise HTTPException(409, f"a check of hub '{found.name}' is running already; wait for its result")
    running.add(found.name)
    try:
        result = await check_hub(found.name, url, token, state.store, timeout=timeout)
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
    responses=_errors(401),
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
    responses=_errors(401, 404, 422),
    summary="One community in detail",
)
def get_community(name: CommunityName, principal: Caller, state: State) -> dict[str, Any]:
    return data.community_detail(state.source, community_or_404(state.fleet, principal, name))


@router.get(
    "/communities/{name}/charts/{chart}.csv",
    response_class=Response,
    responses=_errors(401, 404, 422, csv=True),
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
    responses=_errors(401, 404, 422),
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
    responses=_errors(401, 404, 422, csv=True),
    summary="A chart over every hub the caller may see, as CSV",
)
def fleet_chart_csv(chart: ChartName, principal: Caller, state: State, days: Days = 30) -> Response:
    return _csv(_chart(state, chart, visible_hubs(state.fleet, principal), days), f"fleet-{chart}")


@router.get(
    "/fleet/charts/{chart}",
    response_model=ChartOut,
    responses=_errors(401, 404, 422),
    summary="A chart over every hub the caller may see",
)
def fleet_chart(chart: ChartName, principal: Caller, state: State, days: Days = 30) -> dict[str, Any]:
    return _chart(state, chart, visible_hubs(state.fleet, principal), days).to_json()


# --------------------------------------------------------------------------- events


@router.get(
    "/incidents",
    response_model=IncidentList,
    responses=_errors(401, 404, 422),
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
    since = datetime.now(UTC) - timedelta(days=since_days) if since_days else None
    names = [h.name for h in hubs]
    return {
        "incidents": data.incidents(
            state.source, names, state=incident_state, kind=kind, since=since, limit=limit
        )
    }


@router.get(
    "/deployments",
    response_model=DeploymentList,
    responses=_errors(401, 404, 422),
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
    responses=_errors(401, 404, 422),
    summary="Synthetic check results of the hubs the caller may see",
)
def list_checks(
    principal: Caller, state: State, hub: OptionalName = None, limit: Limit = 100
) -> dict[str, Any]:
    """Newest first."""
    return {"checks": _visible_records(state, principal, hub, limit, state.store.checks, "at")}


# --------------------------------------------------------------------------- API tokens


@router.get("/tokens", response_model=TokenList, responses=_errors(401), summary="The caller's API tokens")
def list_tokens(principal: Caller, state: State) -> dict[str, Any]:
    return {"tokens": [t.to_dict() for t in accounts.list_tokens(state.store, principal.username)]}


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses=_errors(400, 401, 403, 422),
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
    responses=_errors(401, 403, 404, 422),
    summary="Revoke one of the caller's tokens",
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**62, description="The token's id (GET /api/tokens).")],
    principal: Caller,
    state: State,
) -> Response:
    """Only the caller's own active tokens; anything else answers 404."""
    if not accounts.revoke_token(state.store, token_id, principal.username):
        raise HTTPException(404, f"no active token {token_id} of yours")
    return Response(status_code=204)
