"""`hubfleet costs import`: FOCUS billing exports into the store, all or nothing.

DuckDB does the heavy lifting: it reads CSV (plain or gzipped) and Parquet fast and column by column, casts
amounts to exact decimals, finds the first bad row of each file, maps every row to a hub, a cluster or
nothing, sums the rows per day, sub-account, cluster, hub, charge category and service, and keeps the raw
rows in Parquet files of its own under `<state_dir>/costs/raw/`. The store gets one CostImport per billing
account and month and its summed lines, in one transaction for every file given; the micros of the lines add
up exactly to the bill's total (largest remainder), so allocation can hold the bill to the cent.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import delete, insert, select

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.costs.focus import FleetMap, FocusError, fleet_map, ident, literal, resolve_columns, rows_sql
from hubfleet.costs.money import MICROS, MissingRate, cents, from_micros, rate_for, to_micros
from hubfleet.store import Store
from hubfleet.store.costs import CostImport, CostLine

RAW_DIR = Path("costs") / "raw"
MEMORY_LIMIT = "1GB"
"""DuckDB's memory for an import; beyond it, it spills to a temporary directory under <state_dir>/costs (a
million rows stay under 1 GiB of RSS this way, at the same speed)."""
TOP = 5
"""How many services and resource ids the report names for the unallocated rows."""


# --------------------------------------------------------------------------- the report


@dataclass
class Unallocated:
    """Rows that map to no hub and no cluster: kept as a line of their own, reported here."""

    rows: int = 0
    amount: Decimal = Decimal(0)
    top_services: list[tuple[str, Decimal]] = field(default_factory=list)
    top_resources: list[tuple[str, Decimal]] = field(default_factory=list)
    unknown_hubs: dict[str, Decimal] = field(default_factory=dict)
    """Hub tag values that name no hub of the fleet, and their amounts (a typo, or a retired hub)."""


@dataclass
class AccountMonth:
    """One billing account's month as imported: what the cloud billed and where it went."""

    account: str
    month: str
    currency: str
    rows: int
    billed_micros: int
    effective_micros: int | None
    hubs: dict[str, Decimal]
    """hub -> the amount its tags name (its own cost)."""
    clusters: dict[str, Decimal]
    """cluster -> its shared cost (cluster tag, claimed billing account or sub-account)."""
    unallocated: Unallocated
    files: list[dict[str, Any]]
    raw_path: str
    replaced: bool = False

    @property
    def billed(self) -> Decimal:
        return from_micros(self.billed_micros)

    def to_dict(self) -> dict[str, Any]:
        def money(amount: Decimal) -> str:
            return str(cents(amount))

        return {
            "account": self.account,
            "month": self.month,
            "currency": self.currency,
            "rows": self.rows,
            "billed": money(self.billed),
            "billed_micros": self.billed_micros,
            "effective": None if self.effective_micros is None else money(from_micros(self.effective_micros)),
            "hubs": {k: money(v) for k, v in sorted(self.hubs.items())},
            "clusters": {k: money(v) for k, v in sorted(self.clusters.items())},
            "unallocated": {
                "rows": self.unallocated.rows,
                "amount": money(self.unallocated.amount),
                "top_services": [[s, money(a)] for s, a in self.unallocated.top_services],
                "top_resources": [[r, money(a)] for r, a in self.unallocated.top_resources],
                "unknown_hubs": {k: money(v) for k, v in sorted(self.unallocated.unknown_hubs.items())},
            },
            "files": self.files,
            "raw_path": self.raw_path,
            "replaced": self.replaced,
        }


@dataclass
class _Lines:
    """One account-month's lines, ready for the store: (account, month, day, sub_account, cluster, hub,
    category, service, currency, billed, effective, list, rows) and each line's micros."""

    rows: list[tuple[Any, ...]]
    billed: list[int]
    effective: list[int | None]
    listed: list[int | None]


