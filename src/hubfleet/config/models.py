"""Pydantic models of the fleet files: the single source of truth for validation, schema and reference docs.

Clusters, hub settings, hubs, communities and fleet.yaml are here; a hub's `auth` is in `config.models_auth`,
the `{secret: KEY}` fields in `config.secret_refs`, the constrained text types in `config.fields`.
Every model forbids unknown keys so that a misspelt key is an error, never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from hubfleet.config.fields import URL_PATTERN, AwsAccountId, DomainName, Email, Name, Strict, Username
from hubfleet.config.models_auth import Auth, StaffUsernameKey, check_staff_username_keys
from hubfleet.config.models_backup import Backups, HomeQuota, HubBackup
from hubfleet.config.models_costs import ClusterCosts, CommunityBilling, FleetCosts
from hubfleet.config.models_environments import Branding, Environment, UserDatabase, reject_profiles
from hubfleet.config.models_events import Event
from hubfleet.config.models_front_door import FrontDoor
from hubfleet.config.models_support import CommunitySupport, Support
from hubfleet.config.quantities import CpuCores, MemorySize
from hubfleet.config.secret_refs import FleetSecretOnly, SecretOnly, SecretOrPlain
from hubfleet.config.values_secrets import refs_in_values

# --------------------------------------------------------------------------- clusters


class LocalCluster(Strict):
    """Hubs run as JupyterHub processes on the machine that runs `hubfleet up`."""

    name: Name
    kind: Literal["local"]
    description: str = ""
    defaults: HubSettings = Field(
        default_factory=lambda: HubSettings(),
        description="Settings every hub on this cluster inherits: merged over fleet.yaml `defaults`, under "
        "the community's and the hub's own (see Layers of configuration in docs/kubernetes.md).",
    )
    staging_hub: Name | None = Field(
        default=None,
        description="A staging hub on this cluster that gates the prod hubs of every community on it: it is "
        "deployed (when changed) and checked before any prod hub of the cluster changes.",
    )

    costs: ClusterCosts = Field(
        default_factory=ClusterCosts,
        description="How billing exports name this cluster, its price sheet, and who carries idle capacity "
        "(docs/costs.md).",
    )


class GCPCredentials(Strict):
    provider: Literal["gcp"]
    project: str = Field(min_length=1, description="Google Cloud project id.")
    zone: str = Field(min_length=1, description="Zone or region of the GKE cluster.")
    cluster: str = Field(min_length=1, description="Cluster name at the provider.")


class AWSCredentials(Strict):
    provider: Literal["aws"]
    account: AwsAccountId = Field(description="12-digit AWS account id.")
    region: str = Field(min_length=1)
    cluster: str = Field(min_length=1, description="Cluster name at the provider.")


class AzureCredentials(Strict):
    provider: Literal["azure"]
    resource_group: str = Field(min_length=1)
    cluster: str = Field(min_length=1, description="Cluster name at the provider.")


class KubeconfigCredentials(Strict):
    provider: Literal["kubeconfig"]
    path: str = Field(min_length=1, description="Path to a kubeconfig file, relative to the fleet directory.")
    context: str | None = Field(
        default=None, description="Context in that kubeconfig; its current one if unset."
    )


ClusterCredentials = Annotated[
    GCPCredentials | AWSCredentials | AzureCredentials | KubeconfigCredentials,
    Field(discriminator="provider"),
]


class ClusterIngress(Strict):
    """How hubs of a kubernetes cluster are reached: the ingress class and the cert-manager issuer of their
    TLS certificates (each hub's ingress gets its own certificate, in the secret `<hub>-tls`)."""

    class_name: str | None = Field(
        default=None,
        min_length=1,
        description="IngressClass of the hubs' ingresses (ingressClassName), such as nginx; unset: the "
        "cluster's default class.",
    )
    cert_manager_issuer: str | None = Field(
        default=None,
        min_length=1,
        description="cert-manager issuer that signs each hub's certificate, such as letsencrypt-prod; unset: "
        "no cert-manager annotation (the `<hub>-tls` secret is provided otherwise).",
    )
    issuer_kind: Literal["ClusterIssuer", "Issuer"] = Field(
        default="ClusterIssuer",
        description="ClusterIssuer (one for the whole cluster) or Issuer (one in each hub's namespace).",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="More annotations on every hub's ingress of this cluster."
    )


Z2JH_CHART_VERSION = "4.4.0"
"""Pinned Zero to JupyterHub chart: 4.4.0 (2026-06-10, JupyterHub 5.5.0), the latest stable release in
the z2jh changelog (jupyterhub/zero-to-jupyterhub-k8s docs/source/changelog.md); none ships JupyterHub 6."""
Z2JH_CHART_REPO = "https://hub.jupyter.org/helm-chart/"


class KubernetesCluster(Strict):
    """Hubs run as Helm releases of the Zero to JupyterHub chart (deployed by the deploy pipeline)."""

    name: Name
    kind: Literal["kubernetes"]
    description: str = ""
    defaults: HubSettings = Field(
        default_factory=lambda: HubSettings(),
        description="Settings every hub on this cluster inherits: merged over fleet.yaml `defaults`, under "
        "the community's and the hub's own (see Layers of configuration in docs/kubernetes.md).",
    )
    credentials: ClusterCredentials
    staging_hub: Name | None = Field(
        default=None,
        description="A staging hub on this cluster that gates the prod hubs of every community on it: it is "
        "deployed (when changed) and checked before any prod hub of the cluster changes.",
    )
    chart_version: str = Field(
        default=Z2JH_CHART_VERSION,
        min_length=1,
        description="Version of the Zero to JupyterHub (z2jh) Helm chart every hub on this cluster runs.",
    )
    chart_repo: str = Field(
        default=Z2JH_CHART_REPO,
        pattern=r"^(https?|oci)://\S+$",
        description="Helm repository holding the `jupyterhub` chart.",
    )
    ingress: ClusterIngress = Field(
        default_factory=ClusterIngress, description="Ingress class and cert-manager issuer of every hub."
    )
    node_startup_minutes: float = Field(
        default=10,
        gt=0,
        le=120,
        description="How long a new node takes to join and pull images; sizes an event's warm seats "
        "(min(attendees, arrival rate x this)).",
    )
    costs: ClusterCosts = Field(
        default_factory=ClusterCosts,
        description="How billing exports name this cluster, its price sheet, and who carries idle capacity "
        "(docs/costs.md).",
    )


Cluster = Annotated[LocalCluster | KubernetesCluster, Field(discriminator="kind")]


# --------------------------------------------------------------------------- age recipients


def _age_recipient(value: str) -> str:
    import pyrage

    try:
        pyrage.x25519.Recipient.from_str(value)
    except pyrage.RecipientError:
        raise ValueError(
            f"'{value[:70]}' is not an age X25519 recipient (age1...); "
            "run `hubfleet secrets keygen` and copy the public key it prints"
        ) from None
    return value


AgeRecipient = Annotated[
    str,
    AfterValidator(_age_recipient),
    Field(description="An age X25519 public key (age1...), as printed by `hubfleet secrets keygen`."),
]


# --------------------------------------------------------------------------- hub settings


class Resources(Strict):
    """Per-user limits. Enforced by Kubernetes; on local clusters by the kernel's control groups when hubfleet
    runs as root (each user server and its kernels in a group of their own)."""

    memory_limit: MemorySize | None = Field(
        default=None,
        description="Per-user memory limit such as 512M, 2G or 4Gi (K, M, G, T are powers of 1024, like Gi).",
        examples=["2G"],
    )
    cpu_limit: CpuCores | None = Field(
        default=None, description="Per-user CPU limit in cores, such as 2, 0.5 or 500m."
    )
    memory_guarantee: MemorySize | None = Field(
        default=None, description="Memory reserved for each user (kubernetes clusters only), such as 1G."
    )
    cpu_guarantee: CpuCores | None = Field(
        default=None, description="CPU cores reserved for each user (kubernetes clusters only), such as 0.5."
    )
    process_limit: int = Field(
        default=512,
        ge=32,
        le=65536,
        description="Processes and threads one user's server and kernels may run at once (local clusters; "
        "stops a fork bomb).",
    )


class KubernetesImage(Strict):
    name: str = Field(
        min_length=1, pattern=r"^\S+$", description="Image name, such as quay.io/jupyter/scipy-notebook."
    )
    tag: str = Field(min_length=1, pattern=r"^\S+$", description="Image tag; pin it, never `latest`.")


class KubernetesSettings(Strict):
    """Settings for hubs on kubernetes clusters (rendered into the z2jh values); an error on a local hub's
    own file, ignored on local hubs when inherited from fleet.yaml `defaults`."""

    image: KubernetesImage | None = Field(
        default=None, description="User server image; the chart's default if unset."
    )
    placeholders: int = Field(
        default=0, ge=0, le=1000, description="User placeholder pods keeping room for that many users."
    )
    storage: str = Field(
        default="10Gi",
        pattern=r"^(none|\d+(\.\d+)?([KMGT]i?))$",
        description="Home directory volume size per user, such as 10Gi, or `none` for no persistent home.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels user pods must be scheduled on."
    )
    extra_values: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw z2jh chart values deep-merged last over what hubfleet renders (escape hatch). A "
        "`{secret: KEY}` mapping at any depth is the hub's secret KEY: it goes to helm in the secret values "
        "file only, never into the public values.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_profiles(cls, data: Any) -> Any:
        return reject_profiles(data)

    @field_validator("extra_values")
    @classmethod
    def _secret_refs(cls, value: dict[str, Any]) -> dict[str, Any]:
        return refs_in_values(value)


class Culling(Strict):
    enabled: bool = True
    timeout: int = Field(
        default=3600, ge=60, description="Seconds of inactivity after which a user server is stopped."
    )
    max_age: int = Field(default=0, ge=0, description="Stop servers older than this many seconds (0: never).")


class Anomalies(Strict):
    """Abnormal-activity rules; each fires an alert and opens an incident of kind `anomaly`.
    Set fleet-wide in `defaults.anomalies`, per hub in `anomalies` (merged field by field)."""

    max_running_servers: int | None = Field(
        default=None, ge=1, description="Absolute cap on running user servers (unset: no cap)."
    )
    baseline_factor: float = Field(
        default=3.0,
        gt=1,
        description="Alert when running servers exceed this many times their usual level for that hour of "
        "the week (median of past weeks) and the baseline_min_excess below.",
    )
    baseline_min_excess: int = Field(
        default=10, ge=1, description="...and exceed the usual level by at least this many servers."
    )
    max_server_age_hours: float | None = Field(
        default=72, gt=0, description="Alert on a user server running longer than this (unset: never)."
    )
    spawn_failure_rate: float | None = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Alert when more than this share of spawns failed in the last hour.",
    )
    min_spawns: int = Field(
        default=5, ge=1, description="...counting only hours with at least this many spawns."
    )
    max_restarts_per_hour: int | None = Field(
        default=3, ge=1, description="Alert when the hub process restarted more often than this in an hour."
    )


