"""`hubfleet invoices generate|credit|list`: each community's monthly invoice from its price plan."""

from __future__ import annotations

import typer

from hubfleet.cli.app import app

invoices_app = typer.Typer(help="Invoices: generate a month's, issue credit notes, list them.")
app.add_typer(invoices_app, name="invoices")
