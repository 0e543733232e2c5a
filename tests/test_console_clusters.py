"""The console's Clusters page, through real HTTP against the real `hubfleet console` process: operators see
every Kubernetes cluster's versions as last read, the plan to the newest version in standard support, the
open (stopped) upgrade and the recent ones with each hub's interruption as the prober recorded it; community
leaders get no link and a 403.

The state behind it is made the way an operator makes it: `hubfleet clusters --refresh` and `hubfleet upgrade`
as real subprocesses against the fake kubectl/helm/gcloud/aws/az of tests/fake_clouds_upgrade.py (no cluster
or cloud account exists here; JSON shapes from the CLIs' documentation), on a copy of tests/fixtures/k8s-fleet
(EKS 1.32, past its end of standard support on 2026-11-30, in paid extended support; GKE 1.32; AKS 1.33).
Probe samples are written into the real SQLite store as the daemon's prober writes them, inside the windows
the upgrade recorded.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import fake_clouds_upgrade as fakes
from console_helpers import (
    PASSWORDS,
    ConsoleFleet,
    set_credentials,
    signed_in_client,
    start_console,
    stop_console,
    write_accounts,
)
from fleet_helpers import free_ports, hubfleet
from hubfleet.store import open_store
from hubfleet.store.models import ProbeSample
from hubfleet.store.upgrades import runs

FIXTURE = Path(__file__).parent / "fixtures" / "k8s-fleet"
ACCOUNTS = {"ops": "operator", "lead-a": "astro", "lead-h": "physics"}


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleFleet, float]]:
    """The console over the k8s fleet after an inventory reading, a finished GKE upgrade (with probe failures
    of physics during its node-pool step) and an EKS upgrade stopped at a failure; the expected seconds."""
    root = tmp_path_factory.mktemp("console-clusters")
    fleet = root / "fleet"
    shutil.copytree(FIXTURE, fleet)
    write_accounts(fleet, ACCOUNTS)
    state = fleet / ".hubfleet"
    state.mkdir()
    tokens = set_credentials(state)
    env = fakes.install(root / "fakebin", root / "clouds.json", root / "calls.jsonl")
    where = ("--state-dir", str(state))
    assert hubfleet("clusters", "--refresh", *where, fleet=fleet, env=env).returncode == 0
    done = hubfleet("upgrade", "gke", "--to", "1.33", *where, fleet=fleet, env=env)
    assert done.returncode == 0, done.stderr
    stopped = hubfleet(
        "upgrade", "eks", "--to", "1.33", *where, fleet=fleet,
        env=env | {"FAKE_FAIL": "update-cluster-version --name fleet-two"},
    )  # fmt: skip
    assert stopped.returncode == 1
    with open_store(state) as store:
        step = runs(store, "gke")[0].steps[1]
        assert step.started_at is not None and step.finished_at is not None
        span = step.finished_at - step.started_at
        fail_at, back_at = step.started_at + span * 0.1, step.started_at + span * 0.6
        with store.session() as session, session.begin():
            session.add(ProbeSample(hub="physics", at=fail_at, ok=False, error="502 from the ingress"))
            session.add(ProbeSample(hub="physics", at=back_at, ok=True))
        expected = round((back_at - fail_at).total_seconds(), 1)
    (port,) = free_ports(1)
    process = start_console(fleet, state, port)
    try:
        yield (
            ConsoleFleet(
                fleet, state, f"http://127.0.0.1:{port}", dict(PASSWORDS), tokens, {}, process=process
            ),
            expected,
        )
    finally:
        stop_console(process)


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_an_operator_sees_inventory_plans_and_upgrades(cf: tuple[ConsoleFleet, float]) -> None:
    console, expected = cf
    client = signed_in_client(console, "ops")
    try:
        overview = client.get("/")
        assert 'href="/clusters"' in overview.text
        page = client.get("/clusters")
    finally:
        client.close()
    assert page.status_code == 200, page.text[:500]
    body = page.text
    for cluster in ("eks", "gke", "aks", "kube"):
        assert f'<tr data-cluster="{cluster}">' in body
    eks_row = body.split('<tr data-cluster="eks">')[1].split("</tr>")[0]
    eks = text_of(eks_row)
    # as the upgrade last read it: its first step (node group users to 1.32) went through
    assert "aws" in eks and "us-west-2" in eks and "1.32" in eks and "core 1.32, users 1.32" in eks
    assert 'data-state="extended"' in eks_row  # past the end of standard support on 2026-11-30
    assert "$365" in eks  # (0.60 - 0.10) USD per hour x 730 hours of EKS extended support
    assert "to 1.3" in eks and "steps" in eks  # the plan to the newest version in standard support

    open_section = body.split('id="open-runs-heading"')[1].split('id="recent-runs-heading"')[0]
    assert 'data-cluster="eks"' in open_section and 'data-cluster="gke"' not in open_section
    opened = text_of(open_section)
    assert "eks: 1.32 → 1.33" in opened and "failed" in opened
    assert "stopped at step 2 (control plane 1.32 -> 1.33)" in opened
    assert "--resume" in opened
    assert re.search(r'data-step="2" data-status="failed"', open_section)

    recent = body.split('id="recent-runs-heading"')[1]
    assert 'data-cluster="gke"' in recent
    step_two = recent.split('data-step="2"')[1].split("</tr>")[0]
    assert f"physics: {expected} s" in text_of(step_two)
    assert "physics-staging: no probes" in text_of(step_two)


def test_community_leaders_get_no_link_and_a_403(cf: tuple[ConsoleFleet, float]) -> None:
    console, _ = cf
    client = signed_in_client(console, "lead-a")
    try:
        assert 'href="/clusters"' not in client.get("/").text
        page = client.get("/clusters")
    finally:
        client.close()
    assert page.status_code == 403
    assert "fleet-two" not in page.text and "us-west-2" not in page.text
    token = httpx.get(
        f"{console.url}/clusters", headers={"Authorization": f"Bearer {console.tokens['lead-h']}"}, timeout=30
    )
    assert token.status_code == 403
    anonymous = httpx.get(f"{console.url}/clusters", timeout=30)
    assert anonymous.status_code != 200 and "us-west-2" not in anonymous.text
