"""Hub secrets: age-encrypted files, validation without a key, the CLI, rekey, and a scan proving that a
secret value reaches the hub (a real login) and nothing else (outputs, rendered config, state files)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from fleet_helpers import HUBFLEET, copy_demo_fleet, daemon_status, hubfleet, kill_leftovers, new_identity
from hubfleet.backends.local import LocalBackend
from hubfleet.config.secret_refs import SecretOnly, SecretRef
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.render.common import DUMMY_PASSWORD_ENV
from hubfleet.secrets.store import SecretResolver, rekey, set_secret
from hubfleet.settings import UserError

STAGING = "communities/uni-a/hubs/staging.yaml"
SECRETS = "communities/uni-a/secrets/uni-a-staging.yaml"


def add_recipient(root: Path, recipient: str) -> None:
    fleet = root / "fleet.yaml"
    text = fleet.read_text().replace(
        "    email: ada@hubfleet.example\n",
        f"    email: ada@hubfleet.example\n    age_recipient: {recipient}\n",
    )
    fleet.write_text(text)


def use_secret_password(root: Path, key: str = "dummy_password") -> None:
    hub = root / STAGING
    hub.write_text(hub.read_text().replace("  password: demo-staging", f"  password: {{secret: {key}}}"))


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[Path, Path]:
    """A one-hub fleet (uni-a-staging) whose password is {secret: dummy_password}, operator Ada holding
    an age key; returns (fleet root, Ada's identity file)."""
    root = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    identity = tmp_path / "ada.txt"
    add_recipient(root, new_identity(identity))
    use_secret_password(root)
    return root, identity


def errors_of(root: Path) -> list[str]:
    return [str(e) for e in validate_fleet(root)[1]]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- library


def test_set_and_resolve_in_memory(keyed: tuple[Path, Path]) -> None:
    root, identity = keyed
    value = "p@ss [bold]word" + secrets.token_hex(8)
    path = set_secret(root, "uni-a-staging", "dummy_password", value)
    assert path == root / SECRETS
    stored = path.read_text()
    assert value not in stored
    assert re.search(r"(?m)^dummy_password: \|\n  -----BEGIN AGE ENCRYPTED FILE-----$", stored)

    config = load_fleet(root)
    hub = config.hubs["uni-a-staging"]
    assert hub.auth.password == SecretRef(secret="dummy_password")
    resolver = SecretResolver(config, identity)
    assert resolver.resolve(hub, hub.auth.password) == value
    assert resolver.resolve(hub, None) is None
    assert resolver.value("uni-a-staging", "dummy_password") == value
    hashes = resolver.hashes(hub)
    assert set(hashes) == {"dummy_password"} and len(hashes["dummy_password"]) == 64
    for text in (repr(resolver), str(resolver), repr(config.secrets), repr(hub), json.dumps(hashes)):
        assert value not in text


def test_resolver_is_lazy_and_plain_passwords_need_no_identity(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    config = load_fleet(root)
    resolver = SecretResolver(config, tmp_path / "does-not-exist.txt")
    hub = config.hubs["uni-a-staging"]
    assert resolver.resolve(hub, hub.auth.password) == "demo-staging"
    backend = LocalBackend(config, tmp_path / "state", secrets=resolver)
    assert backend.prepare(hub).env[DUMMY_PASSWORD_ENV] == "demo-staging"


def test_set_keeps_other_keys_untouched(keyed: tuple[Path, Path]) -> None:
    root, identity = keyed
    set_secret(root, "uni-a-staging", "dummy_password", "first")
    before = (root / SECRETS).read_text()
    block = before[before.index("dummy_password:") :]
    set_secret(root, "uni-a-staging", "another_key", "second")
    after = (root / SECRETS).read_text()
    assert block in after  # same ciphertext, byte for byte
    resolver = SecretResolver(load_fleet(root), identity)
    assert resolver.value("uni-a-staging", "another_key") == "second"
    assert not list((root / SECRETS).parent.glob(".*tmp"))


def test_secret_only_refuses_plain_text() -> None:
    class WithClientSecret(BaseModel):
        client_secret: SecretOnly

    assert WithClientSecret(client_secret={"secret": "oauth_client"}).client_secret.secret == "oauth_client"
    with pytest.raises(ValidationError, match="must be a secret reference such as"):
        WithClientSecret(client_secret="in-clear")


# --------------------------------------------------------------------------- validation (no key needed)


def test_missing_secret_is_reported_at_the_reference(keyed: tuple[Path, Path]) -> None:
    root, _ = keyed
    assert errors_of(root) == [
        f"{STAGING}:10:3: auth.password: secret 'dummy_password' is not set for hub 'uni-a-staging'; "
        "run `hubfleet secrets set uni-a-staging dummy_password`"
    ]
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{STAGING}:10:3: auth.password: secret 'dummy_password' is not set")


def test_validation_needs_no_identity(keyed: tuple[Path, Path], tmp_path: Path) -> None:
    root, identity = keyed
    set_secret(root, "uni-a-staging", "dummy_password", "x")
    identity.unlink()
    result = hubfleet("validate", fleet=root, env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "dummy_password: hunter2-in-clear\n",
            f"{SECRETS}:1:17: dummy_password: expected an age-encrypted value "
            "(-----BEGIN AGE ENCRYPTED FILE-----); never write a secret in clear: "
            "run `hubfleet secrets set uni-a-staging dummy_password`",
        ),
        (
            "- a list\n",
            f"{SECRETS}:1:1: expected a mapping with keys set with `hubfleet secrets set` "
            "at the top level, got a list",
        ),
        (
            "Bad-Key: CIPHER\n",
            f"{SECRETS}:1:1: 'Bad-Key' is not a valid secret key; use lower-case letters, digits and '_'",
        ),
    ],
    ids=["value in clear", "not a mapping", "bad key"],
)
def test_malformed_secrets_file(keyed: tuple[Path, Path], content: str, expected: str) -> None:
    root, _ = keyed
    set_secret(root, "uni-a-staging", "dummy_password", "x")
    cipher = (root / SECRETS).read_text().split("dummy_password: ", 1)[1]
    (root / SECRETS).write_text(content.replace("CIPHER", cipher))
    errors = errors_of(root)
    assert expected in errors
    assert not any("hunter2" in e for e in errors)