class HubSettings(Strict):
    """Settings that a hub may set itself or inherit from `defaults` in fleet.yaml."""

    auth: Auth | None = None
    resources: Resources = Field(default_factory=Resources)
    culling: Culling = Field(default_factory=Culling)
    max_users: int | None = Field(
        default=None, ge=1, description="Maximum number of concurrently running user servers."
    )
    default_ui: Literal["lab", "classic"] = Field(
        default="lab", description="lab: JupyterLab; classic: /tree."
    )
    jupyterhub_version: str | None = Field(
        default=None, description="Pinned JupyterHub version; informational for local hubs."
    )
    kubernetes: KubernetesSettings | None = Field(
        default=None, description="Hubs on kubernetes clusters: image, storage, chart values."
    )
    environments: list[Environment] = Field(
        default_factory=list,
        description="Environments users pick from when they start a server (Python, R, images, sizes), "
        "with who may pick what; none: one environment (the hub's defaults). See docs/environments.md.",
    )
    user_database: UserDatabase | None = Field(
        default=None,
        description="Give every user a PostgreSQL database of their own; see docs/user-databases.md.",
    )
    branding: Branding = Field(
        default_factory=Branding,
        description="The community's logo, colour, URL and 'funded by' line on the hub's pages; see "
        "docs/branding.md.",
    )
    anomalies: Anomalies = Field(default_factory=Anomalies)
    backup: HubBackup = Field(
        default_factory=HubBackup, description="This hub's backups: on or off, schedule and retention."
    )
    home_quota: HomeQuota | None = Field(
        default=None, description="How much each user's home may hold, with warnings at thresholds."
    )
    spawner: Literal["fork", "process"] = Field(
        default="fork",
        description="Local hubs: `fork` starts each server from a process that has already imported the "
        "server (well under a second); `process` starts a fresh Python for each (seconds). See "
        "docs/events.md.",
    )


