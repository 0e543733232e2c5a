"""`hubfleet costs import`: FOCUS exports of every cloud and format in, exact totals, rows mapped to hubs and
clusters, bad rows with file and line, one transaction (issue 18, "Costs in"). Real DuckDB, a real store."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from fleet_helpers import hubfleet
from hubfleet.cli.main import app
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.costs.focus import FocusError
from hubfleet.costs.focus_import import ImportReport, import_exports, keep_sum
from hubfleet.costs.focus_sample import ExpectedTotals, write_export
from hubfleet.costs.money import to_micros
from hubfleet.store import Store, open_store
from hubfleet.store.costs import CostImport, CostLine

MONTH = "2026-11"
HUBS = {"bio": "eks", "bio-staging": "eks", "chem": "eks", "phys": "gke"}
FLAVOURS = ("aws", "azure", "gcp")
FORMATS = ("csv", "csv.gz", "parquet")

FLEET_FILES = {
    "fleet.yaml": """
name: costs-test
operators:
  - name: Ada Operator
    email: ada@hubfleet.example
costs:
  currency: USD
  exchange_rates:
    - {source: EUR, target: USD, rate: "1.08", month: "2026-11"}
  plans:
    standard: {currency: USD}
    euro: {currency: EUR}
""",
    "clusters/eks.yaml": """
name: eks
kind: kubernetes
staging_hub: bio-staging
credentials: {provider: aws, account: "123456789012", region: us-west-2, cluster: fleet-two}
costs:
  billing_accounts: [acct-eks-only]
""",
    "clusters/gke.yaml": """
name: gke
kind: kubernetes
credentials: {provider: gcp, project: hubfleet-demo, zone: europe-west1-b, cluster: fleet-one}
costs:
  tag_value: fleet-one
  sub_accounts: [proj-x]
