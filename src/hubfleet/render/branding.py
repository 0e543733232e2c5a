"""A hub in its community's colours, the same on both backends: JupyterHub template variables (name, accent
colour, URL, funded-by line), `logo_file` (the community's logo, copied beside the hub) and a small template
override (templates/branding/) extending JupyterHub's page.html and login.html, or on native-auth hubs
NativeAuthenticator's own templates.

The same overrides carry the support desk's "Get help" link (support.help_button, render/support_hook.py),
so every hub with the help button gets them, branded or not: `hubfleet_branded` keeps an unbranded hub's
name, logo and colours JupyterHub's own, and `hubfleet_help` shows the link.

The rendered config carries the sha256 of the logo and of the templates, so that changing the logo (or a
hubfleet upgrade changing the templates) is a change `hubfleet plan` shows and `deploy` applies; the bytes
themselves travel beside the config (local: files the supervisor writes into the hub's data directory;
kubernetes: `hub.extraFiles`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.rules_branding import LOGO_SUFFIX, community_dir, logo_kind, logo_problem
from hubfleet.settings import UserError

TEMPLATES = Path(__file__).parent / "templates" / "branding"
TEMPLATE_NAMES = ("page.html", "login.html", "native-login.html")
JUPYTERHUB_PAGE = "templates/page.html"
NATIVE_PAGE = "nativeauthenticator/templates/page.html"
"""Reached through site-packages on the template path (NativeAuthenticator's page.html shares JupyterHub's
name, so the override cannot reach it by that name)."""


@dataclass(frozen=True)
class HubBranding:
    """What one hub shows, resolved from its `branding` and display names."""

    display_name: str
    accent_color: str | None
    url: str | None
    funded_by: str
    native: bool
    branded: bool = True
    """False: the overrides are there only for the help link; the pages keep JupyterHub's look."""
    help: bool = False
    """The "Get help" link to the hub's support service."""
    logo: bytes | None = None
    logo_name: str | None = None
    """The served copy's file name: logo.png, logo.jpg or logo.svg by content (its type for /hub/logo)."""

    @property
    def logo_sha256(self) -> str | None:
        return hashlib.sha256(self.logo).hexdigest() if self.logo is not None else None

    def template_vars(self) -> dict[str, str]:
        return {
            "hubfleet_display_name": self.display_name,
            "hubfleet_accent_color": self.accent_color or "",
            "hubfleet_url": self.url or "",
            "hubfleet_funded_by": self.funded_by,
            "hubfleet_page_parent": NATIVE_PAGE if self.native else JUPYTERHUB_PAGE,
            # the logo's URL carries it (no stale logo from a browser's cache) and `plan` names the change
            "hubfleet_logo_sha256": self.logo_sha256 or "",
            "hubfleet_branded": self.branded,
            "hubfleet_help": self.help,
        }

    def templates(self) -> dict[str, str]:
        return {name: (TEMPLATES / name).read_text() for name in TEMPLATE_NAMES}

    def templates_sha256(self) -> str:
        digest = hashlib.sha256()
        for name, text in self.templates().items():
            digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        return digest.hexdigest()

    def files(self) -> dict[str, bytes]:
        """Files relative to the hub's branding directory: templates/<name> and the logo."""
        found = {f"templates/{name}": text.encode() for name, text in self.templates().items()}
        if self.logo is not None and self.logo_name is not None:
            found[self.logo_name] = self.logo
        return found

    def digest_comment(self) -> str:
        """The templates' sha256 (the logo's is in the template variables)."""
        return f"# branding templates sha256 {self.templates_sha256()}"


def display_name(fleet: FleetConfig, hub: Hub) -> str:
    """The hub's display name, else its community's, else the hub's name."""
    community = fleet.communities.get(hub.community)
    return hub.display_name or (community.display_name if community else "") or hub.name


