"""fleet.yaml `service_token_key`: each hub's control-plane and operator service tokens derived from one
fleet-wide age-encrypted key, so that every machine (and every CI runner, which starts empty) uses the same
tokens. Real scaffolds (`hubfleet.scaffold`), real age keys (pyrage), real state directories; no cluster is
touched (the Kubernetes backend's apply needs one: its secret values are built as apply builds them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fleet_helpers import hubfleet
from hubfleet.backends.kubernetes import KubernetesBackend
from hubfleet.backends.local import tokens
from hubfleet.config.loader import load_fleet_files
from hubfleet.config.rules_secrets import token_key_warnings
from hubfleet.config.validate import load_fleet
from hubfleet.render.kubernetes import flatten_secrets, secret_values
from hubfleet.scaffold import scaffold
from hubfleet.secrets import age
from hubfleet.secrets.service_tokens import derive, token_key
from hubfleet.secrets.store import SecretResolver, set_fleet_secret
from hubfleet.settings import UserError

KEY = "k" * 16 + "0123456789abcdef" * 2


def test_derived_tokens_are_the_same_in_two_empty_state_directories(tmp_path: Path) -> None:
    first = tokens(tmp_path / "laptop", "uni-a", KEY)
    second = tokens(tmp_path / "runner", "uni-a", KEY)
    assert first == second == derive(KEY, "uni-a")
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in first.values())
    assert first["control"] != first["operator"]  # per purpose
    assert tokens(tmp_path / "laptop", "uni-b", KEY)["control"] != first["control"]  # per hub
    assert derive("another key of enough length, 0123456789", "uni-a") != first  # per key
    cache = tmp_path / "laptop" / "hubs" / "uni-a" / "tokens.json"
    assert json.loads(cache.read_text()) == first and cache.stat().st_mode & 0o077 == 0


def test_the_cache_is_rewritten_when_it_differs_and_no_key_keeps_random_tokens(tmp_path: Path) -> None:
    random_ones = tokens(tmp_path, "uni-a")  # no key: as before, random and kept
    assert tokens(tmp_path, "uni-a") == random_ones and random_ones != derive(KEY, "uni-a")
    assert tokens(tmp_path, "uni-a", KEY) == derive(KEY, "uni-a")  # the key wins over an old file
    cache = tmp_path / "hubs" / "uni-a" / "tokens.json"
    assert json.loads(cache.read_text()) == derive(KEY, "uni-a")


@pytest.fixture(scope="module")
def kube_fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A scaffolded GKE fleet (init makes the key) and the identity that reads it."""
    root = tmp_path_factory.mktemp("kube")
    identity = root / "age-identity.txt"
    scaffold(root / "fleet", cluster="gcp", identity=identity)
    return root / "fleet", identity


def test_init_makes_the_key_and_the_secret_values_carry_the_derived_tokens(
    kube_fleet: tuple[Path, Path], tmp_path: Path
) -> None:
    fleet_dir, identity = kube_fleet
    assert "service_token_key: {secret: service_token_key}" in (fleet_dir / "fleet.yaml").read_text()
    config = load_fleet(fleet_dir)
    resolver = SecretResolver(config, identity)
    key = token_key(config, resolver)
    assert key is not None and len(key) == 64
    assert key not in (fleet_dir / "secrets" / "fleet.yaml").read_text()  # age-encrypted in git

    hub = config.hubs["example-staging"]
    backend = KubernetesBackend(config, tmp_path / "state", resolver)
    # the operator's daemon reaches a hub deployed from CI: no tokens.json needed, the same token
    assert backend.endpoint(hub.name).token == derive(key, hub.name)["control"]
    # as apply builds them: the chart's secret values hold the derived tokens
    hub_tokens = tokens(tmp_path / "runner", hub.name, token_key(config, resolver))
    flat = flatten_secrets(secret_values(config, hub, resolver, tokens=hub_tokens))
    assert derive(key, hub.name)["control"] in flat.values()
    assert derive(key, hub.name)["operator"] in flat.values()
    # the public rendering and the hash never include them
    assert derive(key, hub.name)["control"] not in backend.render(hub)
    assert token_key_warnings(load_fleet_files(fleet_dir)[0]) == []


