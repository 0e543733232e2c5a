"""Alerts through real receivers on loopback: an SMTP server (aiosmtpd) and a webhook HTTP server.

One message per open and per resolve on every channel; community contacts who opted in get their hubs'
alerts by email; failures are retried with backoff and recorded, never raised; secrets (webhook URL, SMTP
password) never reach the store or the logs; fleet-level secrets live in secrets/fleet.yaml."""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519
from sqlalchemy import select

from alert_receivers import free_port, self_signed_cert, smtp_server, webhook_receiver
from fleet_helpers import copy_demo_fleet, hubfleet
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.monitor.alerts import Alerter, format_duration, format_message, mask_url
from hubfleet.monitor.incidents import open_incident, resolve_incident
from hubfleet.secrets.store import SecretResolver, fleet_secret_keys, rekey, set_fleet_secret
from hubfleet.store.api import Store, open_store
from hubfleet.store.models import AlertDelivery

HUB = "uni-a-staging"
STAGING = "communities/uni-a/hubs/staging.yaml"
OPS = "ops@hubfleet.example"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def new_identity(path: Path) -> str:
    key = x25519.Identity.generate()
    path.write_text(f"# test identity\n{key}\n")
    path.chmod(0o600)
    return str(key.to_public())


def make_fleet(
    tmp_path: Path,
    *,
    webhook: str | None = None,
    smtp_port: int | None = None,
    retry_attempts: int = 3,
    community_contacts: bool = True,
    smtp_user: str | None = None,
    smtp_password: str | None = None,
    recipient: str | None = None,
) -> Path:
    """The demo fleet reduced to uni-a-staging, with alert channels in fleet.yaml and two uni-a contacts:
    Grace (no alerts) and Pat (alerts: true). Values given as `{secret: ...}` are written as is."""
    root = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    fleet_yaml = root / "fleet.yaml"
    text = fleet_yaml.read_text()
    if recipient:
        text = text.replace(
            "    email: ada@hubfleet.example\n",
            f"    email: ada@hubfleet.example\n    age_recipient: {recipient}\n",
        )
    lines = ["monitoring:", "  alerts:", f"    retry_attempts: {retry_attempts}"]
    lines.append(f"    community_contacts: {'true' if community_contacts else 'false'}")
    if webhook:
        lines += ["    webhooks:", "      - name: ops-slack", f"        url: {webhook}"]
    if smtp_port:
        lines += [
            "    email:",
            "      - name: ops-mail",
            "        smtp_host: 127.0.0.1",
            f"        smtp_port: {smtp_port}",
            "        security: none",
            "        sender: hubfleet@hubfleet.example",
            f"        to: [{OPS}]",
        ]
        if smtp_user:
            lines.append(f"        username: {smtp_user}")
        if smtp_password:
            lines.append(f"        password: {smtp_password}")
    fleet_yaml.write_text(text + "\n".join(lines) + "\n")
    community = root / "communities/uni-a/community.yaml"
    community.write_text(
        community.read_text()
        + "  - name: Pat Leader\n    email: pat@uni-a.example\n    role: PI\n    alerts: true\n"
    )
    return root


def deliveries(store: Store) -> list[AlertDelivery]:
    with store.session() as session:
        return list(session.scalars(select(AlertDelivery).order_by(AlertDelivery.id)))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def open_and_resolve(alerter: Alerter, store: Store) -> tuple[Any, Any]:
    incident, opened = open_incident(store, HUB, "down", "ConnectError: connection refused", at=T0)
    assert opened
    await alerter.incident_opened(incident)
    await alerter.drain()
    resolved = resolve_incident(store, HUB, "down", at=T0 + timedelta(minutes=3, seconds=12))
    await alerter.incident_resolved(resolved)
    await alerter.drain()
    return incident, resolved


# --------------------------------------------------------------------------- delivery


