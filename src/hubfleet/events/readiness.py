"""The readiness test before an event's doors open: simulated attendees arrive at the event's rate, each signs
in, starts a server, runs code in a kernel and stops, as a person does; the report says how long the spawns
and first executions took and whether the hub meets the event's target.

Each attendee (``hubfleet-test-<run>-<i>``, a name usage counting leaves out: checks.synthetic.is_test_user)

0. signs in through the hub's real login form where the auth type has one hubfleet can answer: dummy (the
   hub's shared password) and native (a sign-up posted through /hub/signup first, approved with the operator
   token as an admin would). Its browser session then asks the hub for an API token, as JupyterLab's token
   page does. OAuth hubs send people to their provider, which knows no test user: there the operator token
   creates the user and has the hub issue a token for it;
1. starts its server with the event's environment (`user_options`), opens a kernel, runs code and checks the
   output over the websocket, deletes the kernel and stops the server: the synthetic check's steps
   (checks.synthetic.UserSteps), with the attendee's own token.

Every test user is removed afterwards, whatever happened (the hard timeout, an error, Ctrl-C): server
stopped, user deleted from the hub (with its tokens and, on native hubs, its sign-up), and on local hubs with
an account per user their OS account, home and own database (hubfleet.events.test_users). Nothing returned
contains a token or password.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from hubfleet.checks.synthetic import (
    DEFAULT_CODE,
    TEST_USER_PREFIX,
    StepFailed,
    StepResult,
    UserSteps,
    Via,
    check_source,
    form_xsrf,
    post_login,
    through,
)
from hubfleet.clock import utcnow
from hubfleet.config.models_events import DEFAULT_TEST_USERS, Arrival, Event
from hubfleet.events.test_users import CLEANUP_SECONDS, STALE_SECONDS, remove_test_users
from hubfleet.settings import UserError

if TYPE_CHECKING:
    from hubfleet.config.fleet import FleetConfig
    from hubfleet.config.models import Hub

ATTENDEE_SECONDS = 300.0
"""The most one attendee may take from arrival to a stopped server (each step inside this budget)."""
MAX_SECONDS = STALE_SECONDS - CLEANUP_SECONDS - 60
"""The longest a test may run (so no test's users are ever taken for another's leftovers)."""
DEFAULT_TARGET_SECONDS = 10.0
"""Spawn p95 target without an event (the Event model's default)."""
TOKEN_SECONDS = 3600
"""Lifetime of the tokens issued for test users (deleted with the user anyway)."""
_HTTP = httpx.Timeout(30.0, connect=10.0)


class ReadinessError(UserError):
    """The test cannot start: the message names the problem and the fix."""


@dataclass(frozen=True)
class Latency:
    """Nearest-rank percentiles of one measurement over the attendees who got that far."""

    count: int
    p50: float | None
    p95: float | None
    max: float | None

    @classmethod
    def of(cls, samples: list[float]) -> Latency:
        if not samples:
            return cls(0, None, None, None)
        ordered = sorted(samples)
        return cls(len(ordered), _rank(ordered, 50), _rank(ordered, 95), round(ordered[-1], 3))


def _rank(ordered: list[float], percent: float) -> float:
    return round(ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)], 3)


@dataclass
class Attendee:
    """One simulated attendee's run."""

    username: str
    arrives_after: float
    """Seconds after the test's start at which this attendee arrived (the arrival rate's schedule)."""
    sign_in: str
    """`login form` or `token` (how this attendee got in)."""
    steps: list[StepResult] = field(default_factory=list)
    spawn_seconds: float | None = None
    first_execution_seconds: float | None = None
    """Kernel start plus the first execute, as a person waits for the first cell's output."""
    error: str | None = None
    """`step: first line of the cause`, None when the attendee got through."""
    doing: str | None = None
    """The step under way (None once done): where a timeout or a cancel stopped the attendee."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ReadinessReport:
    hub: str
    url: str
    """Where the attendees went: the hub's public URL (through the front door while it serves the hub)."""
    event: str | None
    environment: str | None
    users: int
    arrival: dict[str, Any]
    target_p95_seconds: float
    started_at: datetime
    seconds: float
    """From the first arrival to the last attendee done (or the hard timeout)."""
    cleanup_seconds: float
    """Removing the test users afterwards."""
    spawn: Latency
    first_execution: Latency
    attendees: list[Attendee]
    timed_out: bool
    cleanup_problems: list[str]
    """Test users that could not be removed entirely (each: what is left and why); [] when all are gone."""
    stale_users_removed: list[str]
    """Test users of earlier runs that a killed test left behind (older than an hour), removed by this one."""
    passed: bool
    verdict: str
    """One line: passed, or why not (failures, the p95 against the target, the timeout)."""

    @property
    def failures(self) -> list[dict[str, str]]:
        return [{"user": a.username, "error": a.error} for a in self.attendees if a.error is not None]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["failures"] = self.failures
        for attendee in data["attendees"]:
            attendee["ok"] = attendee["error"] is None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# --------------------------------------------------------------------------- choosing what to test


