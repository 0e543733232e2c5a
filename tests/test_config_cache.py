"""The plan cache (config/cache.py, deploy/plan_cache.py): a cached load and plan equal uncached ones, only
what changed is parsed or rendered again, and nothing stale, corrupt or foreign is ever trusted.

Store and function level with a real SQLite store and real files; no hub runs. Which files were parsed and
which hubs rendered is read from `FleetCache.stats` (the misses), never from timings.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from fleet_helpers import copy_demo_fleet, edit, mark_deployed, new_identity
from hubfleet.config import cache as cache_module
from hubfleet.config.cache import FleetCache
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.deploy import plan_cache
from hubfleet.deploy.plan import Plan, make_plan
from hubfleet.secrets.store import set_secret
from hubfleet.store import open_store

STAGING = "communities/uni-a/hubs/staging.yaml"


def snapshot(fleet: FleetConfig) -> dict[str, Any]:
    """Everything a load gives the rest of hubfleet, as plain data."""
    return {
        "settings": fleet.settings.model_dump(mode="json"),
        "clusters": {k: v.model_dump(mode="json") for k, v in fleet.clusters.items()},
        "communities": {k: v.model_dump(mode="json") for k, v in fleet.communities.items()},
        "hubs": {k: v.model_dump(mode="json") for k, v in fleet.hubs.items()},
        "files": [fleet.hub_files, fleet.cluster_files, fleet.community_files],
        "secrets": [fleet.secrets, fleet.fleet_secrets],
    }


def plan_with(root: Path, cache: FleetCache | None) -> Plan:
    fleet = load_fleet(root, cache=cache)
    with open_store(root / ".hubfleet") as store:
        return make_plan(fleet, root / ".hubfleet", store, cache=cache)


def plan_data(plan: Plan) -> list[tuple[Any, ...]]:
    return [(h.name, h.action, h.reasons, h.config_hash, h.rendered, h.diff) for h in plan.hubs]


def cache_of(root: Path) -> FleetCache:
    return FleetCache.in_state(root / ".hubfleet")


def cache_files(root: Path) -> list[Path]:
    return sorted((root / ".hubfleet/cache").glob("*.json"))


def generate(root: Path, communities: int) -> Path:
    """A fleet with the kinds of values the fast YAML path meets: lists, floats, nested mappings, quoted
    and unquoted strings, booleans, comments, defaults at every layer."""
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(
        "name: gen\noperators:\n  - name: Ada\n    email: ada@example.org\n"
        "defaults:\n  resources:\n    memory_limit: 1G\n    cpu_limit: 1.5\n  culling:\n    timeout: 3600\n"
    )
    (root / "clusters" / "local.yaml").write_text(
        "name: local\nkind: local\ndefaults:\n  culling:\n    max_age: 86400\n"
    )
    port = 21000
    for i in range(communities):
        name = f"c{i:02d}"
        hubs = root / "communities" / name / "hubs"
        hubs.mkdir(parents=True)
        (root / "communities" / name / "community.yaml").write_text(
            f"name: {name}\ndisplay_name: 'Community #{i}'  # quoted\ncontacts:\n"
            f"  - name: Lead {i}\n    email: lead{i}@example.org\n    role: teacher\n"
            f"defaults:\n  max_users: {10 + i}\n"
        )
        for stage, auth in (("staging", "dummy"), ("prod", "native")):
            port += 1
            hub = name if stage == "prod" else f"{name}-staging"
            (hubs / f"{stage}.yaml").write_text(
                f'name: {hub}\ndisplay_name: "Hub {hub}"\ncommunity: {name}\ncluster: local\n'
                f"stage: {stage}\nport: {port}\nauth:\n  type: {auth}\n  admin_users: [lead{i}, ops]\n"
                f"resources:\n  memory_limit: {i % 3 + 1}G\nculling:\n  enabled: {str(i % 2 == 0).lower()}\n"
            )
    return root


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = copy_demo_fleet(tmp_path / "fleet")
    mark_deployed(root)
    return root


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    root = generate(tmp_path / "gen", 6)
    mark_deployed(root)
    return root


@pytest.mark.parametrize("which", ["demo", "generated"])
def test_cached_load_and_plan_equal_uncached(which: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(which)
    # a comment changes a file's bytes, not what it says: parsed again, the plan the same
    edit(next((root / "communities").glob("*/hubs/prod.yaml")), "name:", "# a comment\nname:")
    uncached_fleet, uncached_plan = load_fleet(root), plan_with(root, None)
    for run in ("cold", "warm"):
        cache = cache_of(root)
        assert snapshot(load_fleet(root, cache=cache)) == snapshot(uncached_fleet), run
        assert plan_data(plan_with(root, cache_of(root))) == plan_data(uncached_plan), run
    warm = cache_of(root)
    plan_with(root, warm)
    assert warm.stats.misses == [] and warm.stats.hits, "a warm load parses nothing again"
    assert warm.stats.hub_misses == [] and warm.stats.hub_hits, "a warm plan renders no unchanged hub"


def test_one_changed_file_is_the_only_one_parsed_and_rendered(generated: Path) -> None:
    plan_with(generated, cache_of(generated))
    before = max(p.stat().st_mtime_ns for p in cache_files(generated))
    edit(generated / "communities/c03/hubs/prod.yaml", "memory_limit: 1G", "memory_limit: 5G")
    cache = cache_of(generated)
    plan = plan_with(generated, cache)
    assert cache.stats.misses == ["communities/c03/hubs/prod.yaml"]
    assert cache.stats.hub_misses == ["c03"]
    written = {p.name for p in cache_files(generated) if p.stat().st_mtime_ns > before}
    # of each kind, at most the shard that gains the new entry and the one that drops the old one
    assert len(written) <= 4, written
    assert [(h.name, h.action, h.reasons) for h in plan.changes] == [
        ("c03", "update", ["resources.memory_limit: 1G → 5G"])
    ]
    assert plan_data(plan) == plan_data(plan_with(generated, None))


def test_a_changed_default_renders_every_hub_that_inherits_it(generated: Path) -> None:
    plan_with(generated, cache_of(generated))
    edit(generated / "fleet.yaml", "cpu_limit: 1.5", "cpu_limit: 2")
    cache = cache_of(generated)
    plan = plan_with(generated, cache)
    assert cache.stats.misses == [] and cache.stats.hits  # fleet.yaml is read whole, every time
    assert sorted(cache.stats.hub_misses) == sorted(load_fleet(generated).hubs)
    assert len(plan.changes) == 12
    assert plan_data(plan) == plan_data(plan_with(generated, None))


def test_another_hubfleet_misses_every_entry(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new version or an edited default in hubfleet's code (its fingerprint) makes the cache a stranger."""
    plan_with(generated, cache_of(generated))
    assert cache_module.code_fingerprint() == plan_cache.code_fingerprint()
    for module in (cache_module, plan_cache):
        monkeypatch.setattr(module, "code_fingerprint", lambda: "another hubfleet")
    cache = cache_of(generated)
    plan = plan_with(generated, cache)
    assert cache.stats.hits == [] and len(cache.stats.misses) == 6 * 3 + 1
    assert cache.stats.hub_hits == [] and len(cache.stats.hub_misses) == 12
    assert plan.changes == []


