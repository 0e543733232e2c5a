"""Hub-side code: record who signed in, as the provider asserted it, and serve it to the control plane.

Standard library and JupyterHub only, and self-contained: hubfleet.render.identity_hook embeds this file's
source in every OAuth hub's configuration (a local hub's jupyterhub_config.py, a Kubernetes hub's extraConfig:
the z2jh hub image has no hubfleet), after setting `_HUBFLEET_IDENTITY_DB` and `_HUBFLEET_PROVIDER`.

- `hubfleet_record_identity` is the authenticator's `post_auth_hook` (JupyterHub runs it after a sign-in was
  allowed). From OAuthenticator's auth model it keeps the provider (CILogon IdP, OIDC issuer, github.com), the
  name of the identifying claim and its value: CILogon's claim of that IdP's `username_derivation` before any
  domain is stripped (eppn, email, ...), OIDC's `sub`, GitHub's numeric `id`. Nothing else of the auth state
  is read, and no token is written: the access, refresh and ID tokens stay in memory as JupyterHub keeps
  them (not at all without `enable_auth_state`).
- `HubfleetIdentitiesHandler` answers GET /hub/api/hubfleet/identities[?since=EPOCH] to tokens with
  `list:users` (the control plane's), from a small SQLite file beside the hub's database.

Why a file and a handler rather than the user's auth_state: auth_state needs a crypt key on every hub and
holds the OAuth tokens; the collector would need `admin:auth_state` to read it, which reveals those tokens.
"""

import json
import os
import sqlite3
import time

_HUBFLEET_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS identities (username TEXT NOT NULL, provider TEXT NOT NULL, "
    "claim TEXT NOT NULL, subject TEXT NOT NULL, first_signin REAL NOT NULL, last_signin REAL NOT NULL, "
    "PRIMARY KEY (username, provider, claim, subject))"
)
_HUBFLEET_SCOPED_CLAIMS = ("eppn", "email", "eptid", "oidc", "sub")
"""CILogon claims that are unique across IdPs by themselves (the others are qualified by the IdP)."""


def hubfleet_asserted(authenticator, auth_model):
    """(provider, claim, subject) of a sign-in's auth model, or None when the provider asserted nothing."""
    state = (auth_model or {}).get("auth_state") or {}
    if not isinstance(state, dict):
        return None
    user = state.get("cilogon_user")
    if isinstance(user, dict):
        idp = str(user.get("idp") or "")
        idps = getattr(authenticator, "idps", None) or getattr(authenticator, "allowed_idps", None) or {}
        derivation = (idps.get(idp) or {}).get("username_derivation") or {}
        claim = derivation.get("username_claim") or "sub"
        subject = user.get(claim)
        return (idp, claim, str(subject)) if subject else None
    user = state.get("github_user")
    if isinstance(user, dict):
        return ("github.com", "id", str(user["id"])) if user.get("id") is not None else None
    user = state.get("oauth_user")
    if isinstance(user, dict) and user.get("sub"):
        return (globals().get("_HUBFLEET_PROVIDER") or "", "sub", str(user["sub"]))
    return None


def _hubfleet_db():
    path = globals()["_HUBFLEET_IDENTITY_DB"]
    connection = sqlite3.connect(path, timeout=5)
    connection.execute(_HUBFLEET_SCHEMA)
    return connection


def hubfleet_save_identity(username, asserted, at=None):
    """Insert or refresh one (username, provider, claim, subject) row; the file is the hub account's only."""
    at = time.time() if at is None else at
    path = globals()["_HUBFLEET_IDENTITY_DB"]
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = _hubfleet_db()
    try:
        with connection:
            connection.execute(
                "INSERT INTO identities VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username, provider, claim, "
                "subject) DO UPDATE SET last_signin = excluded.last_signin",
                (username, *asserted, at, at),
            )
    finally:
        connection.close()


def hubfleet_record_identity(authenticator, handler, auth_model):
    """post_auth_hook: keep who signed in; never refuses a sign-in (a failure is logged)."""
    try:
        asserted = hubfleet_asserted(authenticator, auth_model)
        if asserted is not None:
            hubfleet_save_identity(auth_model["name"], asserted)
    except Exception as exc:  # noqa: BLE001 - recording usage must not lock anyone out
        authenticator.log.warning("hubfleet: could not record the identity of a sign-in: %s", exc)
    return auth_model


def hubfleet_identities(since=0.0):
    """Rows signed in at or after `since` (epoch seconds), oldest first."""
    path = globals()["_HUBFLEET_IDENTITY_DB"]
    if not os.path.exists(path):
        return []
    connection = _hubfleet_db()
    try:
        rows = connection.execute(
            "SELECT username, provider, claim, subject, first_signin, last_signin FROM identities "
            "WHERE last_signin >= ? ORDER BY last_signin",
            (since,),
        ).fetchall()
    finally:
        connection.close()
    keys = ("username", "provider", "claim", "subject", "first_signin", "last_signin")
    return [dict(zip(keys, row, strict=True)) for row in rows]


from jupyterhub.apihandlers.base import APIHandler  # noqa: E402 - the hub's own; after the plain helpers
from jupyterhub.scopes import needs_scope  # noqa: E402


class HubfleetIdentitiesHandler(APIHandler):
    """GET /hub/api/hubfleet/identities?since=EPOCH: who signed in as whom (list:users, as /hub/api/users)."""

    @needs_scope("list:users")
    def get(self):
        try:
            since = float(self.get_argument("since", "0") or 0)
        except ValueError:
            since = 0.0
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"items": hubfleet_identities(since)}))