def default_event(config: FleetConfig, hub: str, now: datetime) -> Event | None:
    """The hub's current event (in ready mode or on), else its next one; None when none is ahead."""
    from hubfleet.events.catalog import phase

    events = sorted(config.events_of(hub), key=lambda e: e.start)
    current = [e for e in events if phase(e, now) in ("ready", "on")]
    upcoming = [e for e in events if phase(e, now) == "upcoming"]
    return (current or upcoming or [None])[0]


def default_users(event: Event | None) -> int:
    """How many attendees a test simulates unless told: the event's `readiness_test_users` (when it is 0, no
    test runs by itself when ready mode starts, but one by hand still gets the default)."""
    return (event.readiness_test_users if event is not None else 0) or DEFAULT_TEST_USERS


def check_users(hub: Hub, users: int) -> None:
    """The number of simulated attendees must fit the hub."""
    if users < 1:
        raise ReadinessError(f"--users must be at least 1, not {users}")
    if hub.max_users is not None and users > hub.max_users:
        raise ReadinessError(
            f"{users} test users exceed hub {hub.name}'s max_users ({hub.max_users}); test with at most "
            f"{hub.max_users} (--users), or raise max_users in the hub file"
        )


def schedule(users: int, arrival: Arrival | None) -> list[float]:
    """When each attendee arrives, in seconds after the start: `arrival.people` within `arrival.seconds`
    means one every seconds/people (60 in 3m: every 3 s); None: all at once."""
    gap = arrival.seconds / arrival.people if arrival is not None else 0.0
    return [round(i * gap, 3) for i in range(users)]


# --------------------------------------------------------------------------- reaching the hub


@dataclass(frozen=True)
class _Reach:
    url: str
    via: Via | None
    operator_token: str = field(repr=False)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, timeout=_HTTP, follow_redirects=False, **through(self.via), **kwargs
        )

    def operator(self) -> httpx.AsyncClient:
        return self.client(headers={"Authorization": f"token {self.operator_token}"})


def _reach(config: FleetConfig, state_dir: Path, hub: Hub) -> _Reach:
    """Where attendees reach the hub (its public URL, through the front door while it serves it) and the
    operator token that makes and removes test users; ReadinessError when the hub is not running."""
    kind = config.clusters[hub.cluster].kind
    if kind == "local":
        from hubfleet.backends.local import check_endpoint, hub_endpoint
        from hubfleet.runtime.status_file import read_status

        status = read_status(state_dir)
        if status is None:
            raise ReadinessError(
                f"hub {hub.name} is not running: no `hubfleet up` daemon runs for {state_dir}; start the "
                "fleet with `hubfleet up`, then test again"
            )
        state = ((status.get("hubs") or {}).get(hub.name) or {}).get("state")
        if state != "running":
            raise ReadinessError(
                f"hub {hub.name} is {state or 'not started'}, not running; see `hubfleet status`, start it "
                "(`hubfleet up` or `hubfleet deploy`), then test again"
            )
        endpoint = check_endpoint(config, state_dir, hub.name)
        operator = hub_endpoint(state_dir, hub.name, operator=True).token
    else:
        from hubfleet.backends import backends_for
        from hubfleet.backends.local import tokens
        from hubfleet.secrets.service_tokens import token_key

        backend = backends_for(config, state_dir)[kind]
        endpoint = backend.check_endpoint(hub.name)
        operator = tokens(state_dir, hub.name, token_key(config, backend.resolver))["operator"]
    return _Reach(endpoint.url.rstrip("/"), endpoint.via, operator)


async def _answers(reach: _Reach, hub: str) -> None:
    async with reach.client() as client:
        try:
            response = await client.get("/hub/api/", timeout=10.0)
        except httpx.HTTPError as exc:
            raise ReadinessError(
                f"hub {hub} does not answer at {reach.url} ({type(exc).__name__}); is it running? see "
                "`hubfleet status`"
            ) from None
    if response.status_code != 200:
        raise ReadinessError(
            f"hub {hub} answers HTTP {response.status_code} at {reach.url}/hub/api/; see `hubfleet status`"
        )


