"""The synthetic user check: do what a user does on a hub and time every step.

0. sign_in        where the hub's login form can be used (native: the check user's password, derived from
                  the token; dummy: the hub's password when the caller gives it), GET /hub/login and POST its
                  form as a browser does (cookies, _xsrf), then open /hub/home with the session. The token
                  must hold read:hub (GET /hub/api/info names the authenticator); without it, or on OAuth
                  hubs, the step is left out and the check runs through the REST API alone.
1. create_user    ensure the check user exists            POST   /hub/api/users/{name}        (409 = exists)
2. start_server   start its server, poll until ready      POST   /hub/api/users/{name}/server
3. start_kernel   start a kernel through the proxy        POST   /user/{name}/api/kernels
4. execute        run code over the kernel websocket and verify its output and execute_reply
5. delete_kernel  DELETE /user/{name}/api/kernels/{id}
6. stop_server    DELETE /hub/api/users/{name}/server, poll until stopped (always attempted once step 2 ran)

The token is a JupyterHub service token holding at least ``required_scopes(username)``.
Nothing this module returns or raises contains the token or a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import websockets
from websockets.asyncio.client import connect as ws_connect

from hubfleet.clock import utcnow

if TYPE_CHECKING:
    from hubfleet.config.models import Hub
    from hubfleet.store.api import Store

DEFAULT_USERNAME = "hubfleet-check"
TEST_USER_PREFIX = "hubfleet-test-"
"""Simulated attendees of an event's readiness test (hubfleet.events.readiness) are named with this prefix;
usage counting leaves them out, as it does the check user."""
# `{a}` and `{b}` are replaced by random numbers; the output must contain their product.
DEFAULT_CODE = "a, b = {a}, {b}\nprint('hubfleet-check', a * b)"
KERNEL_CODE = {
    "ir": 'cat("hubfleet-check", format({a} * {b}, scientific = FALSE), "\\n")',
}
"""The default check's code in a kernel that is not Python (by kernelspec name), printing the same product."""

STEPS = ("create_user", "start_server", "start_kernel", "execute", "delete_kernel", "stop_server")
SIGN_IN_STEP = "sign_in"
"""Runs before STEPS where the hub's login form can be used (see the module's docstring)."""
CHECK_PASSWORD_LABEL = "hubfleet-check native login password v1"
"""Must equal hubfleet.render.common.CHECK_PASSWORD_LABEL: native hubs derive the check user's password the
same way (HMAC-SHA256 of the control token), so no password travels or is stored anywhere."""
_XSRF = re.compile(r'name="_xsrf"\s+value="([^"]*)"')
_LOGIN_ERROR = re.compile(
    r'<(?:p|div)[^>]*class="[^"]*(?:login_error|alert)[^"]*"[^>]*>(.*?)</(?:p|div)>', re.S
)
CLEANUP_SECONDS = 30.0  # budget kept for stopping the server even when the main budget is spent
POLL_INTERVAL = 0.25
WS_RETRY_STATUSES = frozenset({502, 503, 504, 599})
"""Answers to the kernel websocket's opening that mean "the proxy did not reach the server (yet)"."""
WS_RETRY_PAUSE = 1.0


def is_test_user(username: str) -> bool:
    """Whether `username` is a readiness test's simulated attendee (never counted as a hub's user)."""
    return username.startswith(TEST_USER_PREFIX)


def check_source(code: str, kernel_name: str, a: int, b: int) -> str:
    """The code to run in a kernel named `kernel_name`: `code` with `{a}` and `{b}` filled in; with the
    default code, a kernel named in KERNEL_CODE (R's ir) runs that language's equivalent."""
    text = KERNEL_CODE.get(kernel_name, code) if code == DEFAULT_CODE else code
    return text.replace("{a}", str(a)).replace("{b}", str(b))


def form_xsrf(page: str) -> str | None:
    """The _xsrf field of a hub page's form (login, sign-up), as a browser posts it back."""
    found = _XSRF.search(page)
    return html.unescape(found.group(1)) if found else None


