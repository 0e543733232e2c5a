"""A hub's `environments` on Kubernetes: KubeSpawner's `profile_list` (z2jh `singleuser.profileList`), and the
hub-side gate that enforces who may pick what.

Plain KubeSpawner shows every profile to everyone and starts whatever a REST call names; the service this
project models learned it when a GPU profile meant for one GitHub team was open to all. So a hub with
environments also gets `hub.extraConfig["hubfleet-20-environments"]`, which

- embeds the source of `hubfleet.environment_choice` (the z2jh hub image has no hubfleet) as a module;
- makes `c.KubeSpawner.profile_list` a callable that lists only the environments, choices and "other" answers
  the user's JupyterHub groups allow (and preselects the user's last choice);
- chains a `pre_spawn_hook` that reads hubfleet's REST body `{"environment": SLUG, OPTION: CHOICE}` (or
  KubeSpawner's own `{"profile": SLUG, OPTION: CHOICE, "OPTION--unlisted-choice": VALUE}` from its form),
  refuses a forbidden choice with HTTP 400 and `ChoiceRefused`'s message, and hands KubeSpawner its own keys
  for the resolved choice, so that KubeSpawner's `load_user_options` applies the overrides rendered here.

KubeSpawner 7.1.0 (kubespawner/spawner.py) is the reference for the keys: `kubespawner_override` (image,
mem_limit, mem_guarantee, cpu_limit, cpu_guarantee, extra_resource_limits, node_selector, tolerations,
environment, default_url), `profile_options.<option>.choices` and `unlisted_choice` (`{value}` substituted).
"""

from __future__ import annotations

import ast
import inspect
import json
from typing import Any

from hubfleet import environment_choice
from hubfleet.config.models import Hub
from hubfleet.config.models_environments import Environment, Overrides, Toleration
from hubfleet.config.quantities import spawner_memory
from hubfleet.render.common import CHECK_USERNAME

EXTRA_CONFIG_KEY = "hubfleet-20-environments"
"""z2jh runs hub.extraConfig entries in sorted key order: after the auth start-up code (hubfleet-01-*), before
the operator's own `extra_config` (hubfleet-99-*)."""

DEFAULT_URLS = {"lab": "/lab", "classic": "/tree"}


def _toleration(toleration: Toleration) -> dict[str, str]:
    """A Kubernetes Toleration object as KubeSpawner passes it on (empty fields left out)."""
    out = {"key": toleration.key, "operator": toleration.operator}
    if toleration.operator == "Equal":
        out["value"] = toleration.value
    if toleration.effect:
        out["effect"] = toleration.effect
    return out


def kubespawner_override(layer: Overrides, *, tolerations: list[Toleration] | None = None) -> dict[str, Any]:
    """An environment's or a choice's settings as KubeSpawner traits. Dicts (node_selector, environment,
    extra_resource_limits) are merged by KubeSpawner; `tolerations` is a list and replaces, so a choice's
    override carries its environment's tolerations too (`tolerations`), and the gate adds the chart's own."""
    override: dict[str, Any] = {}
    if layer.image is not None:
        override["image"] = layer.image
    res = layer.resources
    if res.memory_limit is not None:
        override["mem_limit"] = spawner_memory(res.memory_limit)
    if res.memory_guarantee is not None:
        override["mem_guarantee"] = spawner_memory(res.memory_guarantee)
    if res.cpu_limit is not None:
        override["cpu_limit"] = res.cpu_limit
    if res.cpu_guarantee is not None:
        override["cpu_guarantee"] = res.cpu_guarantee
    if res.extra_limits:
        override["extra_resource_limits"] = {k: str(v) for k, v in res.extra_limits.items()}
    if layer.node_selector:
        override["node_selector"] = dict(layer.node_selector)
    merged = list(tolerations or [])
    merged += [t for t in layer.tolerations if t not in merged]
    if layer.tolerations:
        override["tolerations"] = [_toleration(t) for t in merged]
    if layer.env:
        override["environment"] = dict(layer.env)
    return override


