"""An event on a real hub, from its live figures to its report in the mail (issue 17, section 5).

One demo-fleet copy (uni-a's staging hub, dummy auth) runs under the real daemon (`hubfleet up`, the usage
collector every second). Once it runs, an event of a few dozen seconds is written into the community's file
(the daemon reads the files again); during it a person signs in through the hub's login form and starts a
real server through the REST API; the live view reads the store while it runs. After the end, the daemon
makes the report by itself and mails it through the fleet's email channel to a real SMTP server on loopback
(aiosmtpd): only to the contact with `reports: true`, once. `hubfleet event report` prints the same figures.

Nothing is mocked: the spawn figures come from the hub's own /hub/metrics histogram as the collector stores
it, server-hours from the sessions the collector saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from alert_receivers import SMTPReceiver, smtp_server
from fleet_helpers import copy_demo_fleet, daemon_status, hubfleet, running_fleet, wait_for
from hubfleet.config.validate import load_fleet
from hubfleet.events.catalog import find_event
from hubfleet.events.live import live_view
from hubfleet.store import events as stored
from hubfleet.store import open_store

pytestmark = pytest.mark.integration

HUB = "uni-a-staging"
EVENT = "lab-one"
KEEP = {"communities/uni-a/hubs/staging.yaml"}
ENV = {
    "HUBFLEET_COLLECT_INTERVAL": "1",
    "HUBFLEET_EVENT_REPORT_INTERVAL": "1",
    "HUBFLEET_BACKUP_DELAY": "100000",
}
GRACE = "grace@uni-a.example"  # reports: true (the demo's contact)
ALAN = "alan@uni-a.example"  # alerts only
OPS = "ops@hubfleet.example"  # the channel's own `to`: alerts, never reports
SECONDS = 45
"""The event's length: time to sign in and start a server (a few seconds), and a report after."""


@dataclass
class Run:
    root: Path
    smtp: SMTPReceiver
    url: str
    token: str
    start: datetime
    end: datetime
    live_during: dict[str, object]


def _event_yaml(start: datetime, end: datetime) -> str:
    return (
        "events:\n"
        f"  - name: {EVENT}\n"
        f"    hub: {HUB}\n"
        "    display_name: Lab one\n"
        f"    start: {start.isoformat(timespec='seconds')}\n"
        f"    end: {end.isoformat(timespec='seconds')}\n"
        "    attendees: 5\n"
        "    arrival: 5 in 1m\n"
        "    spawn_p95_seconds: 30\n"
        "    ready_lead_minutes: 0\n"
        "    readiness_test_users: 0\n"
    )


def _prepare(root: Path, smtp_port: int) -> Path:
    community = root / "communities" / "uni-a" / "community.yaml"
    text = community.read_text()
    text = text[: text.index("# a class's first lab")]  # the demo's event is on the prod hub, not kept here
    text = text.replace(
        "contacts:\n",
        f"contacts:\n  - name: Alan Alerts\n    email: {ALAN}\n    alerts: true\n",
    )
    community.write_text(text)
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(
        fleet_yaml.read_text()
        + "monitoring:\n  alerts:\n    retry_attempts: 1\n    email:\n      - name: mail\n"
        + f"        smtp_host: 127.0.0.1\n        smtp_port: {smtp_port}\n        security: none\n"
        + f"        sender: hubfleet@hubfleet.example\n        to: [{OPS}]\n"
    )
    return community