async def post_login(browser: httpx.AsyncClient, username: str, password: str) -> None:
    """GET /hub/login and POST its form as a browser does (the _xsrf cookie and field), then open /hub/home
    with the session; `browser` keeps the session's cookies. StepFailed names why the hub refused."""
    page = await browser.get("/hub/login")
    if page.status_code != 200:
        raise _http_error("opening the login page", page)
    form = {"username": username, "password": password}
    if xsrf := form_xsrf(page.text):
        form["_xsrf"] = xsrf
    response = await browser.post("/hub/login", data=form)
    if response.status_code in (200, 403):  # the page again, with its message (native: 200)
        found = _LOGIN_ERROR.search(response.text)
        why = re.sub(r"<[^>]+>", " ", found.group(1)) if found else "no session"
        raise StepFailed(f"the login form refused {username}: {_excerpt(html.unescape(why))}")
    if response.status_code not in (302, 303):
        raise StepFailed(f"posting the login form: HTTP {response.status_code}")
    home = await browser.get("/hub/home")
    if home.status_code != 200:
        where = home.headers.get("location", "")
        raise StepFailed(f"/hub/home after signing in: HTTP {home.status_code} {where}".rstrip())


def native_check_password(token: str) -> str:
    """The check user's password on native hubs (the hub derives the same from the control token)."""
    return hmac.new(token.encode(), CHECK_PASSWORD_LABEL.encode(), hashlib.sha256).hexdigest()


def required_scopes(username: str = DEFAULT_USERNAME) -> list[str]:
    """The least scopes a service token needs to run the check as `username` (measured on JupyterHub 6.1.1).

    - ``admin:users!user=NAME``: creating the user (``users!user=NAME`` is refused: POST needs admin:users);
      it also grants reading that user's model, which the polling uses.
    - ``servers!user=NAME``: start, stop and read its server.
    - ``access:servers!user=NAME``: the kernel REST API and websocket behind the proxy (without it: 403).
    The fleet's control-plane token holds more (``read:users``, ``list:users``, ``read:hub`` …) for other
    monitors; the check needs none of those.
    """
    return [
        f"admin:users!user={username}",
        f"servers!user={username}",
        f"access:servers!user={username}",
    ]


