"""Realistic FOCUS exports with known totals, written by DuckDB (a million rows in seconds): for tests, the
import benchmark and the demo.

Each flavour writes what its cloud writes (docs/costs.md): AWS amounts as doubles, `Tags` as a map
(JSON text in CSV) with `user:`-prefixed user tags and the modelled service's keys (`2i2c:hub-name`,
`2i2c.org/cluster-name`); Azure `Tags` as JSON object text with the default keys (`hubfleet-hub`,
`hubfleet-cluster`); GCP `Tags` as an array of key/value structs (labels), timestamps as BigQuery writes them
("2026-11-01 07:00:00 UTC"), billing periods in US Pacific time and lower-case charge categories.

Rows are, by a hash of their number: a hub's tagged cost (55 %), a cluster's tagged shared cost (15 %), an
untagged row of a claimed sub-account (8 %, unallocated when none is claimed), untagged rows (12 %), rows
tagged with a hub the fleet does not know (2 %), credits (negative, hub-tagged, 4 %) and refunds (negative,
cluster-tagged, 4 %).
"""

from __future__ import annotations

import calendar
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import duckdb

from hubfleet.costs.focus import literal
from hubfleet.costs.focus_import import MEMORY_LIMIT

Flavour = Literal["aws", "azure", "gcp"]
Format = Literal["csv", "csv.gz", "parquet"]

SERVICES = {
    "aws": [
        "Amazon Elastic Compute Cloud",
        "Amazon Elastic Block Store",
        "Amazon Simple Storage Service",
        "Amazon Elastic Kubernetes Service",
        "Elastic Load Balancing",
    ],
    "azure": ["Virtual Machines", "Storage", "Azure Kubernetes Service", "Load Balancer", "Bandwidth"],
    "gcp": ["Compute Engine", "Cloud Storage", "Kubernetes Engine", "Networking", "Cloud Logging"],
}
KEYS = {  # (hub key, cluster key, a key of the cloud's own)
    "aws": ("user:2i2c:hub-name", "user:2i2c.org/cluster-name", "aws:eks:cluster-name"),
    "azure": ("hubfleet-hub", "hubfleet-cluster", "aks-managed-cluster-name"),
    "gcp": ("hubfleet-hub", "hubfleet-cluster", "goog-k8s-cluster-name"),
}


@dataclass
class ExpectedTotals:
    """What an import of the file must find, exactly."""

    account: str
    month: str
    currency: str
    rows: int = 0
    billed: Decimal = Decimal(0)
    hubs: dict[str, Decimal] = field(default_factory=dict)
    """Rows tagged with a hub of the fleet, per hub (credits included)."""
    clusters: dict[str, Decimal] = field(default_factory=dict)
    """Cluster-tagged rows and the claimed sub-account's rows, per cluster (refunds included)."""
    unallocated: Decimal = Decimal(0)
    unallocated_rows: int = 0
    unknown_hubs: dict[str, Decimal] = field(default_factory=dict)
    negative: Decimal = Decimal(0)
    """Credits and refunds together (a negative amount)."""
    negative_rows: int = 0


def _periods(flavour: Flavour, month: str) -> tuple[datetime, datetime]:
    year, mon = (int(x) for x in month.split("-"))
    zone = ZoneInfo("America/Los_Angeles") if flavour == "gcp" else ZoneInfo("UTC")
    start = datetime(year, mon, 1, tzinfo=zone)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=zone)
    utc = ZoneInfo("UTC")
    return start.astimezone(utc), end.astimezone(utc)


