"""Cross-setting rules of fleet.yaml `support:`: the rota and second line name operator console accounts, mail
in needs an address to receive for, and `send_through` names an email channel of `monitoring.alerts`."""

from __future__ import annotations

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig
from hubfleet.suggest import suggestion


def support_accounts_are_operators(fleet: SourcedFleetConfig) -> list[ConfigError]:
    if fleet.settings is None:  # fleet.yaml has errors of its own: reported elsewhere
        return []
    support = fleet.settings.support
    accounts = {a.username: a.role for a in fleet.settings.console.accounts}
    operators = sorted(name for name, role in accounts.items() if role == "operator")
    named = [(f"support.rota.first_line.{i}", n) for i, n in enumerate(support.rota.first_line)]
    overrides = support.rota.overrides
    named += [(f"support.rota.overrides.{i}.account", o.account) for i, o in enumerate(overrides)]
    named += [(f"support.second_line.{i}", n) for i, n in enumerate(support.second_line)]
    errors = []
    for path, name in named:
        if accounts.get(name) == "operator":
            continue
        why = (
            f"'{name}' is a community-leader, and tickets of every community reach first and second line"
            if name in accounts
            else f"there is no console account '{name}'"
        )
        hint = suggestion(name, operators, "the operator accounts are", "add it under `console.accounts`")
        errors.append(fleet.fleet_error(path, f"{path}: {why}; {hint}"))
    return errors


def support_mail_is_complete(fleet: SourcedFleetConfig) -> list[ConfigError]:
    if fleet.settings is None:
        return []
    support = fleet.settings.support
    errors = []
    if support.listen is not None and support.address is None:
        errors.append(
            fleet.fleet_error(
                "support.listen",
                "support.listen: a mail listener needs the address it receives for; set `support.address`",
            )
        )
    channels = [c.name for c in fleet.settings.monitoring.alerts.email]
    if support.send_through is not None and support.send_through not in channels:
        hint = suggestion(
            support.send_through, channels, "the email channels are",
            "add one under `monitoring.alerts.email`",
        )  # fmt: skip
        errors.append(
            fleet.fleet_error(
                "support.send_through",
                f"support.send_through: no email channel '{support.send_through}' in "
                f"monitoring.alerts.email; {hint}",
            )
        )
    return errors


def support_warnings(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Valid, but worth knowing (`hubfleet validate` prints these): mail in with nothing to send the desk's
    mail through, or requesters' confirmation and survey links with no address they could open."""
    if fleet.settings is None or fleet.fleet_source is None:
        return []
    settings = fleet.settings
    support = settings.support
    found = []
    if support.listen is not None and not settings.monitoring.alerts.email:
        found.append(
            fleet.fleet_error(
                "support.listen",
                "warning: support.listen receives mail, but no monitoring.alerts.email channel sends the "
                "desk's replies and confirmation links; they wait in the outbox until you add one",
            )
        )
    if support.listen is not None and not (support.public_url or fleet.console_url()):
        found.append(
            fleet.fleet_error(
                "support",
                "warning: requesters' confirmation and survey links need an address they can open; set "
                "support.public_url (or console.public_url, or the front door's console_domain)",
            )
        )
    return found
