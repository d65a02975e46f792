"""Native FOCUS files (1.0 - 1.3, CSV / CSV.gz / Parquet): AWS, Azure and GCP FOCUS exports, gateways, SaaS.

`uri` points at a folder (s3://, gs://, az://, file:// or a path). Deliveries are found, in order:

* Azure Cost Management FocusCost exports: runs located by their `manifest.json` (newest run per
  period, see `connectors.azure_cost`);
* AWS Data Exports FOCUS tables: `data/BILLING_PERIOD=YYYY-MM/` partitions (newest execution
  folder when the export keeps versions);
* any other files: the month comes from the path (`2026-10`, `202610`, `billing_period=2026-10`)
  or, when the path names none, from the rows' BillingPeriodStart (rows of other months are left
  for their own month: the same file may feed several months).

Column names are matched case-insensitively. Version differences: 1.3 `ServiceProviderName` /
`HostProviderName` fill the deprecated `PublisherName` / `ProviderName`; 1.0-preview names
(`Provider`, `Publisher`, `InvoiceIssuer`, `Region`, `AmortizedCost`, `UsageQuantity`...) map to
the 1.0+ names. A file without `BilledCost` is not FOCUS (unknown export version): SourceError.
CSV: option `delimiter` (',' by default); cells
listed in option `null_strings` (default '', `NULL`, `null`) are missing values; a row whose field count
differs from the header's is quarantined with its line and counts, never shifted or padded. ServiceCategory / ServiceSubcategory must be FOCUS 1.2
allowed values: a missing or unknown category becomes `Other` with the row's ServiceName in
`x_UnmappedService` (never dropped), an unknown subcategory `Other (<category>)`.
"""

from __future__ import annotations

import re
from pathlib import Path

from apportion.connectors.base import Connector, Delivery, DeliveryPlan, SourceError
from apportion.connectors.cloudfiles import (
    column_picker,
    describe,
    digest,
    file_format,
    load_cloud_macros,
    month_from_path,
    months_of_files,
    quote_ident,
    quote_literal,
    reader_sql,
    row_number_sql,
    varchar_expr,
)
from apportion.models.focus import SERVICE_SUBCATEGORIES

