"""Who may pick which environment, and what a pick means: the gate a hub runs when a server starts.

Standard library only and self-contained: the Kubernetes render embeds this file's source in the hub's
extraConfig (the z2jh hub image has no hubfleet), the local hub's spawner imports it, and the broker re-runs
`resolve` itself so that it never trusts what the hub says a user may run.

The input `spec` is the JSON form of a hub's environments:
`[e.model_dump(mode="json") for e in hub.environments]` (hubfleet.config.models_environments).
`user_options` is the body of `POST /hub/api/users/NAME/server`: `{"environment": SLUG, OPTION: CHOICE}`;
a missing key means the default, a value that is not a choice's slug is the `other` answer when the option
has one.
"""

from __future__ import annotations

import html
import re
from typing import Any

OTHER = "__other__"  # the form's value for an option's free-text answer
# a form field of an option: "<environment>--<option>"; its free-text answer: "<environment>--<option>--other"
SEP = "--"


class ChoiceRefused(ValueError):
    """A user asked for something this hub does not offer them; the message says what to do instead."""


def _may(groups_needed: list[str] | None, groups: set[str]) -> bool:
    return not groups_needed or bool(set(groups_needed) & groups)


def _names(items: list[str]) -> str:
    return ", ".join(items) if items else "(none)"


