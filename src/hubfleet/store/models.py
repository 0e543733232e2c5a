"""SQLAlchemy 2 models of the control-plane store. Every timestamp is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy import false as sa_false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns aware UTC datetimes (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[dict[str, Any]]: JSON}


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200), index=True)
    config_hash: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    result: Mapped[str] = mapped_column(String(20))  # ok | failed | rolled_back | skipped | removed
    message: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(200), default="")
    community: Mapped[str | None] = mapped_column(String(200))
    stage: Mapped[str | None] = mapped_column(String(20))
    rendered: Mapped[str | None] = mapped_column(Text)
    """What was applied (jupyterhub_config.py or z2jh values), secret-free, for plan diffs."""
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The hub's effective settings (secrets masked), for the reasons a plan gives."""
    reasons: Mapped[list[str] | None] = mapped_column(JSON)
    """Why the plan deployed it (`max_users: 100 → 150`, ...), for the audit trail."""
    commit: Mapped[str | None] = mapped_column(String(64))
    """The fleet repository's git commit (`-dirty` when its files had uncommitted changes)."""


class Restart(Base):
    __tablename__ = "restarts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[datetime] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None]
    attempt: Mapped[int] = mapped_column(Integer, default=1)


class Check(Base):
    __tablename__ = "checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[datetime] = mapped_column(index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    failed_step: Mapped[str | None] = mapped_column(String(50))
    total_seconds: Mapped[float] = mapped_column(Float)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


# --------------------------------------------------------------------------- monitoring