# canonical FOCUS column -> names it may carry (first present wins; matching ignores case and '_').
FOCUS_ALIASES: dict[str, tuple[str, ...]] = {
    "AvailabilityZone": ("AvailabilityZone",),
    "BilledCost": ("BilledCost",),
    "BillingAccountId": ("BillingAccountId",),
    "BillingAccountName": ("BillingAccountName",),
    "BillingAccountType": ("BillingAccountType",),
    "BillingCurrency": ("BillingCurrency",),
    "BillingPeriodEnd": ("BillingPeriodEnd",),
    "BillingPeriodStart": ("BillingPeriodStart",),
    "CapacityReservationId": ("CapacityReservationId",),
    "CapacityReservationStatus": ("CapacityReservationStatus",),
    "ChargeCategory": ("ChargeCategory", "ChargeType"),
    "ChargeClass": ("ChargeClass",),
    "ChargeDescription": ("ChargeDescription",),
    "ChargeFrequency": ("ChargeFrequency",),
    "ChargePeriodEnd": ("ChargePeriodEnd",),
    "ChargePeriodStart": ("ChargePeriodStart",),
    "CommitmentDiscountCategory": ("CommitmentDiscountCategory",),
    "CommitmentDiscountId": ("CommitmentDiscountId",),
    "CommitmentDiscountName": ("CommitmentDiscountName",),
    "CommitmentDiscountQuantity": ("CommitmentDiscountQuantity",),
    "CommitmentDiscountStatus": ("CommitmentDiscountStatus",),
    "CommitmentDiscountType": ("CommitmentDiscountType",),
    "CommitmentDiscountUnit": ("CommitmentDiscountUnit",),
    "ConsumedQuantity": ("ConsumedQuantity", "UsageQuantity"),
    "ConsumedUnit": ("ConsumedUnit", "UsageUnit"),
    "ContractedCost": ("ContractedCost",),
    "ContractedUnitPrice": ("ContractedUnitPrice",),
    "EffectiveCost": ("EffectiveCost", "AmortizedCost"),
    "InvoiceId": ("InvoiceId",),
    "InvoiceIssuerName": ("InvoiceIssuerName", "InvoiceIssuer"),
    "ListCost": ("ListCost",),
    "ListUnitPrice": ("ListUnitPrice",),
    "PricingCategory": ("PricingCategory",),
    "PricingCurrency": ("PricingCurrency",),
    "PricingCurrencyContractedUnitPrice": ("PricingCurrencyContractedUnitPrice",),
    "PricingCurrencyEffectiveCost": ("PricingCurrencyEffectiveCost",),
    "PricingCurrencyListUnitPrice": ("PricingCurrencyListUnitPrice",),
    "PricingQuantity": ("PricingQuantity",),
    "PricingUnit": ("PricingUnit",),
    "ProviderName": ("ProviderName", "Provider"),
    "PublisherName": ("PublisherName", "Publisher"),
    "RegionId": ("RegionId", "Region"),
    "RegionName": ("RegionName",),
    "ResourceId": ("ResourceId",),
    "ResourceName": ("ResourceName",),
    "ResourceType": ("ResourceType",),
    "ServiceCategory": ("ServiceCategory",),
    "ServiceName": ("ServiceName",),
    "ServiceSubcategory": ("ServiceSubcategory",),
    "SkuId": ("SkuId",),
    "SkuMeter": ("SkuMeter",),
    "SkuPriceDetails": ("SkuPriceDetails",),
    "SkuPriceId": ("SkuPriceId",),
    "SubAccountId": ("SubAccountId",),
    "SubAccountName": ("SubAccountName",),
    "SubAccountType": ("SubAccountType",),
    "Tags": ("Tags",),
    # FOCUS 1.3
    "ServiceProviderName": ("ServiceProviderName",),
    "HostProviderName": ("HostProviderName",),
    "AllocatedMethodId": ("AllocatedMethodId",),
    "AllocatedResourceId": ("AllocatedResourceId",),
    "ContractApplied": ("ContractApplied",),
    # provider extension columns that mean the same as ours (AWS and Microsoft FOCUS exports)
    "x_ServiceCode": ("x_ServiceCode",),
    "x_UsageType": ("x_UsageType",),
    "x_Operation": ("x_Operation",),
    "x_CostCategories": ("x_CostCategories",),
    "x_ResourceGroupName": ("x_ResourceGroupName",),
    "x_PricingBlockSize": ("x_PricingBlockSize",),
    "x_PricingUnitDescription": ("x_PricingUnitDescription",),
    "x_SkuMeterName": ("x_SkuMeterName",),
    "x_AccountName": ("x_AccountName",),
    "x_InvoiceIssuerId": ("x_InvoiceIssuerId",),
    "x_ProviderLineItemId": ("x_ProviderLineItemId",),
}

VERSION_MARKERS = (
    ("1.3", ("ServiceProviderName", "HostProviderName", "AllocatedMethodId", "AllocatedResourceId", "ContractApplied")),
    ("1.2", ("BillingAccountType", "InvoiceId", "PricingCurrency", "SubAccountType",
             "PricingCurrencyEffectiveCost")),
    ("1.1", ("CapacityReservationId", "ServiceSubcategory", "SkuMeter", "SkuPriceDetails",
             "CommitmentDiscountQuantity")),
)
KNOWN_VERSIONS = ("1.0-preview", "1.0", "1.1", "1.2", "1.3")

PARTITION = re.compile(r"billing_period=(\d{4}-\d{2})/", re.I)


def focus_version(columns) -> str:
    """FOCUS version a file's column set belongs to (the newest whose new columns are present)."""
    low = {c.lower() for c in columns}
    for version, markers in VERSION_MARKERS:
        if any(m.lower() in low for m in markers):
            return version
    if "chargecategory" in low and "effectivecost" in low:
        return "1.0"
    return "1.0-preview"


DEFAULT_NULL_STRINGS = ("", "NULL", "null")


