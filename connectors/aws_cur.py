"""AWS cost exports: CUR 2.0 (Data Exports) and the legacy Cost and Usage Report.

`uri` points at the export root:

* CUR 2.0: `s3://bucket/<prefix>/<export-name>` holding `data/BILLING_PERIOD=YYYY-MM/` and
  `metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json`. Overwrite mode keeps one set of files
  per period; create-new-version mode adds one sub-folder per execution
  (`<ISO time>-<execution id>/`) — only the newest one is current.
* Legacy CUR: `s3://bucket/<prefix>/<report-name>` holding `<yyyymmdd-yyyymmdd>/` period folders
  whose top-level `<report>-Manifest.json` names the current `assemblyId` and its `reportKeys`;
  older assemblies in the same folder are ignored.

Either way AWS re-delivers the whole month-to-date on every refresh, so a month is always
replaced as a whole, never appended to.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import duckdb

from apportion.connectors.base import Connector, Delivery, DeliveryPlan, SourceError
from apportion.connectors.sqltext import quote_ident, quote_literal

# A line item's identity within a month (CUR: identity_line_item_id + identity_time_interval), hashed
# to 128 bits for the per-month memory of earlier files; aws_cur.sql uses the same expression.
IDENTITY_HASH = "md5_number(identity_line_item_id || chr(0) || coalesce(identity_time_interval, ''))"

REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference" / "aws_cur"
PERIOD_PARTITION = re.compile(r"billing_period=(\d{4}-\d{2})", re.I)
LEGACY_PERIOD = re.compile(r"^(\d{4})(\d{2})01-(\d{8})$")
DATA_SUFFIXES = (".parquet", ".csv.gz", ".csv", ".gz", ".csv.zip", ".zip")

# Canonical staging columns (CUR 2.0 snake_case names). Legacy `category/Name` columns map here.
STAGE_COLUMNS = (
    "identity_line_item_id", "identity_time_interval", "bill_invoice_id", "bill_billing_entity",
    "bill_bill_type", "bill_payer_account_id", "bill_payer_account_name", "bill_billing_period_start_date",
    "bill_billing_period_end_date", "bill_invoicing_entity", "line_item_usage_account_id",
    "line_item_usage_account_name", "line_item_line_item_type", "line_item_usage_start_date",
    "line_item_usage_end_date", "line_item_product_code", "line_item_usage_type", "line_item_operation",
    "line_item_availability_zone", "line_item_resource_id", "line_item_usage_amount", "line_item_currency_code",
    "line_item_unblended_rate", "line_item_unblended_cost", "line_item_net_unblended_cost",
    "line_item_line_item_description", "line_item_legal_entity", "line_item_tax_type",
    "pricing_public_on_demand_cost", "pricing_public_on_demand_rate", "pricing_unit", "pricing_term",
    "product_product_name", "product_servicecode", "product_region_code", "product_region", "product_location",
    "product_instance_type", "product_product_family", "product_sku", "product_gpu",
    "reservation_reservation_a_r_n", "reservation_effective_cost",
    "reservation_unused_amortized_upfront_fee_for_billing_period", "reservation_unused_recurring_fee",
    "savings_plan_savings_plan_a_r_n", "savings_plan_savings_plan_effective_cost",
    "savings_plan_total_commitment_to_date", "savings_plan_used_commitment",
)
# Typed at staging, with a per-row problem report instead of a silent NULL.
MONEY_COLUMNS = frozenset({
    "line_item_usage_amount", "line_item_unblended_rate", "line_item_unblended_cost", "line_item_net_unblended_cost",
    "pricing_public_on_demand_cost", "pricing_public_on_demand_rate", "reservation_effective_cost",
    "reservation_unused_amortized_upfront_fee_for_billing_period", "reservation_unused_recurring_fee",
    "savings_plan_savings_plan_effective_cost", "savings_plan_total_commitment_to_date", "savings_plan_used_commitment",
})
TIMESTAMP_COLUMNS = frozenset({
    "bill_billing_period_start_date", "bill_billing_period_end_date", "line_item_usage_start_date",
    "line_item_usage_end_date",
})
NUMERIC_TYPES = ("DOUBLE", "FLOAT", "DECIMAL", "BIGINT", "INTEGER", "HUGEINT", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER")

# Scalars CUR 2.0 keeps only inside its `product` map.
PRODUCT_MAP_KEYS = {
    "product_product_name": "product_name",
    "product_instance_type": "instance_type",
    "product_region_code": "region_code",
    "product_region": "region",
    "product_location": "location",
    "product_gpu": "gpu",
    "product_product_family": "product_family",
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# Spellings seen in the wild for the same column (AWS writes ARN; some generators write Arn).
COLUMN_ALIASES = {
    "savings_plan_savings_plan_arn": "savings_plan_savings_plan_a_r_n",
    "reservation_reservation_arn": "reservation_reservation_a_r_n",
}


def canonical_column(raw: str) -> str:
    """`lineItem/UnblendedCost` -> `line_item_unblended_cost`; snake_case names pass through."""
    if "/" in raw:
        category, name = raw.split("/", 1)
        canon = snake(category) + "_" + snake(name)
    else:
        canon = raw.lower()
    return COLUMN_ALIASES.get(canon, canon)


class AwsCurConnector(Connector):
    kind = "aws_cur"
    line_items_sql = "aws_cur.sql"

    # ---------------------------------------------------------------- discovery
    def _layout(self) -> tuple[str, str]:
        """('cur2', data_root) or ('legacy', '')."""
        forced = self.source.options.get("format")
        _, prefixes = self.store.list("", delimiter="/")
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes}
        if forced == "legacy":
            return "legacy", ""
        if "data" in names:
            return "cur2", ""
        # Some exports land as <prefix>/<export>/<export>/data/... depending on how the prefix was set.
        for p in prefixes:
            _, sub = self.store.list(p, delimiter="/")
            if any(s.rstrip("/").endswith("/data") for s in sub):
                return "cur2", p
        if forced == "cur2":
            return "cur2", ""
        return "legacy", ""

    def months(self) -> list[str]:
        layout, root = self._layout()
        found: set[str] = set()
        if layout == "cur2":
            _, prefixes = self.store.list(root + "data/", delimiter="/")
            for p in prefixes:
                m = PERIOD_PARTITION.search(p)
                if m:
                    found.add(m.group(1))
        else:
            _, prefixes = self.store.list("", delimiter="/")
            for p in prefixes:
                m = LEGACY_PERIOD.match(p.rstrip("/").rsplit("/", 1)[-1])
                if m:
                    found.add(f"{m.group(1)}-{m.group(2)}")
        return sorted(found)

    def plan(self, month: str) -> DeliveryPlan:
        layout, root = self._layout()
        return self._plan_cur2(month, root) if layout == "cur2" else self._plan_legacy(month)

    def _plan_cur2(self, month: str, root: str) -> DeliveryPlan:
        _, periods = self.store.list(root + "data/", delimiter="/")
        period = next((p for p in periods if (m := PERIOD_PARTITION.search(p)) and m.group(1) == month), None)
        if period is None:
            raise SourceError(f"no CUR 2.0 data for {month} under {self.source.uri}/{root}data/")
        objects, _ = self.store.list(period)
        objects = [o for o in objects if o.key.lower().endswith(DATA_SUFFIXES)]
        manifest_key, manifest = self._cur2_manifest(root, month)
        if manifest and manifest.get("dataFiles"):
            wanted = [self._key_from_uri(k, root) for k in manifest["dataFiles"]]
            by_key = {o.key: o for o in objects}
            missing = [k for k in wanted if k not in by_key]
            if missing:
                raise SourceError(f"manifest {manifest_key} names {missing[0]}, which does not exist", file=missing[0])
            chosen = [by_key[k] for k in wanted]
            delivery_id = str(manifest.get("executionId") or _digest(chosen))
            return DeliveryPlan(month, delivery_id, chosen, manifest_key, "cur2")
        # No manifest: overwrite mode has files directly in the period folder, create-new-version
        # mode one sub-folder per execution whose names start with an ISO timestamp.
        versions: dict[str, list] = {}
        for o in objects:
            rel = o.key[len(period):]
            folder = rel.split("/", 1)[0] if "/" in rel else ""
            versions.setdefault(folder, []).append(o)
        if "" in versions and len(versions) == 1:
            chosen = versions[""]
            return DeliveryPlan(month, "overwrite-" + _digest(chosen), chosen, None, "cur2-overwrite")
        newest = max((v for v in versions if v), key=lambda v: (v, max(o.last_modified for o in versions[v])))
        return DeliveryPlan(month, newest, versions[newest], None, "cur2-versioned",
                            notes=[f"{len(versions)} executions found; loaded the newest"])

    def _cur2_manifest(self, root: str, month: str) -> tuple[str | None, dict | None]:
        objects, _ = self.store.list(root + "metadata/")
        candidates = [
            o for o in objects
            if o.key.endswith("Manifest.json") and (m := PERIOD_PARTITION.search(o.key)) and m.group(1) == month
        ]
        if not candidates:
            return None, None
        newest = max(candidates, key=lambda o: (o.last_modified, o.key))
        try:
            return newest.key, json.loads(self.store.read_bytes(newest.key))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"manifest {newest.key} is not valid JSON ({exc})", file=newest.key) from None

    def _key_from_uri(self, uri: str, root: str) -> str:
        """Manifest entries are full s3:// URIs or bucket keys; make them relative to the export root."""
        text = uri.split("://", 1)[-1]
        idx = text.lower().find("/data/billing_period=")
        if idx >= 0:
            return root + text[idx + 1:]
        return text.lstrip("/")

    def _plan_legacy(self, month: str) -> DeliveryPlan:
        _, prefixes = self.store.list("", delimiter="/")
        folder = None
        for p in prefixes:
            m = LEGACY_PERIOD.match(p.rstrip("/").rsplit("/", 1)[-1])
            if m and f"{m.group(1)}-{m.group(2)}" == month:
                folder = p
        if folder is None:
            raise SourceError(f"no legacy CUR period folder for {month} under {self.source.uri}")
        objects, subdirs = self.store.list(folder, delimiter="/")
        manifests = [o for o in objects if o.key.endswith("-Manifest.json")]
        if not manifests:
            data = [o for o in objects if o.key.lower().endswith(DATA_SUFFIXES)]
            if not data:
                raise SourceError(f"period folder {folder} has neither a manifest nor data files")
            return DeliveryPlan(month, "overwrite-" + _digest(data), data, None, "legacy-overwrite",
                                notes=["no period manifest: loaded the files in the period folder"])
        manifest_key = manifests[0].key
        try:
            manifest = json.loads(self.store.read_bytes(manifest_key))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"manifest {manifest_key} is not valid JSON ({exc})", file=manifest_key) from None
        keys = manifest.get("reportKeys") or []
        if not keys:
            raise SourceError(f"manifest {manifest_key} lists no reportKeys", file=manifest_key)
        period_name = folder.rstrip("/").rsplit("/", 1)[-1]
        wanted = []
        for k in keys:
            idx = k.find(period_name + "/")
            wanted.append(folder + k[idx + len(period_name) + 1:] if idx >= 0 else k.lstrip("/"))
        listed, _ = self.store.list(folder)
        by_key = {o.key: o for o in listed}
        missing = [k for k in wanted if k not in by_key]
        if missing:
            raise SourceError(f"manifest {manifest_key} names {missing[0]}, which does not exist", file=missing[0])
        assembly = manifest.get("assemblyId") or _digest([by_key[k] for k in wanted])
        others = {s.rstrip("/").rsplit("/", 1)[-1] for s in subdirs} - {assembly}
        notes = [f"ignored {len(others)} older assemblies"] if others else []
        return DeliveryPlan(month, assembly, [by_key[k] for k in wanted], manifest_key, "legacy", notes=notes)

    # ---------------------------------------------------------------- staging
    # AWS already cuts a month into files (CUR 2.0: a few million rows each): building them one at a
    # time bounds memory whatever the size of the month.
    stages_per_file = True

    def reference_tables(self) -> dict[str, Path]:
        """ref_aws_services: product code -> ServiceName, ServiceCategory, ServiceSubcategory."""
        return {"ref_aws_services": REFERENCE / "services.csv"}

    def stage_sql(self, con, delivery: Delivery, only: list[int] | None = None) -> str:
        """Create view `stg_aws_cur`: one row per raw row, canonical column names, lineage columns."""
        selects = [self.file_select(con, key, path, idx) for idx, (key, path) in enumerate(delivery.files)
                   if only is None or idx in only]
        con.execute("CREATE OR REPLACE TEMP VIEW stg_aws_cur AS\n" + "\nUNION ALL BY NAME\n".join(selects))
        self._remember_earlier_files(con, delivery, min(only) if only else 0)
        return "stg_aws_cur"

    def _remember_earlier_files(self, con, delivery: Delivery, upto: int) -> None:
        """Temp tables `aws_cur_seen` / `aws_cur_seen_files`: the line-item identities of files 0..upto-1.

        A month is built one file at a time, but a line item re-delivered under another file name
        (AWS does re-deliver parts) must still be counted once: aws_cur.sql quarantines every row whose
        (identity_line_item_id, identity_time_interval) an earlier file already holds. Only a 128-bit
        hash of the identity and where it was first seen are kept (the first occurrence per identity),
        and each earlier file is read once more, for those two columns only."""
        key = f"{delivery.month}\0{delivery.delivery_id}\0" + "\0".join(k for k, _ in delivery.files)
        try:
            done, same = con.execute(
                "SELECT count(*), coalesce(bool_and(delivery = ?), true) FROM aws_cur_seen_files", [key]
            ).fetchone()
        except duckdb.CatalogException:
            done, same = None, False
        if done is None or not same or done > upto:
            con.execute("CREATE OR REPLACE TEMP TABLE aws_cur_seen_files "
                        "(_file_idx INTEGER, _file VARCHAR, delivery VARCHAR)")
            con.execute("CREATE OR REPLACE TEMP TABLE aws_cur_seen (k UHUGEINT, _file_idx INTEGER, _row BIGINT)")
            done = 0
        for idx in range(done, upto):
            file_key, path = delivery.files[idx]
            con.execute(
                "INSERT INTO aws_cur_seen SELECT t.k, any_value(t._file_idx), min(t._row) FROM ("
                f"SELECT {IDENTITY_HASH} AS k, _file_idx, _row FROM ({self.file_select(con, file_key, path, idx)}) "
                "WHERE identity_line_item_id IS NOT NULL) AS t "
                "ANTI JOIN aws_cur_seen AS s ON s.k = t.k GROUP BY t.k"
            )
            con.execute("INSERT INTO aws_cur_seen_files VALUES (?, ?, ?)", [idx, file_key, key])

    def file_select(self, con, key: str, path: Path, file_idx: int) -> str:
        if path.name.lower().endswith(".zip"):
            path = _unzipped(path, key)
        reader = _reader(path)
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
        except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
            raise SourceError(f"cannot read {key}: {_first_line(exc)}", file=key) from None
        types = {name: typ for name, typ, *_ in described}
        by_canon: dict[str, str] = {}
        tag_cols = cc_cols = 0
        for name in types:
            low = name.lower()
            if name.startswith("resourceTags/") or (low.startswith("resource_tags_") and low != "resource_tags"):
                tag_cols += 1
            elif name.startswith("costCategory/") or (low.startswith("cost_category_") and low != "cost_category"):
                cc_cols += 1
            else:
                by_canon.setdefault(canonical_column(name), name)
        if "line_item_unblended_cost" not in by_canon:
            raise SourceError(f"{key} has no unblended cost column: not a CUR file?", file=key)

        product_map = by_canon.get("product") if types.get(by_canon.get("product", ""), "").startswith("MAP") else None
        product_json = by_canon.get("product") if product_map is None else None
        parts = [f"{quote_literal(key)} AS _file", f"{int(file_idx)} AS _file_idx"]
        if path.name.lower().endswith(".parquet"):
            parts.append("file_row_number + 1 AS _row")
        else:
            parts.append("row_number() OVER () AS _row")
        problems = []
        for canon in STAGE_COLUMNS:
            raw = by_canon.get(canon)
            typ = types.get(raw, "VARCHAR") if raw else "VARCHAR"
            ref = quote_ident(raw) if raw else None
            if canon in MONEY_COLUMNS:
                if ref and typ.startswith(("DOUBLE", "FLOAT")):
                    # via the shortest text that round-trips: 0.1 stays 0.1, not 0.1000000000000000055...
                    expr = f"TRY_CAST(CAST({ref} AS VARCHAR) AS DECIMAL(38, 12))"
                else:
                    expr = f"TRY_CAST({ref} AS DECIMAL(38, 12))" if ref else "CAST(NULL AS DECIMAL(38, 12))"
                if ref:
                    blank = "" if typ.startswith(NUMERIC_TYPES) else f" AND {ref} <> ''"
                    problems.append((f"{ref} IS NOT NULL{blank} AND {expr} IS NULL",
                                     f"'non-numeric {canon} ' || CAST({ref} AS VARCHAR)"))
            elif canon in TIMESTAMP_COLUMNS:
                expr = f"TRY_CAST({ref} AS TIMESTAMPTZ)" if ref else "CAST(NULL AS TIMESTAMPTZ)"
                if ref and not typ.startswith("TIMESTAMP"):
                    problems.append((f"{ref} IS NOT NULL AND {ref} <> '' AND {expr} IS NULL",
                                     f"'unparseable {canon} ' || CAST({ref} AS VARCHAR)"))
            else:
                expr = f"nullif(CAST({ref} AS VARCHAR), '')" if ref else "CAST(NULL AS VARCHAR)"
                if canon in PRODUCT_MAP_KEYS:
                    mk = quote_literal(PRODUCT_MAP_KEYS[canon])
                    if product_map:
                        expr = f"coalesce({expr}, nullif({quote_ident(product_map)}[{mk}], ''))"
                    elif product_json:
                        path_lit = quote_literal("$." + PRODUCT_MAP_KEYS[canon])
                        expr = (f"coalesce({expr}, nullif(json_extract_string(TRY_CAST({quote_ident(product_json)} "
                                f"AS JSON), {path_lit}), ''))")
            parts.append(f"{expr} AS {canon}")
        if problems:
            parts.append("CASE " + " ".join(f"WHEN {cond} THEN {msg}" for cond, msg in problems) + " END AS _bad")
        else:
            parts.append("CAST(NULL AS VARCHAR) AS _bad")
        parts.append(f"{_map_expr(types, by_canon.get('resource_tags'), tag_cols, '^(resourceTags/|resource_tags_)')} AS resource_tags")
        parts.append(f"{_map_expr(types, by_canon.get('cost_category'), cc_cols, '^(costCategory/|cost_category_)')} AS cost_category")
        raw_tags = by_canon.get("resource_tags")
        parts.append(f"CAST({quote_ident(raw_tags)} AS VARCHAR) AS resource_tags_raw" if raw_tags else "NULL::VARCHAR AS resource_tags_raw")
        select = f"SELECT {', '.join(parts)} FROM {reader}"
        if path.name.lower().endswith(".parquet"):
            return select
        return f"SELECT * FROM {_staged(con, select, key)}"


