# ruff: noqa: E501 - the expected error lines are kept whole, as the user sees them
"""fleet.yaml `front_door` in validation: the cross-file rules of config/rules_front_door.py (and the local hub
`domain` rule of rules_hubs), each on a real fleet directory run through the real loader, with the exact
`file:line:col` and message; and the URLs FleetConfig derives for a valid fleet with a front door."""

from __future__ import annotations

from pathlib import Path

from pyrage import x25519

from fleet_helpers import edit, hubfleet
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.secrets.store import fleet_secret_keys, set_fleet_secret, set_secret

STAGING = "communities/uni/hubs/staging.yaml"
PROD = "communities/uni/hubs/prod.yaml"
DUMMY_AUTH = "auth:\n  type: dummy\n  password: demo\n  admin_users: [grace]\n"
NATIVE_AUTH = "auth:\n  type: native\n  admin_users: [grace]\n"
GITHUB_AUTH = (
    "auth:\n  type: github\n  client_id: Iv1.0123456789abcdef\n  client_secret: {secret: client_secret}\n"
    "  admin_users: [grace]\n  allowed_users: [alice]\n"
)
FRONT_DOOR = """front_door:
  domain: hubs.example.org
  console_domain: console.example.org
  certificates:
    internal: true
"""
NO_FRONT_DOOR_MESSAGE = (
    "domain: hubs on local cluster 'local' are served on 127.0.0.1:<port> only, as fleet.yaml has no front "
    "door; add a `front_door` block to fleet.yaml (see docs/front-door.md) to serve this hub at "
    "https://uni.example.org, or remove domain"
)


def hub_yaml(name: str, stage: str, port: int, auth: str, domain: str | None = None) -> str:
    """A hub file: name, community, cluster, stage, port on lines 1-5, `domain` on line 6 when given."""
    text = f"name: {name}\ncommunity: uni\ncluster: local\nstage: {stage}\nport: {port}\n"
    return text + (f"domain: {domain}\n" if domain else "") + auth


def make_fleet(
    tmp_path: Path,
    extra: str = FRONT_DOOR,
    *,
    staging_domain: str | None = None,
    prod_domain: str | None = "uni.example.org",
    prod_auth: str = NATIVE_AUTH,
    recipient: bool = True,
) -> Path:
    """A fleet of one community with a staging hub (port 18101) and a prod hub (port 18102) on a local
    cluster; `extra` is appended to fleet.yaml; Ada has an age key unless `recipient` is false."""
    root = tmp_path / "fleet"
    (root / "clusters").mkdir(parents=True)
    (root / "communities/uni/hubs").mkdir(parents=True)
    key = f"    age_recipient: {x25519.Identity.generate().to_public()}\n" if recipient else ""
    (root / "fleet.yaml").write_text(
        f"name: fd\noperators:\n  - name: Ada Operator\n    email: ada@example.org\n{key}{extra}"
    )
    (root / "clusters/local.yaml").write_text("name: local\nkind: local\n")
    (root / "communities/uni/community.yaml").write_text("name: uni\n")
    (root / STAGING).write_text(hub_yaml("uni-staging", "staging", 18101, DUMMY_AUTH, staging_domain))
    (root / PROD).write_text(hub_yaml("uni", "prod", 18102, prod_auth, prod_domain))
    if "{secret: client_secret}" in prod_auth:
        set_secret(root, "uni", "client_secret", "the-client-secret")
    return root


def errors(root: Path) -> list[str]:
    return [str(e) for e in validate_fleet(root)[1]]


def position(path: Path, text: str, occurrence: int = 1) -> str:
    """`line:col` of the `occurrence`th line of the file holding `text` (where `text` starts)."""
    found = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    assert len(found) >= occurrence, f"{text!r} not {occurrence} times in {path}"
    n, line = found[occurrence - 1]
    return f"{n}:{line.index(text) + 1}"


