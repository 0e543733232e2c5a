"""The help button on a real hub: a copy of the demo fleet (uni-a's dummy-auth staging hub) run by the daemon,
whose support-intake task pulls the hub's outbox every second.

Debian's Chromium, driven by Playwright, signs in, clicks "Get help" on the hub's home page (the hub's OAuth
recognises the person: no second sign-in), fills the form with a PNG screenshot and the start-log box, and
sends it; once more signed out, from the login page. The daemon's pull makes tickets of both (hub, username,
page, category, verified flag, attachment bytes). Bad input gets a clear error with the form shown again,
escaped and with what was written kept: HTML in the description, a file that is not a screenshot, a body
over the limit, a missing XSRF token. The outbox answers only the control plane's own token: not a user's
API token (what a notebook server holds), not an operator's, not no token. A request a hostile hub wrote into
its outbox (an unknown category, an executable "attachment") becomes a ticket without the bad parts and with
a note of what was dropped; a request already made a ticket is not made a second one.
"""

from __future__ import annotations

import html
import re
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet_helpers import CHROMIUM, CHROMIUM_ARGS, copy_demo_fleet, running_fleet, wait_for
from hubfleet.config.validate import load_fleet
from hubfleet.render.support_hook import LOCAL_DB_NAME, OUTBOX_PATH
from hubfleet.render.support_hub import FORM_OVERHEAD
from hubfleet.runtime.layout import layout
from hubfleet.store import open_store
from hubfleet.support.tickets import attachment, get_ticket
from test_login_forms import hub_url, operator

pytestmark = pytest.mark.integration

HUB = "uni-a-staging"
PASSWORD = "demo-staging"
KEEP = {"communities/uni-a/hubs/staging.yaml"}
FORM = "/services/support/"
PERSON = "noor"
"""Not an admin of the hub: the hub's OAuth must let an ordinary user through to the form."""


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny) PNG screenshot."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = copy_demo_fleet(tmp_path_factory.mktemp("fleet") / "demo", keep=KEEP)
    with running_fleet(root, env={"HUBFLEET_SUPPORT_PULL_INTERVAL": "1"}):
        yield root


def ticket_of(root: Path, ref: str, timeout: float = 60) -> dict[str, Any]:
    """The ticket the daemon opened for the hub request `ref` (waits for the pull)."""
    config = load_fleet(root)

    def found() -> dict[str, Any] | None:
        with open_store(root / ".hubfleet") as store:
            from sqlalchemy import select

            from hubfleet.store.tickets import Ticket

            with store.session() as session:
                ticket_id = session.scalar(
                    select(Ticket.id).where(Ticket.hub == HUB, Ticket.intake_ref == ref)
                )
            if ticket_id is None:
                return None
            ticket = get_ticket(store, config, ticket_id)
            ticket["attachment_bytes"] = [
                found.data for a in ticket["attachments"] if (found := attachment(store, ticket_id, a["id"]))
            ]
            return ticket

    return wait_for(found, timeout=timeout)


def form_page(client: httpx.Client) -> tuple[str, str]:
    page = client.get(FORM)
    assert page.status_code == 200, page.text[:300]
    xsrf = re.search(r"name='_xsrf' value='([^']*)'", page.text)
    assert xsrf, "no _xsrf field in the form"
    return page.text, html.unescape(xsrf.group(1))


def signed_out(root: Path) -> httpx.Client:
    return httpx.Client(base_url=hub_url(root, HUB), timeout=60, headers={"User-Agent": "test-browser"})


def fields(xsrf: str, **extra: str) -> dict[str, str]:
    return {
        "_xsrf": xsrf,
        "page": "/hub/login",
        "category": "sign-in",
        "urgency": "high",
        "description": "I cannot sign in since this morning.",
        "email": "visitor@example.org",
        **extra,
    }


# --------------------------------------------------------------------------- the browser


sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_browser_asks_for_help_signed_in_and_signed_out(fleet: Path, tmp_path: Path) -> None:
    screenshot = tmp_path / "screen.png"
    screenshot.write_bytes(png())
    base = hub_url(fleet, HUB)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_context().new_page()
            page.goto(base + "/hub/login?next=%2Fhub%2Fhome")
            page.fill("#username_input", PERSON)
            page.fill("#password_input", PASSWORD)
            page.click("#login_submit")
            page.wait_for_url(re.compile(r".*/hub/home"))
            page.click("#hubfleet-help")
            page.wait_for_selector("#help-form")
            assert PERSON in page.inner_text("#who")
            assert page.input_value("input[name=page]") == "/hub/home"
            for text in ("cannot work at all", "no hurry"):  # URGENCY_HELP beside each level
                assert text in page.inner_text("fieldset")
            page.select_option("#category", "server-start")
            page.check("#urgency-high")
            page.fill("#description", "My server stops while starting.")
            page.check("#include_log")
            page.set_input_files("#attachment", str(screenshot))
            page.click("#send")
            ref = page.inner_text("#reference").strip()

            visitor = chromium.new_context().new_page()
            visitor.goto(base + "/hub/login")
            visitor.click("#hubfleet-help")
            visitor.wait_for_selector("#help-form")
            assert "not signed in" in visitor.inner_text("#who")
            visitor.select_option("#category", "sign-in")
            visitor.check("#urgency-urgent")
            visitor.fill("#description", "The login page says my password is wrong.")
            visitor.fill("#email", "visitor@example.org")
            visitor.click("#send")
            visitor_ref = visitor.inner_text("#reference").strip()
        finally:
            chromium.close()

    ticket = ticket_of(fleet, ref)
    assert (ticket["hub"], ticket["username"], ticket["verified"]) == (HUB, PERSON, True)
    assert (ticket["category"], ticket["urgency"], ticket["source"]) == ("server-start", "high", "hub")
    assert ticket["page_url"] == "/hub/home"
    assert ticket["messages"][0]["body"] == "My server stops while starting."
    assert [a["content_type"] for a in ticket["attachments"]] == ["image/png"]
    assert ticket["attachment_bytes"] == [png()]
    assert "start_log" in ticket["context"] or ticket["context"].get("problems")

    other = ticket_of(fleet, visitor_ref)
    assert (other["hub"], other["username"], other["verified"]) == (HUB, None, False)
    assert other["requester_email"] == "visitor@example.org"
    assert other["category"] == "sign-in" and other["page_url"].startswith("/hub/login")
    assert other["attachments"] == []


# --------------------------------------------------------------------------- bad input


def test_html_and_a_wrong_attachment_are_refused_and_shown_escaped(fleet: Path) -> None:
    with signed_out(fleet) as client:
        _, xsrf = form_page(client)
        description = "<script>alert('x')</script><b>bold</b> & more"
        response = client.post(
            FORM,
            data=fields(xsrf, description=description),
            files={"attachment": ("evil.png", b"MZ\x90\x00 not an image", "image/png")},
        )
    assert response.status_code == 400
    assert "evil.png is not a screenshot (PNG, JPEG, GIF, WebP) or a PDF" in response.text
    assert "<script>alert" not in response.text and "<b>bold" not in response.text
    assert html.escape(description, quote=True) in response.text  # kept, escaped, in the textarea
    assert "value='visitor@example.org'" in response.text


def test_a_body_over_the_limit_gets_the_form_back(fleet: Path) -> None:
    limit = load_fleet(fleet).settings.support.max_attachment_bytes
    huge = b"\x89PNG\r\n\x1a\n" + b"\0" * (limit + FORM_OVERHEAD + 1_000_000)
    with signed_out(fleet) as client:
        _, xsrf = form_page(client)
        response = client.post(
            FORM,
            data=fields(xsrf, description="Here is the whole screen."),
            files={"attachment": ("huge.png", huge, "image/png")},
        )
    assert response.status_code == 413
    assert "more than this form takes; attachments may be up to" in response.text
    assert "Here is the whole screen." in response.text  # nothing they wrote is lost