def csv_dialect(options: dict | None) -> dict:
    """`delimiter` (one character, ',' by default) and `null_strings` (cells read as missing: '', NULL, null)."""
    options = options or {}
    delimiter = options.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
        raise SourceError(f"option delimiter must be one character (not a quote or newline), got {delimiter!r}")
    nulls = options.get("null_strings", list(DEFAULT_NULL_STRINGS))
    if isinstance(nulls, str) or not isinstance(nulls, (list, tuple)) or not all(isinstance(n, str) for n in nulls):
        raise SourceError(f"option null_strings must be a list of strings, got {nulls!r}")
    return {"delimiter": delimiter, "null_strings": tuple(nulls)}


def csv_shape_errors(path: Path, delimiter: str = ",") -> tuple[int, list[tuple[int, int, int]], int]:
    """Stream a CSV (or CSV.gz) once: (records, [(row, line, fields)] of rows whose field count differs
    from the header's, header fields). Rows are numbered as the reader numbers them (blank lines skipped);
    line is the file line the record starts on. Memory stays bounded by one record."""
    import csv
    import gzip
    import io
    import sys

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open(path, "rb") if gz else open(path, "rb")
    with opener as fb, io.TextIOWrapper(fb, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
        header = None
        bad: list[tuple[int, int, int]] = []
        rows = 0
        last_line = 0
        for record in reader:
            start, last_line = last_line + 1, reader.line_num
            if not record:
                continue
            if header is None:
                header = len(record)
                continue
            rows += 1
            if len(record) != header:
                bad.append((rows, start, len(record)))
    return rows, bad, header or 0


def focus_file_select(con, key: str, path: Path, file_idx: int, forced_version: str | None = None,
                      dataset_prefix: str = "FOCUS", delimiter: str = ",",
                      null_strings=DEFAULT_NULL_STRINGS) -> str:
    """SELECT of one FOCUS file: canonical columns as text, lineage, detected version.

    CSV: every row must have the header's number of fields. One that has not (an unquoted delimiter in a
    description, a row cut short) is never shifted or padded into line items: it keeps its row number and
    `_row_error` says why (file line and field counts); its values are not read.
    """
    import hashlib

    fmt = file_format(path.name) or "csv"
    row_error = "CAST(NULL AS VARCHAR)"
    row_number = row_number_sql(fmt)
    if fmt == "csv":
        try:
            records, bad, header = csv_shape_errors(path, delimiter)
        except (OSError, EOFError, ValueError) as exc:
            raise SourceError(f"cannot read {key}: {exc}", file=key) from None
        reader = reader_sql(path, fmt, delimiter=delimiter, strict=not bad)
    else:
        bad = []
        reader = reader_sql(path, fmt)
    types = describe(con, reader, key)
    picked = column_picker(types, FOCUS_ALIASES)
    if "BilledCost" not in picked:
        raise SourceError(f"{key} has no BilledCost column: not a FOCUS file (unknown export version; "
                          f"columns: {', '.join(list(types)[:8])}...)", file=key)
    version = forced_version or focus_version(types)
    if version not in KNOWN_VERSIONS:
        raise SourceError(f"{key}: unknown FOCUS version {version!r} (known: {', '.join(KNOWN_VERSIONS)})", file=key)
    if bad:
        # the tolerant read must give one row per record, in file order, or the rows cannot be told apart
        got = con.execute(f"SELECT count(*) FROM {reader}").fetchone()[0]
        if got != records:
            raise SourceError(f"{key}: {len(bad)} rows have the wrong number of fields (first at line {bad[0][1]}: "
                              f"{bad[0][2]} fields, the header has {header}) and the file's rows cannot be "
                              "located reliably", file=key)
        table = "focus_shape_" + hashlib.sha1(f"{key}\0{path}".encode()).hexdigest()[:16]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (bad_row BIGINT, bad_reason VARCHAR)")
        con.executemany(f"INSERT INTO {table} VALUES (?, ?)",
                        [(row, f"row has {n} fields, the header has {header} (line {line}; values not read, "
                               "cost unknown)") for row, line, n in bad])
        reader = (f"(SELECT * FROM (SELECT *, row_number() OVER () AS __apportion_row FROM {reader}) "
                  f"LEFT JOIN {table} ON bad_row = __apportion_row)")
        row_number, row_error = "__apportion_row", "bad_reason"
    parts = [f"{quote_literal(key)} AS _file", f"{int(file_idx)} AS _file_idx", f"{row_number} AS _row",
             f"{quote_literal(f'{dataset_prefix} {version}')} AS _dataset", f"{row_error} AS _row_error"]
    nulls = ", ".join(quote_literal(n.strip()) for n in null_strings if n.strip())
    for canon in FOCUS_ALIASES:
        col = picked.get(canon)
        expr = varchar_expr(col, types.get(col) if col else None)
        if fmt == "csv" and col is not None and nulls:
            # CSV exported by SQL tools spells a missing value NULL, dataframe tools and the FOCUS
            # specification's own example files `null`: it is missing, not a value to quarantine or keep.
            expr = f"(CASE WHEN {expr} IN ({nulls}) THEN NULL ELSE {expr} END)"
        parts.append(f"{expr} AS {quote_ident(canon)}")
    return f"SELECT {', '.join(parts)} FROM {reader}"


def stage_focus(con, delivery: Delivery, options: dict | None = None, file_select=focus_file_select,
                **kwargs) -> str:
    """Create view `stg_focus` over every file of the delivery, and the `focus_options` defaults.

    Options `billing_currency`, `provider_name` and `billing_account_id` fill those columns for
    files that lack them (partial exports, hand-made samples); present values always win.
    """
    options = options or {}
    load_cloud_macros(con)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE focus_options AS SELECT ?::VARCHAR AS billing_currency, "
        "?::VARCHAR AS provider_name, ?::VARCHAR AS billing_account_id",
        [options.get("billing_currency"), options.get("provider_name"), options.get("billing_account_id")],
    )
    # ServiceName -> ServiceSubcategory for FOCUS 1.0 files, which have no ServiceSubcategory column
    # (the caller may load a provider map into it; empty otherwise).
    con.execute("CREATE TEMP TABLE IF NOT EXISTS focus_subcategory_map (service_name VARCHAR, service_subcategory VARCHAR)")
    # The FOCUS 1.2 allowed ServiceCategory / ServiceSubcategory pairs: a file's value outside them is not
    # passed on (see sql/line_items/focus.sql: Other + x_UnmappedService, or 'Other (<category>)').
    pairs = [(cat, sub) for cat, subs in SERVICE_SUBCATEGORIES.items() for sub in subs]
    con.execute("CREATE OR REPLACE TEMP TABLE focus_service_categories AS SELECT * FROM (VALUES "
                + ", ".join(f"({quote_literal(c)}, {quote_literal(s)})" for c, s in pairs)
                + ") AS t(service_category, service_subcategory)")
    multi = "true" if delivery.layout == "focus-files" else "false"
    if file_select is focus_file_select:
        kwargs = {**csv_dialect(options), **kwargs}
    selects = [f"SELECT *, {multi} AS _multi_month FROM ({file_select(con, key, path, idx, **kwargs)})"
               for idx, (key, path) in enumerate(delivery.files)]
    if not selects:
        raise SourceError(f"{delivery.source} {delivery.month}: the delivery has no data files")
    con.execute("CREATE OR REPLACE TEMP VIEW stg_focus AS\n" + "\nUNION ALL BY NAME\n".join(selects))
    return "stg_focus"


