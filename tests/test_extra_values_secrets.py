"""`{secret: KEY}` inside `kubernetes.extra_values`: checked at validate, never in the public values, in the
secret values document (and its placeholders), and at deploy only in the 0600 secret values file.

The fleet is a copy of tests/fixtures/k8s-fleet; secrets are set with the real `hubfleet secrets set` (real
age encryption) and read back by the real resolver. No cluster exists here: the deploy runs against the fake
helm/kubectl/gcloud of tests/test_render_kubernetes.py (`fake_tools`), which record the files helm was given.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

from fleet_helpers import edit, hubfleet
from hubfleet.backends.kubernetes import KubernetesBackend
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.render.kubernetes import flatten_secrets, secret_placeholders, secret_values, values_yaml
from hubfleet.secrets.store import SecretResolver
from test_render_kubernetes import fake_tools  # noqa: F401 - the fixture

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "k8s-fleet"
IDENTITY = HERE / "fixtures" / "k8s-fleet.age-identity.txt"
PROD = "communities/physics/hubs/prod.yaml"
COMMUNITY = "communities/physics/community.yaml"
DB_PASSWORD = "s3cret-db-Pa55"
API_TOKEN = "tok-0123456789abcdef"


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    shutil.copytree(FIXTURE, root)
    edit(
        root / PROD,
        "extra_config: |",
        "  extra_values:\n    singleuser:\n      extraEnv:\n        DB_HOST: db.physics.example.org\n"
        "        DB_PASSWORD: {secret: db_password}\nextra_config: |",
    )
    (root / COMMUNITY).write_text(
        (root / COMMUNITY).read_text()
        + "defaults:\n  kubernetes:\n    extra_values:\n      hub:\n        extraEnv:\n"
        "          API_TOKEN: {secret: api_token}\n"
    )
    return root


def env() -> dict[str, str]:
    return {"HUBFLEET_AGE_IDENTITY": str(IDENTITY)}


def set_secret(root: Path, hub: str, key: str, value: str) -> None:
    hubfleet("secrets", "set", hub, key, fleet=root, input=value + "\n", env=env(), check=True)


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def set_all(root: Path) -> None:
    set_secret(root, "physics", "db_password", DB_PASSWORD)
    set_secret(root, "physics", "api_token", API_TOKEN)
    set_secret(root, "physics-staging", "api_token", "staging-token")


def test_unset_keys_are_refused_at_validate_where_they_are_written(fleet_dir: Path) -> None:
    result = hubfleet("validate", fleet=fleet_dir)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    db_line = line_of(fleet_dir / PROD, "DB_PASSWORD")
    token_line = line_of(fleet_dir / COMMUNITY, "API_TOKEN")
    assert (
        f"{PROD}:{db_line}:9: kubernetes.extra_values.singleuser.extraEnv.DB_PASSWORD: secret 'db_password' "
        "is not set for hub 'physics'; run `hubfleet secrets set physics db_password`"
    ) in output
    for hub in ("physics", "physics-staging"):  # the community's defaults reach both of its hubs
        assert (
            f"{COMMUNITY}:{token_line}:11: kubernetes.extra_values.hub.extraEnv.API_TOKEN: "
            f"secret 'api_token' is not set for hub '{hub}'; run `hubfleet secrets set {hub} api_token`"
        ) in output
    set_all(fleet_dir)
    assert hubfleet("validate", fleet=fleet_dir).returncode == 0


def test_public_values_never_hold_the_secret(fleet_dir: Path) -> None:
    set_all(fleet_dir)
    public = hubfleet("render", "physics", fleet=fleet_dir, check=True).stdout
    assert (
        DB_PASSWORD not in public and API_TOKEN not in public and "secret" not in public.split("# Secrets")[0]
    )
    values = yaml.safe_load(public)
    assert values["singleuser"]["extraEnv"] == {"DB_HOST": "db.physics.example.org"}
    assert "API_TOKEN" not in values["hub"].get("extraEnv", {})

    config = load_fleet(fleet_dir)
    hub = config.hubs["physics"]
    resolver = SecretResolver(config, IDENTITY)
    secret = secret_values(config, hub, resolver)
    assert secret["singleuser"]["extraEnv"] == {"DB_PASSWORD": DB_PASSWORD}
    assert secret["hub"]["extraEnv"] == {"API_TOKEN": API_TOKEN}
    placeholders = secret_placeholders(config, hub)
    assert placeholders["singleuser"]["extraEnv"] == {
        "DB_PASSWORD": "<set: secret 'db_password' of hub physics>"
    }
    assert placeholders["hub"]["extraEnv"] == {"API_TOKEN": "<set: secret 'api_token' of hub physics>"}
    assert DB_PASSWORD in flatten_secrets(secret).values()  # what logs and captured output redact


def test_config_hash_covers_the_secret_without_holding_it(fleet_dir: Path, tmp_path: Path) -> None:
    set_all(fleet_dir)
    config = load_fleet(fleet_dir)
    backend = KubernetesBackend(config, tmp_path / "state", SecretResolver(config, IDENTITY))
    before, rendered = backend.config_hash(config.hubs["physics"]), backend.render(config.hubs["physics"])
    assert DB_PASSWORD not in rendered
    set_secret(fleet_dir, "physics", "db_password", "rotated-db-pw")
    config = load_fleet(fleet_dir)
    backend = KubernetesBackend(config, tmp_path / "state", SecretResolver(config, IDENTITY))
    assert backend.render(config.hubs["physics"]) == rendered  # the public values did not change...
    assert backend.config_hash(config.hubs["physics"]) != before  # ...but the rotated secret is deployed


def test_deploy_writes_the_secret_only_to_the_private_file(
    fleet_dir: Path,
    tmp_path: Path,
    fake_tools,  # noqa: F811
) -> None:
    """Fake helm/kubectl/gcloud record the values files helm was given (no cluster here)."""
    set_all(fleet_dir)
    config = load_fleet(fleet_dir)
    backend = KubernetesBackend(config, tmp_path / "state", SecretResolver(config, IDENTITY))
    result = asyncio.run(backend.apply(config.hubs["physics"]))
    assert result.ok, result
    upgrade = next(c for c in fake_tools() if c["argv"][:2] == ["helm", "upgrade"])
    values_path, secret_path = upgrade["argv"][-3], upgrade["argv"][-1]
    files = upgrade["files"]
    assert files[secret_path]["mode"] == "0o600"
    secret_doc = yaml.safe_load(files[secret_path]["text"])
    assert secret_doc["singleuser"]["extraEnv"]["DB_PASSWORD"] == DB_PASSWORD
    assert secret_doc["hub"]["extraEnv"]["API_TOKEN"] == API_TOKEN
    assert DB_PASSWORD not in files[values_path]["text"] and API_TOKEN not in files[values_path]["text"]
    assert files[values_path]["text"] == values_yaml(config, config.hubs["physics"])
    assert not Path(secret_path).exists()
    log = "\n".join(str(c) for c in fake_tools() if "files" not in c)
    assert DB_PASSWORD not in log


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "{secret: Db-Password}",
            "kubernetes.extra_values: singleuser.extraEnv.DB_PASSWORD: 'Db-Password' is not a valid "
            "secret key; use lower-case letters, digits and '_'",
        ),
        (
            "[{name: X, value: {secret: db_password}}]",
            "kubernetes.extra_values: singleuser.extraEnv.DB_PASSWORD: a {secret: KEY} inside a list "
            "cannot be kept out of the public values (helm replaces lists whole)",
        ),
    ],
)
def test_bad_references_are_refused(fleet_dir: Path, value: str, message: str) -> None:
    edit(fleet_dir / PROD, "DB_PASSWORD: {secret: db_password}", f"DB_PASSWORD: {value}")
    _, errors = validate_fleet(fleet_dir)
    line = line_of(fleet_dir / PROD, "extra_values")
    assert any(e.file == PROD and e.line == line + 1 and e.message.startswith(message) for e in errors), (
        errors
    )