# The clusters' `defaults` are HubSettings, defined after them: resolve that now (error positions read it).
LocalCluster.model_rebuild()
KubernetesCluster.model_rebuild()


class Hub(HubSettings):
    """One JupyterHub: a file in communities/<community>/hubs/."""

    name: Name = Field(description="Unique in the fleet.")
    display_name: str = Field(default="", description="Human-readable name shown in status and the console.")
    community: Name
    cluster: Name
    stage: Literal["staging", "prod"]
    port: int | None = Field(default=None, ge=1024, le=65535, description="Loopback port (local clusters).")
    domain: DomainName | None = Field(
        default=None,
        description="DNS name users open: required on kubernetes clusters; on a local cluster the fleet's "
        "front door serves the hub there (without one, at https://<front_door.domain>/<hub name>/).",
    )
    extra_config: str = Field(
        default="",
        description="Python appended to the generated jupyterhub_config.py (like z2jh hub.extraConfig).",
    )
    allow_overrides: list[Literal["authenticator", "spawner"]] = Field(
        default_factory=list,
        description="On a prod hub, let `extra_config` or `kubernetes.extra_values` replace the "
        "authenticator or the spawner hubfleet configures (refused otherwise); only in the hub file, never "
        "inherited.",
    )
    events: list[Event] = Field(
        default_factory=list,
        description="Events on this hub (workshops, hackweeks): ready mode before each, a readiness test, "
        "a report after; only in the hub file, never inherited. See docs/events.md.",
    )

    @field_validator("extra_config")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compile(value, "extra_config", "exec")
        except SyntaxError as exc:
            raise ValueError(f"is not valid Python: {exc.msg} (line {exc.lineno} of extra_config)") from None
        return value