def test_open_and_resolve_deliver_one_message_each(tmp_path: Path) -> None:
    with smtp_server() as smtp, webhook_receiver() as hook:
        root = make_fleet(tmp_path, webhook=hook.url, smtp_port=smtp.port)
        with open_store(tmp_path / "state") as store:
            alerter = Alerter(load_fleet(root), store, backoff_base=0.01)
            incident, _ = run(open_and_resolve(alerter, store))
            rows = deliveries(store)

    assert len(hook.bodies) == 2 and len(hook.requests) == 2
    opened, resolved = hook.texts
    assert opened.startswith(f"[demo] OPEN: hub {HUB} is down: ConnectError: connection refused\n")
    assert "Community: uni-a" in opened and "URL: http://127.0.0.1:" in opened
    assert "Started: 2026-03-02 09:00:00 UTC" in opened and "not yet (open)" in opened
    assert resolved.startswith(f"[demo] RESOLVED: hub {HUB} is down (after 3m 12s)\n")
    assert "Resolved: 2026-03-02 09:03:12 UTC" in resolved and "Duration: 3m 12s" in resolved

    to_ops = smtp.to(OPS)
    assert [m.subject for m in to_ops] == [opened.split("\n")[0], resolved.split("\n")[0]]
    assert to_ops[0].message["From"] == "hubfleet@hubfleet.example"
    assert "Cause: ConnectError: connection refused" in to_ops[0].body
    assert all(r.ok and r.attempt == 1 for r in rows)
    assert {(r.event, r.channel, r.recipient) for r in rows} == {
        (event, channel, recipient)
        for event in ("opened", "resolved")
        for channel, recipient in [
            ("webhook:ops-slack", mask_url(hook.url)),
            ("email:ops-mail", OPS),
            ("email:ops-mail", "pat@uni-a.example"),
        ]
    }
    assert all(r.incident_id == incident.id for r in rows)


def test_community_contacts_who_opted_in(tmp_path: Path) -> None:
    with smtp_server() as smtp:
        root = make_fleet(tmp_path, smtp_port=smtp.port)
        with open_store(tmp_path / "state") as store:
            run(open_and_resolve(Alerter(load_fleet(root), store, backoff_base=0.01), store))
        assert len(smtp.to("pat@uni-a.example")) == 2  # alerts: true
        assert smtp.to("grace@uni-a.example") == []  # no opt-in
        assert len(smtp.to(OPS)) == 2
        # each recipient gets a message of their own (contacts never see each other's addresses)
        assert all(len(m.rcpt_tos) == 1 for m in smtp.messages)

    with smtp_server() as smtp:
        root = make_fleet(tmp_path / "off", smtp_port=smtp.port, community_contacts=False)
        with open_store(tmp_path / "state-off") as store:
            run(open_and_resolve(Alerter(load_fleet(root), store, backoff_base=0.01), store))
        assert smtp.to("pat@uni-a.example") == [] and len(smtp.to(OPS)) == 2


def test_webhook_failing_twice_is_retried_and_recorded(tmp_path: Path) -> None:
    with webhook_receiver(fail_first=2) as hook:
        root = make_fleet(tmp_path, webhook=hook.url, retry_attempts=5)
        with open_store(tmp_path / "state") as store:
            alerter = Alerter(load_fleet(root), store, backoff_base=0.01)
            incident, _ = open_incident(store, HUB, "down", "timeout", at=T0)
            run(alerter.incident_opened(incident, wait=True))
            rows = deliveries(store)
    assert [r["status"] for r in hook.requests] == [500, 500, 200]
    assert len(hook.bodies) == 1
    assert [(r.attempt, r.ok) for r in rows] == [(1, False), (2, False), (3, True)]
    assert rows[0].error == "HTTP 500 Internal Server Error"
    assert {r.channel for r in rows} == {"webhook:ops-slack"}


