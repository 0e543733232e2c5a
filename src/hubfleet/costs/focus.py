"""The FinOps FOCUS columns hubfleet reads, how AWS, Azure and GCP write them, and the SQL (DuckDB) that turns
one export file into uniform rows: typed amounts and times, the hub and cluster its tags name, and the first
problem of each row (so a bad row is reported with its file and line instead of being half-imported).

Every cloud writes the same FOCUS column names, but not the same types. AWS Data Exports (FOCUS 1.0/1.2) write
amounts as doubles, timestamps in milliseconds and `Tags` as a map (JSON object text in CSV), with user tags
keyed `user:<key>` as in CUR 2.0; Azure's Cost Management FOCUS export writes CSV with `Tags` as JSON object
text (older cost exports left out the braces); GCP's FOCUS BigQuery view gives `Tags` as an array of
{key, value, x_type, ...} structs (a list in Parquet, JSON array text when written to CSV) and states billing
periods in US Pacific time. See docs/costs.md, "Importing FOCUS exports".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hubfleet.config.fleet import FleetConfig
from hubfleet.settings import UserError

FOCUS_VERSIONS = "FOCUS 1.0 and 1.2"
REQUIRED_COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingCurrency",
    "BillingAccountId",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ServiceName",
)
"""Columns every FOCUS 1.0 and 1.2 export has; an export without one of them is refused."""
OPTIONAL_COLUMNS = ("SubAccountId", "ResourceId", "Tags")
"""Conditional in FOCUS (a provider without sub-accounts, resources or tags may omit them): empty then."""
CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
AMOUNT = "DECIMAL(38,12)"
"""Amounts are exact decimals in DuckDB, never DOUBLE: 12 places keep every digit a cloud bills (sub-cent
prices) and 26 integer digits are more than any bill."""
GRACE = "INTERVAL 1 DAY"
"""How far a ChargePeriodStart may lie outside its billing period: GCP states billing periods in US Pacific
time, so a UTC charge period starting in the first hours of the month precedes BillingPeriodStart."""


class FocusError(UserError):
    """An export hubfleet cannot import: a missing column, a bad row, mixed currencies, a missing rate."""


def ident(name: str) -> str:
    """A SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    name: str
    """The name in the file (FOCUS names, matched without regard to case or a byte-order mark)."""
    type: str
    """DuckDB's type of the column: VARCHAR for CSV (read as text, cast here, so that a bad cell becomes an
    error with its line), the export's own type for Parquet."""


def resolve_columns(file: str, described: Iterable[tuple[str, str]]) -> dict[str, Column]:
    """The FOCUS columns of a file by canonical name; a FocusError naming the first required one missing."""
    by_lower = {}
    for name, type_ in described:
        by_lower.setdefault(name.lstrip("\ufeff").strip().lower(), Column(name, type_))
    found = {}
    for canonical in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        column = by_lower.get(canonical.lower())
        if column is not None:
            found[canonical] = column
    missing = [c for c in REQUIRED_COLUMNS if c not in found]
    if missing:
        more = f" (and {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise FocusError(
            f"{file}: no column {missing[0]}{more}; {FOCUS_VERSIONS} exports have it. Export the billing "
            "data in FOCUS format (AWS Data Exports 'FOCUS 1.0/1.2 with AWS columns', Azure Cost Management "
            "'Cost and usage (FOCUS)', GCP's FOCUS BigQuery view); see docs/costs.md"
        )
    return found


def _base(type_: str) -> str:
    return type_.upper().split("(")[0].strip()


def _text(column: Column | None) -> str:
    """The column's value as trimmed text, NULL when empty or missing."""
    if column is None:
        return "CAST(NULL AS VARCHAR)"
    return f"NULLIF(trim(CAST({ident(column.name)} AS VARCHAR)), '')"


def _amount(column: Column) -> str:
    return f"TRY_CAST({_text(column)} AS {AMOUNT})"


def _time(column: Column) -> str:
    base = _base(column.type)
    if base.startswith(("TIMESTAMP", "DATE")):
        return f"CAST({ident(column.name)} AS TIMESTAMPTZ)"  # naive Parquet timestamps are UTC (session zone)
    return f"TRY_CAST({_text(column)} AS TIMESTAMPTZ)"


# --------------------------------------------------------------------------- tags


@dataclass(frozen=True)
class TagKeys:
    hub: tuple[str, ...]
    cluster: tuple[str, ...]


def fleet_tag_keys(fleet: FleetConfig) -> TagKeys:
    """Every cluster's hub and cluster tag keys, in the order the clusters list them (defaults first)."""
    hub: list[str] = []
    cluster: list[str] = []
    for name in sorted(fleet.clusters):
        keys = fleet.clusters[name].costs.tag_keys
        hub += [k for k in keys.hub if k not in hub]
        cluster += [k for k in keys.cluster if k not in cluster]
    return TagKeys(tuple(hub), tuple(cluster))