def test_a_changed_runtime_file_misses(generated: Path) -> None:
    """A local hub's internal ports (runtime.json) are rendered into its config: they are in its key."""
    plan_with(generated, cache_of(generated))
    runtime = generated / ".hubfleet/hubs/c01/runtime.json"
    data = json.loads(runtime.read_text())
    runtime.write_text(json.dumps(data | {"hub_port": data["hub_port"] + 1}))
    cache = cache_of(generated)
    plan = plan_with(generated, cache)
    assert cache.stats.hub_misses == ["c01"]
    assert [h.name for h in plan.changes] == ["c01"]


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"[]", b'{"format": 1, "code": "x", "entries": {}}', b'{"format": 99}', b"\xff\xfe"],
)
def test_a_corrupt_cache_is_ignored_and_rebuilt(generated: Path, content: bytes) -> None:
    plan_with(generated, cache_of(generated))
    expected = plan_data(plan_with(generated, None))
    shards = cache_files(generated)
    assert shards
    for path in shards:
        path.write_bytes(content)
    cache = cache_of(generated)
    assert plan_data(plan_with(generated, cache)) == expected
    assert cache.stats.hits == [] and cache.stats.hub_hits == []
    rebuilt = cache_of(generated)
    assert plan_data(plan_with(generated, rebuilt)) == expected
    assert rebuilt.stats.misses == [] and rebuilt.stats.hub_misses == []