""",
    "communities/bio/community.yaml": "name: bio\nbilling: {plan: standard}\n",
    "communities/chem/community.yaml": "name: chem\nbilling: {plan: euro}\n",
}
HUB_FILES = {  # name: (community, cluster, stage)
    "bio": ("bio", "eks", "prod"),
    "bio-staging": ("bio", "eks", "staging"),
    "chem": ("chem", "eks", "prod"),
    "phys": ("chem", "gke", "staging"),
}


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("costs-fleet")
    for name, text in FLEET_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text.lstrip())
    for hub, (community, cluster, stage) in HUB_FILES.items():
        path = root / "communities" / community / "hubs" / f"{hub}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"name: {hub}\ncommunity: {community}\ncluster: {cluster}\nstage: {stage}\n"
            f"domain: {hub}.hubs.example.org\nauth: {{type: native, admin_users: [rosalind]}}\n"
        )
    return root


@pytest.fixture(scope="module")
def fleet(fleet_dir: Path) -> FleetConfig:
    return load_fleet(fleet_dir)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Store:
    with open_store(state) as opened:
        yield opened


def export(tmp_path: Path, name: str, **options: object) -> tuple[Path, ExpectedTotals]:
    settings: dict[str, object] = {
        "flavour": "aws",
        "month": MONTH,
        "account": "acct-1",
        "hubs": HUBS,
        "rows": 400,
        "fmt": "csv",
        "claimed_sub_account": ("proj-x", "gke"),
    } | options
    path = tmp_path / f"{name}.{settings['fmt']}"
    return path, write_export(path, **settings)  # type: ignore[arg-type]


def stored(store: Store) -> list[tuple[str, str, int, int]]:
    """(account, month, billed micros of the import, the sum of its lines' micros) of every import."""
    with store.session() as session:
        imports = session.execute(select(CostImport).order_by(CostImport.account, CostImport.month)).scalars()
        found = []
        for row in imports:
            lines = session.scalar(
                select(func.sum(CostLine.billed_micros)).where(CostLine.import_id == row.id)
            )
            found.append((row.account, row.month, row.billed_micros, int(lines or 0)))
        return found


def assert_matches(report: ImportReport, expected: ExpectedTotals) -> None:
    (item,) = [a for a in report.accounts if a.account == expected.account]
    assert item.month == expected.month and item.currency == expected.currency
    assert item.rows == expected.rows
    assert item.billed_micros == to_micros(expected.billed)  # exact: decimals summed, rounded once
    lines = len(report.lines[(item.account, item.month)].rows)
    near = Decimal(lines) / 1_000_000  # each line is within a micro of its exact amount
    assert set(item.hubs) == set(expected.hubs)
    for hub, amount in expected.hubs.items():
        assert abs(item.hubs[hub] - amount) <= near, hub
    assert set(item.clusters) == set(expected.clusters)
    for cluster, amount in expected.clusters.items():
        assert abs(item.clusters[cluster] - amount) <= near, cluster
    assert abs(item.unallocated.amount - expected.unallocated) <= near
    assert item.unallocated.rows == expected.unallocated_rows
    assert set(item.unallocated.unknown_hubs) == set(expected.unknown_hubs)
    parts = sum(item.hubs.values()) + sum(item.clusters.values()) + item.unallocated.amount
    assert to_micros(parts) == item.billed_micros  # nothing lost, nothing counted twice


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_cloud_and_format_imports_exact_totals(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path, flavour: str, fmt: str
) -> None:
    path, expected = export(tmp_path, "export", flavour=flavour, fmt=fmt, seed=7)
    report = import_exports(store, fleet, [path], state_dir=state, actor="test")
    assert_matches(report, expected)
    assert expected.unallocated_rows and expected.negative_rows and len(expected.clusters) == 2
    assert stored(store) == [("acct-1", MONTH, to_micros(expected.billed), to_micros(expected.billed))]
    with store.session() as session:
        row = session.execute(select(CostImport)).scalar_one()
        categories = set(session.scalars(select(CostLine.category).distinct()))
        negative = session.scalar(
            select(func.sum(CostLine.billed_micros)).where(CostLine.category.in_(["Credit", "Adjustment"]))
        )
    assert row.files[0]["name"] == path.name and row.files[0]["rows"] == expected.rows
    assert row.actor == "test" and row.effective_micros == row.billed_micros
    # GCP writes `usage`, `credit`: the store keeps FOCUS's own spelling for every cloud
    assert {"Usage", "Credit", "Adjustment"} <= categories
    assert abs(Decimal(negative) / 1_000_000 - expected.negative) < Decimal("0.001")
    raw = state / row.raw_path
    assert raw.is_file() and not list(raw.parent.glob(".*tmp*"))
    (kept,) = duckdb.sql(f"SELECT count(*), sum(billed) FROM '{raw}'").fetchall()
    assert kept == (expected.rows, expected.billed)


def test_a_corrected_export_replaces_the_month(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    first, _ = export(tmp_path, "first", seed=1)
    other, other_expected = export(tmp_path, "other", account="acct-2", seed=3, flavour="gcp")
    import_exports(store, fleet, [first, other], state_dir=state)
    corrected, expected = export(tmp_path, "corrected", seed=2, rows=300, fmt="parquet")
    report = import_exports(store, fleet, [corrected], state_dir=state)
    assert report.accounts[0].replaced
    assert_matches(report, expected)
    billed, other_billed = to_micros(expected.billed), to_micros(other_expected.billed)
    assert stored(store) == [
        ("acct-1", MONTH, billed, billed),
        ("acct-2", MONTH, other_billed, other_billed),
    ]
    raw = state / report.accounts[0].raw_path
    assert duckdb.sql(f"SELECT count(*) FROM '{raw}'").fetchall() == [(300,)]


def test_a_malformed_row_names_file_and_line_and_changes_nothing(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    good, expected = export(tmp_path, "good", seed=1)
    import_exports(store, fleet, [good], state_dir=state)
    before = stored(store)
    bad, _ = export(tmp_path, "bad", seed=2, malformed_row=5)
    with pytest.raises(FocusError) as caught:
        import_exports(store, fleet, [bad], state_dir=state)
    # data row 5 (from 0) is line 7: the header is line 1
    assert f"{bad}:7: BilledCost twelve is not a number" in str(caught.value)
    assert (
        stored(store) == before == [("acct-1", MONTH, to_micros(expected.billed), to_micros(expected.billed))]
    )
    bad_parquet, _ = export(tmp_path, "bad", seed=2, malformed_row=5, fmt="parquet")
    with pytest.raises(FocusError, match=r"bad\.parquet: row 6: ChargePeriodStart .* is outside its billing"):
        import_exports(store, fleet, [bad_parquet], state_dir=state)
    assert stored(store) == before


def write_focus_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    """A FOCUS CSV with the columns hubfleet reads and `rows` over the defaults of one good row."""
    base = {
        "BilledCost": "1.50",
        "EffectiveCost": "1.50",
        "ListCost": "2.00",
        "BillingCurrency": "USD",
        "BillingAccountId": "acct-h",
        "SubAccountId": "sub-1",
        "BillingPeriodStart": "2026-11-01T00:00:00Z",
        "BillingPeriodEnd": "2026-12-01T00:00:00Z",
        "ChargePeriodStart": "2026-11-03T00:00:00Z",
        "ChargePeriodEnd": "2026-11-04T00:00:00Z",
        "ChargeCategory": "Usage",
        "ChargeDescription": "",
        "ServiceName": "Compute",
        "ResourceId": "vm-1",
        "Tags": "",
    }
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(base))
        writer.writeheader()
        for row in rows:
            writer.writerow(base | row)
    return path


def test_a_line_number_counts_newlines_inside_quoted_cells(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    path = write_focus_csv(
        tmp_path / "hand.csv",
        [{}, {"ChargeDescription": "two\nlines"}, {"ChargePeriodStart": "yesterday"}],
    )
    with pytest.raises(FocusError) as caught:
        import_exports(store, fleet, [path], state_dir=state)
    assert f"{path}:5: ChargePeriodStart yesterday is not a date and time" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"BillingAccountId": ""}, "BillingAccountId is empty"),
        ({"ChargePeriodStart": "2026-12-05T00:00:00Z"}, "ChargePeriodStart 2026-12-05T00:00:00Z is outside"),
        ({"EffectiveCost": "1,50"}, "EffectiveCost 1,50 is not a number"),
        ({"BillingCurrency": "dollars"}, "BillingCurrency DOLLARS is not a currency code"),
        ({"Tags": '{"hubfleet-hub": '}, "Tags is not JSON"),
    ],
)
def test_bad_cells(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path, change: dict[str, str], message: str
) -> None:
    path = write_focus_csv(tmp_path / "cells.csv", [{}, {}, change])
    with pytest.raises(FocusError, match=f"cells.csv:4: {message}"):
        import_exports(store, fleet, [path], state_dir=state)
    assert stored(store) == []


