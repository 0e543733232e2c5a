"""Cross-file rules on money: a community's `billing.plan` names a plan of fleet.yaml `costs.plans`, its
`billing.budget.hubs` are its own hubs, and no billing account or sub-account is claimed by two clusters
(a row would belong to both). `cost_warnings` says where a budget, plan or price sheet is in a currency
other than the fleet's with no exchange rate to it: not an error (the rate may come later, and budgets and
invoices name the missing rate), but worth knowing before the month's first import."""

from __future__ import annotations

from pathlib import Path

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig
from hubfleet.config.models_costs import ExchangeRate
from hubfleet.config.yaml_source import Source
from hubfleet.suggest import suggestion


def _communities(fleet: SourcedFleetConfig) -> list[str]:
    """Communities whose file was read (errors can point into it)."""
    return sorted(name for name in fleet.communities if name in fleet.community_sources)


def billing_plans_exist(fleet: SourcedFleetConfig) -> list[ConfigError]:
    if fleet.settings is None:  # fleet.yaml has errors of its own: reported elsewhere
        return []
    plans = sorted(fleet.settings.costs.plans)
    errors: list[ConfigError] = []
    for name in _communities(fleet):
        plan = fleet.communities[name].billing.plan
        if plan is None or plan in plans:
            continue
        hint = suggestion(
            plan, plans, "the plans are", "fleet.yaml has no `costs.plans`: add one, or remove `billing.plan`"
        )
        errors.append(
            fleet.community_error(
                name, "billing.plan", f"billing.plan: no plan '{plan}' in fleet.yaml `costs.plans`; {hint}"
            )
        )
    return errors


def budget_hubs_are_the_communitys(fleet: SourcedFleetConfig) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for name in _communities(fleet):
        budget = fleet.communities[name].billing.budget
        if budget is None or not budget.hubs:
            continue
        hubs = sorted(h.name for h in fleet.hubs.values() if h.community == name)
        for hub in budget.hubs:
            if hub in hubs:
                continue
            if hub in fleet.broken_names or name in fleet.broken_hub_dirs:
                continue  # the hub's own file has errors (reported there): it may be the one named
            elsewhere = fleet.hubs.get(hub)
            why = (
                f"hub {hub} belongs to community {elsewhere.community}"
                if elsewhere is not None
                else suggestion(hub, hubs, "this community's hubs", "this community has no hubs")
            )
            errors.append(
                fleet.community_error(
                    name,
                    f"billing.budget.hubs.{hub}",
                    f"billing.budget.hubs: '{hub}' is not a hub of community {name}; {why}",
                )
            )
    return errors


def _cluster_source(fleet: SourcedFleetConfig, cluster: str) -> Source | None:
    relative = fleet.cluster_files.get(cluster)
    if relative is None:
        return None
    try:
        return Source(str(relative), (Path(fleet.root) / relative).read_text(encoding="utf-8"))
    except OSError:
        return None


def billing_accounts_claimed_once(fleet: SourcedFleetConfig) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for key, what in (("billing_accounts", "billing account"), ("sub_accounts", "sub-account")):
        owner: dict[str, str] = {}
        for cluster_name in sorted(fleet.clusters, key=lambda c: str(fleet.cluster_files.get(c, c))):
            for index, account in enumerate(getattr(fleet.clusters[cluster_name].costs, key)):
                first = owner.setdefault(account, cluster_name)
                if first == cluster_name:
                    continue
                message = (
                    f"costs.{key}: {what} '{account}' is already claimed by cluster {first} "
                    f"({fleet.cluster_files.get(first, first)}); a billing row can belong to one cluster "
                    "only: remove it from one of them"
                )
                source = _cluster_source(fleet, cluster_name)
                if source is None:
                    errors.append(
                        ConfigError(str(fleet.cluster_files.get(cluster_name, "clusters/")), 1, 1, message)
                    )
                    continue
                _, key_pos, _ = source.find(["costs", key, index])
                errors.append(ConfigError(source.file, *key_pos, message))
    return errors


# --------------------------------------------------------------------------- warnings


def _has_rate(rates: list[ExchangeRate], source: str, target: str) -> bool:
    return source == target or any({r.source, r.target} == {source, target} for r in rates)


def _no_rate(what: str, source: str, target: str) -> str:
    return (
        f"warning: {what} in {source}, the fleet's currency is {target}, and there is no {source}->{target} "
        f"exchange rate: {_rate_hint(source, target)}"
    )


def _rate_hint(source: str, target: str) -> str:
    return (
        f"add one to fleet.yaml `costs.exchange_rates` "
        f"(- {{source: {source}, target: {target}, rate: ...}}); until then budgets and invoices leave out "
        "what they cannot convert and name the missing rate"
    )


def cost_warnings(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Budgets, plans and price sheets in a currency with no exchange rate to the fleet's (`hubfleet
    validate` prints these as warnings; the fleet is valid)."""
    if fleet.settings is None:
        return []
    costs = fleet.settings.costs
    home = costs.currency
    found: list[ConfigError] = []
    if fleet.fleet_source is not None:
        for name, plan in sorted(costs.plans.items()):
            if not _has_rate(costs.exchange_rates, plan.currency, home):
                found.append(
                    fleet.fleet_error(
                        f"costs.plans.{name}.currency",
                        _no_rate(f"plan {name} is", plan.currency, home),
                    )
                )
    for name in _communities(fleet):
        budget = fleet.communities[name].billing.budget
        if budget is None or budget.currency is None:
            continue
        if not _has_rate(costs.exchange_rates, budget.currency, home):
            found.append(
                fleet.community_error(
                    name,
                    "billing.budget.currency",
                    _no_rate("the budget is", budget.currency, home),
                )
            )
    for cluster_name, cluster in sorted(fleet.clusters.items()):
        sheet = cluster.costs.price_sheet
        if sheet is None or _has_rate(costs.exchange_rates, sheet.currency, home):
            continue
        source = _cluster_source(fleet, cluster_name)
        message = _no_rate("the price sheet is", sheet.currency, home)
        if source is None:
            found.append(ConfigError(str(fleet.cluster_files.get(cluster_name, "clusters/")), 1, 1, message))
        else:
            _, key_pos, _ = source.find(["costs", "price_sheet", "currency"])
            found.append(ConfigError(source.file, *key_pos, message))
    return sorted(set(found))