def _map_expr(types: dict[str, str], map_col: str | None, n_flat: int, flat_regex: str) -> str:
    """A MAP(VARCHAR, VARCHAR) of raw keys -> values, from a MAP column, a JSON column or flat columns."""
    if map_col:
        typ = types[map_col]
        if typ.startswith("MAP"):
            return f"CAST({quote_ident(map_col)} AS MAP(VARCHAR, VARCHAR))"
        # CSV delivers map columns as JSON text; malformed text becomes NULL and is quarantined later.
        return f"TRY_CAST(TRY_CAST(nullif(trim({quote_ident(map_col)}), '') AS JSON) AS MAP(VARCHAR, VARCHAR))"
    if n_flat:
        # *COLUMNS keeps the tag keys out of the SQL text: they arrive as struct field names.
        return f"CAST(to_json(struct_pack(*COLUMNS('{flat_regex}'))) AS MAP(VARCHAR, VARCHAR))"
    return "MAP {}::MAP(VARCHAR, VARCHAR)"


def _unzipped(path: Path, key: str) -> Path:
    """Legacy CUR may be ZIP-compressed; DuckDB reads gzip only, so extract beside the raw file once."""
    import zipfile

    out = path.with_name(path.name + ".extracted.csv")
    if out.exists():
        return out
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise SourceError(f"{key}: expected one CSV in the ZIP, found {len(members)}", file=key)
            with zf.open(members[0]) as src, open(out.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise SourceError(f"cannot read {key}: {exc}", file=key) from None
    out.with_suffix(".part").replace(out)
    return out


def _staged(con, select: str, key: str) -> str:
    """A CSV file's staged rows (canonical columns, typed, numbered) as a temp table, parsed once per connection.

    Every pass over a month reads its files again (the duplicate check of later files, the FOCUS mapping and
    its distinct-services lookup, the quarantine): over CSV each pass re-parsed the text and numbered the rows
    with a window over the whole file, 4 parses of a 736 MiB legacy CUR. The table is named by a digest of the
    staging SQL (which names the file) and spills to the warehouse's temp folder under the memory limit; it
    goes with the connection, and the raw zone keeps only what was delivered."""
    table = "aws_cur_staged_" + hashlib.sha256(select.encode()).hexdigest()[:16]
    if con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [table]).fetchone()[0]:
        return table
    try:
        con.execute(f"CREATE TEMP TABLE {table} AS {select}")
    except duckdb.Error as exc:
        con.execute(f"DROP TABLE IF EXISTS {table}")
        raise SourceError(f"cannot read {key}: {_first_line(exc)}", file=key) from None
    return table


def _reader(path: Path) -> str:
    p = quote_literal(str(path))
    if path.name.lower().endswith(".parquet"):
        return f"read_parquet({p}, file_row_number = true)"
    # Explicit dialect: CUR headers are long and the sniffer gives up on real files with ragged rows.
    return (f"read_csv({p}, all_varchar = true, header = true, compression = 'auto', delim = ',', "
            "quote = '\"', escape = '\"', null_padding = true, strict_mode = false)")


def _digest(objects) -> str:
    h = hashlib.sha1()
    for o in sorted(objects, key=lambda o: o.key):
        h.update(f"{o.key}\0{o.etag}\0".encode())
    return h.hexdigest()[:16]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300]


