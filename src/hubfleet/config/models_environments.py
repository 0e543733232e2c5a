"""What a hub offers beyond a home directory: environments (what a server runs, who may pick what), a database
per user, and the community's colours on the hub's pages.

`environments` replaced `kubernetes.profiles`: a fleet file with the old key gets an error that prints the
equivalent `environments` lines (`profiles_as_environments`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator

from hubfleet.config.fields import URL_PATTERN, GroupName, Name, PatternHint, Strict
from hubfleet.config.quantities import CpuCores, MemorySize

EnvName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"),
    PatternHint("is not an environment variable name; use letters, digits and '_', not a digit first"),
]
ImageRef = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
    ),
    PatternHint("is not an image reference such as quay.io/jupyter/r-notebook:2025-01-13"),
]
Colour = Annotated[
    str,
    Field(pattern=r"^#[0-9a-fA-F]{6}$"),
    PatternHint("is not a colour; write it as #rrggbb, such as #0b5394"),
]


class Toleration(Strict):
    """A Kubernetes toleration (user pods only), for nodes tainted for GPUs or one community."""

    key: str = Field(min_length=1)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] = ""


class EnvironmentResources(Strict):
    """Resources of a server in this environment or choice; unset fields keep the hub's `resources`."""

    memory_limit: MemorySize | None = Field(default=None, description="Memory limit, such as 8G or 8Gi.")
    memory_guarantee: MemorySize | None = Field(
        default=None, description="Memory reserved (kubernetes clusters only), such as 4Gi."
    )
    cpu_limit: CpuCores | None = Field(default=None, description="CPU limit in cores, such as 4 or 500m.")
    cpu_guarantee: CpuCores | None = Field(
        default=None, description="CPU cores reserved (kubernetes clusters only), such as 0.5."
    )
    extra_limits: dict[str, str | int] = Field(
        default_factory=dict,
        description="Extended resources a server gets (kubernetes clusters only), such as "
        "{nvidia.com/gpu: 1}.",
    )


class Overrides(Strict):
    """What an environment or one of its choices sets for the server; a choice's win."""

    image: ImageRef | None = Field(
        default=None,
        description="User server image (kubernetes clusters), such as quay.io/jupyter/r-notebook:2025-01-13.",
    )
    resources: EnvironmentResources = Field(default_factory=EnvironmentResources)
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the user pod must run on (kubernetes clusters)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the user pod tolerates (kubernetes clusters)."
    )
    env: dict[EnvName, str] = Field(
        default_factory=dict, description="Environment variables of the user's server (both backends)."
    )


class OptionChoice(Overrides):
    """One answer to an option, such as one size or one image."""

    display_name: str = Field(min_length=1)
    default: bool = Field(default=False, description="Preselected; at most one choice of an option sets it.")
    groups: list[GroupName] = Field(
        default_factory=list,
        description="Only members of one of these groups may pick this choice (enforced when the server "
        "starts, not only hidden from the form); empty: everyone who may use the environment.",
    )


class OtherChoice(Strict):
    """A free-text answer ("other image"), checked against a regular expression (kubernetes clusters)."""

    display_name: str = Field(default="Other image", min_length=1)
    validation_regex: str = Field(
        min_length=1,
        description="A Python regular expression the whole answer must match, such as "
        "`^quay\\.io/myorg/[a-z0-9-]+:[a-z0-9.-]+$`.",
    )
    groups: list[GroupName] = Field(
        default_factory=list, description="Only these groups' members may give another answer; empty: all."
    )
    sets: Literal["image"] = Field(default="image", description="What the answer is.")

    @field_validator("validation_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a regular expression: {exc}") from None
        return value


class EnvironmentOption(Strict):
    """A question asked when this environment is picked: one of `choices` (or an `other` answer)."""

    display_name: str = Field(min_length=1)
    choices: dict[Name, OptionChoice] = Field(
        min_length=1, description="The answers, keyed by slug (the value sent in `user_options`)."
    )
    other: OtherChoice | None = Field(default=None, description="Also accept a free-text answer.")


class LocalEnvironment(Strict):
    """What a server of this environment runs on a local cluster: a directory holding programs and kernels
    (a virtual environment, a conda environment, or a prefix such as /usr for Debian's R)."""

    path: str | None = Field(
        default=None,
        description="Absolute path of the environment directory: its bin/ goes first on PATH and its "
        "share/jupyter/kernels/ provides kernels. Unset: the Python environment hubfleet runs in.",
    )
    kernels: list[str] = Field(
        default_factory=list,
        description="The kernels offered (kernelspec names, such as ir or python3); the first is the "
        "default for new notebooks. Empty: every kernel the environment has.",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"'{value}' is not an absolute path; write the full path, such as /opt/envs/r")
        return value