class FocusConnector(Connector):
    kind = "focus"
    line_items_sql = "focus.sql"


    # ---------------------------------------------------------------- discovery
    def _data_files(self):
        objects, _ = self.store.list("")
        return [o for o in objects if file_format(o.key) and not o.key.lower().endswith("manifest.json")
                and "/_" not in "/" + o.key]

    def _azure_runs(self):
        from apportion.connectors.azure_exports import find_runs

        return find_runs(self.store, self.source, focus_only=True)

    def months(self) -> list[str]:
        runs = self._azure_runs()
        if runs:
            return sorted({r.month for r in runs})
        return months_of_files(self._data_files(), self._months_in_files)

    def _months_in_files(self, objects) -> set[str]:
        """Months of BillingPeriodStart (or ChargePeriodStart) in files whose path names none."""
        return set().union(*self._file_months(objects).values())

    def _file_months(self, objects) -> dict[str, set[str]]:
        """File key -> the months of its rows' BillingPeriodStart (or ChargePeriodStart)."""
        import tempfile

        import duckdb

        found: dict[str, set[str]] = {}
        with tempfile.TemporaryDirectory(prefix="apportion-focus-") as tmp:
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            load_cloud_macros(con)
            try:
                for o in objects:
                    path = Path(tmp) / Path(o.key).name
                    self.store.download(o.key, path)
                    select = focus_file_select(con, o.key, path, 0, **csv_dialect(self.source.options))
                    rows = con.execute(
                        "SELECT DISTINCT strftime(coalesce(apportion_ts(BillingPeriodStart), "
                        f"apportion_ts(ChargePeriodStart)), '%Y-%m') FROM ({select})"
                    ).fetchall()
                    found[o.key] = {r[0] for r in rows if r[0]}
                    path.unlink()
            finally:
                con.close()
        return found

    def plan(self, month: str) -> DeliveryPlan:
        runs = self._azure_runs()
        if runs:
            from apportion.connectors.azure_exports import plan_run

            return plan_run(self.store, self.source, runs, month)
        files = self._data_files()
        partitioned = [o for o in files if PARTITION.search(o.key + "/")]
        if partitioned:
            chosen = [o for o in partitioned if PARTITION.search(o.key).group(1) == month]
            if not chosen:
                raise SourceError(f"no FOCUS data for {month} under {self.source.uri}")
            return _newest_execution(month, chosen)
        labelled = [o for o in files if month_from_path(o.key) == month]
        unlabelled = [o for o in files if month_from_path(o.key) is None]
        # a file whose path names no month joins the months its rows belong to; one with no dated row at
        # all joins every month (its rows are quarantined there, never silently skipped)
        file_months = self._file_months(unlabelled) if unlabelled else {}
        chosen = labelled + [o for o in unlabelled if month in file_months[o.key] or not file_months[o.key]]
        if not labelled and not any(month in file_months[o.key] for o in unlabelled):
            raise SourceError(f"no FOCUS data for {month} under {self.source.uri}")
        return DeliveryPlan(month, "files-" + digest(chosen), chosen, None, "focus-files")

    # ---------------------------------------------------------------- staging
    def stage_sql(self, con, delivery: Delivery) -> str:
        version = self.source.options.get("focus_version")
        prefix = "FOCUS"
        if delivery.layout.startswith("azure-FocusCost"):  # Cost Management says which version it wrote
            from apportion.connectors.azure_exports import FOCUS_DATA_VERSIONS

            version = version or FOCUS_DATA_VERSIONS.get(delivery.layout.split("-", 2)[-1])
            prefix = "Azure FocusCost"
        return stage_focus(con, delivery, self.source.options, forced_version=version, dataset_prefix=prefix)

    def file_select(self, con, key, path, idx):
        return focus_file_select(con, key, path, idx, forced_version=self.source.options.get("focus_version"),
                                 **csv_dialect(self.source.options))


def _newest_execution(month: str, objects) -> DeliveryPlan:
    """AWS Data Exports keep one sub-folder per execution in create-new-version mode: load the newest."""
    groups: dict[str, list] = {}
    for o in objects:
        m = PARTITION.search(o.key)
        rest = o.key[m.end():]
        folder = rest.split("/", 1)[0] if "/" in rest else ""
        groups.setdefault(folder, []).append(o)
    if list(groups) == [""]:
        return DeliveryPlan(month, "overwrite-" + digest(objects), objects, None, "focus-partition")
    newest = max((g for g in groups if g), key=lambda g: (g, max(o.last_modified for o in groups[g])))
    return DeliveryPlan(month, newest, groups[newest], None, "focus-partition-versioned",
                        notes=[f"{len(groups)} executions found; loaded the newest"])
