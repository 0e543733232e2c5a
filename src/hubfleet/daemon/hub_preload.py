"""Imported by the hub template only (hub_templates.py), never by the daemon: the work every hub would do
first that depends on no hub, done once before the template forks.

JupyterHub's ORM configures its SQLAlchemy mappers (resolving the relationships of every table) at the first
query of each hub: ≈ 0.45 s of CPU per hub, the same result in every one. Done here, each forked hub starts
with them configured, as it would be after its own first query. No connection, thread or file is opened.
"""

from __future__ import annotations

import jupyterhub.orm
from sqlalchemy.orm import configure_mappers

configure_mappers()

__all__ = ["jupyterhub"]
