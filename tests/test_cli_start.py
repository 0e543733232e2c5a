"""The `hubfleet` command builds only the command it runs (hubfleet.cli.app._Hubfleet): every command still
answers by its name, help and unknown names still see them all."""

from __future__ import annotations

import copy
import subprocess
from typing import Any

import typer.main

from fleet_helpers import DEMO, HUBFLEET, hubfleet, hubfleet_env
from hubfleet.cli.main import app


def _names(typer_app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(typer_app).commands)  # type: ignore[attr-defined]


def _shape(command: Any) -> Any:
    """A command's help, options and (for a group) its subcommands' shapes."""
    subcommands = getattr(command, "commands", {})
    params = [(p.name, tuple(p.opts)) for p in command.params]
    return command.help, params, {name: _shape(sub) for name, sub in subcommands.items()}


def test_each_command_alone_is_the_command_of_the_full_app() -> None:
    full = typer.main.get_command(app)
    names = _names(app)
    assert {"status", "plan", "backups", "event", "up", "down"} <= names
    for name in names:
        alone = copy.copy(app)
        alone._keep_only(name)  # type: ignore[attr-defined]
        built = typer.main.get_command(alone)
        assert list(built.commands) == [name]  # type: ignore[attr-defined]
        assert _shape(built.commands[name]) == _shape(full.commands[name]), name  # type: ignore[attr-defined]
    for unknown in (None, "statu", "--help"):
        every = copy.copy(app)
        every._keep_only(unknown)  # type: ignore[attr-defined]
        assert _names(every) == names
    assert _names(app) == names  # the copies never touched the app itself


def test_the_command_line_help_names_and_subcommands() -> None:
    listing = subprocess.run([HUBFLEET, "--help"], capture_output=True, text=True, env=hubfleet_env())
    assert listing.returncode == 0 and "status" in listing.stdout and "backups" in listing.stdout
    sub = hubfleet("event", "ready", "--help", fleet=DEMO)
    assert sub.returncode == 0 and "--on" in sub.stdout
    typo = hubfleet("statu", fleet=DEMO)
    assert typo.returncode == 2 and "Did you mean 'status'?" in typo.stderr
