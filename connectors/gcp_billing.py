"""Google Cloud Billing export: the BigQuery tables, or the same export copied to files (GCS or a folder).

* `uri: bigquery://<project>/<dataset>/<table>` — the standard (`gcp_billing_export_v1_<ACCOUNT>`) or
  detailed (`gcp_billing_export_resource_v1_<ACCOUNT>`) export, read with google-cloud-bigquery per
  `invoice.month`. The tables are append-only and late rows keep arriving, so every landing re-runs
  the query (the nightly job rebuilds the current and the previous month, `open_months: 2`); the
  result pages are landed as received (JSON) and identical content is the same delivery. Options:
  `billing_project` (project that runs the query; default the table's), `location`, `api_endpoint`
  (another endpoint, e.g. an emulator), `anonymous: true` (no credentials, for emulators),
  `page_size`, `catalog: true` (also land the Cloud Billing Catalog SKUs of the month's services and
  the billing account's name, google-cloud-billing; `catalog_endpoint` for another endpoint).
  Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, gcloud).
* `uri: gs://bucket/prefix` (google-cloud-storage; `options.endpoint_url` or STORAGE_EMULATOR_HOST for
  an emulator), `s3://...`, or a local folder: the export copied as Parquet, JSON lines (BigQuery's
  NEWLINE_DELIMITED_JSON) or CSV with dotted column names (`service.description`, REPEATED fields as
  lists). The month comes from the path (`2026-10`, `202610`, `invoice_month=202610`) or from the
  rows' `invoice.month`; rows of other months are left to their own month.

Every input is reduced to one JSON document per export row (the BigQuery row shape), so one SQL file
maps all of them (`sql/line_items/gcp_billing.sql`). Services are classified by our table
`models/reference/gcp_billing/services.csv`; a service it lacks is kept as Other with the provider's own
name in ServiceName and `x_UnmappedService`.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path
from urllib.parse import urlparse

from apportion.connectors.base import Connector, Delivery, DeliveryPlan, SourceError
from apportion.connectors.cloudfiles import (
    digest,
    file_format,
    first_line,
    land_blobs,
    load_cloud_macros,
    month_from_path,
    months_of_files,
    quote_literal,
)

REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference" / "gcp_billing"
TABLE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
PROJECT_NAME = re.compile(r"^[a-z0-9.:-]+$")
EXPORT_FIELDS = ("billing_account_id", "service", "sku", "usage_start_time", "usage_end_time", "project", "labels",
                 "system_labels", "tags", "location", "resource", "export_time", "cost", "currency",
                 "currency_conversion_rate", "usage", "credits", "invoice", "cost_type", "adjustment_info",
                 "cost_at_list", "transaction_type", "seller_name", "price", "subscription", "consumption_model")


class GcpBillingConnector(Connector):
    kind = "gcp_billing"
    line_items_sql = "gcp_billing.sql"

    @property
    def is_bigquery(self) -> bool:
        return urlparse(self.source.uri).scheme.lower() == "bigquery"


    # ================================================================ BigQuery
    def _table(self) -> tuple[str, str, str]:
        parsed = urlparse(self.source.uri)
        parts = [p for p in (parsed.netloc + parsed.path).split("/") if p]
        if len(parts) != 3 or not PROJECT_NAME.match(parts[0]) or not all(TABLE_NAME.match(p) for p in parts[1:]):
            raise SourceError(f"{self.source.uri}: expected bigquery://<project>/<dataset>/<table>")
        return parts[0], parts[1], parts[2]

    def _client(self):
        from google.cloud import bigquery

        project, _, _ = self._table()
        opts = self.source.options
        kwargs = {"project": opts.get("billing_project") or project}
        if opts.get("api_endpoint"):
            kwargs["client_options"] = {"api_endpoint": opts["api_endpoint"]}
        if opts.get("anonymous"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        if opts.get("location"):
            kwargs["location"] = opts["location"]
        return bigquery.Client(**kwargs)

    def _query(self, sql: str, params: list) -> list[dict]:
        """Run a query; return the result pages exactly as the REST API sent them."""
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        client = self._client()
        try:
            rows = client.query_and_wait(sql, job_config=bigquery.QueryJobConfig(query_parameters=params),
                                         page_size=int(self.source.options.get("page_size", 50000)))
            pages = [dict(page.raw_page) if isinstance(page.raw_page, dict) else page.raw_page for page in rows.pages]
        except gexc.GoogleAPICallError as exc:
            raise SourceError(f"BigQuery query on {self.source.uri} failed: {first_line(exc)}") from None
        finally:
            client.close()
        return pages

    def _bq_months(self) -> list[str]:
        project, dataset, table = self._table()
        sql = (f"SELECT DISTINCT invoice.month AS invoice_month FROM `{project}.{dataset}.{table}` "
               "WHERE invoice.month IS NOT NULL ORDER BY invoice_month")
        months = set()
        for page in self._query(sql, []):
            for row in page.get("rows") or []:
                value = (row.get("f") or [{}])[0].get("v")
                if value and re.fullmatch(r"\d{6}", str(value)):
                    months.add(f"{value[:4]}-{value[4:]}")
        return sorted(months)

    def _land_bigquery(self, month: str, raw_root: Path) -> Delivery:
        from google.cloud import bigquery

        project, dataset, table = self._table()
        sql = (f"SELECT TO_JSON_STRING(t) AS row_json FROM `{project}.{dataset}.{table}` AS t "
               "WHERE t.invoice.month = @invoice_month")
        pages = self._query(sql, [bigquery.ScalarQueryParameter("invoice_month", "STRING", month.replace("-", ""))])
        blobs = {f"pages/page-{i:05d}.json": json.dumps(p, sort_keys=True).encode() for i, p in enumerate(pages, 1)}
        if not any(p.get("rows") for p in pages):
            raise SourceError(f"{self.source.uri} has no rows for invoice month {month}")
        if self.source.options.get("catalog"):
            services, accounts = set(), set()
            for page in pages:
                for row in page.get("rows") or []:
                    doc = json.loads(row["f"][0]["v"])
                    services.add(((doc.get("service") or {}).get("id") or "").strip())
                    accounts.add((doc.get("billing_account_id") or "").strip())
            blobs.update(self._catalog_pages(sorted(services - {""}), sorted(accounts - {""})))
        return land_blobs(self, month, raw_root, blobs, "bigquery-pages", prefix="bq")

    def _catalog_pages(self, services: list[str], accounts: list[str]) -> dict[str, bytes]:
        """Cloud Billing Catalog SKUs of the month's services and the billing accounts' names, as received."""
        from google.api_core import exceptions as gexc
        from google.cloud import billing_v1

        opts = self.source.options
        kwargs: dict = {"transport": "rest"}
        if opts.get("catalog_endpoint"):
            kwargs["client_options"] = {"api_endpoint": opts["catalog_endpoint"]}
        if opts.get("anonymous"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        blobs: dict[str, bytes] = {}
        try:
            catalog = billing_v1.CloudCatalogClient(**kwargs)
            for sid in services:
                if not re.fullmatch(r"[A-Za-z0-9-]+", sid):
                    continue
                for n, page in enumerate(catalog.list_skus(parent=f"services/{sid}").pages, 1):
                    blobs[f"catalog/skus-{sid}-{n:03d}.json"] = billing_v1.ListSkusResponse.to_json(page).encode()
            billing = billing_v1.CloudBillingClient(**kwargs)
            for account in accounts:
                if re.fullmatch(r"[A-Za-z0-9-]+", account):
                    info = billing.get_billing_account(name=f"billingAccounts/{account}")
                    blobs[f"catalog/billing-account-{account}.json"] = billing_v1.BillingAccount.to_json(info).encode()
        except gexc.GoogleAPICallError as exc:
            raise SourceError(f"Cloud Billing Catalog / billing account lookup failed: {first_line(exc)}") from None
        return blobs

    # ================================================================ files
    def _data_files(self):
        objects, _ = self.store.list("")
        return [o for o in objects if file_format(o.key) and "/_" not in "/" + o.key]

    def months(self) -> list[str]:
        if self.is_bigquery:
            return self._bq_months()
        return months_of_files(self._data_files(), self._months_in_files)

    def _months_in_files(self, objects) -> set[str]:
        import tempfile

        import duckdb

        found: set[str] = set()
        with tempfile.TemporaryDirectory(prefix="apportion-gcp-") as tmp:
            con = duckdb.connect()
            try:
                for idx, o in enumerate(objects):
                    path = Path(tmp) / f"{idx}-{Path(o.key).name}"
                    self.store.download(o.key, path)
                    relation = stage_files(con, [(o.key, path)], "probe")
                    rows = con.execute(f"SELECT DISTINCT CAST(row_json AS JSON) -> 'invoice' ->> 'month' FROM {relation}"
                                       ).fetchall()
                    found |= {f"{r[0][:4]}-{r[0][4:6]}" for r in rows if r[0] and re.fullmatch(r"\d{6}", r[0])}
            finally:
                con.close()
        return found

    def plan(self, month: str) -> DeliveryPlan:
        files = self._data_files()
        chosen = [o for o in files if month_from_path(o.key) in (month, None)]
        unlabelled = [o for o in chosen if month_from_path(o.key) is None]
        if not any(month_from_path(o.key) == month for o in chosen) and (
                not unlabelled or month not in self._months_in_files(unlabelled)):
            raise SourceError(f"no GCP billing export rows for {month} under {self.source.uri}")
        return DeliveryPlan(month, "files-" + digest(chosen), chosen, None, "gcp-files")

    def land(self, month: str, raw_root: Path) -> Delivery:
        if self.is_bigquery:
            return self._land_bigquery(month, raw_root)
        return super().land(month, raw_root)

    # ================================================================ staging
    def reference_tables(self) -> dict[str, Path]:
        """ref_gcp_services: service.description -> ServiceName, ServiceCategory, ServiceSubcategory."""
        return {"ref_gcp_services": REFERENCE / "services.csv"}

    def stage_sql(self, con, delivery: Delivery) -> str:
        load_cloud_macros(con)
        load_catalog(con, [(k, p) for k, p in delivery.files if k.startswith("catalog/")])
        return stage_files(con, [(k, p) for k, p in delivery.files if not k.startswith("catalog/")], "stg_gcp_billing")

    def file_select(self, con, key, path, idx):
        """One file's rows (used to name the unreadable file when the combined read fails)."""
        if key.startswith("catalog/"):
            load_catalog(con, [(key, path)])
            return "SELECT 1"
        if (file_format(path.name) or "csv") == "csv":
            _flattened_csv_rows(key, path, idx)
            return "SELECT 1"
        return _file_select(con, key, path, idx)


