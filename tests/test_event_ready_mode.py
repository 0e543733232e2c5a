"""Ready mode on schedule (issue 17, section 2).

- The rule (render/ready_mode.py): which event a hub is ready for at a moment, operators' on and off, the
  transitions and the next wake-up: pure functions, many cases.
- Kubernetes hubs: `events apply` through the real deploy path (Deployer, KubernetesBackend, store). No
  cluster, helm or cloud CLI exists here: fake `helm`/`kubectl`/`gcloud` scripts on PATH record their calls
  (tests/test_render_kubernetes.py's fake_tools), and the synthetic check after the helm upgrade, which would
  reach the hub at its public https address on the cluster, is the one step replaced (`NoClusterDeployer`).
- Local hubs: one real daemon (`hubfleet up`) with an event whose window is open at start: it opens the
  window by itself, warms the hub (the OS accounts of its users exist), history shows it, and it closes the
  window at the event's end, woken by the schedule (its look at the fleet's files is set to 10 minutes).
"""

from __future__ import annotations

import asyncio
import json
import pwd
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from fleet_helpers import copy_demo_fleet, hubfleet, passable_tempdir, running_fleet, wait_for
from hubfleet.config.models_events import Event
from hubfleet.config.validate import load_fleet
from hubfleet.deploy.ready_apply import ReadyBackend, apply_ready_modes
from hubfleet.deploy.rollout import Deployer
from hubfleet.deploy.state import record
from hubfleet.render.ready_mode import (
    NOT_READY,
    Transition,
    Wanted,
    fleet_next_change,
    next_change,
    operator,
    transitions,
    upcoming,
    wanted,
)
from hubfleet.store import events as stored
from hubfleet.store import open_store
from hubfleet.store.events import Window
from test_render_kubernetes import PlainSecrets, fake_tools  # noqa: F401 - the fixture

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
HERE = Path(__file__).resolve().parent


def event(name: str, start: datetime, hours: float = 2, lead: int = 30, attendees: int = 50) -> Event:
    return Event(
        name=name,
        start=start,
        end=start + timedelta(hours=hours),
        attendees=attendees,
        ready_lead_minutes=lead,
    )


def window(
    name: str,
    started: datetime,
    by: str = "schedule",
    ended: datetime | None = None,
    ended_by: str | None = None,
) -> Window:
    return Window(1, "hub", name, started, by, ended, ended_by)


DAY1 = event("day1", T0)
DAY2 = event("day2", T0 + timedelta(days=1))
OP = operator("Ada <ada@example.org> via hubfleet event ready")


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (-31, None),  # before the lead time
        (-30, "day1"),  # the window opens 30 minutes ahead
        (0, "day1"),
        (119, "day1"),
        (120, None),  # at the end it is over
        (24 * 60 - 30, "day2"),
    ],
)
def test_the_schedule_alone(minutes: int, expected: str | None) -> None:
    want = wanted("hub", [DAY1, DAY2], [], T0 + timedelta(minutes=minutes))
    assert (want.event.name if want.event else None) == expected
    assert want.why == ("schedule" if expected else "none")


def test_the_later_event_wins_when_its_lead_reaches_into_one_still_running() -> None:
    morning = event("morning", T0, hours=1)
    afternoon = event("afternoon", T0 + timedelta(hours=1, minutes=15))
    at = T0 + timedelta(minutes=50)  # morning runs; afternoon's window opened at 09:45 UTC
    assert wanted("hub", [morning, afternoon], [], at).event == afternoon
    open_morning = [window("morning", T0 - timedelta(minutes=30))]
    assert transitions(wanted("hub", [morning, afternoon], open_morning, at), open_morning) == [
        Transition("hub", "end", "morning", "event afternoon is next"),
        Transition("hub", "start", "afternoon", "schedule"),
    ]


def test_transitions_open_once_and_close_once() -> None:
    inside = T0
    want = wanted("hub", [DAY1], [], inside)
    assert transitions(want, []) == [Transition("hub", "start", "day1", "schedule")]
    opened = [window("day1", T0 - timedelta(minutes=30))]
    assert transitions(wanted("hub", [DAY1], opened, inside), opened) == []  # already open: nothing
    after = T0 + timedelta(hours=3)
    assert transitions(wanted("hub", [DAY1], opened, after), opened) == [
        Transition("hub", "end", "day1", "its window is over")
    ]