def _sign_in(url: str, username: str) -> None:
    """A real sign-in through the hub's form (dummy auth), then the home page (activity)."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.get("/hub/login")
        xsrf = browser.cookies.get("_xsrf")
        response = browser.post(
            "/hub/login",
            data={"username": username, "password": "demo-staging", "_xsrf": xsrf},
            headers={"X-XSRFToken": xsrf},
        )
        assert response.status_code in (200, 302), response.text[:300]
        assert browser.get("/hub/home").status_code == 200


def _server_ready(api: httpx.Client, username: str) -> bool:
    server = api.get(f"/hub/api/users/{username}").json().get("servers", {}).get("")
    return bool(server and server.get("ready"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = copy_demo_fleet(tmp_path_factory.mktemp("event") / "demo", keep=KEEP)
    with smtp_server() as smtp:
        community = _prepare(root, smtp.port)
        with running_fleet(root, env=ENV):
            url = daemon_status(root)["hubs"][HUB]["url"]
            token = json.loads((root / ".hubfleet" / "hubs" / HUB / "tokens.json").read_text())["operator"]
            with open_store(root / ".hubfleet") as store:
                wait_for(lambda: stored_samples(store) > 0, timeout=60)  # a baseline before the start
                start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
                end = start + timedelta(seconds=SECONDS)
                community.write_text(community.read_text() + _event_yaml(start, end))
                wait_for(lambda: datetime.now(UTC) >= start, timeout=10)
                with httpx.Client(
                    base_url=url, headers={"Authorization": f"token {token}"}, timeout=60
                ) as api:
                    _sign_in(url, "alice")
                    api.post("/hub/api/users/alice/server", json={"environment": "python"})
                    wait_for(lambda: _server_ready(api, "alice"), timeout=30)
                    event = find_event(load_fleet(root), HUB, EVENT)

                    def seen_live() -> dict[str, object] | None:
                        view = live_view(store, event, HUB, datetime.now(UTC))
                        ok = view["running_servers"]["now"] and view["spawns_recent"]["spawns"]  # type: ignore[index]
                        return view if ok else None

                    live = wait_for(seen_live, timeout=20)
                    # the report: made and mailed by the daemon a couple of collections after the end
                    wait_for(lambda: _sent(store), timeout=SECONDS + 60)
                    time.sleep(3)  # a few more looks of the daemon: it must not send again
            yield Run(root, smtp, url, token, start, end, live)


def stored_samples(store: object) -> int:
    from sqlalchemy import func, select

    from hubfleet.store.models import HubSample

    with store.session() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).select_from(HubSample).where(HubSample.hub == HUB)))


def _sent(store: object) -> bool:
    record = stored.report(store, HUB, EVENT)
    return bool(record and record.report.get("complete") and (record.sent_to is not None or record.error))


def _record(run: Run) -> stored.ReportRecord:
    with open_store(run.root / ".hubfleet") as store:
        record = stored.report(store, HUB, EVENT)
    assert record is not None
    return record


def test_live_view_during_the_event(run: Run) -> None:
    live = run.live_during
    assert live["phase"] == "on"
    assert live["attendees"] == {"expected": 5, "signed_in": 1, "since": run.start.isoformat()}
    assert live["running_servers"]["now"] >= 1  # type: ignore[index]
    recent = live["spawns_recent"]
    assert recent["spawns"] >= 1 and recent["p50_seconds"] is not None, recent  # type: ignore[index]
    assert live["report"] is None


def test_the_report_has_the_event_s_figures(run: Run) -> None:
    report = _record(run).report
    assert report["complete"] is True
    assert report["server_hours"] > 0
    assert report["peak"]["users"] >= 1 and report["peak"]["servers"] >= 1
    assert report["attendees"] == {"expected": 5, "seen": 1}
    spawns = report["spawns"]
    assert spawns["spawns"] >= 1, spawns
    assert spawns["p50_seconds"] is not None and spawns["p95_seconds"] is not None
    assert spawns["p50_seconds"] <= spawns["p95_seconds"]
    assert spawns["samples"] >= 2
    assert report["target"]["p95_seconds"] == 30


def test_the_report_is_mailed_once_to_contacts_who_opted_in(run: Run) -> None:
    record = _record(run)
    assert record.sent_to == [GRACE] and record.error is None
    mails = run.smtp.to(GRACE)
    assert len(mails) == 1, [m.subject for m in run.smtp.messages]
    assert "Lab one" in mails[0].subject and HUB in mails[0].subject
    assert "Server-hours" in mails[0].body and "Spawns: " in mails[0].body
    assert run.token not in mails[0].body
    assert not run.smtp.to(ALAN) and not run.smtp.to(OPS)


def test_cli_prints_the_report(run: Run) -> None:
    result = hubfleet("event", "report", HUB, EVENT, "--json", fleet=run.root, env=ENV, check=True)
    printed = json.loads(result.stdout)
    assert printed["server_hours"] > 0 and printed["spawns"]["spawns"] >= 1
    assert printed["sent_to"] == [GRACE]  # made again without --send: who it went to is kept
    text = hubfleet("event", "report", HUB, EVENT, fleet=run.root, env=ENV, check=True).stdout
    assert "Peak concurrent users" in text and "Server-hours" in text
    assert len(run.smtp.to(GRACE)) == 1  # no --send, no mail


def test_cli_names_the_hub_s_events_for_a_wrong_name(run: Run) -> None:
    result = hubfleet("event", "report", HUB, "lab-two", fleet=run.root, env=ENV)
    assert result.returncode != 0
    assert "no event 'lab-two'" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_failed_delivery_is_recorded_without_secrets(run: Run) -> None:
    """The SMTP server gone (a closed loopback port) and a password on the channel: `error` names the
    address and the cause, never the password; nothing raises."""
    import asyncio

    from hubfleet.daemon.event_reports import send_report
    from hubfleet.ports import free_port

    fleet = load_fleet(run.root)
    channel = fleet.settings.monitoring.alerts.email[0]
    closed = channel.model_copy(
        update={"smtp_port": free_port(), "username": "mailer", "password": "s3cret-mail-pass"}
    )
    fleet.settings.monitoring.alerts.email[0] = closed
    report = _record(run).report
    with open_store(run.root / ".hubfleet") as store:
        sent = asyncio.run(send_report(fleet, store, HUB, report))
    assert sent.sent_to == []
    assert sent.error and sent.error.startswith(f"{GRACE}: ") and "Connection refused" in sent.error
    assert "s3cret-mail-pass" not in sent.error


# --------------------------------------------------------------------------- the histogram arithmetic


def _h(count: float, total: float, buckets: list[list[float]], **failures: float) -> dict[str, object]:
    found: dict[str, object] = {"success": {"count": count, "sum": total, "buckets": buckets}}
    for reason, n in failures.items():
        found[f"failure/{reason.replace('_', '-')}"] = {"count": n, "sum": 0.0, "buckets": [[0.5, n]]}
    return found


def test_spawn_quantiles_from_bucket_deltas() -> None:
    """p50/p95 as Prometheus' histogram_quantile estimates them, over the deltas of stored samples; a hub
    restart (counts going down) counts the later sample whole; failures by reason."""
    from hubfleet.events.spawns import summary, window_delta

    before = _h(2, 1.0, [[0.5, 1], [1.0, 2]])
    later = _h(12, 8.0, [[0.5, 1], [1.0, 10], [2.5, 11], [5.0, 12]], too_many_users=1)
    after_restart = _h(1, 0.3, [[0.5, 1]])
    figures = summary(window_delta([before, later]))
    assert figures["spawns"] == 10 and figures["failures"] == {"failure/too-many-users": 1}
    assert figures["p50_seconds"] == 0.812  # rank 5 of 8 in (0.5, 1]: 0.5 + 0.5 * 5/8
    assert figures["p95_seconds"] == 3.75  # rank 9.5 in (2.5, 5]: 2.5 + 2.5 * 0.5/1
    assert figures["mean_seconds"] == 0.7
    assert summary(window_delta([before, later, after_restart]))["spawns"] == 11
    assert summary(window_delta([before, None, later]))["spawns"] == 10  # a sample without metrics


def test_spawns_beyond_the_last_bucket_say_so() -> None:
    from hubfleet.events.spawns import summary, window_delta

    slow = _h(4, 4000.0, [[0.5, 0], [600.0, 1]])
    figures = summary(window_delta([{}, slow]))
    assert figures["p95_seconds"] == 600.0 and figures["p95_above_last_bucket"] is True
    assert summary(window_delta([{}]))["p50_seconds"] is None