def _default(items: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The slug marked default among allowed items, else the first allowed one."""
    for slug, item in items:
        if item.get("default"):
            return slug
    return items[0][0] if items else None


def _allowed_choices(option: dict[str, Any], groups: set[str]) -> list[tuple[str, dict[str, Any]]]:
    return [(slug, c) for slug, c in (option.get("choices") or {}).items() if _may(c.get("groups"), groups)]


def _other_allowed(option: dict[str, Any], groups: set[str]) -> bool:
    other = option.get("other")
    return bool(other) and _may(other.get("groups"), groups)


def _usable(env: dict[str, Any], groups: set[str]) -> bool:
    """May this user pick this environment at all (its groups, and every option has an answer for them)."""
    if not _may(env.get("groups"), groups):
        return False
    return all(
        _allowed_choices(opt, groups) or _other_allowed(opt, groups)
        for opt in (env.get("options") or {}).values()
    )


def allowed(spec: list[dict[str, Any]], groups: list[str] | set[str]) -> list[dict[str, Any]]:
    """The environments a user may see, each with only the choices (and `other`) open to them."""
    member = set(groups or ())
    out = []
    for env in spec or []:
        if not _usable(env, member):
            continue
        env = dict(env)
        options = {}
        for slug, opt in (env.get("options") or {}).items():
            opt = dict(opt)
            opt["choices"] = dict(_allowed_choices(opt, member))
            if not _other_allowed(opt, member):
                opt["other"] = None
            options[slug] = opt
        env["options"] = options
        out.append(env)
    return out


def _merge(resolved: dict[str, Any], layer: dict[str, Any]) -> None:
    """A choice's (or environment's) overrides over what is resolved so far: set values win, maps merge."""
    if layer.get("image"):
        resolved["image"] = layer["image"]
    for key, value in (layer.get("resources") or {}).items():
        if key == "extra_limits":
            resolved["resources"].setdefault("extra_limits", {}).update(value or {})
        elif value is not None:
            resolved["resources"][key] = value
    resolved["node_selector"].update(layer.get("node_selector") or {})
    for toleration in layer.get("tolerations") or []:
        if toleration not in resolved["tolerations"]:
            resolved["tolerations"].append(toleration)
    resolved["env"].update(layer.get("env") or {})


def _empty(slug: str | None) -> dict[str, Any]:
    return {
        "environment": slug,
        "choices": {},
        "image": None,
        "resources": {},
        "node_selector": {},
        "tolerations": [],
        "env": {},
        "default_ui": None,
        "local": {"path": None, "kernels": []},
    }


def resolve(
    spec: list[dict[str, Any]], groups: list[str] | set[str], user_options: dict[str, Any] | None
) -> dict[str, Any]:
    """The server a user gets for `user_options`, or ChoiceRefused naming what is wrong and what to pick."""
    member = set(groups or ())
    wanted = dict(user_options or {})
    if not spec:
        if wanted:
            raise ChoiceRefused(
                f"this hub offers no environments to choose from; start the server without options "
                f"(got {_names(sorted(map(str, wanted)))})"
            )
        return _empty(None)
    by_slug = {env["slug"]: env for env in spec}
    usable = [(env["slug"], env) for env in spec if _usable(env, member)]
    usable_slugs = [slug for slug, _ in usable]
    slug = wanted.pop("environment", None)
    if slug is None or slug == "":
        slug = _default(usable)
        if slug is None:
            raise ChoiceRefused(
                "no environment of this hub is open to you (each is limited to groups you are not in); "
                "ask the hub's admins to add you to a group"
            )
    if not isinstance(slug, str):
        raise ChoiceRefused(f"'environment' must be a slug (text); pick one of: {_names(usable_slugs)}")
    env = by_slug.get(slug)
    if env is None:
        raise ChoiceRefused(f"no environment '{slug}' on this hub; pick one of: {_names(usable_slugs)}")
    if not _may(env.get("groups"), member):
        raise ChoiceRefused(
            f"environment '{slug}' is only for members of group(s) {', '.join(env['groups'])}; you are in "
            f"none of them: ask the hub's admins, or pick one of: {_names(usable_slugs)}"
        )
    options = env.get("options") or {}
    unknown = sorted(str(key) for key in wanted if key not in options)
    if unknown:
        offered = f"its options are: {', '.join(options)}" if options else "it has no options"
        raise ChoiceRefused(f"environment '{slug}' has no option {', '.join(map(repr, unknown))}; {offered}")
    resolved = _empty(slug)
    resolved["default_ui"] = env.get("default_ui")
    local = env.get("local") or {}
    resolved["local"] = {"path": local.get("path"), "kernels": list(local.get("kernels") or [])}
    _merge(resolved, env)
    for opt_slug, option in options.items():
        choices = option.get("choices") or {}
        open_choices = _allowed_choices(option, member)
        open_slugs = [c for c, _ in open_choices]
        value = wanted.get(opt_slug)
        if value is None or value == "":
            value = _default(open_choices)
            if value is None:
                raise ChoiceRefused(
                    f"option '{opt_slug}' of environment '{slug}' has no choice open to you; give your own "
                    f"answer or ask the hub's admins"
                )
        if not isinstance(value, str):
            raise ChoiceRefused(
                f"option '{opt_slug}' must be a choice's slug (text); pick one of: {_names(open_slugs)}"
            )
        if value in choices:
            choice = choices[value]
            if not _may(choice.get("groups"), member):
                raise ChoiceRefused(
                    f"choice '{value}' of option '{opt_slug}' is only for members of group(s) "
                    f"{', '.join(choice['groups'])}; you are in none of them: ask the hub's admins, or pick "
                    f"one of: {_names(open_slugs)}"
                )
            resolved["choices"][opt_slug] = value
            _merge(resolved, choice)
            continue
        other = option.get("other")
        if not other:
            raise ChoiceRefused(
                f"option '{opt_slug}' has no choice '{value}'; pick one of: {_names(open_slugs)}"
            )
        if not _may(other.get("groups"), member):
            raise ChoiceRefused(
                f"option '{opt_slug}' has no choice '{value}', and only members of group(s) "
                f"{', '.join(other['groups'])} may give their own answer; pick one of: {_names(open_slugs)}"
            )
        if not re.fullmatch(other["validation_regex"], value):
            what = other.get("sets") or "image"
            raise ChoiceRefused(f"{what} '{value}' does not match {other['validation_regex']}")
        resolved["choices"][opt_slug] = value
        _merge(resolved, {other.get("sets") or "image": value})
    return resolved


def options_from_form(spec: list[dict[str, Any]], formdata: dict[str, Any]) -> dict[str, Any]:
    """The `user_options` of a posted `form_html` form (JupyterHub gives each field as a list of strings)."""

    def first(key: str) -> str:
        value = formdata.get(key)
        if isinstance(value, list):
            value = value[0] if value else ""
        return (value or "").strip() if isinstance(value, str) else ""

    slug = first("environment")
    if not slug:
        return {}
    options: dict[str, Any] = {"environment": slug}
    env = next((e for e in spec or [] if e.get("slug") == slug), None)
    for opt_slug in (env or {}).get("options") or {}:
        value = first(f"{slug}{SEP}{opt_slug}")
        if value == OTHER:
            value = first(f"{slug}{SEP}{opt_slug}{SEP}other")
        if value:
            options[opt_slug] = value
    return options


def _last_choice(spec: list[dict[str, Any]], groups: set[str], last: dict[str, Any] | None) -> str | None:
    """The environment to preselect: the user's last one if it is still open to them, else the default."""
    usable = [(env["slug"], env) for env in spec if _usable(env, groups)]
    wanted = (last or {}).get("environment")
    if any(slug == wanted for slug, _ in usable):
        return wanted
    return _default(usable)