def _list(values: list[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]"


def write_export(
    path: Path,
    *,
    flavour: Flavour,
    month: str,
    account: str,
    hubs: dict[str, str],
    rows: int = 1000,
    seed: int = 0,
    fmt: Format = "csv",
    currency: str = "USD",
    sub_accounts: tuple[str, ...] = ("sub-main", "sub-data"),
    claimed_sub_account: tuple[str, str] | None = None,
    unknown_hub: str | None = "retired-hub",
    focus_version: Literal["1.0", "1.2"] = "1.2",
    malformed_row: int | None = None,
    other_currency_row: tuple[int, str] | None = None,
    through: date | None = None,
) -> ExpectedTotals:
    """Write a FOCUS export of `rows` rows for one billing account and month; return its exact totals.

    `hubs` maps hub -> cluster (the fleet's); `claimed_sub_account` = (sub-account, cluster) adds rows of a
    sub-account a cluster claims. `malformed_row` (0-based data row) gets an amount that is not a number (CSV)
    or a charge period two months later (Parquet); `other_currency_row` = (row, currency) bills one row in
    another currency. Both make the file one that the import must refuse. `through` (a day of the month) ends
    the charges there, as an export of a month still running does."""
    if not hubs:
        raise ValueError("give at least one hub")
    hub_names = sorted(hubs)
    clusters = sorted(set(hubs.values()))
    subs = list(sub_accounts)
    start, end = _periods(flavour, month)
    year, mon = (int(x) for x in month.split("-"))
    days = calendar.monthrange(year, mon)[1]
    first = datetime(year, mon, 1, tzinfo=ZoneInfo("UTC"))
    if through is not None:
        days = max(1, min(days, (through - first.date()).days + 1))
    claimed_sub, claimed_cluster = claimed_sub_account or ("", "")
    spill = tempfile.TemporaryDirectory(prefix="hubfleet-focus-sample-")
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = {literal(MEMORY_LIMIT)}")
        con.execute(f"SET temp_directory = {literal(spill.name)}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            f"""
            CREATE TABLE base AS
            SELECT i, CAST(hash(i, {seed}) >> 1 AS BIGINT) AS h1,
              CAST(hash(i, {seed + 1}) >> 1 AS BIGINT) AS h2, CAST(hash(i, {seed + 2}) >> 1 AS BIGINT) AS h3
            FROM range({rows}) AS t(i)
            """
        )
        kinds = (
            "CASE WHEN h1 % 100 < 55 THEN 'hub' WHEN h1 % 100 < 70 THEN 'cluster' "
            f"WHEN h1 % 100 < 78 THEN '{'claimed' if claimed_sub else 'untagged'}' "
            f"WHEN h1 % 100 < 90 THEN 'untagged' "
            f"WHEN h1 % 100 < 92 THEN '{'unknown' if unknown_hub else 'untagged'}' "
            "WHEN h1 % 100 < 96 THEN 'credit' ELSE 'refund' END"
        )
        con.execute(
            f"""
            CREATE TABLE g AS
            SELECT i, kind,
              CASE WHEN kind = 'hub' THEN {_list(hub_names)}[i % {len(hub_names)} + 1]
                   WHEN kind = 'credit' THEN {_list(hub_names)}[h2 % {len(hub_names)} + 1]
                   WHEN kind = 'unknown' THEN {literal(unknown_hub or "")} END AS hub,
              CASE WHEN kind IN ('cluster', 'refund') THEN {_list(clusters)}[h2 % {len(clusters)} + 1]
                   WHEN kind = 'claimed' THEN {literal(claimed_cluster)} END AS tag_cluster,
              CASE WHEN kind = 'claimed' THEN {literal(claimed_sub)}
                   ELSE {_list(subs)}[h3 % {len(subs)} + 1] END AS sub_account,
              CAST(h3 % 5000000000 AS DECIMAL(38, 0)) * CAST('0.000000001' AS DECIMAL(38, 9))
                * (CASE WHEN kind IN ('credit', 'refund') THEN -1 ELSE 1 END) AS billed,
              CASE kind WHEN 'credit' THEN 'Credit' WHEN 'refund' THEN 'Adjustment'
                   ELSE (CASE WHEN h2 % 50 = 0 THEN 'Tax' ELSE 'Usage' END) END AS category,
              {_list(SERVICES[flavour])}[h3 % {len(SERVICES[flavour])} + 1] AS service,
              TIMESTAMPTZ {literal(first.isoformat())} + to_days(CAST(i % {days} AS INTEGER))
                + to_hours(CAST(h2 % 24 AS INTEGER)) AS charge_start,
              {literal(other_currency_row[1]) if other_currency_row else "NULL"} AS other_currency
            FROM (SELECT *, {kinds} AS kind FROM base)
            """
        )
        hub_cluster = " ".join(f"WHEN {literal(h)} THEN {literal(c)}" for h, c in sorted(hubs.items()))
        con.execute("ALTER TABLE g ADD COLUMN hub_cluster VARCHAR")
        con.execute(f"UPDATE g SET hub_cluster = CASE hub {hub_cluster} END")
        if other_currency_row is not None:
            con.execute(f"UPDATE g SET other_currency = NULL WHERE i <> {other_currency_row[0]}")
        expected = _expected(con, account, month, currency, hubs, unknown_hub)
        _copy(con, path, flavour, fmt, focus_version, account, currency, start, end, malformed_row)
        return expected
    finally:
        con.close()
        spill.cleanup()


def _expected(
    con: duckdb.DuckDBPyConnection,
    account: str,
    month: str,
    currency: str,
    hubs: dict[str, str],
    unknown_hub: str | None,
) -> ExpectedTotals:
    found = ExpectedTotals(account=account, month=month, currency=currency)
    for kind, hub, cluster, rows, amount in con.execute(
        "SELECT kind, hub, tag_cluster, count(*), sum(billed) FROM g GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        found.rows += rows
        found.billed += amount
        if kind in ("credit", "refund"):
            found.negative += amount
            found.negative_rows += rows
        if kind in ("hub", "credit"):
            found.hubs[hub] = found.hubs.get(hub, Decimal(0)) + amount
        elif kind in ("cluster", "refund", "claimed"):
            found.clusters[cluster] = found.clusters.get(cluster, Decimal(0)) + amount
        else:
            found.unallocated += amount
            found.unallocated_rows += rows
            if kind == "unknown" and unknown_hub:
                found.unknown_hubs[unknown_hub] = found.unknown_hubs.get(unknown_hub, Decimal(0)) + amount
    return found


def _tags_json(flavour: Flavour) -> str:
    """SQL for a row's tags as JSON text, the way the flavour's cloud writes them."""
    hub_key, cluster_key, own_key = KEYS[flavour]
    hub_cluster = "coalesce(hub_cluster, tag_cluster)"
    if flavour == "gcp":

        def label(key: str, value: str, kind: str) -> str:
            return (
                f"json_object('key', {literal(key)}, 'value', {value}, 'x_type', {literal(kind)}, "
                "'x_inherited', false, 'x_namespace', 'n/a')"
            )

        items = (
            f"list_filter([CASE WHEN hub IS NOT NULL THEN {label(hub_key, 'hub', 'label')} END, "
            f"CASE WHEN tag_cluster IS NOT NULL AND kind <> 'claimed' THEN "
            f"{label(cluster_key, 'tag_cluster', 'label')} END, "
            f"CASE WHEN {hub_cluster} IS NOT NULL THEN {label(own_key, hub_cluster, 'system_label')} END], "
            "lambda x: x IS NOT NULL)"
        )
        return f"CAST(to_json(list_transform({items}, lambda x: CAST(x AS JSON))) AS VARCHAR)"
    pairs = (  # json_merge_patch: a NULL patch would empty the object, so each is at least {}
        f"CASE WHEN hub IS NOT NULL THEN json_object({literal(hub_key)}, hub) ELSE json_object() END, "
        f"CASE WHEN tag_cluster IS NOT NULL AND kind <> 'claimed' THEN "
        f"json_object({literal(cluster_key)}, tag_cluster) ELSE json_object() END, "
        f"CASE WHEN kind = 'untagged' THEN json_object('owner', 'research-it') ELSE json_object() END, "
        f"json_object({literal(own_key)}, 'shared-infra')"
    )
    return f"CAST(json_merge_patch({pairs}) AS VARCHAR)"


def _copy(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    flavour: Flavour,
    fmt: Format,
    focus_version: str,
    account: str,
    currency: str,
    start: datetime,
    end: datetime,
    malformed_row: int | None,
) -> None:
    parquet = fmt == "parquet"

    def time(expr: str) -> str:
        if parquet:
            return expr if flavour == "gcp" else f"CAST({expr} AS TIMESTAMP)"  # AWS: timestamp_milliseconds
        pattern = {
            "aws": "%Y-%m-%dT%H:%M:%S.000Z",
            "azure": "%Y-%m-%dT%H:%M:%SZ",
            "gcp": "%Y-%m-%d %H:%M:%S UTC",
        }[flavour]
        return f"strftime({expr}, {literal(pattern)})"

    def amount(expr: str) -> str:
        # GCP: BigQuery NUMERIC (9 decimal places); AWS and Azure: double
        value = f"CAST({expr} AS {'DECIMAL(38, 9)' if flavour == 'gcp' else 'DOUBLE'})"
        return value if parquet else f"CAST({value} AS VARCHAR)"

    charge_start = "charge_start"
    if malformed_row is not None and parquet:
        charge_start = (
            f"CASE WHEN i = {malformed_row} THEN charge_start + INTERVAL 62 DAY ELSE charge_start END"
        )
    billed = amount("billed")
    if malformed_row is not None and not parquet:
        billed = f"CASE WHEN i = {malformed_row} THEN 'twelve' ELSE {billed} END"
    tags = _tags_json(flavour)
    if parquet and flavour == "aws":
        tags = f"CAST(CAST({tags} AS JSON) AS MAP(VARCHAR, VARCHAR))"
    elif parquet and flavour == "gcp":
        tags = (
            f'from_json({tags}, \'[{{"key":"VARCHAR","value":"VARCHAR","x_type":"VARCHAR",'
            '"x_inherited":"BOOLEAN","x_namespace":"VARCHAR"}]\')'
        )
    category = "lower(category)" if flavour == "gcp" else "category"
    resource = {
        "aws": f"'arn:aws:ec2:us-west-2:' || {literal(account)} || ':instance/i-' || lpad(CAST(i % 997 AS "
        "VARCHAR), 17, '0')",
        "azure": "'/subscriptions/' || sub_account || '/resourceGroups/hubs/providers/Microsoft.Compute/"
        "virtualMachines/vm-' || CAST(i % 997 AS VARCHAR)",
        "gcp": "'//compute.googleapis.com/projects/' || sub_account || '/zones/us-central1-a/instances/"
        "gke-node-' || CAST(i % 997 AS VARCHAR)",
    }[flavour]
    extras = {
        "aws": "'BoxUsage:m5.xlarge' AS x_UsageType, 'AmazonEC2' AS x_ServiceCode",
        "azure": "'hubs' AS x_ResourceGroupName, 'Virtual Machines' AS x_SkuMeterCategory",
        "gcp": f"'6F81-5844-456A' AS x_ServiceId, {time('charge_start + INTERVAL 6 HOUR')} AS x_ExportTime",
    }[flavour]
    v12 = (
        "'Standard' AS BillingAccountType, 'INV-' || strftime(charge_start, '%Y%m') AS InvoiceId, "
        if focus_version == "1.2"
        else ""
    )
    provider = {"aws": "AWS", "azure": "Microsoft", "gcp": "Google Cloud"}[flavour]
    select = f"""
        SELECT
          {billed} AS BilledCost,
          {literal(account)} AS BillingAccountId,
          {literal(account + " (billing)")} AS BillingAccountName,
          {v12}
          coalesce(other_currency, {literal(currency)}) AS BillingCurrency,
          {time(f"TIMESTAMPTZ {literal(end.isoformat())}")} AS BillingPeriodEnd,
          {time(f"TIMESTAMPTZ {literal(start.isoformat())}")} AS BillingPeriodStart,
          {category} AS ChargeCategory,
          CAST(NULL AS VARCHAR) AS ChargeClass,
          service || ' usage' AS ChargeDescription,
          'Usage-Based' AS ChargeFrequency,
          {time(f"{charge_start} + INTERVAL 1 HOUR")} AS ChargePeriodEnd,
          {time(charge_start)} AS ChargePeriodStart,
          {amount("billed")} AS EffectiveCost,
          {amount("billed * CAST('1.25' AS DECIMAL(4, 2))")} AS ListCost,
          {literal(provider)} AS ProviderName,
          {literal(provider)} AS PublisherName,
          'us-west-2' AS RegionId,
          {resource} AS ResourceId,
          service AS ServiceCategory,
          service AS ServiceName,
          sub_account AS SubAccountId,
          {tags} AS Tags,
          {extras}
        FROM g ORDER BY i"""
    options = {
        "csv": "FORMAT csv, HEADER true",
        "csv.gz": "FORMAT csv, HEADER true, COMPRESSION gzip",
        "parquet": "FORMAT parquet, COMPRESSION zstd",
    }[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({select}) TO {literal(str(path))} ({options})")


def main(argv: list[str] | None = None) -> None:
    """`python -m hubfleet.costs.focus_sample --fleet DIR --out FILE`: a month's export for a fleet's hubs
    (the demo: `hubfleet costs import FILE` then shows every hub's cost)."""
    import argparse

    from hubfleet.config.validate import load_fleet

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--fleet", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="…csv, …csv.gz or …parquet")
    parser.add_argument("--month", required=True, help="YYYY-MM")
    parser.add_argument("--account", default="111122223333", help="BillingAccountId (default: the demo's)")
    parser.add_argument("--flavour", choices=["aws", "azure", "gcp"], default="aws")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--currency", default="USD")
    args = parser.parse_args(argv)
    fleet = load_fleet(args.fleet)
    name = args.out.name.lower()
    fmt: Format = "parquet" if name.endswith(".parquet") else "csv.gz" if name.endswith(".gz") else "csv"
    expected = write_export(
        args.out,
        flavour=args.flavour,
        month=args.month,
        account=args.account,
        hubs={hub: config.cluster for hub, config in fleet.hubs.items()},
        rows=args.rows,
        seed=args.seed,
        fmt=fmt,
        currency=args.currency,
    )
    print(f"{args.out}: {expected.rows} rows, billed {expected.billed:.2f} {expected.currency}")


if __name__ == "__main__":
    main()