class Environment(Overrides):
    """One environment users can pick when they start a server (KubeSpawner's profile on kubernetes)."""

    slug: Name = Field(description="Stable id (`environment` in `user_options`); unique in the hub.")
    display_name: str = Field(min_length=1)
    description: str = ""
    default: bool = Field(default=False, description="Preselected; at most one sets it (else the first).")
    groups: list[GroupName] = Field(
        default_factory=list,
        description="Only members of one of these groups may use it (enforced when the server starts); "
        "empty: everyone.",
    )
    default_ui: Literal["lab", "classic"] | None = Field(default=None, description="Unset: the hub's.")
    local: LocalEnvironment = Field(
        default_factory=LocalEnvironment, description="What it runs on a local cluster."
    )
    options: dict[Name, EnvironmentOption] = Field(
        default_factory=dict,
        description="Questions asked when it is picked, keyed by slug (as in `user_options`).",
    )

    @field_validator("options")
    @classmethod
    def _no_reserved(cls, value: dict[str, EnvironmentOption]) -> dict[str, EnvironmentOption]:
        if "environment" in value:
            raise ValueError("'environment' is a reserved key of user_options; name the option otherwise")
        return value


class UserDatabase(Strict):
    """A PostgreSQL database for every user of the hub that lives as long as the user."""

    engine: Literal["postgres"] = Field(description="The database server; only postgres is offered.")
    memory_limit: MemorySize = Field(
        default="512M",
        description="Memory of the database server (kubernetes: the sidecar's limit; local: counted within "
        "the user's own memory limit, as the server runs in the user's group).",
    )
    cpu_limit: CpuCores | None = Field(default=None, description="CPU limit of the sidecar (kubernetes).")
    storage: str = Field(
        default="1Gi",
        pattern=r"^\d+(\.\d+)?([KMGT]i?)$",
        description="Size of each user's database volume (kubernetes clusters), such as 1Gi.",
    )
    image: ImageRef = Field(
        default="docker.io/library/postgres:15.10",
        description="The sidecar's image (kubernetes clusters); pin the tag.",
    )
    retention_days: int = Field(
        default=30,
        ge=0,
        description="Days a database is kept (and backed up) after its user disappears from the hub, "
        "before it is removed.",
    )


class Branding(Strict):
    """The community's look on the hub's login and home pages."""

    logo: str | None = Field(
        default=None,
        description="A PNG, JPEG or SVG file in the community's directory (communities/<name>/), such as "
        "logo.png.",
    )
    accent_color: Colour | None = Field(
        default=None, description="Header and button colour, such as #0b5394."
    )
    url: str | None = Field(
        default=None, pattern=URL_PATTERN, description="The community's web site, linked from the logo."
    )
    funded_by: str = Field(
        default="", max_length=300, description="A line such as 'Funded by NSF award 123'."
    )

    @field_validator("logo")
    @classmethod
    def _plain_file(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError(f"'{value}' must be a file inside the community's directory, such as logo.png")
        return value


# --------------------------------------------------------------------------- the old kubernetes.profiles


def profiles_as_environments(profiles: Any) -> str:
    """The `environments` lines equivalent to an old `kubernetes.profiles` list (best effort)."""
    environments = []
    for profile in profiles if isinstance(profiles, list) else []:
        if not isinstance(profile, dict):
            continue
        env: dict[str, Any] = {
            key: profile[key] for key in ("slug", "display_name", "description", "default") if key in profile
        }
        image = profile.get("image")
        if isinstance(image, dict) and image.get("name"):
            env["image"] = f"{image['name']}:{image.get('tag', 'latest')}"
        resources = {
            key: profile[key]
            for key in ("memory_limit", "memory_guarantee", "cpu_limit", "cpu_guarantee")
            if key in profile
        }
        if resources:
            env["resources"] = resources
        environments.append(env)
    return yaml.safe_dump({"environments": environments}, sort_keys=False, default_flow_style=False).rstrip()


def reject_profiles(data: Any) -> Any:
    """Before-validator of `kubernetes`: the old `profiles` key is an error that shows its replacement."""
    if isinstance(data, dict) and "profiles" in data:
        raise ValueError(
            "`kubernetes.profiles` was replaced by `environments` (a hub setting beside `kubernetes`, for "
            "both backends). Remove `profiles` and write instead:\n"
            + profiles_as_environments(data["profiles"])
        )
    return data


__all__ = [
    "Branding",
    "Environment",
    "EnvironmentOption",
    "EnvironmentResources",
    "GroupName",
    "LocalEnvironment",
    "OptionChoice",
    "OtherChoice",
    "Overrides",
    "Toleration",
    "UserDatabase",
    "reject_profiles",
]