# --------------------------------------------------------------------------- communities and fleet


class Contact(Strict):
    name: str = Field(min_length=1)
    email: Email
    role: str = Field(default="", description="For example: PI, teacher, organiser.")
    alerts: bool = Field(
        default=False, description="Send this contact the alerts of the community's hubs (by email)."
    )
    reports: bool = Field(
        default=False, description="Send this contact the report of each event of the community's hubs."
    )


class CommunityDefaults(HubSettings):
    """Settings every hub of the community inherits, over fleet.yaml's and its cluster's `defaults`."""

    cluster: Name | None = Field(
        default=None, description="The cluster of every hub of the community whose file names none."
    )


class Community(Strict):
    """A community: communities/<name>/community.yaml."""

    name: Name
    display_name: str = ""
    defaults: CommunityDefaults = Field(
        default_factory=CommunityDefaults,
        description="Settings every hub of the community inherits (its own file's win); see Layers of "
        "configuration in docs/kubernetes.md.",
    )
    contacts: list[Contact] = Field(
        default_factory=list, description="Who to talk to about this community's hubs."
    )
    events: list[Event] = Field(
        default_factory=list,
        description="Events on the community's hubs, each naming its `hub`; see docs/events.md.",
    )
    billing: CommunityBilling = Field(
        default_factory=CommunityBilling,
        description="The community's price plan, budget and invoice addressee (docs/costs.md).",
    )
    support: CommunitySupport = Field(
        default_factory=CommunitySupport, description="Its support-hours budget (docs/support.md)."
    )


class Operator(Strict):
    """A member of the service team (staff) who supports every hub."""

    name: str = Field(min_length=1)
    email: Email
    usernames: dict[StaffUsernameKey, Username] = Field(
        default_factory=dict,
        description="The operator's hub username per auth type, for example {github: alice-gh, "
        "cilogon: alice@uni.edu}; they are admins on every hub of that auth type (unless it sets "
        "`auth.staff_admins: false`). An operator with several usernames for one type adds keys "
        "`TYPE:LABEL` (cilogon:google: 'staff:alice@service.org'); a hub picks one with "
        "`auth.staff_username_key`.",
    )
    age_recipient: AgeRecipient | None = Field(
        default=None,
        description="The operator's age public key (age1...): every hub secret is encrypted to it.",
    )

    @field_validator("usernames", mode="before")
    @classmethod
    def _username_keys(cls, value: object) -> object:
        return check_staff_username_keys(value)


class WebhookChannel(Strict):
    """A Slack-compatible incoming webhook: JSON `{"text": ...}` is POSTed to it."""

    name: Name
    url: SecretOrPlain = Field(
        description="Webhook URL; it embeds a token, so write {secret: KEY}: a fleet-level secret in "
        "secrets/fleet.yaml, set with `hubfleet secrets set --fleet-level KEY` (plain text: loopback tests)."
    )