def test_unreachable_smtp_is_recorded_as_failed_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = free_port()  # nothing listens there
    with webhook_receiver() as hook:
        root = make_fleet(tmp_path, webhook=hook.url, smtp_port=closed, retry_attempts=3)
        with open_store(tmp_path / "state") as store:
            alerter = Alerter(load_fleet(root), store, backoff_base=0.01, timeout=2)
            incident, _ = open_incident(store, HUB, "down", "timeout", at=T0)

            async def scenario() -> None:
                await alerter.incident_opened(incident)  # returns at once, deliveries go on
                await alerter.drain()

            with caplog.at_level(logging.WARNING, logger="hubfleet.alerts"):
                run(scenario())
            rows = deliveries(store)
    mail = [r for r in rows if r.channel == "email:ops-mail" and r.recipient == OPS]
    assert [(r.attempt, r.ok) for r in mail] == [(1, False), (2, False), (3, False)]
    assert "ConnectionRefusedError" in mail[0].error
    assert len(hook.bodies) == 1  # the other channel is unaffected
    assert "giving up" in caplog.text


def test_slow_channel_runs_in_the_background(tmp_path: Path) -> None:
    with webhook_receiver(delay=0.5) as hook:
        root = make_fleet(tmp_path, webhook=hook.url)
        with open_store(tmp_path / "state") as store:
            alerter = Alerter(load_fleet(root), store, backoff_base=0.01)
            incident, _ = open_incident(store, HUB, "down", "timeout", at=T0)

            async def scenario() -> tuple[int, int]:
                await alerter.incident_opened(incident)
                pending = alerter.pending
                await alerter.drain()
                return pending, alerter.pending

            assert run(scenario()) == (1, 0)
    assert len(hook.bodies) == 1


def test_no_channels_is_quiet(tmp_path: Path) -> None:
    root = make_fleet(tmp_path)
    with open_store(tmp_path / "state") as store:
        alerter = Alerter(load_fleet(root), store)
        incident, _ = open_incident(store, HUB, "down", "timeout", at=T0)
        run(alerter.incident_opened(incident, wait=True))
        assert deliveries(store) == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_smtp_over_tls_with_auth(tmp_path: Path, security: str) -> None:
    cert = self_signed_cert(tmp_path)
    with smtp_server({"alerts": "pw-123456"}, security=security, cert=cert) as smtp:
        root = make_fleet(tmp_path, smtp_port=smtp.port, smtp_user="alerts", smtp_password="pw-123456")
        fleet_yaml = root / "fleet.yaml"
        fleet_yaml.write_text(fleet_yaml.read_text().replace("security: none", f"security: {security}"))
        fleet = load_fleet(root)
        with open_store(tmp_path / "state") as store:
            trusting = ssl.create_default_context(cafile=str(cert[0]))
            alerter = Alerter(fleet, store, backoff_base=0.01, ssl_context=trusting)
            run(open_and_resolve(alerter, store))
            assert all(r.ok for r in deliveries(store))
        assert len(smtp.to(OPS)) == 2 and smtp.logins == [("alerts", "pw-123456")] * 4

        # with the system's trust store, the self-signed certificate is refused, recorded and not raised
        with open_store(tmp_path / "state-untrusted") as store:
            incident, _ = open_incident(store, HUB, "down", "timeout", at=T0)
            run(Alerter(fleet, store, backoff_base=0.01).incident_opened(incident, wait=True))
            rows = deliveries(store)
        assert rows and not any(r.ok for r in rows)
        assert "CERTIFICATE_VERIFY_FAILED" in rows[0].error and "pw-123456" not in rows[0].error
        assert len(smtp.to(OPS)) == 2


# --------------------------------------------------------------------------- secrets


