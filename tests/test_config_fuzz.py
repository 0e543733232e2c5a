"""Property tests: random and mutated YAML fed to validate_fleet gives error lines, never an exception."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from fleet_helpers import DEMO, NO_STATE
from hubfleet.config.fleet import ConfigError
from hubfleet.config.validate import validate_fleet
from hubfleet.config.yaml_source import fast_load, plain_data

FILES = sorted(p.relative_to(DEMO).as_posix() for p in DEMO.rglob("*.yaml"))
LINE = re.compile(r"^[^\s:][^:]*:\d+:\d+: \S")
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["local", "prod", "staging", "dummy", "native", "uni-a", "18001", "yes", "~", "2G"]),
)
keys = st.one_of(
    st.sampled_from(
        ["name", "kind", "community", "cluster", "stage", "port", "auth", "type", "admin_users", "resources"]
    ),
    st.text(min_size=1, max_size=8),
)
structures = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=20,
)


def check(rel: str, content: str | bytes) -> list[ConfigError]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fleet"
        shutil.copytree(DEMO, root, ignore=NO_STATE)
        path = root / rel
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        config, errors = validate_fleet(root)
    assert (config is None) == bool(errors)
    for error in errors:
        assert LINE.match(str(error)), str(error)
        assert "\n" not in error.message
        assert error.line >= 1 and error.col >= 1
    return errors


@FUZZ
@given(rel=st.sampled_from(FILES), content=st.text(max_size=200))
def test_random_text(rel: str, content: str) -> None:
    check(rel, content.replace("\udc80", ""))


@FUZZ
@given(rel=st.sampled_from(FILES), content=st.binary(max_size=100))
def test_random_bytes(rel: str, content: bytes) -> None:
    check(rel, content)


@FUZZ
@given(rel=st.sampled_from(FILES), data=structures, flow=st.booleans())
def test_random_yaml_structures(rel: str, data: object, flow: bool) -> None:
    import io

    yaml = YAML()
    yaml.default_flow_style = flow
    out = io.StringIO()
    yaml.dump(data, out)
    check(rel, out.getvalue())


@FUZZ
@given(
    rel=st.sampled_from(FILES),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["delete", "insert", "duplicate", "indent"]),
            st.integers(0, 10_000),
            st.text(max_size=6),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_demo_files(rel: str, edits: list[tuple[str, int, str]]) -> None:
    lines = (DEMO / rel).read_text().splitlines()
    for op, where, text in edits:
        i = where % max(len(lines), 1)
        if op == "delete" and lines:
            del lines[i]
        elif op == "insert":
            lines.insert(i, text)
        elif op == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif op == "indent" and lines:
            lines[i] = "  " + lines[i]
    check(rel, "\n".join(lines) + "\n")


@FUZZ
@given(data=st.dictionaries(keys, structures, max_size=6), flow=st.booleans())
def test_fast_path_agrees_with_ruamel(data: dict, flow: bool) -> None:
    """The libyaml fast path loads exactly what ruamel.yaml loads, or declines."""
    import io

    yaml = YAML()
    yaml.default_flow_style = flow
    out = io.StringIO()
    yaml.dump(data, out)
    text = out.getvalue()
    fast = fast_load(text)
    if fast is not None:
        assert fast == plain_data(YAML().load(text))