class EmailChannel(Strict):
    """Alerts by email through an SMTP server."""

    name: Name
    smtp_host: str = Field(min_length=1)
    smtp_port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls (port 587), tls (implicit TLS, port 465) or none (loopback only).",
    )
    username: str | None = None
    password: SecretOrPlain | None = Field(
        default=None,
        description="SMTP password, preferably {secret: KEY}: a fleet-level secret in secrets/fleet.yaml, "
        "set with `hubfleet secrets set --fleet-level KEY`.",
    )
    sender: Email = Field(description="From address.")
    to: list[Email] = Field(
        default_factory=list,
        description="Operators' addresses; contacts who opted in are added per community.",
    )


class Alerts(Strict):
    webhooks: list[WebhookChannel] = Field(default_factory=list)
    email: list[EmailChannel] = Field(default_factory=list)
    community_contacts: bool = Field(
        default=True, description="Also email community contacts with `alerts: true` about their hubs."
    )
    retry_attempts: int = Field(default=5, ge=1, le=20, description="Delivery attempts before giving up.")


class Monitoring(Strict):
    """fleet.yaml `monitoring`: the daemon's prober, usage collector and alerting."""

    probe_interval: float = Field(default=30, ge=1, description="Seconds between probes of each hub.")
    probe_timeout: float = Field(default=10, gt=0, description="Seconds before a probe counts as failed.")
    failures_to_open: int = Field(
        default=2, ge=1, description="Consecutive failed probes that open an incident."
    )
    certificate_warning_days: int = Field(
        default=21, ge=1, description="Warn this long before a TLS cert expires."
    )
    collect_interval: float = Field(default=60, ge=5, description="Seconds between usage collections.")
    disk_interval: float = Field(
        default=900,
        ge=60,
        description="Seconds between measurements of each local hub's disk use (homes and database), "
        "which also check home_quota.",
    )
    exclude_staff: bool = Field(default=True, description="Leave the fleet's operators out of usage counts.")
    exclude_users: list[Username] = Field(
        default_factory=list,
        description="More usernames left out of usage counts (the check user always is).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1024,
        le=65535,
        description="Port of the daemon's HTTP server on 127.0.0.1: /metrics and the web console "
        "(unset: a free port).",
    )
    alerts: Alerts = Field(default_factory=Alerts)


class ConsoleAccount(Strict):
    """Someone who may sign in to the web console. Passwords are never in files: set one with
    `hubfleet console-password USERNAME` (stored hashed in the state store)."""

    username: Username = Field(
        description="Sign-in name; with console OIDC, the value of `console.oidc.username_claim`."
    )
    role: Literal["operator", "community-leader"] = Field(
        description="operator: every page and API; community-leader: only the hubs of `communities`."
    )
    communities: list[Name] = Field(
        default_factory=list, description="The communities a community-leader sees (operators see all)."
    )
    display_name: str = Field(default="", description="Shown in the console's header.")
    email: Email | None = Field(
        default=None, description="Where the support desk tells this account about tickets assigned to it."
    )

    @model_validator(mode="after")
    def _communities_match_role(self) -> ConsoleAccount:
        if self.role == "community-leader" and not self.communities:
            raise ValueError(
                f"community-leader '{self.username}' has no communities; list the communities they lead "
                "under `communities`"
            )
        if self.role == "operator" and self.communities:
            raise ValueError(
                f"operator '{self.username}' sees every community; remove `communities` "
                "(or make the account a community-leader)"
            )
        return self