def test_plan_output_holds_no_token_and_no_key(kube_fleet: tuple[Path, Path]) -> None:
    fleet_dir, identity = kube_fleet
    config = load_fleet(fleet_dir)
    key = token_key(config, SecretResolver(config, identity))
    assert key is not None
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    text = hubfleet("plan", fleet=fleet_dir, env=env, check=True).stdout
    shown = text + hubfleet("plan", "--format", "json", fleet=fleet_dir, env=env, check=True).stdout
    assert "example-staging" in shown
    secrets_shown = [key, *derive(key, "example-staging").values(), *derive(key, "example").values()]
    assert not [value for value in secrets_shown if value in shown]


def test_a_key_this_identity_cannot_read_is_a_clear_error(
    kube_fleet: tuple[Path, Path], tmp_path: Path
) -> None:
    fleet_dir, _identity = kube_fleet
    config = load_fleet(fleet_dir)
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(age.generate()[0])
    with pytest.raises(UserError) as caught:
        token_key(config, SecretResolver(config, stranger))
    message = str(caught.value)
    assert "service_token_key" in message and "not encrypted to this key" in message
    assert "hubfleet secrets rekey" in message


def test_a_short_key_is_refused_and_a_fleet_without_key_is_warned(tmp_path: Path) -> None:
    identity = tmp_path / "age-identity.txt"
    fleet_dir = tmp_path / "fleet"
    scaffold(fleet_dir, cluster="aws", identity=identity)
    recipient = age.load_identity(identity).recipients
    set_fleet_secret(fleet_dir, "service_token_key", "short", recipient)
    config = load_fleet(fleet_dir)
    with pytest.raises(UserError, match="shorter than 32 characters.*secrets set --fleet-level"):
        token_key(config, SecretResolver(config, identity))

    text = (fleet_dir / "fleet.yaml").read_text()
    (fleet_dir / "fleet.yaml").write_text(text.replace("service_token_key: {secret: service_token_key}", ""))
    (warning,) = token_key_warnings(load_fleet_files(fleet_dir)[0])
    assert "warning:" in str(warning) and "service_token_key" in str(warning)
    assert token_key(load_fleet(fleet_dir), SecretResolver(load_fleet(fleet_dir), identity)) is None
    assert "no service_token_key" in hubfleet("validate", fleet=fleet_dir, check=True).stderr


def test_a_new_key_changes_every_hubs_hash_so_a_push_redeploys_them(tmp_path: Path) -> None:
    """Rotation: `hubfleet secrets set --fleet-level service_token_key`, then a push deploys every hub."""
    identity = tmp_path / "age-identity.txt"
    fleet_dir = tmp_path / "fleet"
    scaffold(fleet_dir, cluster="azure", identity=identity)
    config = load_fleet(fleet_dir)
    before = {name: KubernetesBackend(config, tmp_path, SecretResolver(config, identity)).config_hash(hub)
              for name, hub in config.hubs.items()}  # fmt: skip
    again = KubernetesBackend(config, tmp_path / "other", SecretResolver(config, identity))
    assert {name: again.config_hash(hub) for name, hub in config.hubs.items()} == before  # any machine
    set_fleet_secret(fleet_dir, "service_token_key", "r" * 64, age.load_identity(identity).recipients)
    rotated = load_fleet(fleet_dir)
    backend = KubernetesBackend(rotated, tmp_path, SecretResolver(rotated, identity))
    after = {name: backend.config_hash(hub) for name, hub in rotated.hubs.items()}
    assert set(after) == set(before) and all(after[name] != before[name] for name in before)