def _profile(env: Environment) -> dict[str, Any]:
    entry: dict[str, Any] = {"display_name": env.display_name, "slug": env.slug}
    if env.description:
        entry["description"] = env.description
    if env.default:
        entry["default"] = True
    override = kubespawner_override(env)
    if env.default_ui is not None:
        override["default_url"] = DEFAULT_URLS[env.default_ui]
    if override:
        entry["kubespawner_override"] = override
    options: dict[str, Any] = {}
    for slug, option in env.options.items():
        choices: dict[str, Any] = {}
        for choice_slug, choice in option.choices.items():
            item: dict[str, Any] = {"display_name": choice.display_name}
            if choice.default:
                item["default"] = True
            choice_override = kubespawner_override(choice, tolerations=env.tolerations)
            if choice_override:
                item["kubespawner_override"] = choice_override
            choices[choice_slug] = item
        rendered: dict[str, Any] = {"display_name": option.display_name, "choices": choices}
        if option.other is not None:
            rendered["unlisted_choice"] = {
                "enabled": True,
                "display_name": option.other.display_name,
                "display_name_in_choices": option.other.display_name,
                "validation_regex": option.other.validation_regex,
                "validation_message": f"must match {option.other.validation_regex}",
                "kubespawner_override": {option.other.sets: "{value}"},
            }
        options[slug] = rendered
    if options:
        entry["profile_options"] = options
    return entry


def profile_list(hub: Hub) -> list[dict[str, Any]]:
    """z2jh `singleuser.profileList`: every environment and choice (the gate filters it per user)."""
    return [_profile(env) for env in hub.environments]


def _raw(text: str) -> str:
    """`text` as a Python string literal that stays readable in the values file (raw and triple-quoted,
    unless that would change it: then Python's own repr)."""
    literal = "r'''" + text + "'''"
    try:
        if ast.literal_eval(literal) == text:
            return literal
    except (SyntaxError, ValueError):
        pass
    return repr(text)


def gate_source() -> str:
    """The source of hubfleet.environment_choice, embedded into the hub's config."""
    return inspect.getsource(environment_choice)


