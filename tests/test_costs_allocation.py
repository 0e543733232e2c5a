"""Allocation of a month's costs to hubs, users and groups, on a real store with real rows: the invariant to
the cent at every level (awkward amounts, random ones), idle capacity's three modes, price sheets (a past
month and the current one pro-rata), the fallback resources of old sessions, re-allocation."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from costs_alloc_helpers import (
    at,
    clear_usage,
    put_groups,
    put_home,
    put_import,
    put_session,
    write_fleet,
)
from hubfleet.costs import queries
from hubfleet.costs.allocation import allocate_month, month_bounds
from hubfleet.costs.cents import round_cents
from hubfleet.settings import UserError
from hubfleet.store import Store, open_store
from hubfleet.store.cost_allocations import CostAllocationLine, CostAllocationMember
from hubfleet.store.models import Retirement

MONTH = "2026-10"
D = Decimal


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state") as opened:
        yield opened


def usd(amounts: dict[str, dict[str, Decimal]]) -> dict[str, Decimal]:
    return {name: by["USD"] for name, by in amounts.items() if "USD" in by}


def lines_of(store: Store, hub: str) -> dict[str, Decimal]:
    return {row.line: row.amount for row in queries.hub_lines(store, MONTH) if row.hub == hub}


def assert_every_level_adds_up(store: Store, month: str = MONTH) -> None:
    """Accounts: lines to the bill (micros and cents); hubs: users and groups to the hub (cents)."""
    checks = queries.month_check(store, month)
    assert checks and all(check.ok for check in checks), checks
    for check in checks:
        assert check.billed == check.allocated
    with store.session() as session:
        lines = session.execute(
            select(CostAllocationLine.account, func.sum(CostAllocationLine.amount_cents)).group_by(
                CostAllocationLine.account
            )
        ).all()
    found = {account: D(cents) / 100 for account, cents in lines}
    assert {c.account: found.get(c.account, D(0)) for c in checks} == {c.account: c.billed for c in checks}
    for hub, by_currency in queries.hub_month_costs(store, month).items():
        users = queries.user_month_costs(store, month, hub)
        groups = queries.group_month_costs(store, month, hub)
        for currency, amount in by_currency.items():
            assert sum(u.get(currency, D(0)) for u in users.values()) == amount, (hub, users)
            assert sum(g.get(currency, D(0)) for g in groups.values()) == amount, (hub, groups)


def test_direct_shared_and_unallocated_add_up_to_the_cent(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "fleet")
    # day 3: h1's two users 10 h each on 1 core / 1 GiB, h2's one user 10 h on 2 cores / 2 GiB; h3 unused
    put_session(store, "h1", "ann", at(MONTH, 3, 8), 10)
    put_session(store, "h1", "bob", at(MONTH, 3, 8), 10)
    put_session(store, "h2", "cy", at(MONTH, 3, 8), 10, cpu=2, memory_gib=2)
    put_groups(store, "h1", {"ann": ["g1", "g2"], "bob": ["g1"]})
    put_import(
        store,
        "acct-1",
        MONTH,
        [
            (3, "a", "h1", "Usage", "Compute Engine", 10_000_000),
            (3, "a", "h1", "Credit", "Compute Engine", -1_000_001),  # a credit: a negative row
            (3, "a", None, "Usage", "Cloud Load Balancing", 100_000_000),  # shared by use: 50/50
            (5, "b", None, "Usage", "Cloud Monitoring", 5_000_000),  # b's only hub, nobody used it
            (7, None, None, "Usage", "Support", 7_777_777),  # no cluster: unallocated
        ],
    )
    result = allocate_month(store, fleet, MONTH)
    (account,) = result.accounts
    assert account.ok and account.billed == D("121.78") == account.allocated
    assert account.unallocated == D("7.78")
    assert account.hubs == {"h1": D("59.00"), "h2": D("50.00"), "h4": D("5.00")}
    assert lines_of(store, "h1") == {"direct": D("9.00"), "shared": D("50.00")}
    assert lines_of(store, "h3") == {}  # no use: nothing of the shared line
    assert usd(queries.hub_month_costs(store, MONTH)) == {"h1": D("59.00"), "h2": D("50.00"), "h4": D("5.00")}
    assert usd(queries.hub_month_costs(store, MONTH, ["h2"])) == {"h2": D("50.00")}
    fleet_communities = queries.community_month_costs(store, fleet, MONTH)
    assert fleet_communities == {"c": {"USD": D("109.00")}, "d": {"USD": D("5.00")}}
    assert usd(queries.user_month_costs(store, MONTH, "h1")) == {"ann": D("29.50"), "bob": D("29.50")}
    # ann is in two groups: half of hers each; bob in one
    assert usd(queries.group_month_costs(store, MONTH, "h1")) == {"g1": D("44.25"), "g2": D("14.75")}
    assert usd(queries.group_month_costs(store, MONTH, "h2")) == {"(no group)": D("50.00")}
    # h4 had cost but nobody used it: the hub's own line (user "")
    assert usd(queries.user_month_costs(store, MONTH, "h4")) == {"": D("5.00")}
    days = queries.daily_hub_costs(store, date(2026, 10, 1), date(2026, 10, 31))
    assert [(d.day.day, d.hub, d.amount) for d in days] == [
        (3, "h1", D("58.999999")),
        (3, "h2", D("50")),
        (5, "h4", D("5")),
    ]
    assert queries.daily_hub_costs(store, date(2026, 10, 4), date(2026, 10, 4)) == []
    assert_every_level_adds_up(store)


def test_shared_cost_follows_each_days_use_and_the_larger_of_request_and_measured(
    tmp_path: Path, store: Store
) -> None:
    fleet = write_fleet(tmp_path / "fleet")
    # day 1 only h1 runs; day 2 h1 requests 1 core but used 3 (cgroup), h2 2 cores; memory equal
    put_session(store, "h1", "ann", at(MONTH, 1, 0), 24)
    put_session(store, "h1", "ann", at(MONTH, 2, 0), 10, cpu_seconds=3 * 10 * 3600)
    put_session(store, "h2", "cy", at(MONTH, 2, 0), 10, cpu=2)
    put_import(
        store,
        "acct-1",
        MONTH,
        [
            (1, "a", None, "Usage", "Networking", 30_000_000),
            (2, "a", None, "Usage", "Networking", 20_000_000),
        ],
    )
    allocate_month(store, fleet, MONTH)
    # day 2: cpu 30 vs 20 core-hours -> 0.6/0.4, memory 10/10 -> 0.5/0.5: weights 0.55 and 0.45
    assert usd(queries.hub_month_costs(store, MONTH)) == {"h1": D("41.00"), "h2": D("9.00")}
    assert_every_level_adds_up(store)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("proportional", {"h1": {"shared": D("35.00"), "idle": D("75.00")}}),
        (
            "even",
            {
                "h1": {"shared": D("35.00"), "idle": D("25.00")},
                "h2": {"idle": D("25.00")},
                "h3": {"idle": D("25.00")},
            },
        ),
        ("operator", {"h1": {"shared": D("35.00")}, "": {"idle": D("75.00")}}),
    ],
)
def test_idle_capacity_is_its_own_line_carried_per_setting(
    tmp_path: Path, store: Store, mode: str, expected: dict[str, dict[str, Decimal]]
) -> None:
    fleet = write_fleet(tmp_path / "fleet", a_costs={"capacity": {"cpu": 4, "memory_gib": 4}, "idle": mode})
    put_session(store, "h1", "ann", at(MONTH, 3), 24)  # a quarter of the cluster's day: 75 % idle
    put_import(
        store,
        "acct-1",
        MONTH,
        [
            (3, "a", None, "Usage", "Compute Engine", 100_000_000),  # nodes: idle applies
            (3, "a", None, "Usage", "Cloud Monitoring", 10_000_000),  # not capacity: all shared
        ],
    )
    (account,) = allocate_month(store, fleet, MONTH).accounts
    found = {}
    for row in queries.hub_lines(store, MONTH):
        found.setdefault(row.hub, {})[row.line] = row.amount
    assert found == expected
    assert account.idle_kept == (D("75.00") if mode == "operator" else D("0.00"))
    (check,) = queries.month_check(store, MONTH)
    assert check.ok and check.billed == D("110.00") == check.allocated
    assert check.idle_kept == account.idle_kept
    assert_every_level_adds_up(store)


def test_without_capacity_there_is_no_idle_line(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "fleet", a_costs={"idle": "operator"})
    put_session(store, "h1", "ann", at(MONTH, 3), 1)
    put_import(store, "acct-1", MONTH, [(3, "a", None, "Usage", "Compute Engine", 100_000_000)])
    allocate_month(store, fleet, MONTH)
    assert {(r.hub, r.line) for r in queries.hub_lines(store, MONTH)} == {("h1", "shared")}


def test_price_sheet_of_a_past_month(tmp_path: Path, store: Store) -> None:
    sheet = {
        "currency": "EUR",
        "cpu_hour": "0.10",
        "memory_gib_hour": "0.01",
        "storage_gib_month": "0.05",
        "monthly_fixed": "31",
    }
    fleet = write_fleet(tmp_path / "fleet", p_sheet=sheet)
    put_session(store, "h5", "dee", at(MONTH, 3, 8), 10, cpu=2, memory_gib=4)  # 2.00 + 0.40
    put_home(store, "h5", "dee", at(MONTH, 10), 10)  # 20 GiB on average: 1.00
    put_home(store, "h5", "dee", at(MONTH, 20), 30)
    put_home(store, "h5", "", at(MONTH, 10), 25)  # the hub's total: 10 GiB beyond the homes, 0.50
    put_home(store, "h5", "", at(MONTH, 20), 35)
    put_home(store, "h5", "dee", at("2026-11", 1, 1), 500)  # the next month's: not October's
    result = allocate_month(store, fleet, MONTH)
    (account,) = result.accounts
    assert (account.account, account.currency, account.source) == ("price-sheet:p", "EUR", "price-sheet")
    # fixed 31.00 (1.00 a day) all to h5, the only hub with use; h6 none
    assert account.billed == D("34.90") == account.allocated and account.hubs == {"h5": D("34.90")}
    assert lines_of(store, "h5") == {"direct": D("3.90"), "shared": D("31.00")}
    eur = {u: by["EUR"] for u, by in queries.user_month_costs(store, MONTH, "h5").items()}
    assert eur == {"dee": D("34.40"), "": D("0.50")}
    days = queries.daily_hub_costs(store, date(2026, 10, 1), date(2026, 10, 31), ["h5"])
    assert len(days) == 31 and sum(d.amount for d in days) == D("34.9")
    assert_every_level_adds_up(store)


def test_price_sheet_of_the_current_month_is_pro_rata(tmp_path: Path, store: Store) -> None:
    sheet = {
        "cpu_hour": "0.10",
        "memory_gib_hour": "0.01",
        "storage_gib_month": "0.05",
        "monthly_fixed": "31",
    }
    fleet = write_fleet(tmp_path / "fleet", p_sheet=sheet)
    month = "2026-11"
    now = at(month, 16)  # half of November gone
    put_session(store, "h6", "eve", at(month, 15, 12), None)  # still running: 12 h so far, 1.32
    put_home(store, "h6", "eve", at(month, 15), 20)  # 20 GiB x half a month: 0.50
    put_session(store, "h6", "eve", at(month, 20), 5)  # after `now` (a clock skew): not counted
    result = allocate_month(store, fleet, month, now=now)
    assert result.usage_until == now
    (account,) = result.accounts
    assert account.billed == D("17.32") == account.allocated  # 15.50 fixed + 0.50 + 1.32
    assert account.hubs == {"h6": D("17.32")}
    assert [d.day.day for d in queries.daily_hub_costs(store, date(2026, 11, 1), date(2026, 11, 30))] == list(
        range(1, 16)
    )
    assert_every_level_adds_up(store, month)


def test_sessions_without_requests_fall_back_to_the_configured_resources(
    tmp_path: Path, store: Store
) -> None:
    big = {"slug": "big", "display_name": "Big", "resources": {"cpu_limit": 4, "memory_limit": "8G"}}
    fleet = write_fleet(
        tmp_path / "fleet",
        p_sheet={"cpu_hour": "0.10", "memory_gib_hour": "0.01"},
        hub_settings={"h6": {"resources": {"cpu_limit": 2, "memory_limit": "4G"}, "environments": [big]}},
    )
    start = at(MONTH, 3)
    put_session(store, "h6", "env", start, 1, cpu=None, memory_gib=None, environment="big")  # 0.40 + 0.08
    put_session(store, "h6", "hub", start, 1, cpu=None, memory_gib=None)  # the hub's: 0.20 + 0.04
    put_session(store, "h5", "none", start, 1, cpu=None, memory_gib=None)  # nothing set: 1 core, 1 GiB
    put_session(store, "h5", "used", start, 1, cpu_seconds=3 * 3600, memory_peak_gib=2)  # 0.30 + 0.02
    result = allocate_month(store, fleet, MONTH)
    assert (result.sessions, result.fallback_sessions) == (4, 3)
    eur = {hub: usd(queries.user_month_costs(store, MONTH, hub)) for hub in ("h5", "h6")}
    assert eur == {
        "h5": {"none": D("0.11"), "used": D("0.32")},
        "h6": {"env": D("0.48"), "hub": D("0.24")},
    }
    assert_every_level_adds_up(store)


def test_a_reallocation_replaces_the_month_and_a_reimport_shows_until_then(
    tmp_path: Path, store: Store
) -> None:
    fleet = write_fleet(tmp_path / "fleet")
    put_session(store, "h1", "ann", at(MONTH, 3), 2)
    put_import(store, "acct-1", MONTH, [(3, "a", None, "Usage", "Compute Engine", 10_000_000)])
    allocate_month(store, fleet, MONTH)
    with store.session() as session:
        before = session.execute(select(func.count()).select_from(CostAllocationMember)).scalar()
    assert queries.month_state(store, MONTH).stale is False
    put_import(store, "acct-1", MONTH, [(3, "a", None, "Usage", "Compute Engine", 12_345_678)])
    (check,) = queries.month_check(store, MONTH)
    assert not check.ok and "re-imported" in check.problems[0]
    assert queries.month_state(store, MONTH).stale is True
    allocate_month(store, fleet, MONTH)
    with store.session() as session:
        after = session.execute(select(func.count()).select_from(CostAllocationMember)).scalar()
    assert before == after == 2  # one user and one group row: replaced, not added
    assert usd(queries.hub_month_costs(store, MONTH)) == {"h1": D("12.35")}
    assert_every_level_adds_up(store)
    put_import(store, "acct-2", MONTH, [(3, None, None, "Tax", "", 1_000_000)])
    missing = [c for c in queries.month_check(store, MONTH) if c.account == "acct-2"]
    assert missing[0].ok is False and "not allocated" in missing[0].problems[0]


def test_other_months_are_left_alone(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "fleet")
    put_import(store, "acct-1", MONTH, [(3, None, None, "Usage", "Support", 1_000_000)])
    put_import(store, "acct-1", "2026-09", [(3, None, None, "Usage", "Support", 2_000_000)])
    allocate_month(store, fleet, "2026-09")
    allocate_month(store, fleet, MONTH)
    allocate_month(store, fleet, MONTH)
    assert [c.billed for c in queries.month_check(store, "2026-09")] == [D("2.00")]
    assert [c.billed for c in queries.month_check(store, MONTH)] == [D("1.00")]


def test_a_bad_month_is_refused() -> None:
    for bad in ("2026-13", "2026-1", "october", ""):
        with pytest.raises(UserError, match="not a month; write YYYY-MM"):
            month_bounds(bad)


@given(
    parts=st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(-(10**9), 10**9), min_size=1),
    shift=st.integers(-3, 3),
)
def test_round_cents_adds_up_to_any_target(parts: dict[str, int], shift: int) -> None:
    target = round(sum(parts.values()) / 10_000) + shift
    cents = round_cents(parts, target)
    assert sum(cents.values()) == target
    if shift == 0:  # never more than a cent from the exact amount
        assert all(abs(cents[k] * 10_000 - v) < 20_000 for k, v in parts.items())


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, object]]:
    root = tmp_path_factory.mktemp("random")
    fleet = write_fleet(root / "fleet", a_costs={"capacity": {"cpu": 3, "memory_gib": 5}})
    with open_store(root / "state") as opened:
        yield opened, fleet


HUB_USERS = st.sampled_from([("h1", "ann"), ("h1", "bob"), ("h2", "cy"), ("h3", "dan"), ("h5", "eve")])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amounts=st.lists(
        st.tuples(
            st.integers(1, 28),
            st.sampled_from([("a", "h1"), ("a", "h2"), ("a", None), ("b", None), (None, None), ("zz", None)]),
            st.sampled_from(["Compute Engine", "Support"]),
            st.integers(-50_000_000, 900_000_000),
        ),
        min_size=1,
        max_size=12,
    ),
    sessions=st.lists(
        st.tuples(HUB_USERS, st.integers(1, 28), st.floats(0.1, 30), st.floats(0.1, 8), st.floats(0.2, 16)),
        max_size=10,
    ),
    groups=st.lists(st.tuples(HUB_USERS, st.sampled_from(["g1", "g2", "g3"])), max_size=5),
)
def test_random_amounts_and_use_always_add_up(
    shared_fleet: tuple[Store, object], amounts: list, sessions: list, groups: list
) -> None:
    store, fleet = shared_fleet
    clear_usage(store)
    for (hub, user), day, hours, cpu, memory in sessions:
        put_session(store, hub, user, at(MONTH, day, 3), hours, cpu=cpu, memory_gib=memory)
    memberships: dict[tuple[str, str], set[str]] = {}
    for who, group in groups:
        memberships.setdefault(who, set()).add(group)
    for (hub, user), names in memberships.items():
        put_groups(store, hub, {user: sorted(names)})
    put_import(
        store,
        "acct-r",
        MONTH,
        [(day, cluster, hub, "Usage", service, micros) for day, (cluster, hub), service, micros in amounts],
    )
    allocation = allocate_month(store, fleet, MONTH)  # type: ignore[arg-type]
    assert all(account.ok for account in allocation.accounts)
    assert_every_level_adds_up(store)


def test_a_retired_hub_keeps_its_cost_and_community_and_unknown_clusters_stay_unallocated(
    tmp_path: Path, store: Store
) -> None:
    fleet = write_fleet(tmp_path / "fleet")
    with store.session() as session, session.begin():
        when = at(MONTH, 20)
        session.add(Retirement(hub="old", community="c", retired_at=when, purge_after=when, archive_dir="x"))
    put_session(store, "old", "ann", at(MONTH, 3), 5)  # not a fleet hub any more: no share of cluster a
    put_session(store, "h1", "bob", at(MONTH, 3), 5)
    put_import(
        store,
        "acct-1",
        MONTH,
        [
            (3, "a", "old", "Usage", "Compute Engine", 4_000_000),  # tagged with the retired hub
            (3, "gone", None, "Usage", "Compute Engine", 2_000_000),  # a cluster the fleet no longer has
            (3, "a", None, "Usage", "Compute Engine", 1_000_000),
        ],
    )
    allocate_month(store, fleet, MONTH)
    assert usd(queries.hub_month_costs(store, MONTH)) == {"h1": D("1.00"), "old": D("4.00")}
    assert queries.community_month_costs(store, fleet, MONTH) == {"c": {"USD": D("5.00")}}
    assert {(r.cluster, r.hub, r.line, r.amount) for r in queries.hub_lines(store, MONTH) if not r.hub} == {
        ("gone", "", "unallocated", D("2.00"))
    }
    assert usd(queries.user_month_costs(store, MONTH, "old")) == {"": D("4.00")}
    assert_every_level_adds_up(store)


def test_allocations_at_the_same_time_leave_one_whole_allocation(tmp_path: Path, store: Store) -> None:
    fleet = write_fleet(tmp_path / "fleet")
    put_session(store, "h1", "ann", at(MONTH, 3), 5)
    put_import(store, "acct-1", MONTH, [(3, "a", None, "Usage", "Compute Engine", 3_000_000)])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: allocate_month(store, fleet, MONTH), range(4)))
    assert all(r.accounts[0].ok for r in results)
    with store.session() as session:
        assert session.execute(select(func.count()).select_from(CostAllocationLine)).scalar() == 1
    assert_every_level_adds_up(store)
