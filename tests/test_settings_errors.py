"""A bad HUBFLEET_* variable is one line naming the variable and its allowed values (settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_helpers import copy_demo_fleet, hubfleet


@pytest.mark.parametrize(
    ("variable", "allowed"),
    [("HUBFLEET_HUB_START", "'fork' or 'process'"), ("HUBFLEET_ISOLATION", "'auto' or 'single'")],
)
def test_a_bad_variable_is_named_with_what_it_may_be(tmp_path: Path, variable: str, allowed: str) -> None:
    fleet = copy_demo_fleet(tmp_path / "fleet")
    result = hubfleet("status", fleet=fleet, env={variable: "bogus"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{variable}: Input should be {allowed}" in result.stderr
