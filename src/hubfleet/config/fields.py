"""The pieces every fleet model is built from.

`Strict` makes a misspelt key an error rather than a setting silently ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every model of the fleet files: unknown keys are errors, loaded settings never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)
