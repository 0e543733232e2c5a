"""A local hub's data on this machine: what `remove --purge` and the purge of a retired hub delete.

In the backends' layer so that the daemon (removing a hub) and the backup package (purging a retired one)
share one function.
"""

from __future__ import annotations

import shutil

from hubfleet.isolation.accounts import fleet_accounts, remove_account
from hubfleet.runtime.layout import Layout


def purge_hub(where: Layout, name: str) -> None:
    """A removed hub's files, homes and OS accounts."""
    for directory in (where.hub_state(name), where.hub_data(name), where.homes(name)):
        shutil.rmtree(directory, ignore_errors=True)
    for account in fleet_accounts(where.instance):
        if account.comment.split(" ")[2:3] == [name]:
            remove_account(account.name)