REQUIRED_SCOPES = required_scopes()


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class CheckResult:
    ok: bool
    failed_step: str | None
    steps: list[StepResult]
    total_seconds: float
    hub: str = ""
    at: datetime = field(default_factory=utcnow)
    environment: str | None = None
    """The environment checked (`user_options`), None: the hub's default without options."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @property
    def error(self) -> str | None:
        """One line naming the failing step and why, or None when the check passed."""
        if self.ok:
            return None
        step = next((s for s in self.steps if s.name == self.failed_step), None)
        return f"step {self.failed_step} failed: {step.detail if step else 'unknown error'}"


class StepFailed(Exception):
    """A step went wrong; the message is safe to show (no token)."""


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _http_error(what: str, response: httpx.Response) -> StepFailed:
    body = response.text
    with contextlib.suppress(ValueError, AttributeError):
        body = response.json().get("message") or body
    return StepFailed(f"{what}: HTTP {response.status_code}: {_excerpt(str(body))}")


@dataclass(frozen=True)
class Via:
    """Reach a hub's public name at another address, as DNS sends its users there: the fleet's front door
    (`connect`, HOST:PORT) asked for the name as Host and TLS server name, trusting the system CAs and
    `cafiles` (the front door's local CA, a private ACME CA)."""

    connect: str
    cafiles: tuple[str, ...] = ()

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.connect.rpartition(":")
        return host.strip("[]"), int(port)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for path in self.cafiles:
            context.load_verify_locations(cafile=path)
        return context


class _ViaTransport(httpx.AsyncBaseTransport):
    """Sends each request to `via`'s address with its URL's name as Host and SNI; cookies stay the name's."""

    def __init__(self, via: Via) -> None:
        self.via = via
        self.inner = httpx.AsyncHTTPTransport(verify=via.ssl_context(), trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host, port = self.via.address
        sent = httpx.Request(
            request.method,
            request.url.copy_with(host=host, port=port),
            headers=request.headers,  # Host: the public name, set from the original URL
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.host},
        )
        return await self.inner.handle_async_request(sent)

    async def aclose(self) -> None:
        await self.inner.aclose()


def through(via: Via | None) -> dict[str, Any]:
    """httpx.AsyncClient arguments that send its requests through `via` (none without it)."""
    return {"transport": _ViaTransport(via)} if via is not None else {}


class _Check:
    """One run of the check; holds the client, the timings and the clean-up state."""

    def __init__(
        self,
        hub_url: str,
        token: str,
        username: str,
        timeout: float,
        dummy_password: str | None = None,
        via: Via | None = None,
        user_options: dict[str, Any] | None = None,
    ) -> None:
        self.hub_url = hub_url.rstrip("/")
        self.user_options = user_options
        self.kernel_name = ""
        self.via = via
        self.token = token
        self.dummy_password = dummy_password
        self.password: str | None = None
        self.username = username
        self.quoted = quote(username, safe="")
        self.deadline = time.monotonic() + timeout
        self.steps: list[StepResult] = []
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"token {token}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            follow_redirects=False,
            **self._through(),
        )
        self.kernel_id: str | None = None

    # -- plumbing --------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        for secret in (self.token, self.password, self.dummy_password):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _through(self) -> dict[str, Any]:
        return through(self.via)

    async def step(self, name: str, action: Callable[[], Awaitable[str]], *, cleanup: bool = False) -> bool:
        budget = self.deadline - time.monotonic()
        if cleanup:
            budget = max(budget, CLEANUP_SECONDS)
        start = time.perf_counter()
        ok, detail = True, ""
        try:
            if budget <= 0:
                raise TimeoutError
            async with asyncio.timeout(budget):
                detail = await action()
        except TimeoutError:
            ok, detail = False, f"timed out after {time.perf_counter() - start:.1f}s"
        except StepFailed as exc:
            ok, detail = False, str(exc)
        except httpx.HTTPError as exc:
            where = ""
            with contextlib.suppress(RuntimeError):  # not every HTTPError carries its request
                where = f" ({exc.request.method} {exc.request.url.path})"
            ok, detail = False, f"{type(exc).__name__}: {exc}{where}"
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a hub answering nonsense (not JSON, missing fields) fails the step
            ok, detail = False, f"unexpected answer: {type(exc).__name__}: {_excerpt(str(exc))}"
        self.steps.append(StepResult(name, ok, round(time.perf_counter() - start, 3), self.redact(detail)))
        return ok

    def api(self, path: str) -> str:
        return f"{self.hub_url}/hub/api{path}"

    def server_api(self, path: str) -> str:
        return f"{self.hub_url}/user/{self.quoted}/api{path}"

    async def user_server(self) -> dict[str, Any] | None:
        """The default server's model from the hub, or None when the user has no server."""
        response = await self.client.get(self.api(f"/users/{self.quoted}"))
        if response.status_code != 200:
            raise _http_error("reading the user model", response)
        return (response.json().get("servers") or {}).get("")

    # -- steps -----------------------------------------------------------------------------------
    async def login_password(self) -> str | None:
        """The password the check user signs in with, or None when the hub's login form is not for us: the
        token cannot read the hub's info, an OAuth hub, a dummy hub whose password the caller did not give."""
        response = await self.client.get(self.api("/info"))
        if response.status_code != 200:
            return None
        authenticator = str((response.json().get("authenticator") or {}).get("class", ""))
        if authenticator.endswith(".NativeAuthenticator"):
            return native_check_password(self.token)
        if authenticator.endswith(".DummyAuthenticator"):
            return self.dummy_password
        return None

    async def sign_in(self) -> str:
        """GET /hub/login, POST its form with the check user's credentials, then /hub/home with the session
        cookie: what a person does, in a client of its own (cookies, no token)."""
        assert self.password is not None
        async with httpx.AsyncClient(
            base_url=self.hub_url,
            timeout=httpx.Timeout(30.0, connect=10.0),
            follow_redirects=False,
            **self._through(),
        ) as browser:
            await post_login(browser, self.username, self.password)
        return "signed in through the login form"

    async def create_user(self) -> str:
        response = await self.client.post(self.api(f"/users/{self.quoted}"))
        if response.status_code == 201:
            return f"created user {self.username}"
        if response.status_code == 409:
            return f"user {self.username} exists"
        raise _http_error(f"creating user {self.username}", response)

    async def start_server(self) -> str:
        while True:
            response = await self.client.post(
                self.api(f"/users/{self.quoted}/server"),
                **({"json": {"user_options": self.user_options}} if self.user_options is not None else {}),
            )
            body = _excerpt(response.text)
            if response.status_code == 400 and "pending stop" in body:
                await self.wait_stopped()  # a previous check is still stopping it: start afresh
                continue
            break
        if response.status_code == 201:
            return "server started"
        if response.status_code == 400 and "already running" in body:
            return "server was already running"
        if response.status_code not in (202, 500):
            raise _http_error("starting the server", response)
        # 202: spawn pending. 500: JupyterHub 6 answers this when the spawn outlives slow_spawn_timeout
        # while the spawn goes on; only the user model tells what really happened.
        while True:
            server = await self.user_server()
            if server and server.get("ready"):
                return "server ready" + (
                    " (hub answered 500: slow spawn)" if response.status_code == 500 else ""
                )
            if not server or not server.get("pending"):
                raise _http_error("starting the server (the spawn ended without a running server)", response)
            await asyncio.sleep(POLL_INTERVAL)

    async def start_kernel(self) -> str:
        response = await self.client.post(self.server_api("/kernels"), json={})
        if response.status_code != 201:
            raise _http_error("starting a kernel", response)
        model = response.json()
        self.kernel_id = model["id"]
        self.kernel_name = str(model.get("name") or "")
        return f"kernel {model.get('name', '?')} {self.kernel_id}"

    async def execute(self, code: str, expect: str) -> str:
        assert self.kernel_id is not None
        ws_base = "ws" + self.hub_url[len("http") :] if self.hub_url.startswith("http") else self.hub_url
        session = uuid.uuid4().hex
        url = f"{ws_base}/user/{self.quoted}/api/kernels/{self.kernel_id}/channels?session_id={session}"
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "username": self.username,
                "session": session,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": utcnow().isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        stdout: list[str] = []
        errors: list[str] = []
        reply: dict[str, Any] | None = None
        idle = False
        through: dict[str, Any] = {}
        if self.via is not None:  # to the front door's address, asking for the hub's name
            host, port = self.via.address
            name = httpx.URL(self.hub_url).host
            through = {"host": host, "port": port, "ssl": self.via.ssl_context(), "server_hostname": name}
        for attempt in itertools.count(1):
            try:
                websocket_cm = ws_connect(
                    url,
                    additional_headers={"Authorization": f"token {self.token}"},
                    open_timeout=30,
                    proxy=None,
                    **through,
                )
                async with websocket_cm as ws:
                    await ws.send(json.dumps(request))
                    while reply is None or not idle:
                        message = json.loads(await ws.recv())
                        if message.get("parent_header", {}).get("msg_id") != msg_id:
                            continue
                        kind = message.get("msg_type") or message.get("header", {}).get("msg_type")
                        content = message.get("content", {})
                        if kind == "stream" and content.get("name") == "stdout":
                            stdout.append(content.get("text", ""))
                        elif kind == "stream":
                            errors.append(content.get("text", ""))
                        elif kind == "error":
                            errors.append(f"{content.get('ename')}: {content.get('evalue')}")
                        elif kind == "execute_reply":
                            reply = content
                        elif kind == "status" and content.get("execution_state") == "idle":
                            idle = True
                break
            except websockets.exceptions.InvalidStatus as exc:
                status = exc.response.status_code
                # a kernel's first start (R's above all, on a busy node) can outlast the proxy's wait for
                # the server (599: tornado's 20 s websocket timeout; 502-504 from other proxies): the kernel
                # keeps starting, so open the websocket again while the check's budget lasts
                if status in WS_RETRY_STATUSES and time.monotonic() + WS_RETRY_PAUSE < self.deadline:
                    await asyncio.sleep(WS_RETRY_PAUSE)
                    continue
                why = " (the proxy could not reach the server in time)" if status == 599 else ""
                tries = f" (attempt {attempt})" if attempt > 1 else ""
                raise StepFailed(f"opening the kernel websocket: HTTP {status}{why}{tries}") from None
        output = "".join(stdout)
        if reply.get("status") != "ok":
            why = "; ".join(errors) or f"{reply.get('ename')}: {reply.get('evalue')}"
            raise StepFailed(f"execute_reply status {reply.get('status')!r}: {_excerpt(why)}")
        if expect not in output:
            raise StepFailed(f"expected output containing {expect!r}, got {_excerpt(output) or 'nothing'!r}")
        tries = f" (websocket opened at attempt {attempt})" if attempt > 1 else ""
        return f"output {_excerpt(output.strip(), 80)!r}{tries}"

    async def delete_kernel(self) -> str:
        response = await self.client.delete(self.server_api(f"/kernels/{self.kernel_id}"))
        if response.status_code not in (204, 404):
            raise _http_error("deleting the kernel", response)
        return "kernel deleted" if response.status_code == 204 else "kernel already gone"

    async def wait_stopped(self) -> None:
        while True:
            server = await self.user_server()
            if not server or (not server.get("ready") and not server.get("pending")):
                return
            await asyncio.sleep(POLL_INTERVAL)

    async def stop_server(self) -> str:
        response = await self.client.delete(self.api(f"/users/{self.quoted}/server"))
        if response.status_code not in (202, 204):
            raise _http_error("stopping the server", response)
        await self.wait_stopped()
        return "server stopped"