GATE = '''\
# hubfleet: who may pick which environment (issue 16). The profile list shows each user only what their
# JupyterHub groups allow; the pre-spawn hook refuses anything else (a REST call too) with HTTP 400.
def _hubfleet_environments_gate(c, gate_source, spec_json):
    import copy
    import json
    import sys
    import types

    from tornado import web

    gate = types.ModuleType("hubfleet_environment_choice")
    gate.__file__ = "<hubfleet environment_choice, embedded>"
    sys.modules[gate.__name__] = gate
    exec(compile(gate_source, "hubfleet_environment_choice.py", "exec"), gate.__dict__)
    spec = json.loads(spec_json)
    profiles = copy.deepcopy(list(c.KubeSpawner.profile_list or []))
    # the chart's tolerations (scheduling.userPods.tolerations + singleuser.extraTolerations): an override's
    # list replaces them in KubeSpawner, so they are added back to every override that sets tolerations
    base_tolerations = c.KubeSpawner.tolerations if isinstance(c.KubeSpawner.tolerations, list) else []
    unlisted = "--unlisted-choice"

    def groups_of(spawner):
        return [group.name for group in spawner.user.groups]

    def as_hubfleet(options):
        """hubfleet's keys from hubfleet's REST body or KubeSpawner's own (its form posts those)."""
        options = dict(options or {})
        if "profile" not in options:
            return options
        out = {"environment": options.pop("profile")}
        for key, value in options.items():
            if key.endswith(unlisted):
                if value:
                    out[key[: -len(unlisted)]] = value
            elif value != "unlisted-choice" and key not in out:
                out[key] = value
        return out

    def with_base_tolerations(override):
        if isinstance(override, dict) and "tolerations" in override:
            extra = [t for t in override["tolerations"] if t not in base_tolerations]
            override["tolerations"] = list(base_tolerations) + extra

    def visible(groups, last):
        """The profiles open to these groups, `last` (the user's previous choice) preselected."""
        open_envs = {env["slug"]: env for env in gate.allowed(spec, groups)}
        last = as_hubfleet(last)
        out = []
        for profile in copy.deepcopy(profiles):
            env = open_envs.get(profile.get("slug"))
            if env is None:
                continue
            with_base_tolerations(profile.get("kubespawner_override"))
            picked = last.get("environment") == env["slug"]
            for name, option in (profile.get("profile_options") or {}).items():
                allowed = env["options"].get(name) or {}
                option["choices"] = {
                    slug: choice
                    for slug, choice in (option.get("choices") or {}).items()
                    if slug in (allowed.get("choices") or {})
                }
                for choice in option["choices"].values():
                    with_base_tolerations(choice.get("kubespawner_override"))
                if not allowed.get("other"):
                    option.pop("unlisted_choice", None)
                if picked and last.get(name) in option["choices"]:
                    for slug, choice in option["choices"].items():
                        choice["default"] = slug == last[name]
            out.append(profile)
        if any(p["slug"] == last.get("environment") for p in out):
            for profile in out:
                profile["default"] = profile["slug"] == last["environment"]
        return out

    def profile_list(spawner):
        return visible(groups_of(spawner), spawner.orm_spawner.user_options or {})

    previous_hook = c.KubeSpawner.pre_spawn_hook if callable(c.KubeSpawner.pre_spawn_hook) else None

    async def pre_spawn_hook(spawner):
        wanted = as_hubfleet(spawner.user_options)
        try:
            resolved = gate.resolve(spec, groups_of(spawner), wanted)
        except gate.ChoiceRefused as exc:
            raise web.HTTPError(400, str(exc)) from None
        env = next(e for e in spec if e["slug"] == resolved["environment"])
        mine = {"profile": resolved["environment"]}
        for name, value in resolved["choices"].items():
            if value in (env["options"][name].get("choices") or {}):
                mine[name] = value
            else:
                mine[name + unlisted] = value
        # KubeSpawner's load_user_options (in start) applies the profile's overrides for these keys; what the
        # user asked for stays in the hub's database as they sent it (their default next time)
        spawner.user_options = mine
        if previous_hook is not None:
            result = previous_hook(spawner)
            if hasattr(result, "__await__"):
                await result

    c.KubeSpawner.profile_list = profile_list
    c.KubeSpawner.pre_spawn_hook = pre_spawn_hook
    return gate


_hubfleet_environments_gate(c, _HUBFLEET_GATE_SOURCE, _HUBFLEET_ENVIRONMENTS)
'''


def gate_config(hub: Hub) -> str:
    """The hub.extraConfig entry of a hub with environments (see the module docstring)."""
    spec = json.dumps([env.model_dump(mode="json") for env in hub.environments], indent=1, sort_keys=True)
    return f"_HUBFLEET_GATE_SOURCE = {_raw(gate_source())}\n_HUBFLEET_ENVIRONMENTS = {_raw(spec)}\n\n{GATE}"


def load_groups(hub: Hub) -> dict[str, dict[str, list[str]]]:
    """`JupyterHub.load_groups` of a dummy or native hub's `auth.groups` (OAuth hubs take their users' groups
    from the provider at each login instead). The synthetic check's user is in each, as on local hubs, so that
    the check can start every environment."""
    groups = getattr(hub.auth, "groups", None) or {}
    return {name: {"users": sorted({*members, CHECK_USERNAME})} for name, members in sorted(groups.items())}


__all__ = [
    "EXTRA_CONFIG_KEY",
    "gate_config",
    "gate_source",
    "kubespawner_override",
    "load_groups",
    "profile_list",
]
