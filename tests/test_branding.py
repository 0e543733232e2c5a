"""Each hub in its community's colours, on real hubs: a copy of the demo fleet (uni-a's native prod hub and
its dummy staging hub, branded in communities/uni-a/community.yaml) run by the daemon. The login page (GET
/hub/login) and the home page after signing in through the form, as a browser does, show the community's
name, logo (its URL serves the file's bytes), colour, link and funded-by line; on the native hub they are
NativeAuthenticator's own pages (its password eye button, its "Change Password" link) with the branding
over them. Debian's Chromium, driven by Playwright, renders the logo (naturalWidth > 0) and the colour. A new
logo file (same name, other bytes) is deployed: both hubs restart and serve it.

Without running hubs: `hubfleet plan` names a changed logo file (its bytes, not a setting) as a change to the
hubs that show it, and `validate` refuses a logo that is missing, not an image, too large or a scripted SVG,
at the line that names it. The supervisor never follows a link the hub planted where its branding files go."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleet_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    copy_demo_fleet,
    edit,
    hubfleet,
    mark_deployed,
    running_fleet,
)
from hubfleet.config.rules_branding import LOGO_MAX_BYTES
from hubfleet.config.validate import load_fleet
from hubfleet.deploy.plan import make_plan
from hubfleet.render.branding import display_name
from hubfleet.store import open_store
from test_login_forms import hub_url, log_in, operator, post_form, sign_up

NATIVE = "uni-a"
DUMMY = "uni-a-staging"
ACCENT = "#0b5394"
SITE = "https://physics.uni-a.example/"
FUNDED_BY = "Funded by the University A teaching fund"
KEEP = {"communities/uni-a/hubs/prod.yaml", "communities/uni-a/hubs/staging.yaml"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = copy_demo_fleet(tmp_path_factory.mktemp("fleet") / "demo", keep=KEEP)
    with running_fleet(root):
        yield root


def browser(fleet: Path, hub: str) -> httpx.Client:
    return httpx.Client(base_url=hub_url(fleet, hub), timeout=30, follow_redirects=False)


def assert_branded(page: httpx.Response, name: str, client: httpx.Client, logo: bytes) -> None:
    """The page shows the name, colour, link, funded-by line and a logo whose URL serves `logo`."""
    assert page.status_code == 200, page.text[:500]
    text = page.text
    shown = re.search(r'<span id="hubfleet-name"[^>]*>(.*?)</span>', text, re.S)
    assert shown and html.unescape(shown.group(1)).strip() == name
    assert f"--hubfleet-accent: {ACCENT};" in text
    assert f'href="{SITE}"' in text
    assert f'<div id="hubfleet-funded-by">{FUNDED_BY}</div>' in text
    src = re.search(r'<img src="([^"]+)"[^>]*id="hubfleet-logo"', text, re.S)
    assert src, "no logo in the page"
    served = client.get(html.unescape(src.group(1)))
    assert served.status_code == 200 and served.content == logo
    assert served.headers["content-type"].startswith("image/svg+xml")


def logo_bytes(fleet: Path) -> bytes:
    return (fleet / "communities/uni-a/logo.svg").read_bytes()


def name_of(fleet: Path, hub: str) -> str:
    config = load_fleet(fleet)
    return display_name(config, config.hubs[hub])


@pytest.mark.integration
def test_dummy_hub_login_and_home_pages(fleet: Path) -> None:
    name = name_of(fleet, DUMMY)
    assert name == "University A (staging)"  # the hub's own display_name wins over the community's
    alice = browser(fleet, DUMMY)
    login = alice.get("/hub/login")
    assert_branded(login, name, alice, logo_bytes(fleet))
    title = re.search(r'<h1 id="hubfleet-login-title"[^>]*>(.*?)</h1>', login.text, re.S)
    assert title and html.unescape(title.group(1)).strip() == name
    signed_in = log_in(alice, "alice", "demo-staging")
    assert signed_in.status_code == 302, signed_in.text[:500]
    home = alice.get("/hub/home")
    assert_branded(home, name, alice, logo_bytes(fleet))
    assert 'id="start"' in home.text  # JupyterHub's own home page under the branding


@pytest.mark.integration
def test_native_hub_pages_extend_nativeauthenticator(fleet: Path) -> None:
    name = name_of(fleet, NATIVE)
    assert name == "University A"  # no display_name in the hub file: the community's
    bea = browser(fleet, NATIVE)
    login = bea.get("/hub/login")
    assert_branded(login, name, bea, logo_bytes(fleet))
    assert 'id="eye"' in login.text and "/hub/signup" in login.text  # NativeAuthenticator's login form
    assert 'id="hubfleet-login-title"' in login.text
    assert "sent to the admin" in sign_up(bea, "bea")
    approved = operator(fleet, NATIVE).patch("/hub/api/native/users/bea", json={"authorized": True})
    assert approved.status_code == 200
    signed_in = post_form(bea, "/hub/login", {"username": "bea", "password": "a-long-enough-password-1"})
    assert signed_in.status_code == 302, signed_in.text[:500]
    home = bea.get("/hub/home")
    assert_branded(home, name, bea, logo_bytes(fleet))
    assert "Change Password" in home.text  # NativeAuthenticator's page.html is in the chain


sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_chromium_renders_the_logo_and_colour(fleet: Path) -> None:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page()
            for hub in (NATIVE, DUMMY):
                page.goto(hub_url(fleet, hub) + "/hub/login")
                page.wait_for_function("document.getElementById('hubfleet-logo').complete")
                width = page.evaluate("document.getElementById('hubfleet-logo').naturalWidth")
                assert width > 0, f"{hub}: the logo did not render"
                border = page.evaluate(
                    "getComputedStyle(document.querySelector('nav.navbar')).borderBottomColor"
                )
                assert border == "rgb(11, 83, 148)"  # #0b5394
                assert page.inner_text("#hubfleet-name").strip() == name_of(fleet, hub)
        finally:
            chromium.close()


@pytest.mark.integration
def test_deploy_applies_a_new_logo(fleet: Path) -> None:
    """The logo file's bytes change under the same name: deploy restarts both hubs with the new file."""
    import json

    logo = fleet / "communities/uni-a/logo.svg"
    logo.write_text(logo.read_text().replace("</svg>", '<circle cx="4" cy="4" r="2"/></svg>'))
    result = hubfleet("deploy", "--json", fleet=fleet, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(json.loads(result.stdout)["deployed"]) == [NATIVE, DUMMY]
    for hub in (NATIVE, DUMMY):
        client = browser(fleet, hub)
        assert_branded(client.get("/hub/login"), name_of(fleet, hub), client, logo.read_bytes())


# --------------------------------------------------------------------------- without running hubs


def test_plan_shows_a_changed_logo(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP)
    mark_deployed(root)
    logo = root / "communities/uni-a/logo.svg"
    logo.write_text(logo.read_text().replace("</svg>", '<circle cx="4" cy="4" r="2"/></svg>'))
    config = load_fleet(root)
    with open_store(root / ".hubfleet") as store:
        plan = make_plan(config, root / ".hubfleet", store)
    assert sorted(c.name for c in plan.changes) == [NATIVE, DUMMY]
    for change in plan.changes:
        assert change.action == "update"
        [reason] = change.reasons
        assert reason.startswith("branding.logo: the logo file's content changed (sha256 ")
        assert "hubfleet_logo_sha256" in change.diff
    shown = hubfleet("plan", fleet=root, check=True).stdout
    assert "branding.logo: the logo file's content changed" in shown


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "'logo.svg' not found"),
        (b"GIF89a not accepted", "is not a PNG, JPEG or SVG image (by its content)"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * LOGO_MAX_BYTES, "a logo may be at most 256 KiB"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "with a script"),
    ],
)
def test_validate_refuses_a_bad_logo(tmp_path: Path, content: bytes | None, problem: str) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP)
    logo = root / "communities/uni-a/logo.svg"
    if content is None:
        logo.unlink()
    else:
        logo.write_bytes(content)
    result = hubfleet("validate", fleet=root)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "branding.logo" in line]
    # both hubs inherit the logo: one error (the same for both), at the community file's line naming it
    assert len(lines) == 1 and problem in lines[0], lines
    line_no = next(
        i
        for i, text in enumerate((root / "communities/uni-a/community.yaml").read_text().splitlines(), 1)
        if "logo: logo.svg" in text
    )
    assert all(line.startswith(f"communities/uni-a/community.yaml:{line_no}:") for line in lines), lines