def hub_branding(fleet: FleetConfig, hub: Hub) -> HubBranding | None:
    """The hub's branding; None when its `branding` sets nothing (the hub keeps JupyterHub's look)."""
    branding = hub.branding
    if (branding.logo, branding.accent_color, branding.url, branding.funded_by or None) == (None,) * 4:
        return None
    logo = logo_name = None
    if branding.logo is not None:
        directory = community_dir(fleet.root, hub.community)
        problem = logo_problem(directory, branding.logo)
        if problem is not None:
            raise UserError(
                f"hub {hub.name}: branding.logo '{branding.logo}' {problem} (in {directory}); "
                "fix it and run `hubfleet validate`"
            )
        logo = (directory / branding.logo).read_bytes()
        logo_name = "logo" + LOGO_SUFFIX[str(logo_kind(logo))]
    return HubBranding(
        display_name=display_name(fleet, hub),
        accent_color=branding.accent_color,
        url=branding.url,
        funded_by=branding.funded_by,
        native=hub.auth is not None and hub.auth.type == "native",
        logo=logo,
        logo_name=logo_name,
    )


def hub_pages(fleet: FleetConfig, hub: Hub, *, help: bool) -> HubBranding | None:
    """What the hub's page overrides show: its branding and the help link (`help`: the hub runs the support
    service); None when neither (the hub keeps JupyterHub's own templates)."""
    branding = hub_branding(fleet, hub)
    if branding is not None:
        return replace(branding, help=help)
    if not help:
        return None
    return HubBranding(
        display_name=display_name(fleet, hub),
        accent_color=None,
        url=None,
        funded_by="",
        native=hub.auth is not None and hub.auth.type == "native",
        branded=False,
        help=True,
    )


def native_template_paths(first: str) -> str:
    """Python for a native hub's template path: the override, NativeAuthenticator's templates (found at
    start-up, where the hub runs) and site-packages, so `nativeauthenticator/templates/...` names resolve.
    Runs after NativeAuthenticator's start-up code, which sets its own path."""
    return (
        "import nativeauthenticator as _hubfleet_native\n\n"
        "_hubfleet_native_dir = os.path.dirname(_hubfleet_native.__file__)\n"
        "c.JupyterHub.template_paths = [\n"
        f"    {first!r},\n"
        "    os.path.join(_hubfleet_native_dir, 'templates'),\n"
        "    os.path.dirname(_hubfleet_native_dir),\n"
        "]\n"
    )


def branding_lines(fleet: FleetConfig, hub: Hub, data_dir: Path, *, help: bool = False) -> list[str]:
    """A local hub's branding lines (after its auth lines); its files go to <data_dir>/branding/."""
    branding = hub_pages(fleet, hub, help=help)
    if branding is None:
        return []
    directory = data_dir / "branding"
    what = "the community's name, logo and colour" if branding.branded else "JupyterHub's look"
    lines = [
        "",
        f"# branding: {what} on the hub's pages (docs/branding.md)"
        + ("; the 'Get help' link (docs/support.md)" if branding.help else ""),
        branding.digest_comment(),
        "c.JupyterHub.template_vars = {",
        *(f"    {key!r}: {value!r}," for key, value in branding.template_vars().items()),
        "}",
    ]
    if branding.logo_name is not None:
        lines.append(f"c.JupyterHub.logo_file = {str(directory / branding.logo_name)!r}")
    templates = str(directory / "templates")
    if branding.native:
        lines.append(native_template_paths(templates).rstrip())
    else:
        lines.append(f"c.JupyterHub.template_paths = [{templates!r}]")
    return lines


def local_files(fleet: FleetConfig, hub: Hub, *, help: bool | None = None) -> dict[str, str]:
    """Files a local hub needs for its branding and help link: path relative to its data directory -> bytes
    in base64 (`PreparedHub.files`, which travels as JSON to the supervisor). `help`: default the fleet's
    support.help_button."""
    if help is None:
        help = fleet.settings.support.help_button
    branding = hub_pages(fleet, hub, help=help)
    if branding is None:
        return {}
    return {f"branding/{name}": base64.b64encode(data).decode() for name, data in branding.files().items()}