def test_valid_fleet_with_front_door_and_its_urls(tmp_path: Path) -> None:
    """Per-hub domain (prod), a hub at a path under the front door's domain (staging), the console's own
    domain, Caddy's internal CA: valid, and every URL as users and the control plane see it."""
    root = make_fleet(tmp_path)
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("fleet 'fd' is valid: ")

    fleet = load_fleet(root)
    staging, prod = fleet.hubs["uni-staging"], fleet.hubs["uni"]
    assert fleet.front_door_site(staging) == ("hubs.example.org", "/uni-staging")
    assert fleet.front_door_site(prod) == ("uni.example.org", "")
    assert fleet.base_path(staging) == "/uni-staging"
    assert fleet.base_path(prod) == ""
    assert fleet.public_url(staging) == "https://hubs.example.org/uni-staging"
    assert fleet.public_url(prod) == "https://uni.example.org"
    assert fleet.internal_url(staging) == "http://127.0.0.1:18101/uni-staging"
    assert fleet.internal_url(prod) == "http://127.0.0.1:18102"
    assert fleet.console_url() == "https://console.example.org"

    # another https port than 443 is part of every public address; internal addresses do not change
    edit(root / "fleet.yaml", "  certificates:", "  http_port: 8080\n  https_port: 8443\n  certificates:")
    fleet = load_fleet(root)
    staging, prod = fleet.hubs["uni-staging"], fleet.hubs["uni"]
    assert fleet.public_url(staging) == "https://hubs.example.org:8443/uni-staging"
    assert fleet.public_url(prod) == "https://uni.example.org:8443"
    assert fleet.internal_url(staging) == "http://127.0.0.1:18101/uni-staging"
    assert fleet.console_url() == "https://console.example.org:8443"


def test_without_front_door_hubs_stay_on_loopback(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, "console:\n  public_url: https://console.example.org\n", prod_domain=None)
    fleet = load_fleet(root)
    prod = fleet.hubs["uni"]
    assert fleet.front_door_site(prod) is None
    assert fleet.public_url(prod) == fleet.internal_url(prod) == "http://127.0.0.1:18102"
    assert fleet.base_path(prod) == ""
    assert fleet.console_url() == "https://console.example.org"


def test_local_hub_domain_needs_a_front_door(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, "")
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{PROD}:6:1: {NO_FRONT_DOOR_MESSAGE}"]


def test_broken_front_door_is_reported_once(tmp_path: Path) -> None:
    """fleet.yaml that does not validate but has a `front_door`: its own error, not also 'no front door'."""
    root = make_fleet(tmp_path, FRONT_DOOR.replace("  domain:", "  domian:"))
    assert errors(root) == [
        f"fleet.yaml:{position(root / 'fleet.yaml', 'domian')}: front_door.domian: unknown key; did you mean 'domain'?"
    ]


def test_path_hub_needs_front_door_domain(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, FRONT_DOOR.replace("  domain: hubs.example.org\n", ""))
    assert errors(root) == [
        f"{STAGING}:1:1: domain: the front door cannot serve hub 'uni-staging': it has no domain and fleet.yaml "
        "sets no `front_door.domain`; add `domain:` to this hub, or `front_door.domain` in fleet.yaml to serve "
        "it at https://DOMAIN/uni-staging/"
    ]
    # a domain of its own is enough
    edit(root / STAGING, "port: 18101\n", "port: 18101\ndomain: staging.uni.example.org\n")
    assert errors(root) == []


def test_hub_domains_differ_from_front_door_names_and_each_other(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, staging_domain="console.example.org", prod_domain="hubs.example.org")
    assert errors(root) == [
        f"{PROD}:6:1: domain: hubs.example.org is fleet.yaml `front_door.domain`, where hubs without a domain "
        "are served (https://hubs.example.org/<hub name>/); give hub 'uni' a domain of its own, or remove "
        "`domain` to serve it at https://hubs.example.org/uni/",
        f"{STAGING}:6:1: domain: console.example.org is fleet.yaml `front_door.console_domain`, where the web "
        "console is served; give hub 'uni-staging' a domain of its own, or remove `domain` to serve it at "
        "https://hubs.example.org/uni-staging/",
    ]
    # local hubs behind a front door share no domain either (rules_hubs.unique_domains)
    root = make_fleet(tmp_path / "same", staging_domain="uni.example.org")
    assert errors(root) == [
        f"{STAGING}:6:1: domain: uni.example.org is already used by hub 'uni' ({PROD}); give each hub its own domain"
    ]