def test_an_operators_on_before_the_window_lasts_until_the_event_ends() -> None:
    early = T0 - timedelta(hours=5)
    on = [window("day1", early, by=OP)]
    assert wanted("hub", [DAY1], on, early + timedelta(minutes=1)) == Wanted("hub", DAY1, "operator on")
    assert wanted("hub", [DAY1], on, T0 + timedelta(hours=1)).why == "operator on"
    end = wanted("hub", [DAY1], on, T0 + timedelta(hours=2))
    assert end.event is None and transitions(end, on)[0].kind == "end"


def test_an_operators_off_inside_the_window_holds_until_the_window_ends() -> None:
    off_at = T0 - timedelta(minutes=10)
    off = [window("day1", T0 - timedelta(minutes=30), ended=off_at, ended_by=OP)]
    for later in (off_at, T0, T0 + timedelta(minutes=119)):
        want = wanted("hub", [DAY1], off, later)
        assert want == Wanted("hub", None, "operator off") and transitions(want, off) == []
    # the next event's window is not affected
    assert wanted("hub", [DAY1, DAY2], off, T0 + timedelta(days=1)).event == DAY2


def test_an_off_before_the_window_does_not_cancel_it_and_the_schedules_own_end_is_not_an_off() -> None:
    before = [window("day1", T0 - timedelta(hours=5), by=OP, ended=T0 - timedelta(hours=4), ended_by=OP)]
    assert wanted("hub", [DAY1], before, T0).why == "schedule"
    closed = [
        window("day1", T0 - timedelta(minutes=30), ended=T0 - timedelta(minutes=1), ended_by="schedule")
    ]
    assert wanted("hub", [DAY1], closed, T0).why == "schedule"


def test_an_on_after_an_off_opens_it_again() -> None:
    windows = [
        window("day1", T0 - timedelta(minutes=30), ended=T0 - timedelta(minutes=20), ended_by=OP),
        window("day1", T0 - timedelta(minutes=5), by=OP),
    ]
    assert wanted("hub", [DAY1], windows, T0).why == "operator on"


def test_a_window_of_an_event_removed_from_the_files_is_closed() -> None:
    opened = [window("gone", T0 - timedelta(minutes=30))]
    want = wanted("hub", [DAY2], opened, T0)
    assert want.event is None and [t.kind for t in transitions(want, opened)] == ["end"]


def test_next_change_is_the_next_window_edge() -> None:
    assert next_change([DAY1, DAY2], T0 - timedelta(hours=1)) == T0 - timedelta(minutes=30)
    assert next_change([DAY1, DAY2], T0 - timedelta(minutes=30)) == T0 + timedelta(hours=2)
    assert next_change([DAY1, DAY2], T0 + timedelta(hours=2)) == T0 + timedelta(days=1, minutes=-30)
    assert next_change([DAY1], T0 + timedelta(hours=2)) is None


# --------------------------------------------------------------------------- kubernetes: events apply


PHYSICS = "communities/physics/hubs/prod.yaml"


class NoClusterDeployer(Deployer):
    """The real Deployer, but for the synthetic check: it would reach https://physics.hubs.example.org on a
    cluster, and no cluster exists here."""

    async def _check(self, backend, name, *, environments=True):  # noqa: ANN001, ANN202
        return None


def k8s_fleet(dest: Path, now: datetime) -> Path:
    """The kubernetes fixture fleet; physics has a 250-person workshop starting in 10 minutes."""
    shutil.copytree(HERE / "fixtures" / "k8s-fleet", dest)
    path = dest / PHYSICS
    start, end = now + timedelta(minutes=10), now + timedelta(hours=2)
    path.write_text(
        path.read_text()
        + "events:\n- name: workshop\n"
        + f"  start: {start.isoformat(timespec='seconds')}\n  end: {end.isoformat(timespec='seconds')}\n"
        + "  attendees: 250\n  arrival: 60 in 3m\n"
    )
    return dest


def deployed_before_the_window(root: Path) -> None:
    """physics as `hubfleet deploy` left it before the window: the fixed 3 placeholders."""
    fleet = load_fleet(root)
    hub = fleet.hubs["physics"]
    backend = ReadyBackend(fleet, root / ".hubfleet", {"physics": NOT_READY}, secrets=PlainSecrets())
    with open_store(root / ".hubfleet") as store:
        digest = backend.config_hash(hub)
        record(store, fleet, hub, config_hash=digest, rendered=backend.render(hub), result="ok", actor="t")


def apply(root: Path, now: datetime, **kwargs):  # noqa: ANN003, ANN201
    fleet = load_fleet(root)
    with open_store(root / ".hubfleet") as store:
        return asyncio.run(
            apply_ready_modes(
                fleet,
                root / ".hubfleet",
                store,
                now,
                deployer=NoClusterDeployer,
                backend_options={"secrets": PlainSecrets()},
                **kwargs,
            )
        )


