"""Every cross-file rule, in one list: each is a small function of the loaded fleet returning ConfigErrors.

Rules see every hub that validated on its own (`SourcedFleetConfig.hub_entries`, duplicates included) and
point at the offending key through `SourcedFleetConfig.hub_error` / `fleet_error`, so their errors carry the
same `file:line:col` as schema errors. They live in modules by subject: the hubs themselves
(`rules_hubs`), who may log in (`rules_auth`), secrets (`rules_secrets`), the HTTPS front door
(`rules_front_door`), backups (`rules_backups`), the hubs' logos (`rules_branding`), events
(`rules_events`), money (`rules_costs`) and the support desk (`rules_support`).
"""

from __future__ import annotations

from collections.abc import Callable

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig
from hubfleet.config.rules_auth import (
    admins_not_empty,
    allow_all_without_allow_lists,
    cilogon_has_idps,
    cilogon_idps_say_who,
    console_accounts_know_their_communities,
    console_oidc_issuer_https,
    environment_groups_have_a_source,
    github_allow_lists_consistent,
    has_auth,
    no_dummy_auth_on_prod,
    oauth_client_secret_set,
    oidc_issuer_https_on_prod,
    someone_can_log_in,
    staff_username_key_known,
    tmp_auth_where_allowed,
)
from hubfleet.config.rules_backups import hub_backup_needs_fleet_backups, repository_outside_the_data
from hubfleet.config.rules_branding import logos_are_images
from hubfleet.config.rules_costs import (
    billing_accounts_claimed_once,
    billing_plans_exist,
    budget_hubs_are_the_communitys,
)
from hubfleet.config.rules_escape_hatch import (
    no_kubernetes_defaults_on_local_clusters,
    no_replaced_authenticator_or_spawner_on_prod,
)
from hubfleet.config.rules_events import events_consistent
from hubfleet.config.rules_front_door import (
    certificate_files_exist,
    console_has_one_address,
    front_door_ports_free,
    hub_domains_not_front_door_names,
    local_hubs_have_a_site,
    oauth_hubs_have_https,
)
from hubfleet.config.rules_hubs import (
    cluster_staging_hub_valid,
    environments_consistent,
    kubernetes_settings_on_kubernetes_hubs,
    port_or_domain_by_cluster_kind,
    prod_has_staging,
    references_resolve,
    unique_domains,
    unique_hub_names,
    unique_ports,
)
from hubfleet.config.rules_secrets import (
    fleet_secret_refs_are_set,
    secret_refs_are_set,
    secrets_files_match_hubs,
    secrets_have_recipients,
)
from hubfleet.config.rules_support import support_accounts_are_operators, support_mail_is_complete

Rule = Callable[[SourcedFleetConfig], list[ConfigError]]


RULES: list[Rule] = [
    unique_hub_names,
    unique_ports,
    unique_domains,
    references_resolve,
    port_or_domain_by_cluster_kind,
    prod_has_staging,
    cluster_staging_hub_valid,
    has_auth,
    admins_not_empty,
    no_dummy_auth_on_prod,
    oauth_client_secret_set,
    allow_all_without_allow_lists,
    github_allow_lists_consistent,
    oidc_issuer_https_on_prod,
    cilogon_has_idps,
    someone_can_log_in,
    cilogon_idps_say_who,
    tmp_auth_where_allowed,
    staff_username_key_known,
    secrets_files_match_hubs,
    secret_refs_are_set,
    fleet_secret_refs_are_set,
    secrets_have_recipients,
    kubernetes_settings_on_kubernetes_hubs,
    environments_consistent,
    environment_groups_have_a_source,
    logos_are_images,
    events_consistent,
    console_accounts_know_their_communities,
    console_oidc_issuer_https,
    local_hubs_have_a_site,
    hub_domains_not_front_door_names,
    oauth_hubs_have_https,
    front_door_ports_free,
    certificate_files_exist,
    console_has_one_address,
    repository_outside_the_data,
    hub_backup_needs_fleet_backups,
    no_replaced_authenticator_or_spawner_on_prod,
    no_kubernetes_defaults_on_local_clusters,
    billing_plans_exist,
    budget_hubs_are_the_communitys,
    billing_accounts_claimed_once,
    support_accounts_are_operators,
    support_mail_is_complete,
]


def check_rules(fleet: SourcedFleetConfig) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for rule in RULES:
        errors.extend(rule(fleet))
    return errors