def test_secrets_never_reach_the_store_or_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    identity = tmp_path / "ada.txt"
    recipient = new_identity(identity)
    password = "smtp-pass-Xq81zz"
    with smtp_server({"alerts": password}) as smtp, webhook_receiver(fail_first=1) as hook:
        root = make_fleet(
            tmp_path,
            webhook="{secret: slack_url}",
            smtp_port=smtp.port,
            smtp_user="alerts",
            smtp_password="{secret: smtp_password}",
            recipient=recipient,
        )
        set_fleet_secret(root, "slack_url", hook.url)
        set_fleet_secret(root, "smtp_password", password)
        fleet = load_fleet(root)
        with open_store(tmp_path / "state") as store:
            alerter = Alerter(fleet, store, SecretResolver(fleet, identity), backoff_base=0.01)
            with caplog.at_level(logging.DEBUG):
                run(open_and_resolve(alerter, store))
            rows = deliveries(store)
        assert smtp.logins and set(smtp.logins) == {("alerts", password)}
        assert len(smtp.to(OPS)) == 2
    assert len(hook.bodies) == 2 and hook.requests[0]["status"] == 500
    token = hook.url.split("/", 3)[3]
    for row in rows:
        for column in (row.channel, row.recipient, row.error):
            assert hook.url not in column and token not in column and password not in column
    assert {r.recipient for r in rows if r.channel.startswith("webhook")} == {"{secret: slack_url}"}
    # every log record but the test SMTP server's own (aiosmtpd logs the AUTH exchange it receives)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert "HTTP Request: POST *** " in logged  # httpx's request line, with the URL redacted
    assert hook.url not in logged and token not in logged and password not in logged
    assert "HTTP 500" in logged  # the failure is logged, without the URL
    assert "slack_url" in (root / "secrets/fleet.yaml").read_text()
    assert hook.url not in (root / "secrets/fleet.yaml").read_text()


def test_plain_webhook_url_unreachable_is_masked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/T1/B1/plain-token-987"
    root = make_fleet(tmp_path, webhook=url, retry_attempts=2)
    with open_store(tmp_path / "state") as store:
        alerter = Alerter(load_fleet(root), store, backoff_base=0.01, timeout=2)
        incident, _ = open_incident(store, HUB, "down", "timeout", at=T0)
        with caplog.at_level(logging.DEBUG):
            run(alerter.incident_opened(incident, wait=True))
        rows = deliveries(store)
    assert [(r.attempt, r.ok) for r in rows] == [(1, False), (2, False)]
    assert rows[0].recipient == mask_url(url) == f"http://127.0.0.1:{url.split(':')[2].split('/')[0]}/***"
    assert rows[0].error.startswith("ConnectError")
    for text in [caplog.text, *(r.error + r.recipient for r in rows)]:
        assert "plain-token-987" not in text


def test_missing_identity_is_a_recorded_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipient = new_identity(tmp_path / "ada.txt")
    with webhook_receiver() as hook:
        root = make_fleet(tmp_path, webhook="{secret: slack_url}", recipient=recipient, retry_attempts=1)
        set_fleet_secret(root, "slack_url", hook.url)
        monkeypatch.setenv("HUBFLEET_AGE_IDENTITY", str(tmp_path / "nowhere.txt"))
        with open_store(tmp_path / "state") as store:
            alerter = Alerter(load_fleet(root), store, backoff_base=0.01)
            incident, _ = open_incident(store, HUB, "down", "timeout", at=T0)
            run(alerter.incident_opened(incident, wait=True))
            (row,) = deliveries(store)
    assert not row.ok and "age identity" in row.error and "not found" in row.error
    assert hook.requests == []


