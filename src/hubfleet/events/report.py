"""An event's report, made once it is over: peak concurrent users and servers, spawn p50/p95 and failures
from the hub's own metrics over the event's window, server-hours, attendees expected vs. seen, and the
readiness tests and ready mode before it. Stored (store.events.save_report), shown on the event's console
page, printed by `hubfleet event report`, mailed by the daemon (hubfleet.daemon.event_reports).

The window is the event's [start, end]. Peaks: concurrent users and servers from the server sessions
(start to stop, as the collector saw them; staff and the check user left out), the servers also from the
hub's own count at each collection (everything it runs), whichever is higher. Spawn figures: the deltas of
the hub's `jupyterhub_server_spawn_duration_seconds` histogram (hubfleet.events.spawns says how quantiles
are estimated from its buckets).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hubfleet.config.models_events import Event
from hubfleet.events import figures, spawns
from hubfleet.events.live import test_json
from hubfleet.store import events as stored

QUANTILES = (
    "estimated from the hub's histogram buckets like Prometheus' histogram_quantile (linear within the "
    "bucket the rank falls in), so only as fine as the buckets: JupyterHub's are 0.5, 1, 2.5, 5, 10, 15, "
    "30 s, ..."
)


def make_report(store: Any, event: Event, hub: str, now: datetime) -> dict[str, Any]:
    """The report of `event` on `hub` from what the store holds now (a report made before the end covers
    the part until `now`, and says so with `complete: false`)."""
    start, end = event.start, min(event.end, now)
    stretches = figures.server_stretches(store, hub, start, end)
    peak_users, peak_servers = figures.peaks(stretches)
    sampled = figures.sampled_running_peak(store, hub, start, end)
    seen = figures.users_active(store, hub, start, end)
    spawn = spawns.spawns_between(store, hub, start, end)
    p95 = spawn["p95_seconds"]
    tests = [t for t in stored.tests(store, hub, event.name, limit=50) if t.at <= event.end]
    windows = stored.windows(store, hub, event.name, limit=20)
    return {
        "hub": hub,
        "event": event.name,
        "display_name": event.display_name or event.name,
        "start": event.start.isoformat(),
        "end": event.end.isoformat(),
        "made_at": now.isoformat(),
        "complete": now >= event.end,
        "attendees": {"expected": event.attendees, "seen": len(seen)},
        "peak": {
            "users": peak_users,
            "servers": max(peak_servers, sampled or 0),
            "servers_hub_count": sampled,
        },
        "server_hours": round(figures.server_hours(stretches), 4),
        "servers": len(stretches),
        "spawns": {**spawn, "quantiles": QUANTILES},
        "target": {
            "p95_seconds": event.spawn_p95_seconds,
            "met": None
            if p95 is None
            else bool(p95 <= event.spawn_p95_seconds and not spawn["p95_above_last_bucket"]),
        },
        "readiness_tests": [test_json(t) for t in reversed(tests)],
        "ready_mode": [w.to_json() for w in reversed(windows)],
    }


def _seconds(value: float | None, above: bool = False) -> str:
    if value is None:
        return "-"
    return (">" if above else "") + f"{value:.2f} s"


def report_text(report: dict[str, Any]) -> str:
    """The report as plain text: the mail's body and `hubfleet event report`'s output."""
    s, peak, target = report["spawns"], report["peak"], report["target"]
    met = {True: "met", False: "missed", None: "no spawns to judge"}[target["met"]]
    failures = ", ".join(f"{k}: {v}" for k, v in s["failures"].items()) or "none"
    lines = [
        f"{report['display_name']} on hub {report['hub']}",
        f"{report['start']} to {report['end']}" + ("" if report["complete"] else " (still running: partial)"),
        "",
        f"Attendees: {report['attendees']['seen']} seen of {report['attendees']['expected']} expected",
        f"Peak concurrent users: {peak['users']}; peak running servers: {peak['servers']}",
        f"Server-hours: {report['server_hours']:.2f} ({report['servers']} servers)",
        f"Spawns: {s['spawns']}; p50 {_seconds(s['p50_seconds'], s['p50_above_last_bucket'])}, "
        f"p95 {_seconds(s['p95_seconds'], s['p95_above_last_bucket'])} (target p95 <= "
        f"{target['p95_seconds']:g} s: {met})",
        f"Failed spawns: {s['failed']} ({failures})",
    ]
    tests = report["readiness_tests"]
    if tests:
        lines.append("Readiness tests before it:")
        lines += [f"  {t['at']}: {'passed' if t['passed'] else 'FAILED'}" for t in tests]
    else:
        lines.append("Readiness tests before it: none")
    windows = report["ready_mode"]
    if windows:
        lines.append(
            "Ready mode: " + "; ".join(f"{w['started_at']} to {w['ended_at'] or 'now'}" for w in windows)
        )
    lines += ["", f"Spawn quantiles are {report['spawns']['quantiles']}"]
    return "\n".join(lines) + "\n"