def _password(config: FleetConfig, hub: Hub) -> str | None:
    """The shared password of a dummy hub (None when it cannot be read here: attendees then use tokens)."""
    from hubfleet.render.local import dummy_password
    from hubfleet.secrets.store import SecretResolver

    try:
        return dummy_password(hub, SecretResolver(config))
    except Exception:  # an undecryptable secret: the token path still tests the spawns
        return None


# --------------------------------------------------------------------------- one attendee


def _fail(response: httpx.Response, what: str) -> StepFailed:
    text = " ".join(response.text.split())[:200]
    with contextlib.suppress(ValueError, AttributeError):
        text = str(response.json().get("message") or text)
    return StepFailed(f"{what}: HTTP {response.status_code}: {text}")


class _Run:
    """One test run: its users, the hub's address, and what each attendee does."""

    def __init__(
        self,
        reach: _Reach,
        hub: Hub,
        run_id: str,
        user_options: dict[str, Any] | None,
        password: str | None,
        code: str,
    ) -> None:
        self.reach = reach
        self.hub = hub
        self.run_id = run_id
        self.user_options = user_options
        self.code = code
        self.auth = hub.auth.type if hub.auth is not None else "none"
        self.dummy_password = password
        # an allow list keeps made-up names out of the login form; the operator's API still lets them in
        listed = bool(getattr(hub.auth, "allowed_users", None))
        self.login = not listed and (self.auth == "native" or (self.auth == "dummy" and password is not None))
        self.names: list[str] = []
        self.groups: list[str] = []
        """Hub groups test users join (the event's environment is limited to them)."""

    def username(self, i: int) -> str:
        return f"{TEST_USER_PREFIX}{self.run_id}-{i}"

    async def attend(self, attendee: Attendee, operator: httpx.AsyncClient, started: float) -> None:
        """The attendee's whole visit; any failure is recorded on `attendee`, never raised."""
        attendee.doing = "arriving"
        await asyncio.sleep(max(0.0, started + attendee.arrives_after - time.monotonic()))
        name = attendee.username
        password = self.dummy_password if self.auth == "dummy" else secrets.token_urlsafe(18)
        steps = UserSteps(
            self.reach.url, "", name, ATTENDEE_SECONDS, password, self.reach.via, self.user_options
        )
        steps.password = password
        attendee.steps = steps.steps
        a, b = secrets.randbelow(10**6) + 1000, secrets.randbelow(10**6) + 1000

        async def step(what: str, action: Callable[[], Awaitable[str]], cleanup: bool = False) -> bool:
            attendee.doing = what
            return await steps.step(what, action, cleanup=cleanup)

        try:
            token: list[str] = []
            if self.login:
                async with self.reach.client() as browser:
                    if self.auth == "native" and not await step(
                        "sign_up", lambda: self._sign_up(browser, operator, name, password or "")
                    ):
                        return
                    if not await step("sign_in", lambda: self._sign_in(browser, name, password or "", token)):
                        return
            elif not await step("issue_token", lambda: self._issue_token(operator, name, token)):
                return
            steps.token = token[0]
            steps.client.headers["Authorization"] = f"token {token[0]}"
            if self.groups and not await step("join_groups", lambda: self._join(operator, name)):
                return
            if not await step("start_server", steps.start_server):
                return
            try:
                if await step("start_kernel", steps.start_kernel):
                    code = check_source(self.code, steps.kernel_name, a, b)
                    await step("execute", lambda: _execute(steps, code, str(a * b)))
                    await step("delete_kernel", steps.delete_kernel, cleanup=True)
            finally:
                await step("stop_server", steps.stop_server, cleanup=True)
            attendee.doing = None
        finally:
            await steps.client.aclose()
            _score(attendee)

    async def _sign_up(
        self, browser: httpx.AsyncClient, operator: httpx.AsyncClient, name: str, password: str
    ) -> str:
        """NativeAuthenticator's sign-up form, then the approval an admin gives (the hub's native API)."""
        page = await browser.get("/hub/signup")
        if page.status_code != 200:
            raise _fail(page, "opening the sign-up page")
        form = {"username": name, "signup_password": password, "signup_password_confirmation": password}
        if xsrf := form_xsrf(page.text):
            form["_xsrf"] = xsrf
        posted = await browser.post("/hub/signup", data=form)
        if posted.status_code != 200:
            raise _fail(posted, "posting the sign-up form")
        approved = await operator.patch(
            f"/hub/api/native/users/{quote(name, safe='')}", json={"authorized": True}
        )
        if approved.status_code != 200:
            raise _fail(approved, "approving the sign-up")
        return "signed up through the form, approved"

    async def _sign_in(self, browser: httpx.AsyncClient, name: str, password: str, token: list[str]) -> str:
        """The login form, then a token asked for by the signed-in session (its _xsrf cookie as header)."""
        await post_login(browser, name, password)
        xsrf = browser.cookies.get("_xsrf") or ""
        response = await browser.post(
            f"/hub/api/users/{quote(name, safe='')}/tokens",
            json={"note": "hubfleet readiness test", "expires_in": TOKEN_SECONDS},
            headers={"X-XSRFToken": xsrf},
        )
        if response.status_code != 201:
            raise _fail(response, "asking for a token with the session")
        token.append(str(response.json()["token"]))
        return "signed in through the login form"

    async def _issue_token(self, operator: httpx.AsyncClient, name: str, token: list[str]) -> str:
        """OAuth hubs: the operator creates the user and the hub issues a token for it."""
        quoted = quote(name, safe="")
        created = await operator.post(f"/hub/api/users/{quoted}")
        if created.status_code not in (201, 409):
            raise _fail(created, f"creating user {name}")
        response = await operator.post(
            f"/hub/api/users/{quoted}/tokens",
            json={"note": "hubfleet readiness test", "expires_in": TOKEN_SECONDS},
        )
        if response.status_code != 201:
            raise _fail(response, "issuing a token for the test user")
        token.append(str(response.json()["token"]))
        return "token issued by the hub"

    async def _join(self, operator: httpx.AsyncClient, name: str) -> str:
        for group in self.groups:
            response = await operator.post(
                f"/hub/api/groups/{quote(group, safe='')}/users", json={"users": [name]}
            )
            if response.status_code != 200:
                raise _fail(response, f"adding the test user to group {group}")
        return f"in group(s) {', '.join(self.groups)}"


