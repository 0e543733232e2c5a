"""The gate of environments (hubfleet.environment_choice): who may pick what, and what a pick resolves to.

Pure functions over the JSON form of real config models; the hubs that enforce it are tested in
tests/test_environments_local.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hubfleet import environment_choice as ec
from hubfleet.config.models_environments import Environment

ENVIRONMENTS = [
    {
        "slug": "python",
        "display_name": "Python",
        "description": "Python <3.12> & friends",
        "default": True,
        "local": {"kernels": ["python3"]},
        "resources": {"memory_limit": "2G"},
        "env": {"A": "env"},
        "options": {
            "size": {
                "display_name": "Size",
                "choices": {
                    "small": {"display_name": "Small", "default": True, "resources": {"memory_limit": "1G"}},
                    "large": {"display_name": "Large", "resources": {"memory_limit": "8G", "cpu_limit": 4}},
                    "gpu": {
                        "display_name": "GPU",
                        "groups": ["gpu-users"],
                        "resources": {"extra_limits": {"nvidia.com/gpu": 1}},
                        "node_selector": {"gpu": "yes"},
                        "tolerations": [{"key": "gpu", "operator": "Exists"}],
                        "env": {"A": "gpu"},
                    },
                },
            }
        },
    },
    {
        "slug": "r",
        "display_name": "R",
        "default_ui": "classic",
        "local": {"path": "/usr", "kernels": ["ir"]},
        "image": "quay.io/jupyter/r-notebook:2025-01-13",
        "options": {
            "image": {
                "display_name": "Image",
                "choices": {"stock": {"display_name": "Stock"}},
                "other": {"validation_regex": r"^quay\.io/org/.*$"},
            }
        },
    },
    {"slug": "staff", "display_name": "Staff only", "groups": ["staff"]},
]


def spec() -> list[dict]:
    """The environments as a hub's render gives them: validated by the real model, then dumped to JSON."""
    return [Environment.model_validate(e).model_dump(mode="json") for e in ENVIRONMENTS]


def test_no_options_gives_the_default_environment_with_default_choices() -> None:
    got = ec.resolve(spec(), [], {})
    assert got["environment"] == "python"
    assert got["choices"] == {"size": "small"}
    assert got["resources"]["memory_limit"] == "1G"
    assert got["env"] == {"A": "env"}
    assert got["local"] == {"path": None, "kernels": ["python3"]}


def test_choice_overrides_environment() -> None:
    got = ec.resolve(spec(), ["gpu-users"], {"environment": "python", "size": "gpu"})
    assert got["choices"] == {"size": "gpu"}
    assert got["resources"]["extra_limits"] == {"nvidia.com/gpu": 1}
    assert got["resources"]["memory_limit"] == "2G"
    assert got["node_selector"] == {"gpu": "yes"}
    assert got["tolerations"][0]["key"] == "gpu"
    assert got["env"] == {"A": "gpu"}
    large = ec.resolve(spec(), [], {"environment": "python", "size": "large"})
    assert large["resources"]["memory_limit"] == "8G"
    assert large["resources"]["cpu_limit"] == 4


def test_group_limited_choice_is_refused_with_what_to_pick() -> None:
    with pytest.raises(ec.ChoiceRefused) as info:
        ec.resolve(spec(), ["students"], {"environment": "python", "size": "gpu"})
    message = str(info.value)
    assert "gpu-users" in message and "you are in none of them" in message
    assert "pick one of: small, large" in message


def test_group_limited_environment_is_refused() -> None:
    with pytest.raises(ec.ChoiceRefused, match="environment 'staff' is only for members of group"):
        ec.resolve(spec(), [], {"environment": "staff"})
    assert ec.resolve(spec(), ["staff"], {"environment": "staff"})["environment"] == "staff"


def test_unknown_environment_and_choice_and_option() -> None:
    with pytest.raises(ec.ChoiceRefused, match="no environment 'x' on this hub; pick one of: python, r$"):
        ec.resolve(spec(), [], {"environment": "x"})
    with pytest.raises(
        ec.ChoiceRefused, match="option 'size' has no choice 'xl'; pick one of: small, large$"
    ):
        ec.resolve(spec(), [], {"environment": "python", "size": "xl"})
    with pytest.raises(ec.ChoiceRefused, match="has no option 'colour'; its options are: size"):
        ec.resolve(spec(), [], {"environment": "python", "colour": "red"})
    with pytest.raises(ec.ChoiceRefused, match="must be a choice's slug"):
        ec.resolve(spec(), [], {"environment": "python", "size": ["small"]})


def test_other_answer_is_checked_against_the_regex() -> None:
    got = ec.resolve(spec(), [], {"environment": "r", "image": "quay.io/org/custom:1"})
    assert got["image"] == "quay.io/org/custom:1"
    assert got["choices"] == {"image": "quay.io/org/custom:1"}
    assert got["default_ui"] == "classic"
    assert got["local"] == {"path": "/usr", "kernels": ["ir"]}
    with pytest.raises(ec.ChoiceRefused, match=r"image 'evil:1' does not match \^quay"):
        ec.resolve(spec(), [], {"environment": "r", "image": "evil:1"})
    stock = ec.resolve(spec(), [], {"environment": "r"})
    assert stock["image"] == "quay.io/jupyter/r-notebook:2025-01-13"


def test_default_environment_closed_to_user_falls_back_to_first_open() -> None:
    closed = spec()
    closed[0]["groups"] = ["staff"]
    assert ec.resolve(closed, [], {})["environment"] == "r"
    with pytest.raises(ec.ChoiceRefused, match="no environment of this hub is open to you"):
        ec.resolve([closed[0]], [], {})


def test_no_environments() -> None:
    assert ec.resolve([], [], {})["environment"] is None
    with pytest.raises(ec.ChoiceRefused, match="offers no environments"):
        ec.resolve([], [], {"environment": "python"})


def test_allowed_hides_what_the_user_may_not_pick() -> None:
    seen = ec.allowed(spec(), ["students"])
    assert [e["slug"] for e in seen] == ["python", "r"]
    assert list(seen[0]["options"]["size"]["choices"]) == ["small", "large"]
    staff = ec.allowed(spec(), ["staff", "gpu-users"])
    assert [e["slug"] for e in staff] == ["python", "r", "staff"]
    assert "gpu" in staff[0]["options"]["size"]["choices"]


def test_form_preselects_last_choice_and_round_trips() -> None:
    last = {"environment": "r", "image": "quay.io/org/custom:1"}
    form = ec.form_html(spec(), [], last)
    assert 'value="r" checked' in form
    assert 'value="python" checked' not in form
    assert 'value="__other__" selected' in form
    assert 'value="quay.io/org/custom:1"' in form
    assert "Python &lt;3.12&gt; &amp; friends" in form
    assert "GPU" not in form and "Staff only" not in form
    posted = {"environment": ["r"], "r--image": ["__other__"], "r--image--other": ["quay.io/org/custom:1"]}
    assert ec.options_from_form(spec(), posted) == last
    posted = {"environment": ["python"], "python--size": ["large"], "r--image": ["stock"]}
    assert ec.options_from_form(spec(), posted) == {"environment": "python", "size": "large"}
    first = ec.form_html(spec(), [], None)
    assert 'value="python" checked' in first and 'value="small" selected' in first


def test_standard_library_only() -> None:
    """The Kubernetes render embeds the source into a hub image without hubfleet: no hubfleet import."""
    source = Path(ec.__file__).read_text()
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "html", "re", "typing"}