def test_a_png_logo_in_a_subdirectory_is_accepted(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP)
    (root / "communities/uni-a/art").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    (root / "communities/uni-a/art/logo.png").write_bytes(png)
    edit(root / "communities/uni-a/community.yaml", "logo: logo.svg", "logo: art/logo.png")
    hubfleet("validate", fleet=root, check=True)
    config = load_fleet(root)
    from hubfleet.render.branding import local_files

    files = local_files(config, config.hubs[NATIVE])
    assert set(files) == {
        "branding/logo.png",
        "branding/templates/page.html",
        "branding/templates/login.html",
        "branding/templates/native-login.html",
    }


def test_export_bundle_keeps_the_look(tmp_path: Path) -> None:
    """`hubfleet export` of a native hub writes the logo and templates into branding/ beside the standalone
    config, whose logo_file and template path point there (relative to the config, not to hubfleet)."""
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP)
    out = tmp_path / "bundle"
    hubfleet("export", NATIVE, "--out", str(out), fleet=root, check=True)
    assert (out / "branding/logo.svg").read_bytes() == logo_bytes(root)
    assert (out / "branding/templates/native-login.html").is_file()
    config = (out / "jupyterhub_config.py").read_text()
    assert "c.JupyterHub.logo_file = HERE + '/branding/logo.svg'" in config, config
    assert "    HERE + '/branding/templates'," in config
    assert "__hubfleet" not in config