WEBSOCKET_TRIES = 3
"""JupyterLab opens a kernel's websocket again when it fails; so does an attendee, this many times in all."""


async def _execute(steps: UserSteps, code: str, expect: str) -> str:
    """Run the code; a websocket the proxy gave up on (599: the server did not answer it in time, as under
    a rush while kernels start) is opened again, as JupyterLab does, and the wait counts."""
    for attempt in range(1, WEBSOCKET_TRIES + 1):
        try:
            done = await steps.execute(code, expect)
        except StepFailed as exc:
            if "HTTP 599" not in str(exc) or attempt == WEBSOCKET_TRIES:
                raise StepFailed(
                    f"{exc} (websocket tried {attempt} times)" if attempt > 1 else str(exc)
                ) from None
            await asyncio.sleep(1.0)
            continue
        return done if attempt == 1 else f"{done} (websocket opened at try {attempt})"
    raise AssertionError("unreachable")


def _score(attendee: Attendee) -> None:
    """Timings and the first failure, from the steps."""
    seconds = {s.name: s.seconds for s in attendee.steps if s.ok}
    if "start_server" in seconds:
        attendee.spawn_seconds = seconds["start_server"]
    if "start_kernel" in seconds and "execute" in seconds:
        attendee.first_execution_seconds = round(seconds["start_kernel"] + seconds["execute"], 3)
    failed = next((s for s in attendee.steps if not s.ok), None)
    if failed is not None:
        first_line = (failed.detail or "failed").splitlines()[0]
        attendee.error = f"{failed.name}: {first_line}"
    elif attendee.doing is not None:
        why = "the test's overall timeout ran out, or the test was cancelled"
        attendee.error = f"{attendee.doing}: stopped unfinished: {why}"


# --------------------------------------------------------------------------- the test


def _verdict(attendees: list[Attendee], spawn: Latency, target: float, timed_out: bool) -> tuple[bool, str]:
    failed = [a for a in attendees if not a.ok]
    reasons = []
    if failed:
        reasons.append(f"{len(failed)} of {len(attendees)} attendees failed (first: {failed[0].error})")
    if timed_out:
        reasons.append("the test's overall timeout ran out")
    if spawn.p95 is not None and spawn.p95 > target:
        reasons.append(f"spawn p95 {spawn.p95:.2f}s is over the target of {target:g}s")
    if reasons:
        return False, "failed: " + "; ".join(reasons)
    return True, f"passed: {len(attendees)} attendees, spawn p95 {spawn.p95:.2f}s within {target:g}s"