def helm_values(calls: list[dict]) -> list[dict]:
    """The public values file of each `helm upgrade` (the fake helm saved the files it was given)."""
    found = []
    for call in calls:
        if call["argv"][:2] == ["helm", "upgrade"]:
            found.append(yaml.safe_load(call["files"][call["argv"][-3]]["text"]))
    return found


def windows_of(root: Path) -> list[Window]:
    with open_store(root / ".hubfleet") as store:
        return stored.windows(store, "physics")


def test_events_apply_redeploys_placeholders_ungated_and_records_the_window(
    tmp_path: Path,
    fake_tools,  # noqa: F811
) -> None:
    """Mocked cluster and helm (fake commands on PATH) and check (NoClusterDeployer)."""
    now = datetime.now(UTC)
    root = k8s_fleet(tmp_path / "fleet", now)
    deployed_before_the_window(root)

    dry = apply(root, now, dry_run=True)
    assert [(h.hub, h.event, h.seats, h.action) for h in dry.hubs] == [("physics", "workshop", 200, "deploy")]
    assert fake_tools() == [] and windows_of(root) == []  # nothing done, nothing recorded

    done = apply(root, now)
    entry = done.hubs[0]
    assert done.ok and entry.outcome is not None and entry.outcome.result == "deployed", entry
    values = helm_values(fake_tools())
    assert [v["scheduling"]["userPlaceholder"] for v in values] == [{"enabled": True, "replicas": 200}]
    [opened] = windows_of(root)
    assert (opened.event, opened.started_by, opened.open) == ("workshop", "schedule", True)
    assert opened.details["seats"] == 200 and opened.details["deploy"] == "deployed"
    with open_store(root / ".hubfleet") as store:
        last = store.deployments("physics", limit=1)[0]
    assert last.result == "ok" and "ready mode for event workshop" in (last.reasons or [""])[0]
    assert "not gated" in last.reasons[0]

    calls = len(fake_tools())
    again = apply(root, now + timedelta(minutes=1))
    assert again.hubs[0].action == "unchanged" and len(fake_tools()) == calls  # no helm run

    # an operator switches it off inside the window: placeholders back to 3, and the schedule keeps it off
    with open_store(root / ".hubfleet") as store:
        stored.end_window(store, "physics", OP)
    off = apply(root, now + timedelta(minutes=2)).hubs[0]
    assert (off.why, off.seats, off.action, off.outcome.result) == ("operator off", 3, "deploy", "deployed")
    assert helm_values(fake_tools())[-1]["scheduling"]["userPlaceholder"]["replicas"] == 3
    later = apply(root, now + timedelta(minutes=30)).hubs[0]
    assert (later.why, later.action, later.transitions) == ("operator off", "unchanged", [])
    assert [w.ended_by for w in windows_of(root)] == [OP]


def test_the_window_closes_at_the_end_and_other_changes_are_not_deployed_ungated(
    tmp_path: Path,
    fake_tools,  # noqa: F811
) -> None:
    """Mocked cluster and helm (fake commands on PATH) and check (NoClusterDeployer)."""
    now = datetime.now(UTC)
    root = k8s_fleet(tmp_path / "fleet", now)
    deployed_before_the_window(root)
    assert apply(root, now).hubs[0].outcome.result == "deployed"

    # a setting changed in the hub file: not only ready mode differs, so `events apply` leaves it alone
    path = root / PHYSICS
    path.write_text(path.read_text().replace("max_users: 300", "max_users: 290"))
    blocked = apply(root, now + timedelta(hours=3)).hubs[0]
    assert blocked.action == "blocked" and "hubfleet deploy" in blocked.message
    assert blocked.outcome is None
    path.write_text(path.read_text().replace("max_users: 290", "max_users: 300"))

    ended = apply(root, now + timedelta(hours=3)).hubs[0]
    assert (ended.event, ended.seats, ended.action, ended.outcome.result) == (None, 3, "deploy", "deployed")
    [closed] = windows_of(root)
    assert closed.ended_by == "schedule" and not closed.open