def test_prod_oauth_hub_needs_a_front_door(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, "", prod_domain=None, prod_auth=GITHUB_AUTH)
    assert errors(root) == [
        f"{PROD}:7:3: auth.type: prod hub 'uni' signs in through github, and OAuth providers need an https "
        "callback URL, but hubs on local cluster 'local' are served on 127.0.0.1 only; add a `front_door` "
        "block to fleet.yaml (see docs/front-door.md)"
    ]
    # staging hubs may sign in through OAuth on loopback (providers accept http://127.0.0.1 callbacks)
    edit(root / PROD, "stage: prod", "stage: staging")
    edit(root / PROD, "name: uni\n", "name: uni-oauth-staging\n")
    (root / "communities/uni/secrets/uni.yaml").rename(
        root / "communities/uni/secrets/uni-oauth-staging.yaml"
    )
    (root / PROD).rename(root / "communities/uni/hubs/uni-oauth-staging.yaml")
    assert errors(root) == []


def test_prod_oauth_hub_behind_a_front_door(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, prod_domain=None, prod_auth=GITHUB_AUTH)
    assert errors(root) == []
    fleet = load_fleet(root)
    assert fleet.public_url(fleet.hubs["uni"]) == "https://hubs.example.org/uni"
    # a front door without a site for the hub: reported once, as the missing domain
    edit(root / "fleet.yaml", "  domain: hubs.example.org\n", "")
    assert [e.split(": ", 2)[:2] for e in errors(root)] == [
        [f"{PROD}:1:1", "domain"],
        [f"{STAGING}:1:1", "domain"],
    ]


def test_front_door_ports_are_not_taken(tmp_path: Path) -> None:
    extra = FRONT_DOOR + "  http_port: 18101\n  https_port: 18000\nmonitoring:\n  metrics_port: 18000\n"
    root = make_fleet(tmp_path, extra)
    fleet_yaml = root / "fleet.yaml"
    assert errors(root) == [
        f"fleet.yaml:{position(fleet_yaml, 'http_port')}: front_door.http_port: port 18101 is already used by "
        f"hub 'uni-staging' ({STAGING}); give the front door another port or move that one",
        f"fleet.yaml:{position(fleet_yaml, 'https_port')}: front_door.https_port: port 18000 is already used "
        "by the daemon's console and /metrics (monitoring.metrics_port); give the front door another port or "
        "move that one",
    ]


CERTIFICATE_FILES = """front_door:
  domain: hubs.example.org
  certificates:
    files:
      - certificate: certs/hubs.pem
        key: certs/missing.key
      - certificate: certs
        key: {secret: tls_key}
      - certificate: /nonexistent/hubs.pem
        key: KEY_PATH
"""


