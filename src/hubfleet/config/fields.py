"""The pieces every fleet model is built from: the strict base and the constrained text types.

`Strict` makes a misspelt key an error rather than a setting silently ignored. A constrained text type
carries its pattern together with the hint a user reads when a value does not match it, so the error
message is written once, next to the pattern, and the error translation reads it from the type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from hubfleet.config.introspect import annotations_of


class Strict(BaseModel):
    """Base of every model of the fleet files: unknown keys are errors, loaded settings never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class PatternHint:
    """What a value that does not match its type's pattern is told, after the value itself:
    "'Uni A' is not a valid name; use ..."."""

    hint: str


def pattern_hint(tp: Any) -> str | None:
    """The PatternHint of an annotated type (also through Optional), None when it has none."""
    return next((meta.hint for meta in annotations_of(tp) if isinstance(meta, PatternHint)), None)


NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="Lower-case letters, digits and '-', 1-63 characters, starting and ending with a letter "
        "or digit (usable as a DNS label and a Kubernetes namespace).",
    ),
    PatternHint(
        "is not a valid name; use 1-63 lower-case letters, digits and '-', starting and ending with a letter "
        "or digit"
    ),
]
Username = Annotated[
    str,
    Field(min_length=1, max_length=255, pattern=r"^[^\s/]+$"),
    PatternHint("is not a valid username; no spaces or '/'"),
]
GroupName = Annotated[
    str,
    Field(min_length=1, max_length=255, pattern=r"^[^\s/]+$"),
    PatternHint("is not a valid group name; no spaces or '/' (a GitHub team is written org:team)"),
]
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), PatternHint("is not an email address")]
DomainName = Annotated[
    str,
    Field(pattern=r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$"),
    PatternHint("is not a domain name such as hub.example.org"),
]
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
"""An http(s) URL without query or fragment (identity providers, the console's public URL)."""
AwsAccountId = Annotated[
    str, Field(pattern=r"^\d{12}$"), PatternHint("is not an AWS account id; write its 12 digits")
]
