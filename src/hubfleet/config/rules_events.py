"""Cross-file rules on `events`: each names a hub that exists (a community's, its own), is unique on its
hub, does not overlap another event of that hub, expects no more attendees than the hub's `max_users`, and
uses one of the hub's environments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig
from hubfleet.config.models_events import Event
from hubfleet.suggest import suggestion


@dataclass
class _Listed:
    """An event where it is written: `error(key, message)` points at that key of it."""

    event: Event
    hub: str
    error: Callable[[str, str], ConfigError]
    where: str


def _listed(fleet: SourcedFleetConfig) -> tuple[list[_Listed], list[ConfigError]]:
    found: list[_Listed] = []
    errors: list[ConfigError] = []
    for entry in fleet.hub_entries:
        for i, event in enumerate(entry.hub.events):
            name = entry.hub.name

            def error(key: str, message: str, entry=entry, i=i) -> ConfigError:  # type: ignore[no-untyped-def]
                return fleet.hub_error(entry, f"events.{i}.{key}" if key else f"events.{i}", message)

            if event.hub and event.hub != name:
                errors.append(
                    error(
                        "hub",
                        f"events[{i}].hub is '{event.hub}' but this is the file of hub '{name}'; remove "
                        "`hub:` or move the event to that hub's file",
                    )
                )
                continue
            found.append(_Listed(event, name, error, f"{fleet.hub_files.get(name, name)} events[{i}]"))
    names = [e.hub.name for e in fleet.hub_entries]
    for community_name, community in fleet.communities.items():
        if community_name not in fleet.community_sources:
            continue
        for i, event in enumerate(community.events):

            def cerror(key: str, message: str, c=community_name, i=i) -> ConfigError:  # type: ignore[no-untyped-def]
                return fleet.community_error(c, f"events.{i}.{key}" if key else f"events.{i}", message)

            hubs = sorted(h.name for h in fleet.hubs.values() if h.community == community_name)
            mine = [e for e in fleet.hub_entries if e.directory == community_name]
            misfiled = any(names.count(e.hub.name) > 1 or e.hub.community != community_name for e in mine)
            if event.hub is None:
                errors.append(
                    cerror(
                        "", f"events[{i}] '{event.name}' names no hub; add `hub:` (one of: {', '.join(hubs)})"
                    )
                )
                continue
            if event.hub not in hubs:
                if event.hub in fleet.broken_names or community_name in fleet.broken_hub_dirs or misfiled:
                    continue  # the hub's own file has errors (reported there): it may be the one named
                hint = suggestion(event.hub, hubs, "this community's hubs", "this community has no hubs")
                errors.append(
                    cerror("hub", f"events[{i}].hub: no hub '{event.hub}' in this community; {hint}")
                )
                continue
            found.append(
                _Listed(event, event.hub, cerror, f"{fleet.community_files[community_name]} events[{i}]")
            )
    return found, errors


def events_consistent(fleet: SourcedFleetConfig) -> list[ConfigError]:
    listed, errors = _listed(fleet)
    by_hub: dict[str, list[_Listed]] = {}
    for item in listed:
        by_hub.setdefault(item.hub, []).append(item)
    for hub_name, items in by_hub.items():
        hub = fleet.hubs[hub_name]
        seen: dict[str, _Listed] = {}
        for item in items:
            event = item.event
            if (first := seen.get(event.name)) is not None:
                errors.append(
                    item.error(
                        "name",
                        f"event '{event.name}' is already listed for hub {hub_name} ({first.where}); "
                        "give each event its own name",
                    )
                )
                continue
            seen[event.name] = item
            if hub.max_users is not None and event.attendees > hub.max_users:
                errors.append(
                    item.error(
                        "attendees",
                        f"{event.attendees} attendees but hub {hub_name} allows at most {hub.max_users} "
                        "running servers (`max_users`); raise max_users for the event or expect fewer",
                    )
                )
            slugs = [env.slug for env in hub.environments]
            if event.environment is not None and event.environment not in slugs:
                hint = suggestion(event.environment, slugs, "environments", "the hub has no `environments`")
                errors.append(
                    item.error(
                        "environment", f"no environment '{event.environment}' on hub {hub_name}; {hint}"
                    )
                )
        ordered = sorted(seen.values(), key=lambda i: i.event.start)
        for before, after in zip(ordered, ordered[1:], strict=False):
            if after.event.start < before.event.end:
                errors.append(
                    after.error(
                        "start",
                        f"event '{after.event.name}' ({after.event.start:%Y-%m-%d %H:%M %Z}) overlaps "
                        f"'{before.event.name}' (until {before.event.end:%Y-%m-%d %H:%M %Z}) on hub "
                        f"{hub_name}; events on one hub may not overlap: merge them or move one",
                    )
                )
    return errors