class ConsoleOIDC(Strict):
    """Console sign-in through an OpenID Connect provider (authorization code flow with PKCE)."""

    issuer: str = Field(
        pattern=URL_PATTERN,
        description="Issuer URL (https; http only for loopback); its discovery document is read at sign-in.",
    )
    client_id: str = Field(min_length=1, description="Client registered at the provider for the console.")
    client_secret: SecretOnly | None = Field(
        default=None,
        description="{secret: KEY}: a fleet-level secret in secrets/fleet.yaml "
        "(`hubfleet secrets set --fleet-level KEY`); unset for a public client.",
    )
    username_claim: str = Field(
        default="email", min_length=1, description="Claim matched against the accounts' `username`."
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    button_text: str = Field(
        default="Sign in with your institution", description="Label of the sign-in button."
    )


class Console(Strict):
    """fleet.yaml `console`: who may use the web console (served by the daemon at
    `monitoring.metrics_port`, or by `hubfleet console`)."""

    accounts: list[ConsoleAccount] = Field(default_factory=list)
    oidc: ConsoleOIDC | None = Field(default=None, description="Sign-in through an OIDC provider.")
    password_sign_in: bool = Field(
        default=True, description="Accounts with a password set may sign in with it."
    )
    public_url: str | None = Field(
        default=None,
        pattern=URL_PATTERN,
        description="The URL people open (a TLS proxy in front of 127.0.0.1): OIDC callbacks go there, and "
        "https makes the session cookie Secure. Unset: the local address.",
    )
    session_hours: float = Field(
        default=12, gt=0, le=720, description="Sessions end this long after sign-in."
    )

    @model_validator(mode="after")
    def _unique_usernames(self) -> Console:
        seen: set[str] = set()
        for account in self.accounts:
            if account.username in seen:
                raise ValueError(f"console account '{account.username}' is listed twice")
            seen.add(account.username)
        return self


class Isolation(Strict):
    """How hubs on a local cluster are kept apart. As root, hubfleet gives every hub a service account and
    every hub user an OS account of their own, and enforces `resources` with control groups. Without root it
    can do none of that: every hub and user server runs as the one account that runs hubfleet."""

    single_account_prod: bool = Field(
        default=False,
        description="Let prod hubs run when hubfleet is not root (one OS account for every hub and user, no "
        "limits). Off: prod hubs refuse to start in that mode; staging hubs always may.",
    )


class FleetKubernetes(Strict):
    """fleet.yaml `kubernetes`: fleet-wide settings of the Kubernetes hubs (a hub's own are in `defaults`)."""

    charts_dir: str | None = Field(
        default=None,
        min_length=1,
        description="Directory of packaged Zero to JupyterHub charts (jupyterhub-<version>.tgz, as `helm "
        "package` names them), relative to the fleet: `hubfleet validate --chart` checks every Kubernetes "
        "hub with the chart of its cluster's chart_version from there.",
    )


class FleetSettings(Strict):
    """fleet.yaml: the fleet's name, its operators and the defaults every hub inherits."""

    name: Name
    display_name: str = Field(default="", description="Human-readable fleet name.")
    operators: list[Operator] = Field(
        default_factory=list,
        description="The service team; each is an admin on every hub where they have a username.",
    )
    defaults: HubSettings = Field(default_factory=HubSettings)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    console: Console = Field(default_factory=Console, description="The web console's accounts and sign-in.")
    isolation: Isolation = Field(default_factory=Isolation)
    kubernetes: FleetKubernetes = Field(
        default_factory=FleetKubernetes, description="Fleet-wide settings of the Kubernetes hubs."
    )
    front_door: FrontDoor | None = Field(
        default=None,
        description="Public HTTPS for the local hubs and the console (Caddy); unset: 127.0.0.1 only.",
    )
    backups: Backups | None = Field(
        default=None,
        description="Backups of every hub's homes and database with restic; unset: no backups (status and "
        "the console say so).",
    )
    ci_recipients: list[AgeRecipient] = Field(
        default_factory=list,
        description="Extra age public keys every hub secret is encrypted to, such as a CI deploy key.",
    )
    service_token_key: FleetSecretOnly | None = Field(
        default=None,
        description="{secret: KEY}: a fleet-level secret (at least 32 random characters) from which each "
        "hub's control-plane and operator service tokens are derived, so that every machine and CI runner "
        "that can decrypt it uses the same tokens; unset: random tokens kept in the state directory that "
        "made them. Rotate: set a new value, deploy every hub (docs/starting-a-fleet.md).",
    )
    costs: FleetCosts = Field(
        default_factory=FleetCosts,
        description="Currency, exchange rates, price plans, budgets' defaults and invoicing (docs/costs.md).",
    )
    support: Support = Field(
        default_factory=Support,
        description="The help desk: its address, calendar, response-time targets, rota (docs/support.md).",
    )

    @model_validator(mode="after")
    def _unique_operator_emails(self) -> FleetSettings:
        seen: set[str] = set()
        for op in self.operators:
            if op.email in seen:
                raise ValueError(f"operator email {op.email} is listed twice")
            seen.add(op.email)
        return self