def _tag_forms(column: Column | None) -> tuple[str, str, str]:
    """SQL for (tags as JSON text, object text or NULL, list of {key, value} or NULL) for any Tags type."""
    if column is None:
        none = "CAST(NULL AS VARCHAR)"
        return none, none, "CAST(NULL AS STRUCT(key VARCHAR, value VARCHAR)[])"
    col = ident(column.name)
    base = _base(column.type)
    if column.type.upper().endswith("[]") or base.startswith("LIST"):  # GCP Parquet: key/value structs
        lst = (
            f"list_transform({col}, lambda x: {{'key': CAST(x.key AS VARCHAR), "
            f"'value': CAST(x.value AS VARCHAR)}})"
        )
        return f"CAST(to_json({col}) AS VARCHAR)", "CAST(NULL AS VARCHAR)", lst
    if base.startswith("MAP") or base.startswith("STRUCT"):  # AWS Parquet: map<string, string>
        text = f"CAST(to_json({col}) AS VARCHAR)"
        return text, text, "CAST(NULL AS STRUCT(key VARCHAR, value VARCHAR)[])"
    # text (CSV, or a string column): a JSON object, a JSON array of {key, value}, or Azure's object without
    # its braces ("k": "v","k2": "v2") as older Cost Management exports write it
    raw = _text(column)
    text = f"(CASE WHEN left({raw}, 1) IN ('{{', '[') THEN {raw} ELSE '{{' || {raw} || '}}' END)"
    ok = f"({text} IS NOT NULL AND json_valid({text}))"
    obj = f"(CASE WHEN {ok} AND left({raw}, 1) <> '[' THEN {text} END)"
    lst = (
        f"(CASE WHEN {ok} AND left({raw}, 1) = '[' AND json_type({text}) = 'ARRAY' THEN "
        f'from_json({text}, \'[{{"key":"VARCHAR","value":"VARCHAR"}}]\') END)'
    )
    return text, obj, lst


TAG_PREFIXES = ("", "user:", "resourceTags/", "resourceTags/user:", "accountTag/", "accountTag/user:")
"""How AWS may spell a user's tag key in its billing data: as is, `user:<key>` (CUR's resource tags),
`resourceTags/<key>` or `accountTag/<key>` (the tag sources of Data Exports' tags map). Looked up in order."""


def _names(key: str) -> list[str]:
    return [prefix + key for prefix in TAG_PREFIXES]


