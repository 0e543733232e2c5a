"""`hubfleet costs import FILE...`: cloud billing exports (FOCUS) into the store."""

from __future__ import annotations

from hubfleet.cli.cost_cmds import costs_app  # noqa: F401