def test_fleet_level_secret_reference_is_validated_and_resolved(tmp_path: Path) -> None:
    identity = tmp_path / "ada.txt"
    recipient = new_identity(identity)
    root = make_fleet(tmp_path, webhook="{secret: slack_url}", recipient=recipient)
    _, errors = validate_fleet(root)
    line = next(
        n for n, text in enumerate((root / "fleet.yaml").read_text().splitlines(), 1) if "url:" in text
    )
    assert [str(e) for e in errors] == [
        f"fleet.yaml:{line}:9: monitoring.alerts.webhooks.0.url: fleet-level secret 'slack_url' is not set "
        "in secrets/fleet.yaml; run `hubfleet secrets set --fleet-level slack_url`"
    ]
    assert fleet_secret_keys(root) == [("slack_url", False, ["monitoring.alerts.webhooks.0.url"])]

    set_fleet_secret(root, "slack_url", "https://hooks.example/T/B/tok")
    fleet = load_fleet(root)
    assert set(fleet.fleet_secrets) == {"slack_url"}
    assert fleet.secrets.keys().isdisjoint({"", "fleet"})
    resolver = SecretResolver(fleet, identity)
    assert resolver.fleet_value("slack_url") == "https://hooks.example/T/B/tok"
    assert resolver.resolve_fleet(fleet.settings.monitoring.alerts.webhooks[0].url) == (
        "https://hooks.example/T/B/tok"
    )
    assert "tok" not in repr(resolver)

    # rekey re-encrypts secrets/fleet.yaml too
    before = (root / "secrets/fleet.yaml").read_text()
    assert [(p.relative_to(root).as_posix(), n) for p, n in rekey(root, identity)] == [
        ("secrets/fleet.yaml", 1)
    ]
    assert (root / "secrets/fleet.yaml").read_text() != before
    assert SecretResolver(load_fleet(root), identity).fleet_value("slack_url").endswith("/tok")

    # a value written in clear is refused with its position, never quoted
    (root / "secrets/fleet.yaml").write_text("slack_url: https://hooks.example/T/B/tok\n")
    _, errors = validate_fleet(root)
    assert [str(e) for e in errors] == [
        "secrets/fleet.yaml:1:12: slack_url: expected an age-encrypted value (-----BEGIN AGE ENCRYPTED "
        "FILE-----); never write a secret in clear: run `hubfleet secrets set --fleet-level slack_url`"
    ]


def test_cli_set_and_show_fleet_level(tmp_path: Path) -> None:
    identity = tmp_path / "ada.txt"
    recipient = new_identity(identity)
    root = make_fleet(tmp_path, webhook="{secret: slack_url}", recipient=recipient)
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    done = hubfleet(
        "secrets", "set", "--fleet-level", "slack_url", fleet=root, env=env, input="https://h/x/tok\n"
    )
    assert done.returncode == 0, done.stderr
    assert "secrets/fleet.yaml" in done.stdout and "tok" not in done.stdout
    shown = hubfleet("secrets", "show", "--fleet-level", fleet=root, env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "slack_url: ***  # monitoring.alerts.webhooks.0.url"
    revealed = hubfleet("secrets", "show", "--fleet-level", "--reveal", fleet=root, env=env)
    assert revealed.stdout.strip() == "slack_url: https://h/x/tok  # monitoring.alerts.webhooks.0.url"
    assert hubfleet("validate", fleet=root, env=env).returncode == 0
    wrong = hubfleet(
        "secrets", "set", "--fleet-level", "uni-a-staging", "key", fleet=root, env=env, input="v\n"
    )
    assert wrong.returncode != 0 and "--fleet-level" in wrong.stderr


# --------------------------------------------------------------------------- messages


def test_message_format(tmp_path: Path) -> None:
    fleet = load_fleet(make_fleet(tmp_path))

    class Record:
        id = 7
        hub = HUB
        kind = "anomaly"
        rule = "max_server_age"
        started_at = T0.replace(tzinfo=None)  # naive datetimes (SQLite) are UTC
        resolved_at = T0 + timedelta(hours=2, minutes=5)
        cause = "server of alice\nrunning for 80 h"

    message = format_message("resolved", Record(), fleet)
    assert message.subject == (
        f"[demo] RESOLVED: hub {HUB} abnormal activity (max_server_age) (after 2h 05m)"
    )
    assert "Cause: server of alice running for 80 h" in message.body
    assert "Kind: anomaly / max_server_age" in message.body and "Incident: #7" in message.body
    assert [format_duration(s) for s in (5, 192, 7500, 3 * 86400 + 4 * 3600)] == [
        "5s",
        "3m 12s",
        "2h 05m",
        "3d 4h",
    ]