async def run_check(
    hub_url: str,
    api_token: str,
    *,
    username: str = DEFAULT_USERNAME,
    code: str = DEFAULT_CODE,
    expect: str | None = None,
    timeout: float = 120,
    dummy_password: str | None = None,
    via: Via | None = None,
    user_options: dict[str, Any] | None = None,
) -> CheckResult:
    """Run the synthetic user check against the hub at `hub_url` (its public URL, e.g. http://127.0.0.1:8000).

    `code` may hold `{a}` and `{b}`, replaced by random integers; the check passes when the printed output
    contains `expect` (default: the product a*b) and the kernel replies `ok`. Never raises for a hub
    problem: the result names the failing step. The server is stopped whenever the start was attempted.
    `dummy_password`: the hub's shared password, for signing in through a dummy hub's login form.
    `via`: reach `hub_url` (a public https URL) at the fleet's front door, as its users do.
    `user_options`: the body's `user_options` when starting the server (an environment); None: no body. With
    the default code, a kernel named in KERNEL_CODE (R's ir) runs that language's equivalent.
    """
    a, b = secrets.randbelow(10**6) + 1000, secrets.randbelow(10**6) + 1000
    expected = str(a * b) if expect is None else expect
    started_at = utcnow()
    start = time.perf_counter()
    check = _Check(hub_url, api_token, username, timeout, dummy_password, via, user_options)

    def source() -> str:
        return check_source(code, check.kernel_name, a, b)

    try:
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
            check.password = await check.login_password()  # unknown: the REST path alone, as before
        signed_in = check.password is None or await check.step(SIGN_IN_STEP, check.sign_in)
        if signed_in and await check.step("create_user", check.create_user):
            started = await check.step("start_server", check.start_server)
            try:
                if started and await check.step("start_kernel", check.start_kernel):
                    await check.step("execute", lambda: check.execute(source(), expected))
                    await check.step("delete_kernel", check.delete_kernel, cleanup=True)
            finally:
                await check.step("stop_server", check.stop_server, cleanup=True)
    finally:
        await check.client.aclose()
    failed = next((s.name for s in check.steps if not s.ok), None)
    return CheckResult(
        ok=failed is None,
        failed_step=failed,
        steps=check.steps,
        total_seconds=round(time.perf_counter() - start, 3),
        at=started_at,
        environment=(user_options or {}).get("environment"),
    )