def load_catalog(con, files) -> None:
    """Temp tables gcp_catalog_skus (single-tier list prices) and gcp_billing_accounts (names); empty without files."""
    from decimal import Decimal

    import pyarrow as pa

    skus, accounts = [], []
    for key, path in files:
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"{key} is not valid JSON ({exc})", file=key) from None
        if key.startswith("catalog/skus-"):
            for sku in doc.get("skus") or []:
                price = currency = None
                info = (sku.get("pricingInfo") or [{}])[-1]  # the newest pricing info
                tiers = (info.get("pricingExpression") or {}).get("tieredRates") or []
                if len(tiers) == 1:  # a tiered price depends on the month's cumulative usage: not guessed
                    unit = tiers[0].get("unitPrice") or {}
                    price = Decimal(str(unit.get("units") or 0)) + Decimal(int(unit.get("nanos") or 0)) / Decimal(10**9)
                    currency = unit.get("currencyCode")
                cat = sku.get("category") or {}
                skus.append((sku.get("skuId"), cat.get("serviceDisplayName"), cat.get("resourceFamily"),
                             cat.get("resourceGroup"), price, currency))
        elif key.startswith("catalog/billing-account-"):
            accounts.append(((doc.get("name") or "").split("/")[-1], doc.get("displayName") or None))
    con.register("gcp_skus_arrow", pa.table({
        "sku_id": pa.array([s[0] for s in skus], pa.string()),
        "service_display_name": pa.array([s[1] for s in skus], pa.string()),
        "resource_family": pa.array([s[2] for s in skus], pa.string()),
        "resource_group": pa.array([s[3] for s in skus], pa.string()),
        "list_unit_price": pa.array([s[4] for s in skus], pa.decimal128(38, 12)),
        "price_currency": pa.array([s[5] for s in skus], pa.string()),
    }))
    con.execute("CREATE OR REPLACE TEMP TABLE gcp_catalog_skus AS SELECT DISTINCT ON (sku_id) * FROM gcp_skus_arrow")
    con.unregister("gcp_skus_arrow")
    con.register("gcp_accounts_arrow", pa.table({"billing_account_id": pa.array([a[0] for a in accounts], pa.string()),
                                                 "display_name": pa.array([a[1] for a in accounts], pa.string())}))
    con.execute("CREATE OR REPLACE TEMP TABLE gcp_billing_accounts AS SELECT * FROM gcp_accounts_arrow")
    con.unregister("gcp_accounts_arrow")