def test_secrets_file_of_unknown_hub(keyed: tuple[Path, Path]) -> None:
    root, _ = keyed
    set_secret(root, "uni-a-staging", "dummy_password", "x")
    (root / SECRETS).rename(root / "communities/uni-a/secrets/uni-a-stagng.yaml")
    errors = errors_of(root)
    assert (
        "communities/uni-a/secrets/uni-a-stagng.yaml:1:1: secrets file of unknown hub 'uni-a-stagng'; "
        "a secrets file is named after a hub of its community (communities/uni-a/hubs/uni-a-stagng.yaml): "
        "rename or delete it; did you mean 'uni-a-staging'?"
    ) in errors


def test_secrets_need_an_operator_recipient(keyed: tuple[Path, Path]) -> None:
    root, _ = keyed
    set_secret(root, "uni-a-staging", "dummy_password", "x")
    fleet = root / "fleet.yaml"
    fleet.write_text(re.sub(r"(?m)^    age_recipient: .*\n", "", fleet.read_text()))
    assert errors_of(root) == [
        "fleet.yaml:5:1: operators: hub secrets are in use but no operator has an age_recipient; "
        "run `hubfleet secrets keygen` and add `age_recipient: age1...` to your operator entry"
    ]


def test_invalid_fleet_file_with_secrets_in_use_is_reported_not_a_traceback(keyed: tuple[Path, Path]) -> None:
    root, _ = keyed
    set_secret(root, "uni-a-staging", "dummy_password", "x")
    fleet = root / "fleet.yaml"
    fleet.write_text(re.sub(r"(?m)^name: .*$", "name: Bad Name", fleet.read_text()))
    assert [e for e in errors_of(root) if e.startswith("fleet.yaml")] == [
        "fleet.yaml:3:7: name: 'Bad Name' is not a valid name; use 1-63 lower-case letters, digits and '-', "
        "starting and ending with a letter or digit"
    ]
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout


def test_recipient_and_reference_are_checked(keyed: tuple[Path, Path]) -> None:
    root, _ = keyed
    fleet = root / "fleet.yaml"
    fleet.write_text(re.sub(r"age_recipient: .*", "age_recipient: age1nope", fleet.read_text()))
    use_secret_password(root)
    hub = root / STAGING
    hub.write_text(hub.read_text().replace("{secret: dummy_password}", "{secret: Bad-Key}"))
    assert errors_of(root) == [
        f"{STAGING}:10:22: auth.password.secret: 'Bad-Key' is not a valid secret key; "
        "use lower-case letters, digits and '_'",
        "fleet.yaml:8:20: operators[0].age_recipient: 'age1nope' is not an age X25519 recipient (age1...); "
        "run `hubfleet secrets keygen` and copy the public key it prints",
    ]
    hub.write_text(hub.read_text().replace("{secret: Bad-Key}", "{secrt: x}"))
    assert f"{STAGING}:10:14: auth.password.secrt: unknown key; did you mean 'secret'?" in errors_of(root)


# --------------------------------------------------------------------------- the CLI


