"""The shapes of the console's JSON API: its response models and documented errors (the OpenAPI document).

Where a response is a record the store (or the console's accounts) already defines, its model is derived from
that record's dataclass by `record_model`, so a field added to a record cannot be forgotten here; only what
the API adds to a record (and shapes of its own, such as an overview row) is written out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from hubfleet.console.accounts import TokenInfo
from hubfleet.console.data.details import (
    HUB_CHECK_OMITS,
    HUB_DEPLOY_OMITS,
    HUB_LIMIT_EVENT_OMITS,
    HUB_RESTART_OMITS,
)
from hubfleet.monitor.incidents import IncidentRecord
from hubfleet.store.api import CheckRecord, DeploymentRecord, LimitEventRecord, LimitKind, RestartRecord

MAX_TOKEN_DAYS = 3650


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


def record_model(
    name: str, record: type, *, omit: Sequence[str] = (), doc: str | None = None, **fields: Any
) -> type[Model]:
    """A response model with the fields of the dataclass `record` (less `omit`), typed as the record types
    them and every one required (the console always sends every key, even a record's defaulted ones).
    `fields` retype a record's field in its place or add one at the end, as `create_model` takes them:
    `name=(type, default or Field(...))`."""
    hints = get_type_hints(record)
    derived: dict[str, Any] = {
        field.name: (hints[field.name], ...) for field in dataclasses.fields(record) if field.name not in omit
    }
    return create_model(name, __base__=Model, __doc__=doc, **{**derived, **fields})


# --------------------------------------------------------------------------- errors


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
    404: (
        Problem,
        "No such hub, community, chart, invoice or token (or none the caller may see: same answer).",
    ),
    409: (Problem, "The hub cannot be checked now: on a kubernetes cluster, not running, or being checked."),
    422: (ValidationProblem, "Invalid parameters."),
}


def errors(*codes: int, csv: bool = False) -> dict[int | str, dict[str, Any]]:
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


# --------------------------------------------------------------------------- the caller


class PrincipalOut(Model):
    username: str
    role: Literal["operator", "community-leader"]
    communities: list[str] = Field(description="The communities of a community leader (empty for operators).")
    display_name: str
    via: Literal["session", "token"] = Field(description="How the caller authenticated.")


# --------------------------------------------------------------------------- hubs and communities


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
    disk_bytes: int | None = Field(
        default=None, description="Homes plus database, newest measurement (null: not measured, kubernetes)."
    )
    backup_state: Literal["off", "never", "ok", "failed", "late"] | None = Field(
        default=None, description="hubfleet.backup.status of a local hub (null: kubernetes)."
    )
    last_backup_at: datetime | None = Field(default=None, description="When the last good backup started.")
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


IncidentOut = record_model(
    "IncidentOut",
    IncidentRecord,
    community=(str | None, Field(description="Null for a hub no longer in the fleet.")),
    open=(bool, ...),
    duration_seconds=(float, ...),
)


class IncidentList(Model):
    incidents: list[IncidentOut]


DeploymentOut = record_model("DeploymentOut", DeploymentRecord, omit=("rendered", "settings"))


class DeploymentList(Model):
    deployments: list[DeploymentOut]


class StepOut(Model):
    name: str
    ok: bool
    seconds: float = 0.0
    detail: str = ""


CheckOut = record_model("CheckOut", CheckRecord, steps=(list[StepOut], ...))


class CheckList(Model):
    checks: list[CheckOut]


CheckRun = record_model(
    "CheckRun",
    CheckRecord,
    omit=("id",),
    doc="The result of a synthetic check run now (also recorded in the store).",
    steps=(list[StepOut], ...),
    error=(str | None, Field(description="The failing step and why; null when the check passed.")),
)
HubDeploy = record_model("HubDeploy", DeploymentRecord, omit=HUB_DEPLOY_OMITS)
HubCheck = record_model("HubCheck", CheckRecord, omit=HUB_CHECK_OMITS, steps=(list[StepOut], ...))
HubRestart = record_model("HubRestart", RestartRecord, omit=HUB_RESTART_OMITS)
HubLimitEvent = record_model(
    "HubLimitEvent",
    LimitEventRecord,
    omit=HUB_LIMIT_EVENT_OMITS,
    doc="A user server reached its memory limit (processes killed) or its process limit (forks refused).",
    kind=(LimitKind, ...),
    count=(int, Field(description="How many kills or refused forks this event stands for.")),
)


class Uptime(Model):
    """Percent of successful probes per window (null: no probe in it)."""

    h24: float | None = Field(alias="24h")
    d7: float | None = Field(alias="7d")
    d30: float | None = Field(alias="30d")


class UserDisk(Model):
    username: str
    bytes: int = Field(description="Allocated bytes of the user's home.")
    quota_percent: float | None = Field(description="Percent of home_quota's limit (null: no quota).")
    warning: int | None = Field(description="The highest warn_at percentage reached (null: none).")
    limited: bool | None = Field(
        description="The filesystem enforces the quota on this home (null: it enforces none on this hub)."
    )


class DiskQuota(Model):
    limit: str
    limit_bytes: int
    warn_at: list[int]


class HubDisk(Model):
    """The newest measurement of hubfleet.monitor.disk_usage."""

    at: datetime | None = Field(description="When it was measured (null: not yet).")
    total_bytes: int | None = Field(description="Homes plus the hub's data directory (its database).")
    homes_bytes: int
    users: list[UserDisk] = Field(description="Largest first.")
    quota: DiskQuota | None = Field(description="The hub's home_quota (null: none).")
    enforcement: str | None = Field(description="Whether the filesystem enforces the quota, and why not.")


class UserDatabaseSize(Model):
    username: str
    bytes: int = Field(description="Bytes on disk of the user's database directory, measured now.")


class BackupLast(Model):
    started_at: datetime
    finished_at: datetime | None
    age_seconds: float = Field(description="Seconds since it started.")
    size_bytes: int | None = Field(description="What the snapshot holds, before deduplication.")
    added_bytes: int | None = Field(description="What it added to the repository.")
    files: int | None
    snapshot_id: str | None = Field(description="The restic snapshot (`hubfleet backups list`).")
    trigger: str = Field(description="schedule, manual or retire.")


class BackupFailure(Model):
    finished_at: datetime | None
    error: str = Field(description="Why it failed, on one line.")
    trigger: str


class HubBackup(Model):
    """hubfleet.backup.status: the newest good backup and, when the newest run failed, that failure."""

    state: Literal["off", "never", "ok", "failed", "late"]
    summary: str = Field(description="One line, as `hubfleet status` prints it.")
    every_hours: float | None
    late_after_hours: float | None
    last: BackupLast | None = Field(description="The newest good backup (null: none).")
    last_failure: BackupFailure | None = Field(description="The newest run, when it failed.")


class HubDetail(HubRow):
    uptime: Uptime
    uptime_unplanned: Uptime = Field(
        description="The same windows with probes that failed during planned maintenance (deploys) not "
        "counted as downtime."
    )
    deploys: list[HubDeploy] = Field(description="The newest 20.")
    checks: list[HubCheck] = Field(description="The newest 20.")
    incidents: list[IncidentOut] = Field(description="The newest 50.")
    restarts: list[HubRestart] = Field(description="The newest 20.")
    limit_events: list[HubLimitEvent] = Field(description="The newest 20.")
    disk: HubDisk | None = Field(description="Disk use of a local hub (null on kubernetes).")
    user_databases: list[UserDatabaseSize] | None = Field(
        default=None,
        description="Each user's own database on a local hub with `user_database`, largest first (null: "
        "the hub gives none).",
    )
    backup: HubBackup | None = Field(description="Backups of a local hub (null on kubernetes).")
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


# --------------------------------------------------------------------------- API tokens


TokenOut = record_model(
    "TokenOut",
    TokenInfo,
    prefix=(str, Field(description="The first characters of the token, to recognise it.")),
    active=(bool, ...),
)


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


# --------------------------------------------------------------------------- costs (console/costs_routes.py)


class Amount(Model):
    """Money to the cent, as a string (exact: JSON numbers are floats), with its currency."""

    amount: str = Field(description="Rounded to the cent, e.g. `1234.50` (negative for a credit).")
    currency: str = Field(description="ISO 4217 code.")


class BudgetAlertOut(Model):
    fraction: str = Field(description="A fraction of the budget (fleet.yaml `costs.budget_alerts`).")
    label: str
    reached: bool = Field(description="The month's cost so far has reached it.")


class BudgetOut(Model):
    """hubfleet.costs.budgets: a month's budget, what was spent and the forecast, in the budget's currency
    (costs in other currencies converted with fleet.yaml `costs.exchange_rates`)."""

    hub: str | None = Field(description="Null: the community's budget; else one hub's own budget.")
    currency: str
    monthly: Amount | None = Field(description="The budget (null: none set and no history for a default).")
    basis: Literal["set", "default", "none"] = Field(
        description="From the community's file, from the default rule (average of the last months + a "
        "margin), or none."
    )
    note: str = Field(description="How a default budget was found, or why there is none.")
    spent: Amount
    forecast: Amount = Field(description="Spent plus the daily run rate for the days left.")
    run_rate: Amount
    run_rate_days: int
    through: str | None = Field(description="The last day with cost (ISO date; null: none yet).")
    days_left: int
    percent: float | None = Field(description="Spent as a percentage of the budget.")
    forecast_percent: float | None
    status: str = Field(description="`ok`, `over 50 %`, `forecast over`, `no budget`, ...")
    tone: Literal["good", "warn", "bad", "neutral"]
    forecast_over: bool
    alerts: list[BudgetAlertOut]
    missing_rates: list[str] = Field(description="Currencies left out for want of an exchange rate.")


class CommunityBudgetOut(BudgetOut):
    hubs: list[BudgetOut] = Field(description="Budgets of single hubs (`billing.budget.hubs`).")


class InvoiceLinks(Model):
    pdf: str
    csv: str
    json_: str = Field(alias="json")


class InvoiceOut(Model):
    number: str
    kind: Literal["invoice", "credit_note"]
    month: str
    refers_to: str | None = Field(description="A credit note's invoice.")
    issued_on: str
    due_on: str
    total: Amount
    links: InvoiceLinks = Field(description="Where to download the issued files.")


class InvoiceList(Model):
    invoices: list[InvoiceOut] = Field(description="Newest first.")


class AccountCheckOut(Model):
    """One billing account (or price-sheet cluster) in one currency: allocations add up to the bill."""

    account: str
    currency: str
    billed: Amount
    allocated: Amount
    unallocated: Amount = Field(description="Rows that map to no cluster (part of `allocated`).")
    idle_kept: Amount = Field(description="Idle capacity the operator keeps (part of `allocated`).")
    source: str = Field(description="`import` (a billing export) or `price-sheet`.")
    ok: bool = Field(description="Billed equals allocated to the cent; every hub's users and groups add up.")
    problems: list[str] = Field(description="What does not add up, and the command that fixes it.")


class CommunityCostRow(Model):
    name: str
    display_name: str
    hubs: list[str]
    cost: list[Amount] = Field(description="The month's allocated cost so far, per currency.")
    budget: CommunityBudgetOut
    invoice: InvoiceOut | None = Field(description="The month's invoice, once issued.")
    open_incidents: int = Field(description="Open incidents of kind `cost` (budget alerts, anomalies).")


class CostsOverview(Model):
    month: str
    communities: list[CommunityCostRow]
    total: list[Amount] = Field(description="Over the listed communities, per currency.")
    currencies: list[str] = Field(description="Currencies with costs this month (one chart each).")
    checks: list[AccountCheckOut] | None = Field(
        description="Per billing account, billed vs. allocated (operators only; null for community leaders)."
    )


class HubCostRow(Model):
    hub: str
    currency: str
    direct: Amount = Field(description="The hub's own cost: tagged rows, or its usage on a price sheet.")
    shared: Amount = Field(description="Its part of its cluster's shared cost.")
    idle: Amount = Field(description="Its part of idle capacity.")
    total: Amount


class UserCostRow(Model):
    hub: str
    username: str = Field(description="Empty: what the hub carries that no user's servers used.")
    cost: Amount


class GroupCostRow(Model):
    hub: str
    group: str
    cost: Amount


class CommunityCosts(Model):
    month: str
    name: str
    display_name: str
    cost: list[Amount] = Field(description="The month's allocated cost so far, per currency.")
    hubs: list[HubCostRow]
    users: list[UserCostRow] = Field(description="Largest first.")
    groups: list[GroupCostRow] = Field(description="Largest first.")
    budget: CommunityBudgetOut
    invoices: list[InvoiceOut] = Field(description="Every invoice and credit note, newest first.")
    incidents: list[IncidentOut] = Field(
        description="The newest 50 incidents of kind `cost`: budget alerts (the community's, its hubs'), "
        "daily cost anomalies."
    )
    currencies: list[str]


# --------------------------------------------------------------------------- tickets (the support desk)

TicketState = Literal["new", "open", "waiting", "escalated", "resolved", "closed"]
TicketPriority = Literal["urgent", "high", "normal", "low"]
TicketCategory = Literal["sign-in", "server-start", "environment", "data", "performance", "billing", "other"]
TICKET_ERROR_TEXT = {
    400: (Problem, "Bad input, or a change the ticket's state does not allow: the message says what to do."),
    403: (
        Problem,
        "Operators only (community leaders may read and add public messages), or no X-CSRF-Token.",
    ),
    404: (Problem, "No such ticket, attachment, hub or community (or none the caller may see: same answer)."),
    413: (Problem, "The request body is larger than the ticket routes read."),
}


def ticket_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`errors` with the ticket routes' own wording of 400, 403, 404 and 413."""
    documented = errors(*(code for code in codes if code not in TICKET_ERROR_TEXT))
    for code in codes:
        if code in TICKET_ERROR_TEXT:
            model, text = TICKET_ERROR_TEXT[code]
            documented[code] = {"model": model, "description": text}
    return documented


class TicketTargetOut(Model):
    target_hours: float
    used_hours: float = Field(description="Working hours on the support calendar, paused time left out.")
    percent: float
    due: str | None = Field(description="When it is due (ISO); null once met, or while the clock is paused.")
    status: Literal["met", "missed", "running", "paused"]


class TicketTargetsOut(Model):
    first_response: TicketTargetOut
    resolution: TicketTargetOut


class TicketSummaryOut(Model):
    id: int
    subject: str
    state: TicketState
    priority: TicketPriority
    urgency: TicketPriority = Field(description="As the requester chose it.")
    category: str
    line: Literal["first", "second"]
    assignee: str | None
    hub: str | None
    community: str | None
    username: str | None = Field(description="The requester's username on the hub, when known.")
    requester_name: str
    requester_email: str | None
    verified: bool = Field(description="False for a mail sender who has not confirmed their address yet.")
    source: str
    created_at: str
    updated_at: str
    first_response_at: str | None
    resolved_at: str | None
    closed_at: str | None
    targets: TicketTargetsOut
    survey_score: int | None


class TicketList(Model):
    tickets: list[TicketSummaryOut] = Field(description="Most urgent first (the earlier due moment).")


class TicketMessageOut(Model):
    id: int
    at: str
    author: str
    author_kind: Literal["requester", "staff", "system"]
    public: bool = Field(description="False: an internal note (never shown to community leaders).")
    body: str = Field(description="Plain text, as written.")
    via: str
    verified: bool


class TicketAttachmentOut(Model):
    id: int
    message_id: int | None
    filename: str
    content_type: str = Field(description="From the file's bytes (PNG, JPEG, GIF, WebP or PDF).")
    size: int
    sha256: str


class TicketEventOut(Model):
    at: str
    actor: str
    action: str
    detail: dict[str, Any]


class TicketTimeOut(Model):
    at: str
    account: str
    minutes: int
    note: str


class TicketIncidentOut(Model):
    incident_id: int
    linked_at: str
    resolution_noted_at: str | None


class TicketDetail(TicketSummaryOut):
    messages: list[TicketMessageOut]
    attachments: list[TicketAttachmentOut]
    page_url: str | None
    environment: str | None
    context: dict[str, Any] = Field(
        description="The hub's state when the ticket was opened (or its hub set)."
    )
    pauses: list[list[str | None]] = Field(description="[start, end] of each wait for the requester.")
    history: list[TicketEventOut] | None = Field(description="Operators only (null for leaders).")
    time_log: list[TicketTimeOut] | None = Field(description="Operators only (null for leaders).")
    minutes_logged: int | None
    incidents: list[TicketIncidentOut] | None = Field(description="Linked incidents; operators only.")


class TicketAttachmentIn(Model):
    filename: str = Field(min_length=1, max_length=255)
    content_base64: str = Field(description="The file's bytes, base64 (a screenshot or a PDF).")


class NewTicketIn(Model):
    hub: str | None = Field(
        default=None,
        max_length=200,
        description="The hub it is about (leaders: required, of their community).",
    )
    category: TicketCategory
    urgency: TicketPriority = "normal"
    subject: str = Field(default="", max_length=300)
    description: str = Field(min_length=1, max_length=50_000)
    username: str | None = Field(
        default=None, max_length=200, description="The person's username on the hub."
    )
    requester_name: str = Field(default="", max_length=200)
    requester_email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    include_start_log: bool = Field(default=False, description="Add the person's last server start log.")
    attachments: list[TicketAttachmentIn] = Field(default_factory=list, max_length=5)


class TicketCreated(Model):
    id: int
    ticket: TicketDetail


class ReplyIn(Model):
    body: str = Field(min_length=1, max_length=50_000)
    state: Literal["open", "waiting", "escalated"] | None = Field(
        default=None,
        description="The state after an operator's reply (default: waiting for the requester). Ignored for "
        "community leaders, whose message is the requester side's.",
    )
    attachments: list[TicketAttachmentIn] = Field(default_factory=list, max_length=5)


class NoteIn(Model):
    body: str = Field(min_length=1, max_length=50_000)
    attachments: list[TicketAttachmentIn] = Field(default_factory=list, max_length=5)


class AssignIn(Model):
    assignee: str | None = Field(max_length=200, description="An operator account, `me`, or null for nobody.")


class EscalateIn(Model):
    reason: str = Field(min_length=1, max_length=2000)
    to: str | None = Field(default=None, max_length=200, description="Default: the first of second_line.")


class ResolveIn(Model):
    summary: str = Field(default="", max_length=50_000, description="Sent to the requester as a reply.")


class PriorityIn(Model):
    priority: TicketPriority


class StateIn(Model):
    state: Literal["open", "waiting"]
    reason: str = Field(default="", max_length=2000)


class TimeIn(Model):
    minutes: int = Field(ge=1, le=1440)
    note: str = Field(default="", max_length=2000)


class HubIn(Model):
    hub: str = Field(min_length=1, max_length=200)


class SupportHoursBurn(Model):
    day: str
    used_hours: float = Field(description="Cumulative from the period's start.")


class SupportHoursIdeal(Model):
    day: str
    hours_left: float


class SupportHoursStatus(Model):
    period: Literal["month", "quarter", "year"]
    start: str
    end: str
    budget_hours: float
    used_hours: float
    remaining_hours: float
    burn: list[SupportHoursBurn]
    ideal: list[SupportHoursIdeal]
    over: bool


class SupportHoursOut(Model):
    community: str
    status: SupportHoursStatus | None = Field(description="Null when the community has no support budget.")
    note: str = Field(description="Why there is no status (empty when there is one).")
