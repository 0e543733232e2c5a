"""The support desk on every hub (fleet.yaml `support.help_button`): a "Get help" link on the hub's pages
(render/branding.py's template overrides) and the `support` service behind the hub's own proxy at
/services/support/, whose code is hubfleet.render.support_hub (docs/support.md).

A local hub runs that module as a managed service on a loopback port of its own (runtime.json's
`support_port`); a Kubernetes hub runs the same file, mounted by hub.extraFiles, in the hub pod, reached by
the proxy pod through the hub's Service on SERVICE_PORT (the network policies of both pods let exactly that
through). Its settings travel as JSON in the service's environment, so the code itself never changes per hub.

The control plane's service token may reach the service (`access:services!service=support`) to pull the
outbox; people reach it through the hub's OAuth, which lets through only users who hold that same scope
themselves (JupyterHub's authorize handler checks it): the hub's `user` role gets it (USER_SCOPES).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.models_support import CATEGORIES, URGENCY_HELP
from hubfleet.render.branding import display_name
from hubfleet.render.common import CONTROL_SERVICE

SERVICE_NAME = "support"
SERVICE_PATH = f"/services/{SERVICE_NAME}/"
OUTBOX_PATH = f"{SERVICE_PATH}api/outbox"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
"""The control service's extra scope: without it the service's HubAuth refuses its token."""
USER_SCOPES = ["self", ACCESS_SCOPE]
"""The hub's `user` role: JupyterHub's default (`self`) and the form, or a signed-in person who is not an
admin gets 403 from /hub/api/oauth2/authorize on the way to it."""
ENV = "HUBFLEET_SUPPORT"
LOCAL_DB_NAME = "support-outbox.sqlite"
"""In a local hub's data directory, beside its jupyterhub.sqlite."""
KUBERNETES_DB = "/srv/jupyterhub/hubfleet-support.sqlite"
"""On the z2jh hub's database volume, beside its jupyterhub.sqlite."""
KUBERNETES_CODE = "/usr/local/etc/jupyterhub/hubfleet_support.py"
SERVICE_PORT = 10101
"""The service's port in the hub pod (and on the hub's Service)."""
EXTRA_CONFIG_KEY = "hubfleet-03-support"
EXTRA_FILES_KEY = "hubfleet-support-service"
HUB_CODE = Path(__file__).with_name("support_hub.py")


def has_help(fleet: FleetConfig) -> bool:
    return fleet.settings.support.help_button


def code_sha256() -> str:
    return hashlib.sha256(HUB_CODE.read_bytes()).hexdigest()


def settings(
    fleet: FleetConfig, hub: Hub, db: str, *, bind: str, api_url: str | None = None
) -> dict[str, Any]:
    """The service's settings ($HUBFLEET_SUPPORT): no secret in them."""
    found: dict[str, Any] = {
        "hub": hub.name,
        "hub_display_name": display_name(fleet, hub),
        "db": db,
        "bind": bind,
        "control_service": CONTROL_SERVICE,
        "max_attachment_bytes": fleet.settings.support.max_attachment_bytes,
        "categories": [[key, label] for key, label in CATEGORIES.items()],
        "urgency": [[key, text] for key, text in URGENCY_HELP.items()],
    }
    if api_url:
        found["api_url"] = api_url
    return found


def local_service(fleet: FleetConfig, hub: Hub, data_dir: Path, python: Path, port: int) -> dict[str, Any]:
    """The managed service of a local hub (an entry of c.JupyterHub.services)."""
    env = settings(fleet, hub, str(data_dir / LOCAL_DB_NAME), bind="127.0.0.1")
    return {
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{port}",
        "command": [str(python), "-m", "hubfleet.render.support_hub"],
        "environment": {ENV: json.dumps(env, sort_keys=True)},
        "oauth_no_confirm": True,
        "display": False,
    }


def local_lines() -> list[str]:
    return [f"# support service code sha256 {code_sha256()} (hubfleet.render.support_hub)"]


def kubernetes_config(fleet: FleetConfig, hub: Hub) -> str:
    """hub.extraConfig Python (z2jh's jupyterhub_config.py scope: `c`, `get_name`): the managed service,
    at the hub Service's name (which a release's fullnameOverride changes)."""
    env = settings(fleet, hub, KUBERNETES_DB, bind="0.0.0.0", api_url="http://127.0.0.1:8081/hub/api")
    return (
        "# hubfleet: the support desk's form behind /services/support/ (docs/support.md)\n"
        f"# support service code sha256 {code_sha256()}\n"
        "c.JupyterHub.services.append(\n"
        "    {\n"
        f"        'name': {SERVICE_NAME!r},\n"
        f"        'url': 'http://' + get_name('hub') + ':{SERVICE_PORT}',\n"  # noqa: F821 in the hub
        f"        'command': ['python3', {KUBERNETES_CODE!r}],\n"
        f"        'environment': {{{ENV!r}: {json.dumps(env, sort_keys=True)!r}}},\n"
        "        'oauth_no_confirm': True,\n"
        "        'display': False,\n"
        "    }\n"
        ")\n"
    )
