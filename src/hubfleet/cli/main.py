"""The `hubfleet` command: the app with every command module registered (the console-script entry point)."""

from __future__ import annotations

# Each module adds its commands to `app` when imported; this list is the one place that names them all.
from hubfleet.cli import (  # noqa: F401
    backup_cmds,
    budget_cmds,
    check_cmds,
    ci_cmds,
    ci_gitlab_cmds,
    ci_state_cmds,
    cluster_cmds,
    config_cmds,
    console_cmds,
    cost_cmds,
    cost_import_cmds,
    deploy_cmds,
    event_cmds,
    event_ready_cmds,
    event_report_cmds,
    event_test_cmds,
    fleet_cmds,
    front_door_cmds,
    init_cmds,
    invoice_cmds,
    monitor_cmds,
    monitor_export_cmds,
    render_cmds,
    retire_cmds,
    secrets_cmds,
    store_cmds,
    tickets_cmds,
    upgrade_cmds,
    usage_cmds,
    user_db_cmds,
)
from hubfleet.cli.app import app

__all__ = ["app"]
