"""Hub-side code: the `support` service, the form behind each hub's "Get help" link.

Standard library, tornado and JupyterHub only, and self-contained: a local hub runs this file as a managed
service; a Kubernetes hub gets it as a file in the hub pod (hub.extraFiles): the z2jh hub image has no
hubfleet. Its settings come as JSON in $HUBFLEET_SUPPORT (render/support_hook.py writes them).

- GET  {prefix}                  the form. Signed-in people are recognised through the hub's OAuth (the link
                                  from a signed-in page asks for it with ?signin=1: no second sign-in, the hub
                                  approves at once); signed-out visitors write as unverified, with an email.
- POST {prefix}                  checks every field; an error shows the form again with what was written. The
                                  request goes to an outbox (SQLite beside the hub's database), never further.
- GET  {prefix}api/outbox         the waiting requests, and
- POST {prefix}api/outbox/ack     forget the ones the control plane has made tickets of: both only for the
                                  control plane's own service token (the token's owner is checked).

Why an outbox the control plane pulls, rather than the service pushing: a hub (and anything a user runs on
it) then needs no address of, route to or credential for the control plane, and a request written while the
control plane is away waits on the hub instead of being lost.

The request body is streamed and capped (tornado's max_body_size is the hard limit): a body over the limit is
read to its end but not kept beyond it, so its text fields (which the form sends before the file) can be
shown again with the error instead of a bare "400 Bad Request".
"""

import base64
import html
import json
import os
import re
import secrets
import sqlite3
import time
from urllib.parse import urlencode, urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import httputil, ioloop, web
from tornado.httpserver import HTTPServer

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY AUTOINCREMENT, ref TEXT UNIQUE NOT NULL, "
    "created REAL NOT NULL, username TEXT, verified INTEGER NOT NULL, email TEXT, page TEXT, "
    "category TEXT NOT NULL, urgency TEXT NOT NULL, description TEXT NOT NULL, include_log INTEGER NOT NULL, "
    "attachment_name TEXT, attachment BLOB)"
)
MAX_DESCRIPTION = 50_000
MAX_PAGE = 2000
MAX_PENDING = 2000
"""Waiting requests: past this the form asks people to write by mail (a flood of anonymous requests must
not fill the hub's disk)."""
EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
MAGIC = (
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF87a"),
    ("image/gif", b"GIF89a"),
    ("image/webp", b"RIFF"),
    ("application/pdf", b"%PDF-"),
)
FORM_OVERHEAD = 4 * MAX_DESCRIPTION + 64 * 1024
"""Bytes of a form beyond its attachment: the description in UTF-8 (up to 4 bytes a character), the other
fields, multipart headers."""
FIELDS = ("category", "urgency", "description", "email", "page")
HARD_LIMIT_FACTOR = 4
"""Bodies up to this many times the allowed size are read (and dropped) to answer with the form; larger
ones are cut off by tornado."""

CONFIG = json.loads(os.environ.get("HUBFLEET_SUPPORT", "{}") or "{}")


def _mib(n):
    return f"{n / 1_048_576:.1f} MiB"


def attachment_kind(data):
    """The content type the bytes are (the browser's claim is not trusted), or None."""
    for kind, magic in MAGIC:
        if data.startswith(magic) and (kind != "image/webp" or data[8:12] == b"WEBP"):
            return kind
    return None


def clean_filename(name):
    base = re.sub(r"[^\w.\- ]+", "_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")
    return (base or "attachment")[:200]


def clean_page(value):
    """The page they came from, as a path on this hub (anything else is dropped: it is a hint, not a link)."""
    value = (value or "").strip()
    if value.startswith(("http://", "https://")):
        parsed = urlparse(value)
        value = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    if not value.startswith("/") or value.startswith("//"):
        return ""
    return value[:MAX_PAGE]


# --------------------------------------------------------------------------- the outbox


def _db():
    path = CONFIG["db"]
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, timeout=10)
    connection.execute(_SCHEMA)
    return connection