async def run_readiness_test(
    config: FleetConfig,
    hub_name: str,
    *,
    state_dir: Path,
    users: int,
    arrival: Arrival | None,
    event: Event | None,
    timeout: float | None = None,
    target_p95_seconds: float | None = None,
    code: str = DEFAULT_CODE,
) -> ReadinessReport:
    """Run the readiness test of `hub_name` with `users` simulated attendees arriving at `arrival` (None:
    all at once) in `event`'s environment, against its spawn target (`target_p95_seconds` overrides it).

    `timeout`: the hard limit for the attendees (default: the last arrival plus ATTENDEE_SECONDS); the test
    users are removed after it in any case (CLEANUP_SECONDS more at most), also when the caller cancels.
    Raises ReadinessError when the test cannot start (unknown environment, too many users, hub not running);
    a hub problem during the test is a failure in the report, never an exception. Prints nothing.
    """
    hub = config.require_hub(hub_name)
    check_users(hub, users)
    environment = event.environment if event is not None else None
    if environment is not None and environment not in {e.slug for e in hub.environments}:
        raise ReadinessError(
            f"event {event.name if event else ''}: hub {hub.name} has no environment '{environment}'"
        )
    target = target_p95_seconds or (event.spawn_p95_seconds if event is not None else DEFAULT_TARGET_SECONDS)
    offsets = schedule(users, arrival)
    hard = timeout if timeout is not None else offsets[-1] + ATTENDEE_SECONDS
    if hard > MAX_SECONDS:
        raise ReadinessError(
            f"the test would run {hard:.0f}s (arrivals over {offsets[-1]:.0f}s, then up to "
            f"{ATTENDEE_SECONDS:.0f}s each); at most {MAX_SECONDS:.0f}s: test fewer users (--users), a "
            "faster arrival (--arrival) or a shorter --timeout"
        )
    reach = _reach(config, state_dir, hub)
    await _answers(reach, hub.name)
    password = _password(config, hub) if hub.auth is not None and hub.auth.type == "dummy" else None
    options = {"environment": environment} if environment is not None else None
    run = _Run(reach, hub, secrets.token_hex(3), options, password, code)
    if environment is not None:
        chosen = next(e for e in hub.environments if e.slug == environment)
        run.groups = list(chosen.groups[:1])
    attendees = [
        Attendee(run.username(i), offset, "login form" if run.login else "token")
        for i, offset in enumerate(offsets, start=1)
    ]
    run.names = [a.username for a in attendees]
    started_at, started = utcnow(), time.monotonic()
    timed_out = False
    problems: list[str] = []
    stale: list[str] = []
    attended = started
    async with reach.operator() as operator:
        tasks = [asyncio.create_task(run.attend(a, operator, started)) for a in attendees]
        try:
            _done, pending = await asyncio.wait(tasks, timeout=hard)
            timed_out = bool(pending)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            attended = time.monotonic()
            problems, stale = await remove_test_users(config, state_dir, hub, operator, run.names)
    spawn = Latency.of([a.spawn_seconds for a in attendees if a.spawn_seconds is not None])
    first = Latency.of(
        [a.first_execution_seconds for a in attendees if a.first_execution_seconds is not None]
    )
    passed, verdict = _verdict(attendees, spawn, target, timed_out)
    rush = {"people": arrival.people, "seconds": arrival.seconds} if arrival else None
    return ReadinessReport(
        hub=hub.name,
        url=reach.url,
        event=event.name if event is not None else None,
        environment=environment,
        users=users,
        arrival={"all_at_once": arrival is None, **(rush or {})},
        target_p95_seconds=target,
        started_at=started_at,
        seconds=round(attended - started, 3),
        cleanup_seconds=round(time.monotonic() - attended, 3),
        spawn=spawn,
        first_execution=first,
        attendees=attendees,
        timed_out=timed_out,
        cleanup_problems=problems,
        stale_users_removed=stale,
        passed=passed,
        verdict=verdict,
    )


def record(store: Any, report: ReadinessReport) -> int:
    """Store the result (`hubfleet events` and the event's page show the last one)."""
    from hubfleet.store.events import record_test

    return record_test(store, report.hub, report.event, report.passed, report.to_dict())


__all__ = [
    "Attendee",
    "Latency",
    "ReadinessError",
    "ReadinessReport",
    "check_users",
    "default_event",
    "default_users",
    "record",
    "run_readiness_test",
    "schedule",
]