def test_hub_files_never_follow_a_planted_link(tmp_path: Path) -> None:
    """The supervisor writes the branding into the hub's own data directory, where the hub could have put a
    link in place of `branding/` or of a file: the link is replaced, its target untouched."""
    import base64

    from hubfleet.backends.local import PreparedHub
    from hubfleet.daemon.hub_files import write_hub_files

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (elsewhere / "page.html").write_text("keep me")
    (data / "branding").symlink_to(elsewhere)
    (tmp_path / "secret").write_text("not the hub's")
    prepared = PreparedHub(
        name="h",
        url="http://127.0.0.1:1",
        port=1,
        data_dir=data,
        config_path=data / "jupyterhub_config.py",
        rendered="",
        log_path=tmp_path / "hub.log",
        config_hash="",
        command=[],
        env={},
        files={
            "branding/templates/page.html": base64.b64encode(b"new page").decode(),
            "branding/logo.svg": base64.b64encode(b"<svg/>").decode(),
        },
    )
    write_hub_files(prepared, None)
    assert (elsewhere / "page.html").read_text() == "keep me" and not (elsewhere / "templates").exists()
    assert not (data / "branding").is_symlink()
    assert (data / "branding/templates/page.html").read_bytes() == b"new page"
    # a link in a file's place is replaced by the file, not written through
    (data / "branding/logo.svg").unlink()
    (data / "branding/logo.svg").symlink_to(tmp_path / "secret")
    write_hub_files(prepared, None)
    assert (tmp_path / "secret").read_text() == "not the hub's"
    assert (data / "branding/logo.svg").read_bytes() == b"<svg/>" and not (
        data / "branding/logo.svg"
    ).is_symlink()
    bad = PreparedHub(**{**prepared.__dict__, "files": {"../escape": ""}})
    with pytest.raises(ValueError, match="refusing"):
        write_hub_files(bad, None)