def _paths(keys: TagKeys) -> list[str]:
    """JSON paths of every hub key and then every cluster key, each in every TAG_PREFIXES spelling."""
    paths = []
    for key in (*keys.hub, *keys.cluster):
        for candidate in _names(key):
            paths.append('$."' + candidate.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return paths


def _lookup(values: str, lst: str, keys: Sequence[str], offset: int) -> str:
    """The value of the first of `keys` a row's tags have: `values` is the list of every path's value (one
    JSON parse per row, focus._paths order) and `keys` start at path `offset`; `lst` the key/value list."""
    if not keys:
        return "CAST(NULL AS VARCHAR)"
    width = len(TAG_PREFIXES)
    parts = []
    for index, key in enumerate(keys):
        first = offset + width * index + 1  # DuckDB lists count from 1
        parts += [f"{values}[{first + i}]" for i in range(width)]
        names = "(" + ", ".join(literal(name) for name in _names(key)) + ")"
        parts.append(f"(list_filter({lst}, lambda x: x.key IN {names}))[1].value")
    return f"NULLIF(trim(coalesce({', '.join(parts)})), '')"


# --------------------------------------------------------------------------- one file -> uniform rows


def rows_sql(source: str, columns: dict[str, Column], keys: TagKeys) -> str:
    """SELECT over the table `source` (one file's rows, rowid = data row) giving the uniform columns:
    row_index, account, sub_account, currency, billed, effective, list, billing_start, billing_end,
    charge_start, category, service, resource, tags (JSON text), hub_tag, cluster_tag and problem (NULL for a
    good row, else what is wrong with it)."""
    c = columns
    tags_text, tags_obj, tags_list = _tag_forms(c.get("Tags"))
    raw = {name: _text(c.get(name)) for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
    inner = f"""
        SELECT rowid AS row_index,
          {raw["BillingAccountId"]} AS account,
          coalesce({raw["SubAccountId"]}, '') AS sub_account,
          upper({raw["BillingCurrency"]}) AS currency,
          {raw["BilledCost"]} AS billed_raw, {_amount(c["BilledCost"])} AS billed,
          {raw["EffectiveCost"]} AS effective_raw, {_amount(c["EffectiveCost"])} AS effective,
          {raw["ListCost"]} AS list_raw, {_amount(c["ListCost"])} AS list,
          {raw["BillingPeriodStart"]} AS bps_raw, {_time(c["BillingPeriodStart"])} AS billing_start,
          {raw["BillingPeriodEnd"]} AS bpe_raw, {_time(c["BillingPeriodEnd"])} AS billing_end,
          {raw["ChargePeriodStart"]} AS cps_raw, {_time(c["ChargePeriodStart"])} AS charge_start,
          {raw["ChargePeriodEnd"]} AS cpe_raw, {_time(c["ChargePeriodEnd"])} AS charge_end,
          {raw["ChargeCategory"]} AS category_raw,
          coalesce({raw["ServiceName"]}, '') AS service,
          coalesce({raw["ResourceId"]}, '') AS resource,
          {tags_text} AS tags,
          {tags_obj} AS tags_obj,
          {tags_list} AS tags_list
        FROM {source}"""
    categories = ", ".join(f"{literal(x.lower())}: {literal(x)}" for x in CHARGE_CATEGORIES)
    problem = "CASE\n" + "\n".join(
        f"          WHEN {cond} THEN {message}"
        for cond, message in (
            ("account IS NULL", "'BillingAccountId is empty'"),
            ("currency IS NULL", "'BillingCurrency is empty'"),
            (
                "NOT regexp_full_match(currency, '[A-Z]{3}')",
                "'BillingCurrency ' || currency || ' is not a currency code (three letters, e.g. USD)'",
            ),
            *_amount_checks(),
            *_time_checks(),
            ("billing_end <= billing_start", "'BillingPeriodEnd is not after BillingPeriodStart'"),
            (
                f"charge_start < billing_start - {GRACE} OR charge_start >= billing_end + {GRACE}",
                "'ChargePeriodStart ' || cps_raw || ' is outside its billing period (' || bps_raw || ' to ' "
                "|| bpe_raw || ')'",
            ),
            ("category_raw IS NULL", "'ChargeCategory is empty'"),
            (
                "tags IS NOT NULL AND NOT json_valid(tags)",
                "'Tags is not JSON: ' || left(tags, 60)",
            ),
        )
    )
    hub_tag = _lookup("tag_values", "tags_list", keys.hub, 0)
    cluster_tag = _lookup("tag_values", "tags_list", keys.cluster, len(TAG_PREFIXES) * len(keys.hub))
    paths = "[" + ", ".join(literal(p) for p in _paths(keys)) + "]"
    return f"""
      SELECT row_index, account, sub_account, currency, billed, effective, list,
        billing_start, billing_end, charge_start,
        coalesce(map_extract_value(MAP {{{categories}}}, lower(category_raw)), left(category_raw, 40))
          AS category,
        left(service, 200) AS service, resource, tags,
        {hub_tag} AS hub_tag, {cluster_tag} AS cluster_tag,
        {problem}
          END AS problem
      FROM (SELECT *, json_extract_string(tags_obj, {paths}) AS tag_values FROM ({inner})) AS r"""


def _amount_checks() -> list[tuple[str, str]]:
    checks = [("billed_raw IS NULL", "'BilledCost is empty'")]
    for name, prefix in (("BilledCost", "billed"), ("EffectiveCost", "effective"), ("ListCost", "list")):
        checks.append(
            (
                f"{prefix}_raw IS NOT NULL AND {prefix} IS NULL",
                f"'{name} ' || {prefix}_raw || ' is not a number'",
            )
        )
    return checks


def _time_checks() -> list[tuple[str, str]]:
    checks = []
    for name, prefix, column in (
        ("BillingPeriodStart", "bps", "billing_start"),
        ("BillingPeriodEnd", "bpe", "billing_end"),
        ("ChargePeriodStart", "cps", "charge_start"),
        ("ChargePeriodEnd", "cpe", "charge_end"),
    ):
        checks.append((f"{prefix}_raw IS NULL", f"'{name} is empty'"))
        checks.append(
            (
                f"{column} IS NULL",
                f"'{name} ' || {prefix}_raw || ' is not a date and time "
                "(ISO 8601, e.g. 2026-11-01T00:00:00Z)'",
            )
        )
    return checks


# --------------------------------------------------------------------------- the fleet's side


@dataclass
class FleetMap:
    """What rows are matched against: hubs and their clusters, the clusters' tag values, claimed accounts."""

    keys: TagKeys
    hubs: dict[str, str] = field(default_factory=dict)
    """hub name -> its cluster."""
    cluster_tags: dict[str, str] = field(default_factory=dict)
    """a cluster's name or `tag_value` (lowercase) -> the cluster."""
    accounts: dict[str, str] = field(default_factory=dict)
    """a claimed billing account -> the cluster."""
    sub_accounts: dict[str, str] = field(default_factory=dict)
    """a claimed sub-account -> the cluster."""


def fleet_map(fleet: FleetConfig) -> FleetMap:
    found = FleetMap(keys=fleet_tag_keys(fleet))
    found.hubs = {name.lower(): hub.cluster for name, hub in fleet.hubs.items()}
    for name in sorted(fleet.clusters):
        costs = fleet.clusters[name].costs
        found.cluster_tags.setdefault(name.lower(), name)
        if costs.tag_value:
            found.cluster_tags.setdefault(costs.tag_value.lower(), name)
        for account in costs.billing_accounts:
            found.accounts.setdefault(account, name)
        for sub in costs.sub_accounts:
            found.sub_accounts.setdefault(sub, name)
    return found