class ProbeSample(Base):
    """One probe of one hub: /hub/health and /hub/api/ answered (ok) or not."""

    __tablename__ = "probe_samples"
    __table_args__ = (Index("ix_probe_samples_hub_at", "hub", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    health_status: Mapped[int | None]
    api_status: Mapped[int | None]
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str] = mapped_column(Text, default="")
    cert_expires_at: Mapped[datetime | None]
    version: Mapped[str | None] = mapped_column(String(40))
    """JupyterHub's version from /hub/api/ (None when it did not answer)."""
    planned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    """A failed probe during planned maintenance (a deploy of the hub): excluded from unplanned downtime."""


class ProbeDay(Base):
    """Per hub and UTC day, the probes summed: uptime and latency over weeks without reading every sample."""

    __tablename__ = "probe_days"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    probes: Mapped[int] = mapped_column(Integer, default=0)
    ok: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    """Sum of the latencies of the ok probes (mean = latency_ms_sum / ok)."""
    latency_ms_max: Mapped[float | None] = mapped_column(Float)
    planned: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Failed probes during planned maintenance."""


class Maintenance(Base):
    """A window of planned maintenance of a hub (a deploy): probes failing in it are planned downtime."""

    __tablename__ = "maintenance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200), index=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(200), default="")


class Incident(Base):
    """A hub down (kind `down`), a certificate about to expire (`certificate`) or abnormal activity
    (`anomaly`, with the rule that fired). A community's budget incident (kind `cost`) has no hub (``)
    and names its `community`; a hub's cost incident has both (migration 0018)."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200), index=True)
    community: Mapped[str | None] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    rule: Mapped[str | None] = mapped_column(String(50))
    started_at: Mapped[datetime] = mapped_column(index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(index=True)
    cause: Mapped[str] = mapped_column(Text, default="")


class AlertDelivery(Base):
    """One attempt to tell a channel that an incident opened or resolved."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, index=True)
    event: Mapped[str] = mapped_column(String(20))  # opened | resolved
    channel: Mapped[str] = mapped_column(String(200))
    recipient: Mapped[str] = mapped_column(String(400), default="")
    at: Mapped[datetime]
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str] = mapped_column(Text, default="")


class UserDay(Base):
    """A user was active on a hub on a (UTC) day: what DAU/WAU/MAU count, exactly."""

    __tablename__ = "user_days"
    __table_args__ = (
        Index("ix_user_days_day_hub", "day", "hub"),
        # distinct-people counts read the day roll-ups (hubfleet.store.usage_rollups, migration 0020), which
        # replaced 0004's covering indexes (day, identity) and (hub, day, identity)
    )

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    identity: Mapped[str] = mapped_column(String(400), index=True)
    """The person across hubs: `<auth type>:<username>` (the same login on two hubs is one person)."""
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class ServerSession(Base):
    """A user server from start to stop (stopped_at unset while it runs): server-hours and max age."""

    __tablename__ = "server_sessions"
    __table_args__ = (Index("ix_server_sessions_hub_started", "hub", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    username: Mapped[str] = mapped_column(String(255))
    server_name: Mapped[str] = mapped_column(String(255), default="")
    started_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    last_activity: Mapped[datetime | None]
    environment: Mapped[str | None] = mapped_column(String(200))
    """The environment (or profile) slug the server was started with (migration 0015)."""
    cpu_request: Mapped[float | None] = mapped_column(Float)
    """CPU cores the server was started with: its guarantee, else its limit (None: no resources known)."""
    memory_request_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """Memory the server was started with: its guarantee, else its limit."""
    cpu_seconds_used: Mapped[float | None] = mapped_column(Float)
    """CPU time its control group used so far (local hubs that run as root; None elsewhere)."""
    memory_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """The highest memory its control group held (local hubs that run as root; None elsewhere)."""


class HubUserGroup(Base):
    """A hub user's membership of a JupyterHub group, as the collector last saw it (migration 0015): what
    costs by group are split by."""

    __tablename__ = "hub_user_groups"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    group: Mapped[str] = mapped_column(String(255), primary_key=True)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class HubSample(Base):
    """What a hub reported at one collection: running servers, its active-user gauges, spawn counters."""

    __tablename__ = "hub_samples"
    __table_args__ = (Index("ix_hub_samples_hub_at", "hub", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    running_servers: Mapped[int] = mapped_column(Integer)
    users: Mapped[int | None]
    active_24h: Mapped[int | None]
    """jupyterhub_active_users{period=24h} from /hub/metrics (the hub's own count, for cross-checking)."""
    active_7d: Mapped[int | None]
    active_30d: Mapped[int | None]
    spawn_success_total: Mapped[float | None] = mapped_column(Float)
    spawn_failure_total: Mapped[float | None] = mapped_column(Float)
    spawn_seconds_total: Mapped[float | None] = mapped_column(Float)
    """`_sum` of jupyterhub_server_spawn_duration_seconds{status=success}: mean spawn time between samples."""
    spawn_histogram: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The whole jupyterhub_server_spawn_duration_seconds histogram, cumulative as the hub counts it:
    {"success" | "failure/<reason>" | "error": {"buckets": {"0.5": n, ..., "+Inf": n}, "sum": s}}
    (hubfleet.events.spawns reads deltas of it: p50/p95 and failures by cause over any window)."""


class LimitEvent(Base):
    """A user server of a local hub reached a control-group limit: the kernel killed processes at the memory
    limit (kind `memory`) or refused forks at the process limit (`pids`). Written by the daemon so that a
    hub's page can say why someone's kernel died."""

    __tablename__ = "limit_events"
    __table_args__ = (Index("ix_limit_events_hub_at", "hub", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    username: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20))  # memory | pids
    at: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer, default=1)
    """How many kills (memory) or refused forks (pids) this event stands for."""
    detail: Mapped[str] = mapped_column(Text, default="")


# --------------------------------------------------------------------------- backups, disk use, retirement


class BackupRun(Base):
    """One backup of a hub (a restic snapshot of its homes and database), good or failed."""

    __tablename__ = "backup_runs"
    __table_args__ = (Index("ix_backup_runs_hub_started", "hub", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(20))  # schedule | manual | retire
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    ok: Mapped[bool | None] = mapped_column(Boolean)
    """None while it runs."""
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """What the snapshot holds (homes and database), before deduplication."""
    added_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """What this backup added to the repository (after deduplication and compression)."""
    files: Mapped[int | None]
    error: Mapped[str] = mapped_column(Text, default="")


class HomeUsage(Base):
    """Bytes in one user's home at one collection (`username` "" is the hub's total, database included)."""

    __tablename__ = "home_usage"
    __table_args__ = (Index("ix_home_usage_hub_at", "hub", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200))
    username: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime]
    bytes: Mapped[int] = mapped_column(BigInteger)


class Retirement(Base):
    """A hub handed back to its community: stopped, archived and kept until `purge_after`."""

    __tablename__ = "retirements"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    community: Mapped[str] = mapped_column(String(200))
    retired_at: Mapped[datetime]
    purge_after: Mapped[datetime]
    archive_dir: Mapped[str] = mapped_column(Text)
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    purged_at: Mapped[datetime | None]


# --------------------------------------------------------------------------- web console


class ConsolePassword(Base):
    """A console account's password (scrypt); the account itself lives in fleet.yaml `console.accounts`."""

    __tablename__ = "console_passwords"

    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(400))
    updated_at: Mapped[datetime]


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random id, the store only its SHA-256."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(20))  # password | oidc
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ApiToken(Base):
    """A token for scripts: `Authorization: Bearer hf_...`; the store keeps its SHA-256 and a short prefix."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


# --------------------------------------------------------------------------- clusters


class ClusterVersionReading(Base):
    """One live reading of a Kubernetes cluster's versions (`hubfleet clusters --refresh`)."""

    __tablename__ = "cluster_versions"
    __table_args__ = (Index("ix_cluster_versions_cluster_read_at", "cluster", "read_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster: Mapped[str] = mapped_column(String(200))
    read_at: Mapped[datetime]
    provider: Mapped[str] = mapped_column(String(20))
    region: Mapped[str] = mapped_column(String(100))
    control_plane: Mapped[str] = mapped_column(String(20))
    control_plane_version: Mapped[str] = mapped_column(String(100))
    node_pools: Mapped[dict[str, Any]] = mapped_column(JSON)
    chart_versions: Mapped[dict[str, Any]] = mapped_column(JSON)