def test_plan_and_events_apply_dry_run_on_the_command_line(tmp_path: Path) -> None:
    """No helm runs: a dry run only reads; `plan` names the ready-mode change and lists the window."""
    now = datetime.now(UTC)
    root = k8s_fleet(tmp_path / "fleet", now)
    deployed_before_the_window(root)
    out = json.loads(hubfleet("events", "apply", "--dry-run", "--json", fleet=root, check=True).stdout)
    assert out["dry_run"] and out["hubs"][0]["action"] == "deploy" and out["hubs"][0]["placeholders"] == 200
    assert out["hubs"][0]["windows"][0]["change"] == "start"
    plan = json.loads(hubfleet("plan", "--json", "--hub", "physics", fleet=root, check=True).stdout)
    [physics] = [h for h in plan["hubs"] if h["name"] == "physics"]
    assert physics["action"] == "update"
    assert physics["reasons"][0].startswith("ready mode: event workshop, 200 seats until ")
    assert [(w["hub"], w["event"], w["seats"]) for w in plan["ready_mode"]] == [("physics", "workshop", 200)]
    text = hubfleet("plan", "--no-diff", "--hub", "physics", fleet=root, check=True).stdout
    assert "ready mode: physics: event workshop, " in text and "(200 user placeholders)" in text
    listed = upcoming(load_fleet(root), now)
    assert [(hub, e.name, seats) for hub, e, seats in listed] == [("physics", "workshop", 200)]


