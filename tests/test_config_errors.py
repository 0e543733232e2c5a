# ruff: noqa: E501 - the expected error lines are kept whole, as the user sees them
"""A table of broken fleets: copy the demo fleet, change one file, expect these exact error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_helpers import copy_demo_without_front_door
from hubfleet.config.fleet import FleetInvalid
from hubfleet.config.validate import load_fleet, validate_fleet


def broken_fleet(tmp_path: Path, rel: str, change: tuple[str, str] | str | bytes) -> Path:
    """A copy of the demo fleet with `rel` changed: (old, new) replaces text once; str/bytes is the new content."""
    root = tmp_path / "fleet"
    copy_demo_without_front_door(root)
    path = root / rel
    if isinstance(change, tuple):
        text = path.read_text()
        assert change[0] in text, f"{change[0]!r} not in {rel}"
        path.write_text(text.replace(change[0], change[1], 1))
    elif isinstance(change, bytes):
        path.write_bytes(change)
    else:
        path.write_text(change)
    return root


CASES = [
    pytest.param(
        "communities/uni-a/hubs/staging.yaml",
        ("  password: demo-staging", "  pasword: demo-staging"),
        [
            "communities/uni-a/hubs/staging.yaml:10:3: auth.pasword: unknown key; did you mean 'password'?",
        ],
        id="misspelt key",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("max_users:", "max_user:"),
        [
            "communities/uni-a/hubs/prod.yaml:11:1: max_user: unknown key; did you mean 'max_users'?",
        ],
        id="misspelt top-level key",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("max_users: 100", "max_users: 100\nflavour: vanilla"),
        [
            "communities/uni-a/hubs/prod.yaml:12:1: flavour: unknown key; allowed keys: auth, resources, culling, max_users, default_ui, jupyterhub_version, kubernetes, environments, user_database, branding, anomalies, backup, home_quota, spawner, name, display_name, community, cluster, stage, port, domain, extra_config, allow_overrides, events",
        ],
        id="unknown key without suggestion",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("stage: prod", "stage: production"),
        [
            "communities/uni-a/hubs/prod.yaml:6:8: stage: 'production' is not one of: staging, prod",
        ],
        id="literal",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("port: 18002", "port: lots"),
        [
            "communities/uni-a/hubs/prod.yaml:7:7: port: expected a whole number, got text ('lots')",
        ],
        id="wrong type int",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("admin_users: [grace]", "admin_users: grace"),
        [
            "communities/uni-a/hubs/prod.yaml:10:16: auth.admin_users: expected a list, got text ('grace')",
        ],
        id="wrong type list",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("admin_users: [grace]", "admin_users: [grace, 'a b']"),
        [
            "communities/uni-a/hubs/prod.yaml:10:24: auth.admin_users[1]: 'a b' is not a valid username; no spaces or '/'",
        ],
        id="bad item in list",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("type: native", "type: gitlab"),
        [
            "communities/uni-a/hubs/prod.yaml:9:9: auth.type: 'gitlab' is not one of: dummy, native, cilogon, github, oidc, tmp",
        ],
        id="unknown auth type",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("  type: native\n", ""),
        [
            "communities/uni-a/hubs/prod.yaml:8:1: auth.type: required key missing; one of: dummy, native, cilogon, github, oidc, tmp",
        ],
        id="missing auth type",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("name: uni-a\n", ""),
        [
            "communities/uni-a/hubs/prod.yaml:2:1: name: required key missing",
        ],
        id="missing required key",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("name: uni-a\n", "name:\n"),
        [
            "communities/uni-a/hubs/prod.yaml:2:1: name: expected text, got nothing (null)",
        ],
        id="null value",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("name: uni-a\n", "name: Uni A\n"),
        [
            "communities/uni-a/hubs/prod.yaml:2:7: name: 'Uni A' is not a valid name; use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit",
        ],
        id="bad name",
    ),
    pytest.param(
        "communities/hackweek/hubs/prod.yaml",
        ("timeout: 1800", "timeout: 5"),
        [
            "communities/hackweek/hubs/prod.yaml:15:12: culling.timeout: must be at least 60, got 5",
        ],
        id="number too small",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("memory_limit: 2G", "memory_limit: 2 gigs"),
        [
            "communities/uni-a/hubs/prod.yaml:13:17: resources.memory_limit: '2 gigs' is not a memory size; write a number with K, M, G or T, such as 2G",
        ],
        id="memory size",
    ),
    pytest.param(
        "communities/hackweek/hubs/prod.yaml",
        ("c.JupyterHub.shutdown_on_logout = False", "c.JupyterHub.shutdown_on_logout = "),
        [
            "communities/hackweek/hubs/prod.yaml:16:15: extra_config: is not valid Python: invalid syntax (line 1 of extra_config)",
        ],
        id="extra_config not python",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("auth:\n  type: native\n  admin_users: [grace]\n", "auth: native\n"),
        [
            "communities/uni-a/hubs/prod.yaml:8:7: auth: expected a mapping, got text ('native')",
        ],
        id="auth not a mapping",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("max_users: 100", "max_users: 100\nmax_users: 3"),
        [
            "communities/uni-a/hubs/prod.yaml:12:1: duplicate key 'max_users'; keep only one of them",
        ],
        id="duplicate key",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("max_users: 100", "max_users: [100"),
        [
            "communities/uni-a/hubs/prod.yaml:11:12: invalid YAML: this list is never closed; add the missing `]` (the parser stopped at line 12: expected ',' or ']', but got ':')",
        ],
        id="yaml syntax error",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("name: uni-a", "name: [uni-a"),
        [
            "communities/uni-a/hubs/prod.yaml:2:7: invalid YAML: this list is never closed; add the missing `]` (the parser stopped at line 3: expected ',' or ']', but got ':')",
        ],
        id="unclosed list",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("  admin_users: [grace]", "  admin_users: {grace: 1"),
        [
            "communities/uni-a/hubs/prod.yaml:10:16: invalid YAML: this mapping is never closed; add the missing `}` (the parser stopped at line 11: expected ',' or '}', but got ':')",
        ],
        id="unclosed mapping",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("memory_limit: 2G", "memory_limit: {2G"),
        [
            "communities/uni-a/hubs/prod.yaml:13:17: invalid YAML: this mapping is never closed; add the missing `}` (the parser reached the end of the file)",
        ],
        id="unclosed mapping at the end of the file",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("display_name: University A", "display_name: 'University A"),
        [
            "communities/uni-a/hubs/prod.yaml:3:15: invalid YAML: this string is never closed; add the missing `'` (the parser reached the end of the file)",
        ],
        id="unclosed single quote",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("stage: prod", 'stage: "prod'),
        [
            'communities/uni-a/hubs/prod.yaml:6:8: invalid YAML: this string is never closed; add the missing `"` (the parser reached the end of the file)',
        ],
        id="unclosed double quote",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("max_users: 100", "max_users: [100, {a: 1]"),
        [
            "communities/uni-a/hubs/prod.yaml:11:23: invalid YAML: expected ',' or '}', but got ']' (while parsing a flow mapping)",
        ],
        id="yaml syntax error within one line",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("stage: prod", "stage: prod\n\tfoo: 1"),
        [
            "communities/uni-a/hubs/prod.yaml:7:1: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next token)",
        ],
        id="tab indentation",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        "",
        [
            "communities/uni-a/hubs/prod.yaml:1:1: file is empty; expected a mapping with keys name, community, cluster, stage",
        ],
        id="empty file",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        "# nothing here\n",
        [
            "communities/uni-a/hubs/prod.yaml:1:1: file is empty; expected a mapping with keys name, community, cluster, stage",
        ],
        id="only comments",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        "- name: uni-a\n",
        [
            "communities/uni-a/hubs/prod.yaml:1:1: expected a mapping with keys name, community, cluster, stage at the top level, got a list",
        ],
        id="top level list",
    ),
    pytest.param(
        "clusters/local.yaml",
        "local\n",
        [
            "clusters/local.yaml:1:1: expected a mapping with keys name, kind at the top level, got text ('local')",
        ],
        id="top level scalar",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        b"name: \xff\n",
        [
            "communities/uni-a/hubs/prod.yaml:1:7: file is not UTF-8 text; save it as UTF-8",
        ],
        id="not utf-8",
    ),
    pytest.param(
        "fleet.yaml",
        ("cpu_limit: 1", "cpu_limit: 1\n    cpus: 2"),
        [
            "fleet.yaml:15:5: defaults.resources.cpus: unknown key; allowed keys: memory_limit, cpu_limit, memory_guarantee, cpu_guarantee, "
            "process_limit",
        ],
        id="defaults unknown key",
    ),
    pytest.param(
        "fleet.yaml",
        ("cpu_limit: 1", "cpu_limit: -1"),
        [
            "fleet.yaml:14:16: defaults.resources.cpu_limit: must be greater than 0, got -1",
        ],
        id="defaults bad value",
    ),
    pytest.param(
        "fleet.yaml",
        ("ada@hubfleet.example", "ada"),
        [
            "fleet.yaml:7:12: operators[0].email: 'ada' is not an email address",
        ],
        id="operator email",
    ),
    pytest.param(
        "fleet.yaml",
        ("name: demo\n", ""),
        [
            "fleet.yaml:3:1: name: required key missing",
        ],
        id="fleet missing name",
    ),
    pytest.param(
        "clusters/local.yaml",
        ("kind: local", "kind: k8s"),
        [
            "clusters/local.yaml:3:7: kind: 'k8s' is not one of: local, kubernetes",
        ],
        id="cluster kind",
    ),
    pytest.param(
        "clusters/local.yaml",
        ("kind: local", "kind: kubernetes"),
        [
            "clusters/local.yaml:2:1: credentials: required key missing; a mapping with `provider:` one of gcp, aws, azure, kubeconfig",
        ],
        id="kubernetes cluster needs credentials",
    ),
    pytest.param(
        "clusters/local.yaml",
        "name: local\nkind: kubernetes\ncredentials:\n  provider: gcp\n  project: p\n  zon: z\n  cluster: c\n",
        [
            "clusters/local.yaml:3:1: credentials.zone: required key missing",
            "clusters/local.yaml:6:3: credentials.zon: unknown key; did you mean 'zone'?",
        ],
        id="credentials misspelt",
    ),
    pytest.param(
        "communities/uni-a/community.yaml",
        ("name: uni-a", "name: uni-b"),
        [
            "communities/uni-a/community.yaml:2:7: name: 'uni-b' must equal the directory name 'uni-a'; rename the directory or the community",
        ],
        id="community name differs from dir",
    ),
    pytest.param(
        "communities/uni-a/community.yaml",
        ("grace@uni-a.example", "grace"),
        [
            "communities/uni-a/community.yaml:40:12: contacts[0].email: 'grace' is not an email address",
        ],
        id="community contact email",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("cluster: local", "cluster: locl"),
        [
            "communities/uni-a/hubs/prod.yaml:5:1: cluster: unknown cluster 'locl'; did you mean 'local'?",
        ],
        id="unknown cluster",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("community: uni-a", "community: uni-b"),
        [
            "communities/uni-a/hubs/prod.yaml:4:1: community: unknown community 'uni-b'; did you mean 'uni-a'?",
        ],
        id="unknown community",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("community: uni-a", "community: hackweek"),
        [
            "communities/uni-a/hubs/prod.yaml:4:1: community: 'hackweek' does not match the directory communities/uni-a/; set `community: uni-a` or move the file to communities/hackweek/hubs/",
        ],
        id="community of another directory",
    ),
    pytest.param(
        "communities/hackweek/hubs/prod.yaml",
        ("name: hackweek\n", "name: uni-a\n"),
        [
            "communities/uni-a/hubs/prod.yaml:2:1: name: hub name 'uni-a' is already used by communities/hackweek/hubs/prod.yaml; hub names must be unique in the fleet",
        ],
        id="duplicate hub name",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("port: 18002", "port: 18001"),
        [
            "communities/uni-a/hubs/staging.yaml:7:1: port: 18001 is already used by hub 'uni-a' (communities/uni-a/hubs/prod.yaml); give each hub its own port",
        ],
        id="duplicate port",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("port: 18002\n", ""),
        [
            "communities/uni-a/hubs/prod.yaml:2:1: port: required for hubs on local cluster 'local'; add `port: <1024-65535>`",
        ],
        id="local hub without port",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("port: 18002", "port: 18002\ndomain: hub.example.org"),
        [
            "communities/uni-a/hubs/prod.yaml:8:1: domain: hubs on local cluster 'local' are served on "
            "127.0.0.1:<port> only, as fleet.yaml has no front door; add a `front_door` block to fleet.yaml "
            "(see docs/front-door.md) to serve this hub at https://hub.example.org, or remove domain",
        ],
        id="local hub with domain",
    ),
    pytest.param(
        "communities/uni-a/hubs/staging.yaml",
        ("cluster: local", "cluster: other"),
        [
            "communities/uni-a/hubs/prod.yaml:6:1: stage: prod hub 'uni-a' needs a staging hub of community 'uni-a' on cluster 'local' to deploy to first; add one in communities/uni-a/hubs/, or name a staging hub of the cluster in clusters/local.yaml (`staging_hub: NAME`)",
            "communities/uni-a/hubs/staging.yaml:5:1: cluster: unknown cluster 'other'; known clusters: local",
        ],
        id="prod without staging on same cluster",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("admin_users: [grace]", "admin_users: []"),
        [
            "communities/uni-a/hubs/prod.yaml:10:3: auth.admin_users: hub 'uni-a' has no admin users; list at least one",
        ],
        id="empty admin list",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("auth:\n  type: native\n  admin_users: [grace]\n", ""),
        [
            "communities/uni-a/hubs/prod.yaml:2:1: auth: hub 'uni-a' has no auth; set `auth:` in the hub file or in `defaults` in fleet.yaml",
        ],
        id="no auth",
    ),
    pytest.param(
        "communities/uni-a/hubs/prod.yaml",
        ("type: native", "type: dummy"),
        [
            "communities/uni-a/hubs/prod.yaml:9:3: auth.type: dummy auth is refused on prod hub 'uni-a'; use `type: native`",
        ],
        id="dummy auth on prod",
    ),
]


@pytest.mark.parametrize(("rel", "change", "expected"), CASES)
def test_broken_config(tmp_path: Path, rel: str, change, expected: list[str]) -> None:
    root = broken_fleet(tmp_path, rel, change)
    config, errors = validate_fleet(root)
    assert config is None
    assert [str(e) for e in errors] == expected
    with pytest.raises(FleetInvalid) as info:
        load_fleet(root)
    assert [str(e) for e in info.value.errors] == expected


def test_every_error_is_reported_in_one_run(tmp_path: Path) -> None:
    root = broken_fleet(tmp_path, "communities/uni-a/hubs/prod.yaml", ("stage: prod", "stage: production"))
    (root / "communities/hackweek/hubs/staging.yaml").write_text("name: [\n")
    (root / "clusters/local.yaml").write_text("name: local\nkind: local\ncolour: blue\n")
    _, errors = validate_fleet(root)
    assert [e.file for e in errors] == [
        "clusters/local.yaml",
        "communities/hackweek/hubs/staging.yaml",
        "communities/uni-a/hubs/prod.yaml",
    ]


def test_missing_fleet_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    _, errors = validate_fleet(missing)
    assert [str(e) for e in errors] == [
        f"{missing}:1:1: fleet directory not found; pass --fleet DIR pointing at a directory with fleet.yaml"
    ]


def test_missing_fleet_yaml(tmp_path: Path) -> None:
    root = broken_fleet(tmp_path, "fleet.yaml", "")
    (root / "fleet.yaml").unlink()
    _, errors = validate_fleet(root)
    assert [str(e) for e in errors] == [
        "fleet.yaml:1:1: file not found; create it with at least `name: <fleet-name>`"
    ]


def test_no_clusters(tmp_path: Path) -> None:
    root = broken_fleet(tmp_path, "fleet.yaml", ("name: demo", "name: demo"))
    (root / "clusters/local.yaml").unlink()
    _, errors = validate_fleet(root)
    assert [str(e) for e in errors] == [
        "clusters/:1:1: no cluster defined; add a file such as clusters/local.yaml "
        "with `name: local` and `kind: local`"
    ]


def test_community_directory_without_community_yaml(tmp_path: Path) -> None:
    root = broken_fleet(tmp_path, "fleet.yaml", ("name: demo", "name: demo"))
    (root / "communities/uni-a/community.yaml").unlink()
    _, errors = validate_fleet(root)
    assert [str(e) for e in errors] == [
        "communities/uni-a/community.yaml:1:1: file not found; every community directory needs one, "
        "with at least `name: uni-a`"
    ]


def test_stray_files_are_reported(tmp_path: Path) -> None:
    root = broken_fleet(tmp_path, "fleet.yaml", ("name: demo", "name: demo"))
    (root / "communities/extra.yaml").write_text("name: extra\n")
    (root / "communities/uni-a/prod.yaml").write_text("name: x\n")
    _, errors = validate_fleet(root)
    assert [str(e) for e in errors] == [
        "communities/extra.yaml:1:1: files here are ignored; a community is a directory: "
        "move this to communities/<name>/community.yaml",
        "communities/uni-a/prod.yaml:1:1: files here are ignored; put hub files in communities/uni-a/hubs/",
    ]


def test_hidden_files_and_state_dir_are_ignored(tmp_path: Path) -> None:
    root = broken_fleet(tmp_path, "fleet.yaml", ("name: demo", "name: demo"))
    (root / ".hubfleet").mkdir()
    (root / ".hubfleet/state.yaml").write_text("garbage: [\n")
    (root / "clusters/.swap.yaml").write_text("garbage: [\n")
    (root / "communities/.git").mkdir()
    (root / "communities/uni-a/hubs/.prod.yaml.swp").write_text("x")
    config, errors = validate_fleet(root)
    assert errors == []
    assert len(config.hubs) == 4


def test_unreadable_file(tmp_path: Path) -> None:
    root = broken_fleet(tmp_path, "fleet.yaml", ("name: demo", "name: demo"))
    (root / "clusters/dangling.yaml").symlink_to(root / "nowhere.yaml")
    _, errors = validate_fleet(root)
    assert [str(e) for e in errors] == [
        "clusters/dangling.yaml:1:1: cannot read file: No such file or directory"
    ]