def test_wrong_entries_are_not_trusted(generated: Path) -> None:
    """Entries of the wrong shape (a hand-edited or foreign file) are parsed and rendered again."""
    plan_with(generated, cache_of(generated))
    expected = plan_data(plan_with(generated, None))
    for path in cache_files(generated):
        document = json.loads(path.read_text())
        document["entries"] = {key: ["not", "a", "mapping"] for key in document["entries"]}
        path.write_text(json.dumps(document))
    cache = cache_of(generated)
    assert plan_data(plan_with(generated, cache)) == expected
    assert cache.stats.hits == [] and cache.stats.hub_hits == []


def test_an_unwritable_or_missing_cache_is_no_error(generated: Path, tmp_path: Path) -> None:
    directory = generated / ".hubfleet/cache"
    directory.write_text("a file where the cache directory goes")
    expected = plan_data(plan_with(generated, None))
    assert plan_data(plan_with(generated, cache_of(generated))) == expected
    missing = FleetCache(tmp_path / "no-such-state" / "cache")
    assert snapshot(load_fleet(generated, cache=missing)) == snapshot(load_fleet(generated))
    assert not (tmp_path / "no-such-state").exists(), "the cache never makes a state directory"


def test_cache_files_are_private(generated: Path) -> None:
    plan_with(generated, cache_of(generated))
    directory = generated / ".hubfleet/cache"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = cache_files(generated)
    assert {p.name.split("-")[0] for p in files} == {"files", "hubs"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in directory.iterdir() if p.name.startswith(".")], "no temporary file left"
    assert "secret" not in "".join(p.read_text() for p in files)


def test_a_changed_secret_changes_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes of secret values are in a hub's config hash; the cache keys on their ciphertext."""
    root = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    identity = tmp_path / "ada.txt"
    recipient = new_identity(identity)
    monkeypatch.setenv("HUBFLEET_AGE_IDENTITY", str(identity))
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(
        fleet_yaml.read_text().replace(
            "    email: ada@hubfleet.example\n",
            f"    email: ada@hubfleet.example\n    age_recipient: {recipient}\n",
        )
    )
    edit(root / STAGING, "  password: demo-staging", "  password: {secret: dummy_password}")
    set_secret(root, "uni-a-staging", "dummy_password", "first value")
    mark_deployed(root)
    assert plan_with(root, cache_of(root)).changes == []
    assert plan_with(root, cache_of(root)).changes == []
    set_secret(root, "uni-a-staging", "dummy_password", "second value")
    cache = cache_of(root)
    plan = plan_with(root, cache)
    assert cache.stats.hub_misses == ["uni-a-staging"]
    assert [(h.name, h.reasons) for h in plan.changes] == [("uni-a-staging", ["secret values changed"])]
    assert "second value" not in json.dumps(plan.to_json()) + "".join(
        p.read_text() for p in (root / ".hubfleet/cache").iterdir()
    )


def test_errors_in_a_cached_file_that_another_change_breaks_are_reported(generated: Path) -> None:
    """Cross-file rules run over the whole fleet every time: a cached, once-valid file is still checked."""
    load_fleet(generated, cache=cache_of(generated))
    taken = "port: 21001"  # c00-staging's, in a file that does not change
    assert taken in (generated / "communities/c00/hubs/staging.yaml").read_text()
    prod = generated / "communities/c05/hubs/prod.yaml"
    prod.write_text(prod.read_text().replace("port: 21012", taken))
    cache = cache_of(generated)
    _, errors = validate_fleet(generated, cache)
    assert "communities/c00/hubs/staging.yaml" in cache.stats.hits
    assert cache.stats.misses == ["communities/c05/hubs/prod.yaml"]
    assert errors and errors == validate_fleet(generated)[1]
    assert any("21001" in e.message for e in errors)


def test_a_file_that_fails_is_not_cached_as_good(generated: Path) -> None:
    load_fleet(generated, cache=cache_of(generated))
    hub = generated / "communities/c02/hubs/staging.yaml"
    good = hub.read_text()
    hub.write_text(good.replace("stage: staging", "stage: [unclosed"))
    for _ in range(2):
        _, errors = validate_fleet(generated, cache_of(generated))
        assert [e.file for e in errors] == ["communities/c02/hubs/staging.yaml"]
    hub.write_text(good)
    assert validate_fleet(generated, cache_of(generated))[1] == []