def form_html(spec: list[dict[str, Any]], groups: list[str] | set[str], last: dict[str, Any] | None) -> str:
    """JupyterHub's options form: the environments and choices open to this user, `last` preselected."""
    member = set(groups or ())
    envs = allowed(spec, member)
    picked = _last_choice(spec, member, last)
    last = last or {}
    esc = html.escape
    parts = ['<div class="hubfleet-environments">']
    for env in envs:
        slug = env["slug"]
        checked = " checked" if slug == picked else ""
        parts.append('<div class="form-group hubfleet-environment" style="margin-bottom:1em">')
        parts.append(
            f'<label><input type="radio" name="environment" value="{esc(slug)}"{checked}> '
            f"<strong>{esc(env.get('display_name') or slug)}</strong></label>"
        )
        if env.get("description"):
            parts.append(f'<div class="help-block">{esc(env["description"])}</div>')
        for opt_slug, option in (env.get("options") or {}).items():
            field = f"{slug}{SEP}{opt_slug}"
            previous = last.get(opt_slug) if last.get("environment") == slug else None
            choices = option.get("choices") or {}
            chosen = previous if previous in choices else _default(list(choices.items()))
            other = option.get("other")
            own = bool(other) and isinstance(previous, str) and previous not in choices and bool(previous)
            parts.append(
                f'<div style="margin-left:1.5em"><label for="{esc(field)}">'
                f"{esc(option.get('display_name') or opt_slug)}</label> "
                f'<select class="form-control" id="{esc(field)}" name="{esc(field)}">'
            )
            for choice_slug, choice in choices.items():
                sel = " selected" if choice_slug == chosen and not own else ""
                label = esc(choice.get("display_name") or choice_slug)
                parts.append(f'<option value="{esc(choice_slug)}"{sel}>{label}</option>')
            if other:
                sel = " selected" if own else ""
                parts.append(
                    f'<option value="{OTHER}"{sel}>{esc(other.get("display_name") or "Other")}</option>'
                )
            parts.append("</select>")
            if other:
                value = esc(previous) if own else ""
                parts.append(
                    f'<input class="form-control" type="text" name="{esc(field)}{SEP}other" value="{value}" '
                    f'placeholder="{esc(other.get("display_name") or "Other")}">'
                )
            parts.append("</div>")
        parts.append("</div>")
    if not envs:
        parts.append(
            "<p>No environment of this hub is open to you (each is limited to groups you are not in); "
            "ask the hub's admins to add you to a group.</p>"
        )
    parts.append("</div>")
    return "\n".join(parts)


__all__ = ["OTHER", "SEP", "ChoiceRefused", "allowed", "form_html", "options_from_form", "resolve"]