@dataclass
class ImportReport:
    """What an import stored (with dry_run: would store): an AccountMonth per billing account and month."""

    accounts: list[AccountMonth]
    dry_run: bool = False
    lines: dict[tuple[str, str], _Lines] = field(default_factory=dict, repr=False)
    """(account, month) -> its lines for the store (not part of the report shown)."""

    @property
    def months(self) -> list[str]:
        return sorted({a.month for a in self.accounts})

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "months": self.months,
            "accounts": [a.to_dict() for a in self.accounts],
        }


# --------------------------------------------------------------------------- the import


def import_exports(
    store: Store | None,
    fleet: FleetConfig,
    files: Sequence[Path],
    *,
    state_dir: Path | None,
    dry_run: bool = False,
    actor: str = "",
) -> ImportReport:
    """Read every file, check every row, map the rows to the fleet and (unless `dry_run`) replace each billing
    account's month in the store in one transaction, keeping the raw rows in Parquet under `state_dir`.
    Any problem raises FocusError and changes nothing."""
    paths = _check_paths(files)
    spill_in = state_dir / "costs" if state_dir is not None and not dry_run else None
    if spill_in is not None:
        spill_in.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".import-", dir=spill_in) as spill:
        con = duckdb.connect()
        try:
            con.execute(f"SET memory_limit = {literal(MEMORY_LIMIT)}")
            con.execute(f"SET temp_directory = {literal(spill)}")
            return _run(con, paths, fleet, store=store, state_dir=state_dir, dry_run=dry_run, actor=actor)
        finally:
            con.close()


def _run(
    con: duckdb.DuckDBPyConnection,
    paths: list[Path],
    fleet: FleetConfig,
    *,
    store: Store | None,
    state_dir: Path | None,
    dry_run: bool,
    actor: str,
) -> ImportReport:
    """The import in one DuckDB connection: load, map, check, sum, then (unless dry_run) store."""
    fmap = fleet_map(fleet)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")  # rowid = the row's place in its file
    for index, path in enumerate(paths):
        _load(con, index, path, fmap)
    con.execute("SET preserve_insertion_order = false")  # rows are numbered now: the rest may reorder
    con.execute(  # views: rows are cast, checked and their tags parsed once, when `mapped` is made
        "CREATE VIEW rows AS "
        + " UNION ALL ".join(f"SELECT {i} AS file_index, * FROM f{i}" for i in range(len(paths)))
    )
    _map(con, fmap)
    con.execute("DROP VIEW rows")
    for index in range(len(paths)):
        con.execute(f"DROP VIEW f{index}")
        con.execute(f"DROP TABLE raw{index}")
    _check_rows(con, paths)
    _check_currencies(con, paths)
    report = _report(con, fleet, paths)
    if dry_run or not report.accounts:
        report.dry_run = dry_run
        return report
    if store is None or state_dir is None:
        raise ValueError("a store and a state directory are needed unless dry_run")
    _commit(con, store, report, state_dir, actor)
    return report