def test_event_ready_by_hand_says_what_is_wrong(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    root = k8s_fleet(tmp_path / "fleet", now)
    result = hubfleet("event", "ready", "physics", "worksho", "--on", fleet=root)
    assert result.returncode == 1 and "no event 'worksho' on hub physics" in result.stderr
    assert "workshop" in result.stderr
    result = hubfleet("event", "ready", "physics", "workshop", fleet=root)
    assert result.returncode == 1 and "say --on (start ready mode now) or --off" in result.stderr
    result = hubfleet("event", "ready", "physics", "workshop", "--off", fleet=root)
    assert result.returncode == 1 and "hub physics is not in ready mode" in result.stderr


# --------------------------------------------------------------------------- local: the real daemon

HACKWEEK_STAGING = "communities/hackweek/hubs/staging.yaml"


def test_the_daemon_opens_warms_and_closes_the_window_by_itself() -> None:
    """A real daemon: the event's window is open when it starts and ends 120 s later. The daemon warms the
    hub and runs the readiness test; an operator switches ready mode off and on again by hand. The daemon
    looks at the fleet's files only every 10 minutes here, so closing the window at the end is the schedule
    waking it."""
    with passable_tempdir("hubfleet-ready-") as tmp:
        root = copy_demo_fleet(tmp / "fleet", keep={HACKWEEK_STAGING})
        path = root / HACKWEEK_STAGING
        now = datetime.now(UTC)
        start = (now - timedelta(minutes=1)).replace(microsecond=0)
        end = (now + timedelta(seconds=120)).replace(microsecond=0)
        path.write_text(
            path.read_text().replace(
                "  admin_users: [omar]\n", "  admin_users: [omar]\n  allowed_users: [ada]\n"
            )
            + "events:\n- name: sprint\n"
            + f"  start: {start.isoformat(timespec='seconds')}\n  end: {end.isoformat(timespec='seconds')}\n"
            + "  attendees: 20\n  readiness_test_users: 2\n  spawn_p95_seconds: 300\n"  # pass: no failure
        )
        env = {"HUBFLEET_EVENT_RELOAD_LOOK": "600"}
        with running_fleet(root, env=env):
            state = root / ".hubfleet"

            def opened() -> Window | None:
                with open_store(state) as store:
                    found = stored.windows(store, "hackweek-staging")
                return found[0] if found and "warm" in found[0].details else None

            window = wait_for(opened, timeout=60)
            assert (window.event, window.started_by, window.open) == ("sprint", "schedule", True)
            warm = window.details["warm"]
            instance = json.loads((state / "layout.json").read_text())["instance"]
            if "skipped" not in warm:  # a broker with warm() (accounts mode, as root)
                from hubfleet.isolation.accounts import user_account

                assert pwd.getpwnam(user_account(instance, "hackweek-staging", "ada"))
                assert warm["accounts_created"] + warm["accounts_existing"] >= 1, warm
            history = json.loads(hubfleet("history", "hackweek-staging", "--json", fleet=root).stdout)
            assert any(
                e["kind"] == "ready" and "ready mode on for event sprint by schedule" in e["summary"]
                for e in history["events"]
            ), history
            # the bounded readiness test ran against the hub (2 simulated attendees), stored with the event
            tested = wait_for(lambda: (w := opened()) and w.details.get("readiness_test"), timeout=150)
            assert tested["passed"] is True, tested
            listed = json.loads(hubfleet("events", "--json", fleet=root, check=True).stdout)["events"]
            assert listed[0]["ready_mode"]["event"] == "sprint" and listed[0]["last_test"]["passed"], listed

            # by hand, through the daemon's control socket: off (it holds), then on again
            off = hubfleet("event", "ready", "hackweek-staging", "sprint", "--off", fleet=root, check=True)
            assert "hackweek-staging left ready mode for sprint" in off.stdout
            with open_store(state) as store:
                [was] = stored.windows(store, "hackweek-staging")
            assert was.ended_by is not None and was.ended_by.startswith("operator ")
            again = hubfleet("event", "ready", "hackweek-staging", "sprint", "--off", fleet=root)
            assert again.returncode == 1 and "hub hackweek-staging is not in ready mode" in again.stderr
            on = hubfleet("event", "ready", "hackweek-staging", "sprint", "--on", fleet=root, check=True)
            assert "hackweek-staging is in ready mode for sprint" in on.stdout, on.stdout
            with open_store(state) as store:
                reopened = stored.windows(store, "hackweek-staging")[0]
            assert reopened.open and reopened.started_by.startswith("operator ")
            assert "warm" in reopened.details

            def closed() -> Window | None:
                with open_store(state) as store:
                    found = stored.windows(store, "hackweek-staging")
                return found[0] if found and not found[0].open else None

            done = wait_for(closed, timeout=200)
            assert done.ended_by == "schedule" and done.ended_at is not None
            assert done.ended_at >= end  # not before its end (how soon after is not asserted)
            history = json.loads(hubfleet("history", "hackweek-staging", "--json", fleet=root).stdout)
            assert any(
                "ready mode off after event sprint by schedule" in e["summary"] for e in history["events"]
            )


def test_fleet_next_change_spans_hubs() -> None:
    fleet = load_fleet(HERE / "fixtures" / "k8s-fleet")
    assert fleet_next_change(fleet, fleet.hubs, T0) is None  # no events in the fixture


class RecordingAlerter:
    """Stands in for hubfleet.monitor.alerts.Alerter: records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str | None]] = []

    async def incident_opened(self, incident) -> None:  # noqa: ANN001
        self.sent.append(("opened", incident.hub, incident.kind, incident.rule))

    async def incident_resolved(self, incident) -> None:  # noqa: ANN001
        self.sent.append(("resolved", incident.hub, incident.kind, incident.rule))

    async def drain(self, timeout: float | None = None) -> None:
        """Nothing to wait for: it records at once."""


def test_a_readiness_test_that_cannot_run_opens_an_incident_and_the_end_resolves_it(tmp_path: Path) -> None:
    """The schedule's edges on a fleet that is not up (no daemon, no broker): the window opens, the test
    cannot reach the hub, an `event/readiness` incident is opened and alerted; the window's end closes it."""
    from hubfleet.daemon.event_schedule import EventSchedule
    from hubfleet.monitor.incidents import open_keys

    root = copy_demo_fleet(tmp_path / "fleet", keep={HACKWEEK_STAGING})
    now = datetime.now(UTC).replace(microsecond=0)
    path = root / HACKWEEK_STAGING
    path.write_text(
        path.read_text()
        + f"events:\n- name: sprint\n  start: {now.isoformat()}\n"
        + f"  end: {(now + timedelta(hours=1)).isoformat()}\n  attendees: 5\n  readiness_test_users: 1\n"
    )
    fleet, state, alerts = load_fleet(root), root / ".hubfleet", RecordingAlerter()

    async def edges() -> list[str]:
        with open_store(state) as store:
            schedule = EventSchedule(fleet, state, store, lambda: ["hackweek-staging"], None, alerts)
            done = schedule.step(fleet, now)
            await schedule._work["hackweek-staging"]
            assert ("hackweek-staging", "event", "readiness") in open_keys(store)
            [opened] = stored.windows(store, "hackweek-staging")
            assert opened.details["warm"] == {
                "skipped": "single-account mode: no per-user accounts to make ahead"
            }
            assert opened.details["readiness_test"]["passed"] is False
            assert "could not run" in opened.details["readiness_test"]["verdict"]
            done += schedule.step(fleet, now + timedelta(hours=1))
            await schedule.drain(5)
            assert ("hackweek-staging", "event", "readiness") not in open_keys(store)
            return done

    assert asyncio.run(edges()) == [
        "hackweek-staging enters ready mode for event sprint (schedule)",
        "hackweek-staging leaves ready mode of event sprint (its window is over)",
    ]
    assert alerts.sent == [
        ("opened", "hackweek-staging", "event", "readiness"),
        ("resolved", "hackweek-staging", "event", "readiness"),
    ]