def test_certificate_files_exist_and_secrets_are_set(tmp_path: Path) -> None:
    absolute_key = tmp_path / "hubs.key"
    absolute_key.write_text("-----BEGIN PRIVATE KEY-----\n")
    root = make_fleet(tmp_path, CERTIFICATE_FILES.replace("KEY_PATH", str(absolute_key)))
    (root / "certs").mkdir()
    (root / "certs/hubs.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    fleet_yaml = root / "fleet.yaml"
    where = "front_door.certificates.files"
    fix = "or fix the path (relative to the fleet directory, or absolute)"
    assert errors(root) == [
        f"fleet.yaml:{position(fleet_yaml, 'key: certs/missing.key')}: {where}[0].key: 'certs/missing.key' "
        f"not found in the fleet directory; put its private key there {fix}",
        f"fleet.yaml:{position(fleet_yaml, 'certificate: certs', 2)}: {where}[1].certificate: 'certs' is not a "
        f"file; put its PEM certificate chain there {fix}",
        f"fleet.yaml:{position(fleet_yaml, 'key: {secret')}: {where}.1.key: fleet-level secret 'tls_key' is "
        "not set in secrets/fleet.yaml; run `hubfleet secrets set --fleet-level tls_key`",
        f"fleet.yaml:{position(fleet_yaml, 'certificate: /nonexistent')}: {where}[2].certificate: "
        f"'/nonexistent/hubs.pem' not found; put its PEM certificate chain there {fix}",
    ]
    assert fleet_secret_keys(root) == [("tls_key", False, [f"{where}.1.key"])]

    set_fleet_secret(root, "tls_key", "-----BEGIN PRIVATE KEY-----\n")
    assert fleet_secret_keys(root) == [("tls_key", True, [f"{where}.1.key"])]
    (root / "certs/missing.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    edit(fleet_yaml, "- certificate: certs\n", "- certificate: certs/hubs.pem\n")
    edit(fleet_yaml, "certificate: /nonexistent/hubs.pem", "certificate: certs/hubs.pem")
    assert errors(root) == []


def test_front_door_secrets_need_someone_to_decrypt_them(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, CERTIFICATE_FILES.split("      - certificate: /")[0], recipient=False)
    (root / "certs").mkdir()
    (root / "certs/hubs.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (root / "certs/missing.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    edit(root / "fleet.yaml", "- certificate: certs\n", "- certificate: certs/hubs.pem\n")
    assert errors(root) == [
        "fleet.yaml:2:1: operators: hub secrets are in use but no operator has an age_recipient; run "
        "`hubfleet secrets keygen` and add `age_recipient: age1...` to your operator entry",
        f"fleet.yaml:{position(root / 'fleet.yaml', 'key: {secret')}: front_door.certificates.files.1.key: "
        "fleet-level secret 'tls_key' is not set in secrets/fleet.yaml; run "
        "`hubfleet secrets set --fleet-level tls_key`",
    ]


def test_acme_ca_root_exists(tmp_path: Path) -> None:
    extra = FRONT_DOOR.replace(
        "    internal: true\n",
        "    acme:\n      directory: https://ca.internal.example/acme/directory\n      ca_root: ca/root.pem\n",
    )
    root = make_fleet(tmp_path, extra)
    assert errors(root) == [
        f"fleet.yaml:{position(root / 'fleet.yaml', 'ca_root')}: front_door.certificates.acme.ca_root: "
        "'ca/root.pem' not found in the fleet directory; put the CA's root certificate (PEM) there or fix the "
        "path (relative to the fleet directory, or absolute)"
    ]
    (root / "ca").mkdir()
    (root / "ca/root.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert errors(root) == []


def test_console_has_one_address(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, FRONT_DOOR + "console:\n  public_url: https://hubfleet.example.org\n")
    assert errors(root) == [
        f"fleet.yaml:{position(root / 'fleet.yaml', 'public_url')}: console.public_url: "
        "'https://hubfleet.example.org' is not where the front door serves the console "
        "(https://console.example.org, from front_door.console_domain), so it would be ignored; remove "
        "console.public_url"
    ]
    # the same address, written out, is fine
    edit(root / "fleet.yaml", "https://hubfleet.example.org", "https://console.example.org/")
    assert errors(root) == []
    # without console_domain, public_url is the console's address (a TLS proxy of the operator's own)
    edit(root / "fleet.yaml", "  console_domain: console.example.org\n", "")
    edit(root / "fleet.yaml", "https://console.example.org/", "https://hubfleet.example.org")
    assert errors(root) == []
    assert load_fleet(root).console_url() == "https://hubfleet.example.org"


def test_kubernetes_hub_domain_differs_from_front_door_names(tmp_path: Path) -> None:
    """A kubernetes hub is not served by the front door, but its name cannot be the front door's too."""
    root = make_fleet(tmp_path)
    (root / "clusters/k8s.yaml").write_text(
        "name: k8s\nkind: kubernetes\ncredentials:\n  provider: kubeconfig\n  path: kubeconfig\n"
    )
    for name, stage, domain in (
        ("k8s-staging", "staging", "staging.k8s.example.org"),
        ("k8s", "prod", "hubs.example.org"),
    ):
        text = hub_yaml(name, stage, 1, NATIVE_AUTH, domain).replace("cluster: local", "cluster: k8s")
        (root / f"communities/uni/hubs/{name}.yaml").write_text(text.replace("port: 1\n", ""))
    assert errors(root) == [
        "communities/uni/hubs/k8s.yaml:5:1: domain: hubs.example.org is fleet.yaml `front_door.domain`, where "
        "hubs without a domain are served (https://hubs.example.org/<hub name>/); give hub 'k8s' a domain of "
        "its own"
    ]
    # with a name of its own it is valid, and served by its cluster: no front door port, no base path
    edit(root / "communities/uni/hubs/k8s.yaml", "domain: hubs.example.org", "domain: k8s.example.org")
    edit(root / "fleet.yaml", "  certificates:", "  https_port: 8443\n  http_port: 8080\n  certificates:")
    fleet = load_fleet(root)
    k8s = fleet.hubs["k8s"]
    assert fleet.front_door_site(k8s) is None
    assert fleet.public_url(k8s) == "https://k8s.example.org"
    assert fleet.base_path(k8s) == ""