def _check_paths(files: Sequence[Path]) -> list[Path]:
    if not files:
        raise FocusError("no file to import; name one or more FOCUS exports (CSV, .csv.gz or Parquet)")
    paths: list[Path] = []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FocusError(f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise FocusError(f"{path}: cannot be read (permissions); nothing was imported")
        if path.resolve() in {p.resolve() for p in paths}:
            raise FocusError(f"{path}: named twice; name each export once")
        paths.append(path)
    return paths


def _format(path: Path) -> tuple[str, str]:
    """('csv', compression) or ('parquet', ''), by the file's first bytes (a .csv may be gzipped)."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        return "parquet", ""
    if magic[:2] == b"\x1f\x8b":
        return "csv", "gzip"
    if path.name.lower().endswith((".parquet", ".pq")):
        raise FocusError(f"{path}: named .parquet but is not a Parquet file")
    return "csv", "none"


def _load(con: duckdb.DuckDBPyConnection, index: int, path: Path, fmap: FleetMap) -> None:
    """Table raw<index> (the file's FOCUS columns; rowid = data row) and view f<index> (its rows made
    uniform, focus.rows_sql); a FocusError when the file cannot be read or lacks a column."""
    kind, compression = _format(path)
    if kind == "parquet":
        source = f"read_parquet({literal(str(path))})"
    else:
        # every column as text: amounts and times are cast in SQL, so a bad cell is reported with its line
        source = (
            f"read_csv({literal(str(path))}, all_varchar = true, header = true, delim = ',', quote = '\"', "
            f"escape = '\"', compression = {literal(compression)})"
        )
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        columns = resolve_columns(str(path), [(row[0], row[1]) for row in described])
        names = ", ".join(ident(c.name) for c in columns.values())
        con.execute(f"CREATE TABLE raw{index} AS SELECT {names} FROM {source}")
        con.execute(f"CREATE VIEW f{index} AS {rows_sql(f'raw{index}', columns, fmap.keys)}")
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FocusError(f"{path}: cannot read it as {kind.upper()}: {first}") from None


def where(path: Path, kind: str, compression: str, row_index: int) -> str:
    """`file:line` of a CSV data row (the line an editor shows, quoted newlines counted), or `file: row N`."""
    if kind == "parquet":
        return f"{path}: row {row_index + 1}"
    return f"{path}:{csv_line(path, compression, row_index)}"


def csv_line(path: Path, compression: str, row_index: int) -> int:
    """The line on which data row `row_index` (0: the first after the header) starts."""
    raw = gzip.open(path, "rb") if compression == "gzip" else path.open("rb")  # noqa: SIM115 (closed below)
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as text:
        reader = csv.reader(text)
        previous = 0
        for record, _ in enumerate(reader):
            start, previous = previous + 1, reader.line_num
            if record - 1 == row_index:
                return start
    return previous + 1


def _check_rows(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> None:
    """A FocusError at the first bad row (in the order the files were given), with how many more there are."""
    bad = con.execute(
        "SELECT file_index, row_index, problem, count(*) OVER () FROM mapped WHERE problem IS NOT NULL "
        "ORDER BY file_index, row_index LIMIT 1"
    ).fetchone()
    if bad is None:
        return
    index, row_index, problem, count = bad
    more = f" ({count - 1} more bad row{'s' if count > 2 else ''})" if count > 1 else ""
    path = paths[index]
    kind, compression = _format(path)
    raise FocusError(f"{where(path, kind, compression, row_index)}: {problem}{more}; nothing was imported")


def _first_row(con: duckdb.DuckDBPyConnection, paths: list[Path], condition: str) -> str:
    row = con.execute(
        f"SELECT file_index, row_index FROM mapped WHERE {condition} ORDER BY file_index, row_index LIMIT 1"
    ).fetchone()
    if row is None:
        return ""
    path = paths[row[0]]
    kind, compression = _format(path)
    return where(path, kind, compression, row[1])


def _check_currencies(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> None:
    mixed = con.execute(
        "SELECT account, list(DISTINCT currency ORDER BY currency) FROM mapped GROUP BY account "
        "HAVING count(DISTINCT currency) > 1 ORDER BY account LIMIT 1"
    ).fetchone()
    if mixed is None:
        return
    account, currencies = mixed
    first = con.execute(
        "SELECT currency FROM mapped WHERE account = ? ORDER BY file_index, row_index LIMIT 1", [account]
    ).fetchone()
    other = next(c for c in currencies if c != first[0])
    at = _first_row(con, paths, f"account = {literal(account)} AND currency = {literal(other)}")
    raise FocusError(
        f"billing account {account} bills in both {first[0]} and {other} (first {other} row: {at}); one "
        "account has one billing currency, so these rows cannot be summed: check that the files are exports "
        "of the same account, or import each currency's export alone; nothing was imported"
    )


def _map(con: duckdb.DuckDBPyConnection, fmap: FleetMap) -> None:
    """Table `mapped`: every row with its month, day (inside the month), cluster, hub and why."""
    con.execute("CREATE TABLE fleet_hubs (tag VARCHAR, hub VARCHAR, cluster VARCHAR)")
    con.execute("CREATE TABLE fleet_clusters (tag VARCHAR, cluster VARCHAR)")
    con.execute("CREATE TABLE fleet_accounts (account VARCHAR, cluster VARCHAR)")
    con.execute("CREATE TABLE fleet_subs (sub VARCHAR, cluster VARCHAR)")
    if fmap.hubs:
        con.executemany("INSERT INTO fleet_hubs VALUES (?, ?, ?)", [(h, h, c) for h, c in fmap.hubs.items()])
    if fmap.cluster_tags:
        con.executemany("INSERT INTO fleet_clusters VALUES (?, ?)", list(fmap.cluster_tags.items()))
    if fmap.accounts:
        con.executemany("INSERT INTO fleet_accounts VALUES (?, ?)", list(fmap.accounts.items()))
    if fmap.sub_accounts:
        con.executemany("INSERT INTO fleet_subs VALUES (?, ?)", list(fmap.sub_accounts.items()))
    con.execute(
        """
        CREATE TABLE mapped AS
        SELECT r.* EXCLUDE (first_day, last_day),
          strftime(r.billing_start + INTERVAL 12 HOUR, '%Y-%m') AS month,
          greatest(first_day, least(last_day, CAST(r.charge_start AS DATE))) AS day,
          CASE WHEN r.hub_tag IS NOT NULL THEN h.cluster
               ELSE coalesce(c.cluster, a.cluster, s.cluster) END AS cluster,
          h.hub AS hub,
          CASE WHEN h.hub IS NOT NULL THEN 'hub tag'
               WHEN r.hub_tag IS NOT NULL THEN NULL
               WHEN c.cluster IS NOT NULL THEN 'cluster tag'
               WHEN a.cluster IS NOT NULL THEN 'billing account'
               WHEN s.cluster IS NOT NULL THEN 'sub-account' END AS mapped_by,
          CASE WHEN r.hub_tag IS NOT NULL AND h.hub IS NULL THEN r.hub_tag END AS unknown_hub
        FROM (
          SELECT *,
            CAST(date_trunc('month', billing_start + INTERVAL 12 HOUR) AS DATE) AS first_day,
            CAST(date_trunc('month', billing_start + INTERVAL 12 HOUR) + INTERVAL 1 MONTH
                 - INTERVAL 1 DAY AS DATE) AS last_day
          FROM rows) AS r
        LEFT JOIN fleet_hubs h ON lower(r.hub_tag) = h.tag
        LEFT JOIN fleet_clusters c ON lower(r.cluster_tag) = c.tag
        LEFT JOIN fleet_accounts a ON r.account = a.account
        LEFT JOIN fleet_subs s ON r.sub_account = s.sub
        """
    )


# --------------------------------------------------------------------------- sums, checks, report


def keep_sum(values: Sequence[Decimal]) -> list[int]:
    """`values` (exact amounts) in micros whose sum is exactly the rounded sum of `values`: each is rounded
    down, and the micros left over go to the largest remainders (ties: first)."""
    exact = [v * MICROS for v in values]
    floors = [int(x.to_integral_value(ROUND_FLOOR)) for x in exact]
    left = to_micros(sum(values, Decimal(0))) - sum(floors)
    order = sorted(range(len(values)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def _rounded(values: list[Decimal | None]) -> list[int | None]:
    present = [i for i, v in enumerate(values) if v is not None]
    micros = keep_sum([values[i] for i in present])  # type: ignore[misc]
    out: list[int | None] = [None] * len(values)
    for i, m in zip(present, micros, strict=True):
        out[i] = m
    return out


def _report(con: duckdb.DuckDBPyConnection, fleet: FleetConfig, paths: list[Path]) -> ImportReport:
    lines: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for row in con.execute(
        """
        SELECT account, month, day, sub_account, cluster, hub, category, service, currency,
          sum(billed), sum(effective), sum(list), count(*)
        FROM mapped GROUP BY ALL ORDER BY ALL
        """
    ).fetchall():
        lines[(row[0], row[1])].append(row)
    unallocated = _unallocated(con)
    files = _files(con, paths)
    accounts: list[AccountMonth] = []
    con_lines: dict[tuple[str, str], _Lines] = {}
    for (account, month), group in sorted(lines.items()):
        billed = keep_sum([r[9] for r in group])
        effective = _rounded([r[10] for r in group])
        listed = _rounded([r[11] for r in group])
        hubs: dict[str, Decimal] = defaultdict(Decimal)
        clusters: dict[str, Decimal] = defaultdict(Decimal)
        nowhere = 0
        for r, micros in zip(group, billed, strict=True):
            if r[5] is not None:
                hubs[r[5]] += from_micros(micros)
            elif r[4] is not None:
                clusters[r[4]] += from_micros(micros)
            else:
                nowhere += micros
        left = unallocated.get((account, month), Unallocated())
        left.amount = from_micros(nowhere)  # in the lines' micros, so hubs + clusters + this = billed
        present = [m for m in effective if m is not None]
        item = AccountMonth(
            account=account,
            month=month,
            currency=group[0][8],
            rows=sum(r[12] for r in group),
            billed_micros=sum(billed),
            effective_micros=sum(present) if present else None,
            hubs=dict(hubs),
            clusters=dict(clusters),
            unallocated=left,
            files=files.get((account, month), []),
            raw_path=str(RAW_DIR / _safe(account) / f"{month}.parquet"),
        )
        accounts.append(item)
        con_lines[(account, month)] = _Lines(list(group), billed, effective, listed)
    _check_rates(fleet, accounts)
    return ImportReport(accounts, lines=con_lines)


def _unallocated(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], Unallocated]:
    found: dict[tuple[str, str], Unallocated] = defaultdict(Unallocated)
    for account, month, rows, amount in con.execute(
        "SELECT account, month, count(*), sum(billed) FROM mapped WHERE cluster IS NULL GROUP BY ALL"
    ).fetchall():
        found[(account, month)].rows = rows
        found[(account, month)].amount = amount
    for column, attribute in (("service", "top_services"), ("resource", "top_resources")):
        for account, month, name, amount in con.execute(
            f"""
            SELECT account, month, name, amount FROM (
              SELECT account, month, {column} AS name, sum(billed) AS amount FROM mapped
              WHERE cluster IS NULL GROUP BY account, month, {column})
            QUALIFY row_number() OVER (PARTITION BY account, month ORDER BY abs(amount) DESC, name)
              <= {TOP}
            ORDER BY account, month, abs(amount) DESC, name
            """
        ).fetchall():
            getattr(found[(account, month)], attribute).append((name, amount))
    for account, month, name, amount in con.execute(
        "SELECT account, month, unknown_hub, sum(billed) FROM mapped WHERE unknown_hub IS NOT NULL "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        found[(account, month)].unknown_hubs[name] = amount
    return dict(found)


def _files(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    digests = [_sha256(p) for p in paths]
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for account, month, index, rows in con.execute(
        "SELECT account, month, file_index, count(*) FROM mapped GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        found[(account, month)].append({"name": paths[index].name, "sha256": digests[index], "rows": rows})
    return dict(found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _safe(account: str) -> str:
    """A billing account id as a directory name (Azure's contain ':' and '/'); an id that had to change gets
    a short digest of itself, so that two ids never share a directory."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", account).strip(".")[:100]
    if safe == account:
        return safe
    return f"{safe}-{hashlib.sha256(account.encode()).hexdigest()[:8]}"


def _check_rates(fleet: FleetConfig, accounts: list[AccountMonth]) -> None:
    """Each bill in a currency other than the fleet's, or than a plan of a community whose hubs it reaches
    (its own hubs, and the hubs of clusters whose shared cost it carries), needs that month's rate."""
    costs = fleet.settings.costs
    missing: list[str] = []
    for item in accounts:
        hubs = set(item.hubs) | {h for h, hub in fleet.hubs.items() if hub.cluster in item.clusters}
        targets = {costs.currency}
        for hub in sorted(hubs):
            plan_name = fleet.communities[fleet.hubs[hub].community].billing.plan
            plan = costs.plans.get(plan_name) if plan_name else None
            if plan is not None:
                targets.add(plan.currency)
        for target in sorted(targets - {item.currency}):
            try:
                rate_for(costs.exchange_rates, item.currency, target, item.month)
            except MissingRate as exc:
                message = f"billing account {item.account} bills {item.month} in {item.currency}: {exc}"
                if message not in missing:
                    missing.append(message)
    if missing:
        raise FocusError("; ".join(missing) + "; nothing was imported")


# --------------------------------------------------------------------------- the store and the raw rows


RAW_COLUMNS = (
    "file_index, row_index + 1 AS row, account, sub_account, currency, billed, effective, list, "
    "billing_start, billing_end, charge_start, category, service, resource, tags, hub_tag, cluster_tag, "
    "month, day, cluster, hub, mapped_by"
)


def _commit(
    con: duckdb.DuckDBPyConnection, store: Store, report: ImportReport, state_dir: Path, actor: str
) -> None:
    """Raw rows to temporary Parquet files, the store in one transaction, then the files renamed."""
    written: list[tuple[Path, Path]] = []
    try:
        for item in report.accounts:
            final = state_dir / item.raw_path
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            written.append((temporary, final))
            con.execute(
                f"COPY (SELECT {RAW_COLUMNS} FROM mapped WHERE account = {literal(item.account)} "
                f"AND month = {literal(item.month)} ORDER BY file_index, row_index) "
                f"TO {literal(str(temporary))} (FORMAT parquet, COMPRESSION zstd)"
            )
        _store(store, report, actor)
    except BaseException:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, final in written:
        os.replace(temporary, final)


def _store(store: Store, report: ImportReport, actor: str) -> None:
    now = utcnow()
    with store.session() as session, session.begin():
        for item in report.accounts:
            old = session.scalars(
                select(CostImport).where(CostImport.account == item.account, CostImport.month == item.month)
            ).first()
            if old is not None:
                session.execute(delete(CostLine).where(CostLine.import_id == old.id))
                session.delete(old)
                session.flush()
                item.replaced = True
            row = CostImport(
                account=item.account,
                month=item.month,
                currency=item.currency,
                rows=item.rows,
                billed_micros=item.billed_micros,
                effective_micros=item.effective_micros,
                files=item.files,
                raw_path=item.raw_path,
                imported_at=now,
                actor=actor,
            )
            session.add(row)
            session.flush()
            lines = report.lines[(item.account, item.month)]
            session.execute(
                insert(CostLine),
                [
                    {
                        "import_id": row.id,
                        "account": r[0],
                        "month": r[1],
                        "day": r[2] if isinstance(r[2], date) else date.fromisoformat(str(r[2])),
                        "sub_account": (r[3] or "")[:200],
                        "cluster": r[4],
                        "hub": r[5],
                        "category": r[6],
                        "service": r[7],
                        "currency": r[8],
                        "billed_micros": billed,
                        "effective_micros": effective,
                        "list_micros": listed,
                        "rows": r[12],
                    }
                    for r, billed, effective, listed in zip(
                        lines.rows, lines.billed, lines.effective, lines.listed, strict=True
                    )
                ],
            )