async def check_hub(
    hub: str,
    hub_url: str,
    api_token: str,
    store: Store | None = None,
    **options: Any,
) -> CheckResult:
    """Run the check against one hub of the fleet and record the result in `store` (when given)."""
    result = await run_check(hub_url, api_token, **options)
    result.hub = hub
    if store is not None:
        store.record_check(result)
    return result


def checkable(
    hub: Hub, only: str | None = None, groups: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The hub's environments the check user may start (slugs; `only`: just that one), and why each other one
    is skipped. `groups`: the check user's; None: each of `auth.groups` (the renders put it in each, on both
    backends; OAuth hubs' groups come from the provider, which knows no check user)."""
    from hubfleet.environment_choice import allowed

    environments = [e.model_dump(mode="json") for e in hub.environments]
    if only is not None:
        environments = [e for e in environments if e["slug"] == only]
        if not environments:
            slugs = ", ".join(e.slug for e in hub.environments) or "(none)"
            raise ValueError(f"hub {hub.name} has no environment '{only}'; its environments: {slugs}")
    if groups is None:
        groups = list(getattr(hub.auth, "groups", None) or {})
    usable = [env["slug"] for env in allowed(environments, groups)]
    skipped = {
        env["slug"]: f"only for group(s) {', '.join(env.get('groups') or [])}, which the check user is not in"
        for env in environments
        if env["slug"] not in usable
    }
    return usable, skipped


async def check_environments(
    hub: str,
    hub_url: str,
    api_token: str,
    environments: list[str],
    store: Store | None = None,
    **options: Any,
) -> list[CheckResult]:
    """The check in each of `environments` (slugs) in turn, each recorded; [] of slugs: the plain check."""
    if not environments:
        return [await check_hub(hub, hub_url, api_token, store, **options)]
    results = []
    for slug in environments:
        results.append(
            await check_hub(hub, hub_url, api_token, store, user_options={"environment": slug}, **options)
        )
    return results


UserSteps = _Check
"""The check's steps for one user and token, for other runners (the readiness test's attendees)."""