def stage_files(con, files, view: str) -> str:
    """View of (_file, _file_idx, _row, row_json) over BigQuery result pages, JSONL, Parquet and CSV files."""
    selects = []
    csv_rows = []
    for idx, (key, path) in enumerate(files):
        if (file_format(path.name) or "csv") == "csv":
            csv_rows.extend(_flattened_csv_rows(key, path, idx))
        else:
            selects.append(_file_select(con, key, path, idx))
    if csv_rows:
        import pyarrow as pa

        table = pa.table({"_file": [r[0] for r in csv_rows], "_file_idx": [r[1] for r in csv_rows],
                          "_row": [r[2] for r in csv_rows], "row_json": [r[3] for r in csv_rows]})
        con.register(f"{view}_csv_arrow", table)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {view}_csv AS SELECT * FROM {view}_csv_arrow")
        con.unregister(f"{view}_csv_arrow")
        selects.append(f"SELECT _file, _file_idx, _row, row_json FROM {view}_csv")
    if not selects:
        raise SourceError("the delivery has no data files")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS\n" + "\nUNION ALL\n".join(selects))
    return view


def _file_select(con, key: str, path: Path, idx: int) -> str:
    p = quote_literal(str(path))
    k = quote_literal(key)
    fmt = file_format(path.name)
    if fmt == "json" and key.startswith("pages/page-"):
        # BigQuery REST result page: rows[].f[0].v is the row's TO_JSON_STRING text
        select = (f"SELECT {k} AS _file, {int(idx)} AS _file_idx, unnest(generate_series(1, len(rows))) AS _row, "
                  f"unnest(rows).f[1].v AS row_json FROM read_json({p}, columns = "
                  "{'rows': 'STRUCT(f STRUCT(v VARCHAR)[])[]'})")
    elif fmt == "json":
        select = (f"SELECT {k} AS _file, {int(idx)} AS _file_idx, row_number() OVER () AS _row, "
                  f"CAST(json AS VARCHAR) AS row_json FROM read_ndjson_objects({p})")
    elif fmt == "parquet":
        select = (f"SELECT {k} AS _file, {int(idx)} AS _file_idx, t.file_row_number + 1 AS _row, "
                  f"CAST(to_json(t) AS VARCHAR) AS row_json FROM read_parquet({p}, file_row_number = true) AS t")
    else:
        raise SourceError(f"{key}: unsupported file type", file=key)
    try:
        con.execute(f"SELECT count(*) FROM ({select})").fetchall()
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        raise SourceError(f"cannot read {key}: {first_line(exc)}", file=key) from None
    return select