def test_rows_map_to_hubs_clusters_claimed_accounts_or_nothing(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    rows = [
        {"Tags": '{"hubfleet-hub": "bio"}', "BilledCost": "1"},  # the default key
        {"Tags": '{"user:2i2c:hub-name": "chem"}', "BilledCost": "2"},  # AWS: user tags prefixed
        {"Tags": '{"resourceTags/2i2c:hub-name": "chem"}', "BilledCost": "0.25"},  # AWS: its tag sources
        {"Tags": '[{"key": "hubfleet-hub", "value": "phys"}]', "BilledCost": "4"},  # GCP: key/value list
        {"Tags": '"hubfleet-cluster": "eks"', "BilledCost": "8"},  # Azure's tags without braces
        {"Tags": '{"2i2c.org/cluster-name": "fleet-one"}', "BilledCost": "16"},  # gke's tag_value
        {"SubAccountId": "proj-x", "BilledCost": "32"},  # a sub-account gke claims
        {"Tags": '{"hubfleet-hub": "gone", "hubfleet-cluster": "eks"}', "BilledCost": "64"},  # unknown hub
        {"Tags": '{"team": "x"}', "BilledCost": "128", "ServiceName": "Support"},  # nothing
        {"Tags": '{"hubfleet-hub": "BIO"}', "BilledCost": "-0.5", "ChargeCategory": "credit"},
    ]
    path = write_focus_csv(tmp_path / "rules.csv", rows)
    claimed = write_focus_csv(tmp_path / "claimed.csv", [{"BillingAccountId": "acct-eks-only"}])
    report = import_exports(store, fleet, [path, claimed], state_dir=state)
    by_account = {a.account: a for a in report.accounts}
    item = by_account["acct-h"]
    assert item.hubs == {"bio": Decimal("0.5"), "chem": Decimal("2.25"), "phys": Decimal(4)}
    assert item.clusters == {"eks": Decimal(8), "gke": Decimal(48)}
    assert item.unallocated.rows == 2 and item.unallocated.amount == Decimal(192)
    assert item.unallocated.unknown_hubs == {"gone": Decimal(64)}
    assert item.unallocated.top_services[0] == ("Support", Decimal(128))
    assert by_account["acct-eks-only"].clusters == {"eks": Decimal("1.5")}
    with store.session() as session:
        credit = session.execute(select(CostLine).where(CostLine.billed_micros < 0)).scalar_one()
        nowhere = session.scalars(select(CostLine.billed_micros).where(CostLine.cluster.is_(None))).all()
    assert (credit.hub, credit.cluster, credit.category) == ("bio", "eks", "Credit")
    assert sorted(nowhere) == [64_000_000, 128_000_000]  # kept as lines, never dropped


def test_mixed_currencies_in_one_account_are_refused(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    path, _ = export(tmp_path, "mixed", other_currency_row=(3, "EUR"))
    with pytest.raises(FocusError) as caught:
        import_exports(store, fleet, [path], state_dir=state)
    message = str(caught.value)
    assert "billing account acct-1 bills in both USD and EUR" in message
    assert f"first EUR row: {path}:5" in message
    assert stored(store) == []


def test_a_missing_exchange_rate_is_named(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    # December: the fleet has a EUR rate for November only, and community chem's plan is in euros
    path, _ = export(tmp_path, "december", month="2026-12")
    with pytest.raises(FocusError) as caught:
        import_exports(store, fleet, [path], state_dir=state)
    assert "no exchange rate from USD to EUR for 2026-12" in str(caught.value)
    assert "{source: USD, target: EUR, rate: ..., month: '2026-12'}" in str(caught.value)
    pounds, _ = export(tmp_path, "pounds", currency="GBP")
    with pytest.raises(FocusError, match="bills 2026-11 in GBP: no exchange rate from GBP to EUR"):
        import_exports(store, fleet, [pounds], state_dir=state)
    assert stored(store) == []


def test_a_missing_column_names_file_column_and_versions(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    path, _ = export(tmp_path, "full")
    cut = tmp_path / "cut.csv"
    duckdb.sql(f"COPY (SELECT * EXCLUDE (EffectiveCost) FROM read_csv('{path}')) TO '{cut}' (HEADER)")
    with pytest.raises(FocusError) as caught:
        import_exports(store, fleet, [cut], state_dir=state)
    assert str(caught.value).startswith(f"{cut}: no column EffectiveCost; FOCUS 1.0 and 1.2 exports have it")


def test_the_import_is_one_transaction(tmp_path: Path, fleet: FleetConfig, store: Store, state: Path) -> None:
    good, _ = export(tmp_path, "good", account="acct-good", fmt="csv.gz")
    bad, _ = export(tmp_path, "bad", account="acct-bad", malformed_row=0)
    with pytest.raises(FocusError, match=r"bad\.csv:2: "):
        import_exports(store, fleet, [good, bad], state_dir=state)
    assert stored(store) == []
    assert not (state / "costs").exists() or not list((state / "costs").rglob("*.parquet*"))


def test_dry_run_checks_and_reports_but_changes_nothing(
    tmp_path: Path, fleet: FleetConfig, store: Store, state: Path
) -> None:
    path, expected = export(tmp_path, "dry", flavour="azure", claimed_sub_account=None, unknown_hub=None)
    report = import_exports(None, fleet, [path], state_dir=None, dry_run=True)
    assert report.dry_run
    assert_matches(report, expected)
    assert not expected.unknown_hubs and expected.unallocated_rows
    assert stored(store) == [] and not (state / "costs").exists()


def test_keep_sum_rounds_each_part_and_keeps_the_total() -> None:
    values = [Decimal("0.0000004")] * 5 + [Decimal("-0.0000016"), Decimal("1.2345675")]
    micros = keep_sum(values)
    assert sum(micros) == to_micros(sum(values))
    assert all(abs(Decimal(m) - v * 1_000_000) < 1 for m, v in zip(micros, values, strict=True))


def test_the_cli_imports_allocates_and_checks(tmp_path: Path, fleet_dir: Path) -> None:
    state = tmp_path / "cli-state"
    path, expected = export(tmp_path, "cli", flavour="gcp", fmt="csv.gz")
    result = hubfleet("costs", "import", str(path), "--state-dir", str(state), "--json", fleet=fleet_dir)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (item,) = data["accounts"]
    assert item["billed_micros"] == to_micros(expected.billed)
    assert item["unallocated"]["unknown_hubs"].keys() == {"retired-hub"}
    (check,) = data["checks"][MONTH]
    assert check["ok"] and Decimal(check["billed"]) == Decimal(item["billed"])
    bad, _ = export(tmp_path, "cli-bad", malformed_row=2)
    failed = hubfleet("costs", "import", str(path), str(bad), "--state-dir", str(state), fleet=fleet_dir)
    assert failed.returncode == 1
    assert f"{bad}:4: BilledCost twelve is not a number" in failed.stderr.replace("\n", "")
    # the text report (in this process: one subprocess per case is enough)
    shown = CliRunner().invoke(
        app, ["costs", "import", str(path), "--fleet", str(fleet_dir), "--state-dir", str(state)]
    )
    assert shown.exit_code == 0, shown.output
    assert "(replaces the earlier import)" in shown.output
    assert "tagged with hub 'retired-hub', which the fleet does not have" in shown.output
    assert f"{MONTH} acct-1: billed {Decimal(item['billed']):,.2f} USD" in shown.output
    assert shown.output.rstrip().endswith(": ok")
    corrected, _ = export(tmp_path, "cli-corrected", flavour="gcp", seed=9)
    where = ["--fleet", str(fleet_dir), "--state-dir", str(state)]
    dry = CliRunner().invoke(app, ["costs", "import", str(corrected), "--dry-run", *where])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would import acct-1 2026-11")
    with open_store(state) as store:
        assert stored(store) == [("acct-1", MONTH, item["billed_micros"], item["billed_micros"])]


def test_the_demo_fleets_export_adds_up_to_the_bill(tmp_path: Path) -> None:
    """The demo: its local cluster claims billing account 111122223333; an export of it, imported and then
    allocated, adds up to the bill to the cent for every account of the month."""
    from hubfleet.costs.allocation import allocate_month
    from hubfleet.costs.queries import month_check

    demo = load_fleet(Path(__file__).parents[1] / "examples" / "demo-fleet")
    hubs = {name: hub.cluster for name, hub in demo.hubs.items()}
    path = tmp_path / "demo.parquet"
    expected = write_export(
        path, flavour="aws", month=MONTH, account="111122223333", hubs=hubs, rows=2000, fmt="parquet"
    )
    state = tmp_path / "demo-state"
    with open_store(state) as store:
        report = import_exports(store, demo, [path], state_dir=state)
        (item,) = report.accounts
        assert item.billed_micros == to_micros(expected.billed)
        # the claimed account's untagged rows are the local cluster's shared cost; only the rows tagged with
        # a hub the fleet does not have stay unallocated
        unknown = sum(expected.unknown_hubs.values())
        shared = expected.clusters["local"] + expected.unallocated - unknown
        near = Decimal(len(report.lines[(item.account, MONTH)].rows)) / 1_000_000
        assert set(item.clusters) == {"local"} and abs(item.clusters["local"] - shared) <= near
        assert abs(item.unallocated.amount - unknown) <= near
        assert all(abs(item.hubs[h] - amount) <= near for h, amount in expected.hubs.items())
        allocate_month(store, demo, MONTH, state_dir=state)
        checks = {check.account: check for check in month_check(store, MONTH)}
    imported = checks["111122223333"]
    assert imported.ok and imported.billed == item.billed.quantize(Decimal("0.01"))
    assert all(check.ok for check in checks.values())