def test_cli_round_trip(keyed: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = keyed
    out = tmp_path / "keys" / "me.txt"
    made = subprocess.run(
        [str(HUBFLEET), "secrets", "keygen", "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    recipient = made.stdout.strip()
    assert recipient.startswith("age1") and f"age_recipient: {recipient}" in made.stderr
    # the fleet's first operator has nobody to ask: nothing to rekey yet
    assert "first operator is then done" in made.stderr and "ask an operator" not in made.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [str(HUBFLEET), "secrets", "keygen", "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert "already exists" in one_line_error(again)

    fleet = root / "fleet.yaml"
    fleet.write_text(re.sub(r"age_recipient: .*", f"age_recipient: {recipient}", fleet.read_text()))
    value = "cli-" + secrets.token_urlsafe(16)
    result = hubfleet("secrets", "set", "uni-a-staging", "dummy_password", fleet=root, input=value + "\n")
    assert result.returncode == 0, result.stderr
    assert value not in result.stdout + result.stderr
    assert hubfleet("validate", fleet=root).returncode == 0

    shown = hubfleet("secrets", "show", "uni-a-staging", fleet=root, check=True)
    assert shown.stdout == "dummy_password: ***  # auth.password\n"
    revealed = hubfleet(
        "secrets", "show", "uni-a-staging", "--reveal", "--identity", str(out), fleet=root, check=True
    )
    assert revealed.stdout == f"dummy_password: {value}  # auth.password\n"
    via_env = hubfleet(
        "secrets", "show", "uni-a-staging", "--reveal", fleet=root, env={"HUBFLEET_AGE_IDENTITY": str(out)}
    )
    assert via_env.stdout == revealed.stdout

    bad_key = hubfleet("secrets", "set", "uni-a-staging", "Bad-Key", fleet=root, input="v")
    assert "'Bad-Key' is not a valid secret key" in one_line_error(bad_key)
    unknown = hubfleet("secrets", "set", "uni-a-stagin", "k", fleet=root, input="v")
    assert "did you mean 'uni-a-staging'?" in one_line_error(unknown)
    empty = hubfleet("secrets", "set", "uni-a-staging", "k", fleet=root, input="")
    assert "the value is empty" in one_line_error(empty)


def test_wrong_or_missing_identity(keyed: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = keyed
    set_secret(root, "uni-a-staging", "dummy_password", "the-value")
    other = tmp_path / "other.txt"
    other_recipient = new_identity(other)
    wrong = hubfleet(
        "secrets", "show", "uni-a-staging", "--reveal", fleet=root, env={"HUBFLEET_AGE_IDENTITY": str(other)}
    )
    line = one_line_error(wrong)
    assert line == (
        f"error: cannot decrypt secret 'dummy_password' of hub 'uni-a-staging' with age identity {other} "
        f"(public key {other_recipient}): it was not encrypted to this key; ask an operator to add your "
        "age_recipient to fleet.yaml and run `hubfleet secrets rekey`, or point --identity / "
        "HUBFLEET_AGE_IDENTITY at the right identity"
    )
    missing = hubfleet(
        "secrets", "show", "uni-a-staging", "--reveal", fleet=root, env={"HOME": str(tmp_path)}
    )
    default = tmp_path / ".config/hubfleet/age-identity.txt"
    assert one_line_error(missing).startswith(
        f"error: age identity {default} not found; create one with `hubfleet secrets keygen`"
    )
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    bad = hubfleet("secrets", "show", "uni-a-staging", "--reveal", "--identity", str(garbage), fleet=root)
    assert one_line_error(bad).startswith(f"error: {garbage}:1: not an age identity")
    assert "NOTAKEY" not in bad.stderr
    with pytest.raises(UserError) as caught:
        SecretResolver(load_fleet(root), other).value("uni-a-staging", "dummy_password")
    assert "the-value" not in str(caught.value)


def test_rekey_after_adding_an_operator(keyed: tuple[Path, Path], tmp_path: Path) -> None:
    root, ada = keyed
    value = "rekey-" + secrets.token_hex(8)
    set_secret(root, "uni-a-staging", "dummy_password", value)
    set_secret(root, "uni-a-staging", "spare", "second value")

    bob = tmp_path / "bob.txt"
    bob_recipient = new_identity(bob)
    fleet = root / "fleet.yaml"
    fleet.write_text(
        fleet.read_text().replace(
            "defaults:\n",
            f"  - name: Bob Operator\n    email: bob@hubfleet.example\n    age_recipient: {bob_recipient}\n"
            "defaults:\n",
        )
    )
    assert hubfleet("validate", fleet=root).returncode == 0
    bob_env = {"HUBFLEET_AGE_IDENTITY": str(bob)}
    before = hubfleet("secrets", "show", "uni-a-staging", "--reveal", fleet=root, env=bob_env)
    assert "was not encrypted to this key" in one_line_error(before)

    # Bob cannot rekey (he cannot read the values) and changes nothing trying.
    text = (root / SECRETS).read_text()
    with pytest.raises(UserError, match="was not encrypted to this key"):
        rekey(root, bob)
    assert (root / SECRETS).read_text() == text

    done = hubfleet("secrets", "rekey", "--identity", str(ada), fleet=root, check=True)
    assert done.stdout.splitlines() == [
        f"re-encrypted 2 secret(s) in {SECRETS}",
        "rekeyed 1 file(s); commit them",
    ]
    after = hubfleet("secrets", "show", "uni-a-staging", "--reveal", fleet=root, env=bob_env, check=True)
    assert after.stdout.splitlines() == [
        f"dummy_password: {value}  # auth.password",
        "spare: second value  # unused",
    ]
    # Ada still reads them, and a CI key added later gets them after the next rekey.
    ci = tmp_path / "ci.txt"
    fleet.write_text(fleet.read_text() + f"ci_recipients:\n  - {new_identity(ci)}\n")
    rekey(root, ada)
    for who in (ada, bob, ci):
        assert SecretResolver(load_fleet(root), who).value("uni-a-staging", "spare") == "second value"


# --------------------------------------------------------------------------- the scan


def scan_files(root: Path, value: str) -> list[str]:
    """Every file under root holding the value (as bytes: sqlite and logs included)."""
    needle = value.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.integration
def test_secret_scan(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    identity = tmp_path / "ada.txt"
    add_recipient(root, new_identity(identity))
    use_secret_password(root)
    value = "hf-" + secrets.token_urlsafe(24)
    home = {"HOME": str(tmp_path)}  # no default identity: only HUBFLEET_AGE_IDENTITY works
    with_key = {**home, "HUBFLEET_AGE_IDENTITY": str(identity)}
    outputs: dict[str, str] = {}

    def run(label: str, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
        result = hubfleet(*args, fleet=root, env=env, check=check)
        outputs[label] = result.stdout + result.stderr
        return result

    outputs["set"] = hubfleet(
        "secrets", "set", "uni-a-staging", "dummy_password", fleet=root, input=value, check=True
    ).stdout
    run("validate", "validate", env=home)
    run("show", "secrets", "show", "uni-a-staging", env=with_key)
    run("status stopped", "status", "--json", env=with_key)

    config = load_fleet(root)
    hub = config.hubs["uni-a-staging"]
    backend = LocalBackend(config, root / ".hubfleet", secrets=SecretResolver(config, identity))
    prepared = backend.prepare(hub)
    assert prepared.env[DUMMY_PASSWORD_ENV] == value  # decrypted, in memory only
    rendered = getattr(prepared, "rendered", None) or prepared.config_path.read_text()
    outputs["render"] = backend.render(hub)
    outputs["prepared"] = f"{rendered}\n{prepared!r}\n{prepared}\n{prepared.config_hash}"
    outputs["backend"] = f"{backend.secrets!r} {backend.config_hash(hub)} {backend.secrets.hashes(hub)}"

    no_key = run("up without identity", "up", "--detach", env=home, check=False)
    assert "age identity" in one_line_error(no_key)
    assert not (root / ".hubfleet" / "daemon.json").exists()
    try:
        run("up", "up", "--detach", env=with_key)
        url = daemon_status(root)["hubs"]["uni-a-staging"]["url"]
        for password, expect_login in ((value, True), (value + "x", False)):
            with httpx.Client(base_url=url, timeout=30) as client:
                client.get("/hub/login").raise_for_status()
                xsrf = client.cookies.get("_xsrf")
                assert xsrf
                response = client.post(
                    "/hub/login",
                    data={"username": "grace", "password": password, "_xsrf": xsrf},
                    follow_redirects=False,
                )
                logged_in = response.status_code == 302 and any(
                    name.startswith("jupyterhub-") for name in client.cookies
                )
                assert logged_in is expect_login, (response.status_code, dict(client.cookies))
        run("status running", "status", "--json", env=with_key)
    finally:
        run("down", "down", env=with_key, check=False)
        leaks = kill_leftovers(root)
    assert not leaks, f"processes left after down: {leaks}"

    assert (root / ".hubfleet" / "hubs" / "uni-a-staging" / "hub.log").is_file()
    assert list((root / ".hubfleet").glob("*.sqlite*")) or list((root / ".hubfleet").glob("*.db"))
    leaked = {label: True for label, text in outputs.items() if value in text}
    assert not leaked, f"the secret appeared in: {sorted(leaked)}"
    assert scan_files(root, value) == []
