"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hubfleet.config.cache import FleetCache
from hubfleet.config.fleet import FleetConfig, FleetInvalid
from hubfleet.config.validate import load_fleet
from hubfleet.settings import UserError

# Outside a terminal (CI logs, pipes) rich would wrap at 80 columns; give tables room instead.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

FleetOption = Annotated[
    Path | None,
    typer.Option(
        "--fleet",
        help="Fleet directory (default: $HUBFLEET_FLEET, else the current directory).",
        show_default=False,
    ),
]
StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State directory (default: $HUBFLEET_STATE_DIR, else <fleet>/.hubfleet).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

F = TypeVar("F", bound=Callable[..., Any])

DEBUG = {"on": False}


def friendly_errors(func: F) -> F:
    """Turn a UserError into one line on stderr and exit 1; show tracebacks only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if DEBUG["on"]:
                raise
            # the message is text, not markup: a path or pattern such as a[1] or [/b] must print as it is
            err_console.print(
                f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int = 1) -> None:
    err_console.print(message, highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)


def load_or_explain(fleet_dir: Path, cache: FleetCache | None = None) -> FleetConfig:
    """Load the fleet (with `cache`: files parsed before are not parsed again); on errors print every one
    of them and refuse to go on."""
    try:
        return load_fleet(fleet_dir, cache=cache)
    except FleetInvalid as exc:
        for error in exc.errors:
            err_console.print(str(error), highlight=False, markup=False, soft_wrap=True)
        raise UserError(
            f"{len(exc.errors)} error(s) in the fleet configuration; fix them (hubfleet validate)"
        ) from None