def store_request(fields):
    """Write one checked request; returns its reference (what the person is shown and the ticket's
    intake_ref on the control plane)."""
    ref = time.strftime("%Y%m%d", time.gmtime()) + "-" + secrets.token_hex(4)
    connection = _db()
    try:
        with connection:
            connection.execute(
                "INSERT INTO requests (ref, created, username, verified, email, page, category, urgency, "
                "description, include_log, attachment_name, attachment) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref,
                    time.time(),
                    fields["username"],
                    1 if fields["username"] else 0,
                    fields["email"] or None,
                    fields["page"] or None,
                    fields["category"],
                    fields["urgency"],
                    fields["description"],
                    1 if fields["include_log"] else 0,
                    fields["attachment_name"],
                    fields["attachment"],
                ),
            )
    finally:
        connection.close()
    return ref


def pending_count():
    connection = _db()
    try:
        return connection.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        connection.close()


def outbox(limit):
    connection = _db()
    try:
        rows = connection.execute(
            "SELECT ref, created, username, verified, email, page, category, urgency, description, "
            "include_log, attachment_name, attachment FROM requests ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        pending = connection.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        connection.close()
    items = []
    for row in rows:
        ref, created, username, verified, email, page, category, urgency, text, log, name, data = row
        items.append(
            {
                "ref": ref,
                "created": created,
                "username": username,
                "verified": bool(verified),
                "email": email,
                "page": page,
                "category": category,
                "urgency": urgency,
                "description": text,
                "include_log": bool(log),
                "attachment": None
                if data is None
                else {"filename": name or "attachment", "data": base64.b64encode(data).decode()},
            }
        )
    return {"requests": items, "pending": pending}


def acknowledge(refs):
    connection = _db()
    try:
        with connection:
            deleted = 0
            for ref in refs:
                deleted += connection.execute("DELETE FROM requests WHERE ref = ?", (ref,)).rowcount
    finally:
        connection.close()
    return deleted


# --------------------------------------------------------------------------- the page

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
label { display: block; font-weight: 600; margin-top: 1rem; }
.hint, .urgency-help { font-weight: normal; color: #555; font-size: 0.9rem; }
.errors { background: #fde8e8; border: 1px solid #d33; padding: 0.5rem 1rem; }
.field-error { color: #b00; font-weight: normal; }
textarea { width: 100%; min-height: 10rem; }
input[type=email], select { width: 100%; max-width: 30rem; }
fieldset { border: 1px solid #ccc; margin-top: 1rem; }
button { margin-top: 1.5rem; font-size: 1rem; padding: 0.4rem 1.2rem; }
.who { background: #eef5ff; padding: 0.5rem 1rem; }
"""


def _e(value):
    return html.escape(str(value if value is not None else ""), quote=True)


def _page(title, body):
    hub = _e(CONFIG.get("hub_display_name") or CONFIG.get("hub") or "this hub")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)} · {hub}</title><style>{_STYLE}</style></head><body>"
        f"<p><a id='back' href='{_e(CONFIG.get('hub_home', '/hub/home'))}'>&larr; back to {hub}</a></p>"
        f"<h1>{_e(title)}</h1>{body}</body></html>"
    )


def render_form(handler, values, errors, user):
    """The form, filled with `values`, with `errors` ({field: message}) above it and beside each field."""
    categories = CONFIG.get("categories") or [["other", "Something else"]]
    urgencies = CONFIG.get("urgency") or [["normal", ""]]
    limit = int(CONFIG.get("max_attachment_bytes") or 5 * 1_048_576)
    parts = []
    if errors:
        items = "".join(f"<li>{_e(message)}</li>" for message in errors.values())
        parts.append(
            f"<div class='errors' id='errors' role='alert'><p>Please fix this and send again "
            f"(what you wrote is kept):</p><ul>{items}</ul></div>"
        )

    def error(name):
        return f" <span class='field-error'>{_e(errors[name])}</span>" if name in errors else ""

    if user:
        parts.append(
            f"<p class='who' id='who'>You are signed in as <strong>{_e(user['name'])}</strong>; "
            "we will see that this request is yours.</p>"
        )
    else:
        signin = (
            url_path_join(CONFIG.get("prefix", "/services/support/"), "")
            + "?"
            + urlencode({"signin": "1", "from": values.get("page", "")})
        )
        parts.append(
            "<p class='who' id='who'>You are not signed in: we will answer by email. "
            f"Signed in to the hub in this browser? <a href='{_e(signin)}'>Ask as yourself</a>.</p>"
        )
    parts.append(
        f"<form method='post' enctype='multipart/form-data' id='help-form' "
        f"action='{_e(CONFIG.get('prefix', '/services/support/'))}'>"
        f"<input type='hidden' name='_xsrf' value='{_e(handler.xsrf_token.decode())}'>"
        f"<input type='hidden' name='page' value='{_e(values.get('page', ''))}'>"
    )
    options = "".join(
        f"<option value='{_e(key)}'{' selected' if values.get('category') == key else ''}>"
        f"{_e(label)}</option>"
        for key, label in categories
    )
    parts.append(
        f"<label for='category'>What is it about?{error('category')}</label>"
        f"<select id='category' name='category' required><option value=''>Choose…</option>{options}</select>"
    )
    chosen = values.get("urgency") or ""
    radios = "".join(
        f"<div><input type='radio' name='urgency' id='urgency-{_e(key)}' value='{_e(key)}'"
        f"{' checked' if chosen == key else ''}> <label style='display:inline' for='urgency-{_e(key)}'>"
        f"{_e(key.capitalize())}</label> <span class='urgency-help'>{_e(text)}</span></div>"
        for key, text in urgencies
    )
    parts.append(f"<fieldset><legend>How urgent is it?{error('urgency')}</legend>{radios}</fieldset>")
    parts.append(
        f"<label for='description'>What happened, and what did you expect?{error('description')}</label>"
        f"<textarea id='description' name='description' maxlength='{MAX_DESCRIPTION}' required>"
        f"{_e(values.get('description', ''))}</textarea>"
    )
    required = "" if user else " required"
    what = "optional: we also answer in the hub's ticket" if user else "required: you are not signed in"
    parts.append(
        f"<label for='email'>Your email for our answer <span class='hint'>({what})</span>{error('email')}"
        f"</label><input type='email' id='email' name='email' "
        f"value='{_e(values.get('email', ''))}'{required}>"
    )
    if user:
        checked = " checked" if values.get("include_log") else ""
        parts.append(
            f"<label><input type='checkbox' name='include_log' id='include_log' value='1'{checked}> "
            "Include the start log of my last server</label>"
        )
    again = "; choose the file again" if errors and values.get("had_file") else ""
    parts.append(
        f"<label for='attachment'>A screenshot or PDF <span class='hint'>(optional, PNG, JPEG, GIF, WebP "
        f"or PDF, up to {_mib(limit)}{again})"
        f"</span>{error('attachment')}</label>"
        f"<input type='file' id='attachment' name='attachment' "
        "accept='image/png,image/jpeg,image/gif,image/webp,application/pdf'>"
        "<div><button type='submit' id='send'>Send</button></div></form>"
    )
    return _page("Get help", "".join(parts))


# --------------------------------------------------------------------------- handlers


class _Base(HubOAuthenticated, web.RequestHandler):
    def set_default_headers(self):
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'",
        )


@web.stream_request_body
class FormHandler(_Base):
    """The form: GET shows it, POST checks and stores a request."""

    def initialize(self):
        self._chunks = []
        self._size = 0
        self._too_big = False
        self._body_ready = False

    def check_xsrf_cookie(self):
        # called by tornado before the body has arrived; checked in post() once the body is parsed
        if self._body_ready:
            return super().check_xsrf_cookie()
        return None

    def prepare(self):
        if self.request.method == "POST":
            limit = self._limit()
            self.request.connection.set_max_body_size(limit * HARD_LIMIT_FACTOR)

    def _limit(self):
        return int(CONFIG.get("max_attachment_bytes") or 5 * 1_048_576) + FORM_OVERHEAD

    def data_received(self, chunk):
        room = self._limit() - self._size
        if room > 0:
            self._chunks.append(chunk[:room])
        self._size += len(chunk)
        if self._size > self._limit():
            self._too_big = True

    def _user(self):
        user = self.get_current_user()
        return user if user and user.get("kind", "user") == "user" else None

    def get(self):
        user = self._user()
        if user is None and self.get_argument("signin", "") == "1":
            # the link on a signed-in hub page: the hub's OAuth recognises them without a sign-in form. Once
            # only: back here still without a user (a browser refusing the cookie), the form is shown
            self.request.uri = self.request.uri.replace("signin=1", "signin=tried", 1)
            return self.redirect(self.get_login_url())
        page = clean_page(self.get_argument("from", "") or self.request.headers.get("Referer", ""))
        self.write(render_form(self, {"page": page}, {}, user))

    def _parse(self):
        body = b"".join(self._chunks)
        content_type = self.request.headers.get("Content-Type", "")
        if self._too_big and "boundary=" in content_type:
            # keep the text fields (sent before the file) of a body cut at the limit
            boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip().strip('"')
            cut = body.rfind(b"--" + boundary.encode())
            body = (body[:cut] if cut > 0 else b"") + b"--" + boundary.encode() + b"--\r\n"
        arguments, files = {}, {}
        httputil.parse_body_arguments(content_type, body, arguments, files, self.request.headers)
        for name, values in arguments.items():
            self.request.body_arguments.setdefault(name, []).extend(values)
            self.request.arguments.setdefault(name, []).extend(values)
        self.request.files = files
        self._body_ready = True

    def post(self):
        self._parse()
        try:
            self.check_xsrf_cookie()
        except web.HTTPError:
            # an old tab (the hub session changed) or a form posted from elsewhere: nothing is stored
            self.set_status(403)
            values = {name: self.get_body_argument(name, "") for name in FIELDS}
            values["page"] = clean_page(values["page"])
            error = {"form": "this form is too old (or came from another site); check it and send it again"}
            return self.write(render_form(self, values, error, self._user()))
        user = self._user()
        values = {
            "category": self.get_body_argument("category", ""),
            "urgency": self.get_body_argument("urgency", ""),
            "description": self.get_body_argument("description", "").replace("\r\n", "\n").strip(),
            "email": self.get_body_argument("email", "").strip(),
            "page": clean_page(self.get_body_argument("page", "")),
            "include_log": bool(user) and self.get_body_argument("include_log", "") == "1",
        }
        errors = {}
        limit = int(CONFIG.get("max_attachment_bytes") or 5 * 1_048_576)
        upload = (self.request.files.get("attachment") or [None])[0]
        attachment = attachment_name = None
        values["had_file"] = bool(upload and upload.body) or self._too_big
        if self._too_big:
            errors["attachment"] = (
                f"what you sent is {_mib(self._size)}, more than this form takes; attachments may be up to "
                f"{_mib(limit)} (crop the screenshot, or leave it out and describe it)"
            )
        elif upload is not None and upload.body:
            if len(upload.body) > limit:
                errors["attachment"] = (
                    f"{clean_filename(upload.filename)} is {_mib(len(upload.body))}; attachments may be up "
                    f"to {_mib(limit)} (crop the screenshot, or share a link to the file)"
                )
            elif attachment_kind(upload.body) is None:
                errors["attachment"] = (
                    f"{clean_filename(upload.filename)} is not a screenshot (PNG, JPEG, GIF, WebP) or a PDF; "
                    "attach one of those, or leave it out"
                )
            else:
                attachment, attachment_name = upload.body, clean_filename(upload.filename)
        if values["category"] not in {key for key, _ in CONFIG.get("categories") or []}:
            errors["category"] = "choose what your request is about"
        if values["urgency"] not in {key for key, _ in CONFIG.get("urgency") or []}:
            errors["urgency"] = "choose how urgent it is"
        if not values["description"]:
            errors["description"] = "write what happened and what you expected"
        elif len(values["description"]) > MAX_DESCRIPTION:
            errors["description"] = (
                f"the description has {len(values['description']):,} characters; keep it under "
                f"{MAX_DESCRIPTION:,} (attach the rest as a PDF)"
            )
        if values["email"] and not EMAIL.match(values["email"]):
            errors["email"] = (
                f"'{values['email'][:100]}' is not an email address; write it as name@example.org"
            )
        elif not values["email"] and user is None:
            errors["email"] = "write your email: you are not signed in, so that is how we answer"
        if not errors and pending_count() >= MAX_PENDING:
            errors["form"] = (
                "the help desk cannot take more requests from this hub right now; try again later"
            )
        if errors:
            self.set_status(413 if self._too_big else 400)
            return self.write(render_form(self, values, errors, user))
        ref = store_request(
            {
                **values,
                "username": user["name"] if user else None,
                "attachment": attachment,
                "attachment_name": attachment_name,
            }
        )
        mail = (
            f"<p>We will answer at <strong>{_e(values['email'])}</strong>"
            + ("" if user else " once you confirm the link we send you there")
            + ".</p>"
            if values["email"]
            else "<p>We will answer by email if we know your address, or through your hub's admins.</p>"
        )
        self.write(
            _page(
                "Request received",
                f"<p id='received'>Thank you: your request reached the help desk. Your reference is "
                f"<strong id='reference'>{_e(ref)}</strong>.</p>{mail}",
            )
        )


class OutboxHandler(_Base):
    """The control plane's pull: only its own service token is accepted."""

    def check_xsrf_cookie(self):
        return None  # token-authenticated only: a cookie never gets past _control()

    def _control(self):
        if not self.request.headers.get("Authorization", "").lower().startswith(("token ", "bearer ")):
            raise web.HTTPError(403, "the outbox is for the control plane's service token")
        model = self.get_current_user()
        if not model or model.get("kind") != "service" or model.get("name") != CONFIG.get("control_service"):
            raise web.HTTPError(403, "the outbox is for the control plane's service token")

    def get(self):
        self._control()
        try:
            limit = max(1, min(50, int(self.get_argument("limit", "10"))))
        except ValueError:
            raise web.HTTPError(400, "limit must be a number from 1 to 50") from None
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(outbox(limit)))


class OutboxAckHandler(OutboxHandler):
    def get(self):
        raise web.HTTPError(405)

    def post(self):
        self._control()
        try:
            refs = json.loads(self.request.body or b"{}").get("refs")
        except (ValueError, AttributeError):
            refs = None
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise web.HTTPError(400, 'send {"refs": ["..."]}')
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"deleted": acknowledge(refs)}))


def make_app():
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", CONFIG.get("prefix", "/services/support/"))
    CONFIG["prefix"] = prefix
    base = prefix[: -len("services/support/")] if prefix.endswith("services/support/") else "/"
    CONFIG.setdefault("hub_home", base + "hub/home")
    HubOAuth.instance(  # the singleton every handler's hub_auth returns
        api_token=os.environ["JUPYTERHUB_API_TOKEN"],
        api_url=CONFIG.get("api_url") or os.environ["JUPYTERHUB_API_URL"],
        cache_max_age=60,
    )
    return web.Application(
        [
            (prefix, FormHandler),
            (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            (url_path_join(prefix, "api/outbox"), OutboxHandler),
            (url_path_join(prefix, "api/outbox/ack"), OutboxAckHandler),
        ],
        cookie_secret=os.urandom(32),
    )


def main():
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    limit = int(CONFIG.get("max_attachment_bytes") or 5 * 1_048_576) + FORM_OVERHEAD
    server = HTTPServer(make_app(), max_body_size=limit * HARD_LIMIT_FACTOR, xheaders=True)
    server.listen(url.port, CONFIG.get("bind") or "127.0.0.1")
    parent = os.getppid()

    def orphaned():
        # the hub runs managed services in sessions of their own: one killed outright (SIGKILL) leaves this
        # process behind, holding its port against the hub's next start; leave with it
        if os.getppid() != parent:
            ioloop.IOLoop.current().stop()

    ioloop.PeriodicCallback(orphaned, 1000).start()
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