def test_missing_fields_and_xsrf(fleet: Path) -> None:
    with signed_out(fleet) as client:
        _, xsrf = form_page(client)
        response = client.post(FORM, data=fields(xsrf, category="", email="", description="kept text"))
        assert response.status_code == 400
        assert "choose what your request is about" in response.text
        assert "write your email: you are not signed in" in response.text
        assert "kept text" in response.text
        forged = client.post(FORM, data={**fields(xsrf), "_xsrf": "forged"})
        assert forged.status_code == 403 and "too old" in forged.text
        # the page they came from: the link's ?from=, else the Referer; escaped in the hidden field
        referred = client.get(FORM, headers={"Referer": hub_url(fleet, HUB) + "/hub/spawn?x=1"})
        assert "name='page' value='/hub/spawn?x=1'" in referred.text
        hostile = client.get(FORM, params={"from": "/hub/home'><script>alert(1)</script>"})
        assert "<script>alert(1)" not in hostile.text
        assert "value='/hub/home&#x27;&gt;&lt;script&gt;alert(1)&lt;/script&gt;'" in hostile.text


# --------------------------------------------------------------------------- the outbox


def test_only_the_control_token_reads_the_outbox(fleet: Path) -> None:
    hub = operator(fleet, HUB)
    created = hub.post("/hub/api/users/eve")
    assert created.status_code in (201, 409)
    token = hub.post("/hub/api/users/eve/tokens", json={"note": "like a notebook's"}).json()["token"]
    base = hub_url(fleet, HUB)
    for headers in ({"Authorization": f"token {token}"}, hub.headers, {}):
        with httpx.Client(base_url=base, headers=dict(headers), timeout=30) as client:
            assert client.get(OUTBOX_PATH).status_code == 403
            assert client.post(OUTBOX_PATH + "/ack", json={"refs": []}).status_code == 403
    control = (fleet / ".hubfleet" / "hubs" / HUB / "tokens.json").read_text()
    import json

    with httpx.Client(
        base_url=base, headers={"Authorization": f"token {json.loads(control)['control']}"}, timeout=30
    ) as client:
        answer = client.get(OUTBOX_PATH)
        assert answer.status_code == 200 and "requests" in answer.json()


def outbox_file(root: Path) -> Path:
    return layout(root / ".hubfleet").hub_data(HUB) / LOCAL_DB_NAME


def test_a_bad_request_in_the_outbox_becomes_a_ticket_with_a_note(fleet: Path) -> None:
    path = wait_for(lambda: outbox_file(fleet) if outbox_file(fleet).exists() else None)
    assert path.stat().st_mode & 0o777 == 0o600  # the hub account's alone: not its users' servers
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO requests (ref, created, username, verified, email, page, category, urgency, "
            "description, include_log, attachment_name, attachment) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "planted-1",
                time.time(),
                "mallory",
                1,
                "not-an-address",
                "/hub/home",
                "bogus",
                "urgent",
                "<img src=x onerror=alert(1)>",
                0,
                "tool.exe",
                b"MZ\x90\x00binary",
            ),
        )
    ticket = ticket_of(fleet, "planted-1")
    assert ticket["category"] == "other" and ticket["urgency"] == "urgent"
    assert ticket["attachments"] == [] and ticket["requester_email"] is None
    note = [m for m in ticket["messages"] if m["author_kind"] == "system"]
    assert len(note) == 1 and not note[0]["public"]
    assert "tool.exe is not a screenshot" in note[0]["body"] and "category 'bogus'" in note[0]["body"]
    assert ticket["messages"][0]["body"] == "<img src=x onerror=alert(1)>"  # stored as written; shown escaped

    with sqlite3.connect(path) as db:  # the same reference again (a lost acknowledgement): no second ticket
        db.execute(
            "INSERT INTO requests (ref, created, username, verified, category, urgency, description, "
            "include_log) VALUES ('planted-1', ?, 'mallory', 1, 'other', 'low', 'again', 0)",
            (time.time(),),
        )
    wait_for(lambda: not sqlite3.connect(path).execute("SELECT count(*) FROM requests").fetchone()[0])
    with open_store(fleet / ".hubfleet") as store:
        from sqlalchemy import func, select

        from hubfleet.store.tickets import Ticket

        with store.session() as session:
            count = session.scalar(
                select(func.count()).select_from(Ticket).where(Ticket.intake_ref == "planted-1")
            )
    assert count == 1