def _flattened_csv_rows(key: str, path: Path, idx: int) -> list[tuple]:
    """A BigQuery export flattened to CSV (`service.description`, REPEATED fields as Python or JSON lists).

    Each row becomes the nested JSON document BigQuery would give; a list that cannot be parsed is
    kept as text, so the row is quarantined ('malformed labels' ...) instead of losing its labels.
    """
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    out = []
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "cost" not in [f.strip() for f in reader.fieldnames]:
                raise SourceError(f"{key} has no cost column: not a GCP billing export", file=key)
            for n, row in enumerate(reader, 1):
                doc: dict = {}
                for name, value in row.items():
                    if name is None:
                        continue
                    parts = name.strip().split(".")
                    if value is not None and value.strip()[:1] in ("[", "{"):
                        value = _parse_structured(value)
                    elif value == "":
                        value = None
                    cur = doc
                    for part in parts[:-1]:
                        nxt = cur.get(part)
                        if not isinstance(nxt, dict):
                            nxt = cur[part] = {}
                        cur = nxt
                    cur[parts[-1]] = value
                out.append((key, idx, n, json.dumps(doc)))
    except (UnicodeDecodeError, csv.Error, OSError, EOFError) as exc:
        raise SourceError(f"cannot read {key}: {exc}", file=key) from None
    return out


def _parse_structured(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, (list, dict)) else text
