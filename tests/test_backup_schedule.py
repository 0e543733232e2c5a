"""Scheduled backups: the `hubfleet up` daemon backs a hub up by itself, `status` and the console show it; a
failed run opens a `backup/failed` incident that is alerted to a webhook and resolved by the next good run;
a hub whose last good backup is too old is `backup/late`.

Real daemons, real restic repositories in tmp, a real webhook receiver on loopback; the `late` rules are
checked on a real SQLite store with backdated runs (waiting hours for a backup to age is not possible)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from alert_receivers import webhook_receiver
from console_helpers import sign_in, write_accounts
from fleet_helpers import command_of, copy_demo_fleet, drop_section, hubfleet, running_fleet, wait_for
from hubfleet.backup import records
from hubfleet.backup.restic import BackupSummary
from hubfleet.backup.status import backup_states
from hubfleet.clock import utcnow
from hubfleet.config.validate import load_fleet
from hubfleet.console import accounts
from hubfleet.daemon.backup_schedule import BackupScheduler, check_incidents
from hubfleet.monitor.incidents import list_incidents, open_incident
from hubfleet.runtime.layout import layout
from hubfleet.store import open_store
from hubfleet.store.retirements import record_retirement

HUB = "uni-a-staging"
KEEP = {"communities/uni-a/hubs/staging.yaml"}
ENV = {"HUBFLEET_BACKUP_DELAY": "0"}
REPO_PASSWORD = "repo-made-with-this-one-7Qx"
WRONG_PASSWORD = "fleet-says-this-one-K9z"


def _fleet(tmp_path: Path, password: str, webhook: str | None = None) -> Path:
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP)
    text = drop_section((root / "fleet.yaml").read_text(), "backups").rstrip("\n") + "\n"
    text += f"backups:\n  repository: {tmp_path / 'repo'}\n  password: {password}\n  every_hours: 0.01\n"
    if webhook:
        text += (
            "monitoring:\n  alerts:\n    retry_attempts: 3\n    webhooks:\n"
            f"      - name: ops-hook\n        url: {webhook}\n"
        )
    (root / "fleet.yaml").write_text(text)
    return root


def _summary(n: int = 1) -> BackupSummary:
    return BackupSummary(snapshot_id=f"{n:064x}", size_bytes=4096 * n, added_bytes=100, files=3)


# --------------------------------------------------------------------------- unit level: late and failed


def test_late_opens_for_an_old_or_missing_backup_and_a_good_run_resolves_it(tmp_path: Path) -> None:
    fleet = load_fleet(copy_demo_fleet(tmp_path / "fleet", keep=KEEP))  # every_hours 6: late after 12 h
    now = utcnow()
    with open_store(tmp_path / "state") as store:
        # never backed up: late only once the daemon has been up longer than late_after_hours
        assert check_incidents(fleet, store, [HUB], now=now, up_since=now - timedelta(hours=1)) == []
        assert backup_states(fleet, store, [HUB], now=now)[HUB].state == "never"
        [(event, incident)] = check_incidents(
            fleet, store, [HUB], now=now, up_since=now - timedelta(hours=13)
        )
        assert (event, incident.kind, incident.rule) == ("opened", "backup", "late")
        assert "no good backup yet" in incident.cause

        # a good run 13 h old is still late (the open incident stays, nothing new opens)
        run = records.start_run(store, HUB, "manual", at=now - timedelta(hours=13))
        records.finish_run(store, run, _summary())
        assert check_incidents(fleet, store, [HUB], now=now, up_since=now) == []
        state = backup_states(fleet, store, [HUB], now=now)[HUB]
        assert state.state == "late" and state.summary().startswith("late: 13h 00m ago, 4.0 KiB")

        # a newer good run resolves it; a failed run after it makes the state `failed`, not late
        run = records.start_run(store, HUB, "schedule", at=now - timedelta(minutes=5))
        records.finish_run(store, run, _summary(2))
        [(event, incident)] = check_incidents(fleet, store, [HUB], now=now, up_since=now)
        assert (event, incident.rule, incident.open) == ("resolved", "late", False)
        assert backup_states(fleet, store, [HUB], now=now)[HUB].summary() == "5m ago, 8.0 KiB"

        run = records.start_run(store, HUB, "schedule", at=now - timedelta(minutes=1))
        records.finish_run(store, run, None, error="backup repository /x: wrong password (...)")
        open_incident(store, HUB, "backup", "wrong password", rule="failed", at=now)
        state = backup_states(fleet, store, [HUB], now=now)[HUB]
        assert state.state == "failed" and state.summary().startswith("failed: backup repository /x: wrong")
        assert state.to_json()["last"]["snapshot_id"] == f"{2:064x}"  # the last good one, still shown
        assert check_incidents(fleet, store, [HUB], now=now, up_since=now) == []  # failed stays open

        # a good run (say a manual `hubfleet backup`) resolves `failed`
        records.finish_run(store, records.start_run(store, HUB, "manual", at=now), _summary(3))
        [(event, incident)] = check_incidents(fleet, store, [HUB], now=now, up_since=now)
        assert (event, incident.rule) == ("resolved", "failed")
        assert list_incidents(store, kind="backup", open_only=True) == []


def test_a_retired_hub_is_off_and_its_backup_incidents_resolve(tmp_path: Path) -> None:
    fleet = load_fleet(copy_demo_fleet(tmp_path / "fleet", keep=KEEP))
    now = utcnow()
    with open_store(tmp_path / "state") as store:
        [(event, _)] = check_incidents(fleet, store, [HUB], now=now, up_since=now - timedelta(days=1))
        assert event == "opened"
        record_retirement(
            store, HUB, "uni-a", retired_at=now, purge_after=now + timedelta(days=90), archive_dir="/x",
            snapshot_id=None,
        )  # fmt: skip
        assert backup_states(fleet, store, [HUB], now=now)[HUB].state == "off"
        [(event, incident)] = check_incidents(fleet, store, [HUB], now=now, up_since=now - timedelta(days=1))
        assert (event, incident.rule) == ("resolved", "late")


def test_due_hubs_and_the_back_off_after_failures(tmp_path: Path) -> None:
    fleet = load_fleet(copy_demo_fleet(tmp_path / "fleet"))  # four hubs, every_hours 6
    now = utcnow()
    with open_store(tmp_path / "state") as store:
        for hub, hours in (("uni-a", 7), ("hackweek", 2), ("uni-a-staging", 9)):
            records.finish_run(
                store, records.start_run(store, hub, "schedule", at=now - timedelta(hours=hours)), _summary()
            )
        scheduler = BackupScheduler(fleet, tmp_path / "state", store, lambda: sorted(fleet.hubs))
        due, soonest = scheduler.due(now)
        assert due == ["hackweek-staging", "uni-a-staging", "uni-a"]  # never backed up first, then oldest
        assert soonest == now + timedelta(seconds=60)  # hackweek is due in 4 h: look again in a minute
        assert [scheduler._backoff("uni-a", n) / 3600 for n in range(1, 7)] == [1, 2, 4, 6, 6, 6]
        scheduler._retry["uni-a"] = (1, now + timedelta(hours=1))
        assert scheduler.due(now)[0] == ["hackweek-staging", "uni-a-staging"]
        assert scheduler.due(now + timedelta(hours=1))[0] == ["hackweek-staging", "uni-a-staging", "uni-a"]


def test_a_stopping_daemon_stops_the_backup_that_runs(tmp_path: Path) -> None:
    """The daemon's task is cancelled mid-backup: restic is stopped (a sparse 64 GiB file, which uses no disk,
    keeps it reading long enough) and the run is recorded as stopped, not left running or taken in full."""
    root = _fleet(tmp_path, REPO_PASSWORD)
    state = root / ".hubfleet"
    home = layout(state).homes(HUB) / "kim"
    home.mkdir(parents=True)
    with (home / "zeros.bin").open("wb") as big:
        big.truncate(64 << 30)

    def restic_backups() -> list[psutil.Process]:
        children = psutil.Process().children(recursive=True)
        return [
            p for p in children if command_of(p).startswith("restic ") and "backup" in command_of(p).split()
        ]

    async def scenario(scheduler: BackupScheduler) -> None:
        task = asyncio.create_task(scheduler.back_up(HUB))
        while not restic_backups() and not task.done():
            await asyncio.sleep(0.05)
        assert not task.done(), "the backup ended before it could be stopped"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with open_store(state) as store:
        asyncio.run(scenario(BackupScheduler(load_fleet(root), state, store, lambda: [HUB])))
        [run] = records.hub_runs(store, HUB)
    assert run.ok is False and run.finished_at is not None
    assert "restic backup was stopped" in run.error
    assert restic_backups() == []


# --------------------------------------------------------------------------- a real daemon


@pytest.mark.integration
def test_the_daemon_backs_up_by_itself_and_status_and_console_show_it(tmp_path: Path) -> None:
    root = _fleet(tmp_path, REPO_PASSWORD)
    write_accounts(root, {"ops": "operator"})
    state = root / ".hubfleet"
    with open_store(state) as store:  # as `console-password` and `console-token create` do (tested elsewhere)
        accounts.set_password(store, "ops", "ops-password-1")
        token = accounts.create_token(store, "ops", "tests")[0]
    with running_fleet(root, env=ENV):

        def good_run() -> records.BackupRunRecord | None:
            with open_store(state) as store:
                return records.latest_good_runs(store).get(HUB)

        run = wait_for(good_run, timeout=120)
        assert run.trigger == "schedule" and run.snapshot_id and run.size_bytes and run.files

        status = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
        backup = next(h for h in status["hubs"] if h["name"] == HUB)["backup"]
        assert backup["state"] == "ok" and backup["every_hours"] == 0.01
        assert backup["last"]["snapshot_id"] and backup["last"]["size_bytes"] > 0
        assert re.fullmatch(r"\d+(s|m) ago, [\d.]+ (B|KiB|MiB)", backup["summary"]), backup["summary"]
        table = hubfleet("status", fleet=root, check=True).stdout
        assert "backup" in table and " ago, " in table

        url = status["console"]
        api = httpx.get(f"{url}/api/hubs/{HUB}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert api.status_code == 200, api.text
        shown = api.json()["backup"]
        assert shown["state"] == "ok" and shown["last_failure"] is None
        assert shown["last"]["files"] > 0 and shown["last"]["trigger"] == "schedule"
        with httpx.Client(base_url=url, timeout=30) as client:
            assert sign_in(client, "ops", "ops-password-1").status_code == 303
            page = client.get(f"/hubs/{HUB}").text
            overview = client.get("/").text
        assert "Last backup" in page and shown["last"]["snapshot_id"][:8] in page
        assert 'data-backup-state="ok"' in page
        assert 'data-backup-state="ok"' in overview  # the overview's backup column
        rows = httpx.get(f"{url}/api/hubs", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        [row] = [r for r in rows["hubs"] if r["name"] == HUB]
        assert row["backup_state"] == "ok" and row["last_backup_at"].startswith(
            shown["last"]["started_at"][:19]
        )


@pytest.mark.integration
def test_a_failed_backup_is_an_alerted_incident_that_the_next_good_one_resolves(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    env = {"PATH": "/usr/bin:/bin", "RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD": REPO_PASSWORD}
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    with webhook_receiver() as hook:
        root = _fleet(tmp_path, WRONG_PASSWORD, webhook=hook.url)
        write_accounts(root, {"ops": "operator"})
        state = root / ".hubfleet"
        with open_store(state) as store:
            accounts.set_password(store, "ops", "ops-password-1")
        with running_fleet(root, env=ENV):

            def failed() -> list:
                with open_store(state) as store:
                    return list_incidents(store, kind="backup", open_only=True)

            [incident] = wait_for(failed, timeout=120)
            assert (incident.hub, incident.rule) == (HUB, "failed")
            assert "wrong password" in incident.cause and WRONG_PASSWORD not in incident.cause
            assert "\n" not in incident.cause

            texts = wait_for(lambda: [r["body"]["text"] for r in hook.requests], timeout=30)
            assert f"OPEN: hub {HUB} backup failed: " in texts[0] and "wrong password" in texts[0]
            assert "Kind: backup / failed" in texts[0]

            status = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
            backup = next(h for h in status["hubs"] if h["name"] == HUB)["backup"]
            assert backup["state"] == "failed" and backup["last"] is None
            assert "wrong password" in backup["last_failure"]["error"]
            shown = hubfleet("status", fleet=root, check=True)
            assert "failed" in shown.stdout and "last backup failed: " in shown.stderr
            listed = hubfleet("incidents", "--open", fleet=root, check=True).stdout
            assert "backup (failed)" in listed
            with httpx.Client(base_url=status["console"], timeout=30) as client:
                assert sign_in(client, "ops", "ops-password-1").status_code == 303
                page = client.get(f"/hubs/{HUB}").text
                listing = client.get("/incidents", params={"kind": "backup", "state": "open"}).text
            assert 'data-backup-state="failed"' in page and "Last backup failure" in page
            assert "wrong password" in page and WRONG_PASSWORD not in page
            assert "backup" in listing and "failed" in listing

            # the operator sets the right password: the next daemon's first run is good and resolves it
            hubfleet("down", fleet=root, check=True)
            fleet_yaml = root / "fleet.yaml"
            fleet_yaml.write_text(fleet_yaml.read_text().replace(WRONG_PASSWORD, REPO_PASSWORD))
            hubfleet("up", "--detach", fleet=root, env=ENV, check=True)
            assert wait_for(lambda: not failed(), timeout=120)
            wait_for(lambda: any("RESOLVED" in r["body"]["text"] for r in hook.requests), timeout=30)
            status = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
            assert next(h for h in status["hubs"] if h["name"] == HUB)["backup"]["state"] == "ok"

        everything = "\n".join(
            [*(json.dumps(r["body"]) for r in hook.requests), (state / "daemon.log").read_text()]
        )
        assert WRONG_PASSWORD not in everything and REPO_PASSWORD not in everything
