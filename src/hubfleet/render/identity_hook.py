"""Every OAuth hub records who signed in (the identity its provider asserts) and serves it to the collector.

The hub-side code is hubfleet.render.identity_hub, embedded as source: a local hub's jupyterhub_config.py
could import it, but a Kubernetes hub's image has no hubfleet. Dummy, native and tmp hubs have no provider
to assert anything, so they get none of it (their people are counted by username, as before).
"""

from __future__ import annotations

from pathlib import Path

from hubfleet.config.models import Hub
from hubfleet.config.models_auth import OAUTH_TYPES, OIDCAuth

IDENTITIES_PATH = "/hub/api/hubfleet/identities"
"""Where the collector reads them (with the control token: `list:users`)."""
HANDLER_ROUTE = r"/api/hubfleet/identities"
"""The same, relative to the hub's prefix (JupyterHub.extra_handlers)."""
LOCAL_DB_NAME = "identities.sqlite"
"""In a local hub's data directory, beside its jupyterhub.sqlite."""
KUBERNETES_DB = "/srv/jupyterhub/hubfleet-identities.sqlite"
"""On the z2jh hub's database volume, beside its jupyterhub.sqlite."""
EXTRA_CONFIG_KEY = "hubfleet-02-identity"
"""The z2jh hub.extraConfig key: after the auth's own start-up code (hubfleet-01-*)."""
HUB_CODE = Path(__file__).with_name("identity_hub.py")


def records_identity(hub: Hub) -> bool:
    return hub.auth is not None and hub.auth.type in OAUTH_TYPES


def identity_config(hub: Hub, db_path: str) -> str:
    """Python for the hub's configuration (`c` in scope): the hook, the handler and their settings; "" for
    hubs without a sign-in provider."""
    if not records_identity(hub):
        return ""
    provider = hub.auth.issuer if isinstance(hub.auth, OIDCAuth) else ""
    return (
        "# hubfleet: record the identity the provider asserts at each sign-in (no token is kept), for MAU\n"
        + HUB_CODE.read_text()
        + f"\n\n_HUBFLEET_IDENTITY_DB = {db_path!r}\n"
        + f"_HUBFLEET_PROVIDER = {provider!r}\n"
        + "c.Authenticator.post_auth_hook = hubfleet_record_identity\n"
        + f"c.JupyterHub.extra_handlers = [({HANDLER_ROUTE!r}, HubfleetIdentitiesHandler)]\n"
    )


def local_identity_lines(hub: Hub, data_dir: Path) -> list[str]:
    """identity_config for a local hub, as lines of its jupyterhub_config.py."""
    text = identity_config(hub, str(data_dir / LOCAL_DB_NAME))
    return ["", *text.rstrip().splitlines()] if text else []
