"""Environments in single-account mode (HUBFLEET_ISOLATION=single, or hubfleet not root): no broker, the hub's
LocalEnvironmentSpawner applies the pick itself. A real hub: R through the IR kernel, a forbidden choice
refused with the gate's message. Also what needs no hub: what `check` and `up` say about a missing kernel
or directory, and that `validate` does not look at the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_helpers import copy_demo_fleet, edit, hubfleet, kill_leftovers, remove_accounts, running_fleet
from hubfleet.isolation.environments import missing, server_settings
from test_environments_local import ENVIRONMENTS, HUB, Hub

IR_INSTALLED = Path("/usr/share/jupyter/kernels/ir/kernel.json").is_file()


def _fleet(base: Path, environments: str) -> Path:
    root = copy_demo_fleet(base / "demo", keep={"communities/uni-a/hubs/staging.yaml"})
    hub_file = root / "communities/uni-a/hubs/staging.yaml"
    edit(
        hub_file,
        "  admin_users: [grace]",
        "  admin_users: [grace]\n  groups:\n    gpu-users: [alice]\n    staff: [grace]",
    )
    hub_file.write_text(hub_file.read_text() + environments)
    return root


@pytest.mark.integration
@pytest.mark.skipif(
    not IR_INSTALLED, reason="R's IR kernel is not installed: run scripts/install-debian-deps.sh"
)
def test_single_account_hub_runs_r_and_refuses_forbidden_choices(tmp_path: Path) -> None:
    root = _fleet(tmp_path, ENVIRONMENTS)
    with running_fleet(root, env={"HUBFLEET_ISOLATION": "single"}):
        hub = Hub(root)
        rendered = hubfleet(
            "render", HUB, fleet=root, env={"HUBFLEET_ISOLATION": "single"}, check=True
        ).stdout
        assert "LocalEnvironmentSpawner" in rendered
        refused = hub.start("bob", {"user_options": {"environment": "python", "size": "gpu"}})
        assert refused.status_code == 400 and "gpu-users" in refused.json()["message"]
        assert hub.start("bob", {"user_options": {"environment": "r"}}).status_code in (201, 202)
        specs = hub.kernelspecs("bob")
        assert specs["default"] == "ir" and set(specs["kernelspecs"]) == {"ir"}
        assert hub.run("bob", "1 + 1")["result"] == "[1] 2"
        hub.stop("bob")


def test_missing_directory_and_kernel_are_named_with_the_fix(tmp_path: Path) -> None:
    assert missing({"slug": "x", "local": {"path": str(tmp_path / "nope"), "kernels": []}}) == [
        f"environment x: directory {tmp_path / 'nope'} does not exist; create it or fix `local.path`"
    ]
    assert missing({"slug": "j", "local": {"path": str(tmp_path), "kernels": ["julia-1.10"]}}) == [
        f"environment j: kernel 'julia-1.10' not found in {tmp_path}/share/jupyter/kernels; "
        "install it there, or fix `local.kernels`"
    ]
    assert missing({"slug": "py", "local": {"path": None, "kernels": ["python3"]}}) == []


def test_check_says_what_is_missing_and_validate_does_not_look(tmp_path: Path) -> None:
    environments = (
        "environments:\n  - slug: julia\n    display_name: Julia\n"
        "    local: {path: /usr, kernels: [julia-1.10]}\n"
    )
    root = _fleet(tmp_path, environments)
    assert hubfleet("validate", fleet=root).returncode == 0
    done = hubfleet("check", HUB, fleet=root)
    assert done.returncode != 0
    assert (
        f"hub {HUB}: environment julia: kernel 'julia-1.10' not found in /usr/share/jupyter/kernels"
        in " ".join(done.stderr.split())
    )


@pytest.mark.integration
def test_up_refuses_to_start_a_hub_whose_kernel_is_missing(tmp_path: Path) -> None:
    environments = (
        "environments:\n  - slug: julia\n    display_name: Julia\n"
        "    local: {path: /usr, kernels: [julia-1.10]}\n"
    )
    root = _fleet(tmp_path, environments)
    try:
        done = hubfleet("up", "--detach", fleet=root)
        assert done.returncode != 0
        said = " ".join((done.stdout + done.stderr).split())
        assert "environment julia: kernel 'julia-1.10' not found in /usr/share/jupyter/kernels" in said
    finally:
        hubfleet("down", fleet=root)
        leaks = kill_leftovers(root)
        remove_accounts(root)
        assert not leaks


def test_server_settings_of_r() -> None:
    settings = server_settings(
        {"environment": "r", "local": {"path": "/usr", "kernels": ["ir"]}, "default_ui": "classic",
         "env": {"A": "1"}, "resources": {"memory_limit": "2G", "cpu_limit": 1.5}}
    )  # fmt: skip
    assert settings.path_head == "/usr/bin"
    assert settings.env == {"A": "1", "JUPYTER_PATH": "/usr/share/jupyter", "JUPYTERHUB_DEFAULT_URL": "/tree"}
    assert settings.args == [
        "--KernelSpecManager.allowed_kernelspecs=ir",
        "--MappingKernelManager.default_kernel_name=ir",
    ]
    assert (settings.memory_limit, settings.cpu_limit) == ("2G", 1.5)
