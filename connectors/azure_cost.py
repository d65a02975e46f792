"""Azure Cost Management exports: ActualCost, AmortizedCost (EA and MCA column sets) and FocusCost.

`uri` points at the export's container and root folder: `az://<container>/<root>` with the storage
account from `options.account_url` (or AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT),
`https://<account>.blob.core.windows.net/<container>/<root>`, or a local folder holding a copy.

Runs are found by their `manifest.json` — never by guessing folder names, whose order differs
between export versions (`<export>/<YYYYMMDD-YYYYMMDD>/<run time>/<run id>/` or
`<YYYYMMDD-YYYYMMDD>/<export>/...`). Each run is a complete month-to-date snapshot, so only the
newest run of a period is loaded (by `runInfo.submittedTime`, else the run-time folder). The
manifest's `blobs[]` are the run's files (CSV, CSV.gz, Parquet); a missing one is an error. Exports
older than manifests (one CSV per run in the period folder) fall back to the newest file.

Several exports in one root (ActualCost and AmortizedCost side by side) would count the month
twice: set `options.export_name` to pick one; without it apportion refuses to guess.

FocusCost runs are mapped with the native FOCUS mapping (`connectors.focus`).

`AzureCostManagement` wraps azure-mgmt-costmanagement for the API side: list exports, run one now,
and the Cost Details report (an asynchronous CSV report of actual or amortized cost). With
`uri: https://management.azure.com/<scope>` a source lands each month from a Cost Details report
instead of exports (options `metric`, `since`); credentials from azure-identity.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from apportion.connectors.azure_exports import FOCUS_DATA_VERSIONS, PERIOD_FOLDER, find_runs, plan_run
from apportion.connectors.base import Connector, Delivery, DeliveryPlan, SourceError
from apportion.connectors.cloudfiles import (
    column_picker,
    describe,
    digest,
    file_format,
    land_blobs,
    load_cloud_macros,
    quote_ident,
    quote_literal,
    reader_sql,
    row_number_sql,
    varchar_expr,
)

# Our own reference tables (how a row is added: models/reference/README.md):
# services.csv, pricing_units.csv, regions.csv.
REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference" / "azure_cost"
# FocusCost ServiceName values that our services table does not name but whose subcategory is a fact:
# Azure OpenAI deployments are generative AI (the same rule the ActualCost SQL applies to its meters).
FOCUS_EXTRA_SUBCATEGORIES = (("Azure OpenAI", "Generative AI"),)

# canonical staging column -> header spellings seen in EA, MCA, v1 (PreTaxCost) and camelCase exports.
AZURE_ALIASES: dict[str, tuple[str, ...]] = {
    "billing_account_id": ("BillingAccountId",),
    "billing_account_name": ("BillingAccountName",),
    "billing_profile_id": ("BillingProfileId",),
    "billing_profile_name": ("BillingProfileName",),
    "billing_period_start": ("BillingPeriodStartDate", "BillingPeriodStart"),
    "billing_period_end": ("BillingPeriodEndDate", "BillingPeriodEnd"),
    "invoice_id": ("InvoiceId",),
    "invoice_section_name": ("InvoiceSectionName", "InvoiceSection"),
    "account_name": ("AccountName",),
    "subscription_id": ("SubscriptionId", "SubscriptionGuid"),
    "subscription_name": ("SubscriptionName",),
    "resource_group": ("ResourceGroup", "ResourceGroupName"),
    "resource_location": ("ResourceLocation", "Location"),
    "date": ("Date", "UsageDateTime", "UsageDate"),
    "product": ("Product", "ProductName"),
    "meter_id": ("MeterId",),
    "meter_category": ("MeterCategory",),
    "meter_subcategory": ("MeterSubCategory", "MeterSubcategory"),
    "meter_name": ("MeterName",),
    "meter_region": ("MeterRegion",),
    "service_family": ("ServiceFamily",),
    "part_number": ("PartNumber",),
    "quantity": ("Quantity", "UsageQuantity"),
    "effective_price": ("EffectivePrice",),
    "unit_price": ("UnitPrice", "ResourceRate"),
    "payg_price": ("PayGPrice",),
    "cost": ("CostInBillingCurrency", "Cost", "PreTaxCost"),
    "exchange_rate": ("ExchangeRatePricingToBilling",),
    "payg_cost": ("PaygCostInBillingCurrency",),
    "billing_currency": ("BillingCurrencyCode", "BillingCurrency", "Currency"),
    "pricing_currency": ("PricingCurrencyCode", "PricingCurrency"),
    "consumed_service": ("ConsumedService",),
    "resource_id": ("ResourceId", "InstanceId", "InstanceName"),
    "resource_name": ("ResourceName",),
    "resource_type": ("ResourceType",),
    "additional_info": ("AdditionalInfo",),
    "tags": ("Tags",),
    "cost_center": ("CostCenter",),
    "unit_of_measure": ("UnitOfMeasure",),
    "reservation_id": ("ReservationId",),
    "reservation_name": ("ReservationName",),
    "product_order_name": ("ProductOrderName",),
    "publisher_name": ("PublisherName",),
    "publisher_type": ("PublisherType",),
    "charge_type": ("ChargeType",),
    "frequency": ("Frequency",),
    "pricing_model": ("PricingModel",),
    "availability_zone": ("AvailabilityZone",),
    "benefit_id": ("benefitId", "BenefitId"),
    "benefit_name": ("benefitName", "BenefitName"),
}
FOCUS_MARKERS = ("billedcost", "chargecategory", "effectivecost")


class AzureCostConnector(Connector):
    kind = "azure_cost"
    line_items_sql = "azure_cost.sql"

    def __init__(self, source):
        super().__init__(source)
        self._focus_deliveries: set[str] = set()  # FocusCost exports among the deliveries staged


    # ---------------------------------------------------------------- Cost Details API mode
    @property
    def is_cost_details(self) -> bool:
        """`uri: https://management.azure.com/<scope>`: pull a Cost Details report per month instead of exports."""
        parsed = urlparse(self.source.uri)
        return self.source.options.get("mode") == "cost_details" or (
            parsed.scheme in ("http", "https") and parsed.netloc.lower().startswith("management."))

    def _cost_details_months(self) -> list[str]:
        today = datetime.now(timezone.utc).date()
        first = str(self.source.options.get("since") or f"{today.year - (today.month == 1)}-"
                    f"{(today.month - 2) % 12 + 1:02d}")
        y, m = map(int, first.split("-"))
        months = []
        while (y, m) <= (today.year, today.month):
            months.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return months

    def _land_cost_details(self, month: str, raw_root: Path) -> Delivery:
        import calendar

        import requests

        parsed = urlparse(self.source.uri)
        metric = str(self.source.options.get("metric", "ActualCost"))
        if metric not in ("ActualCost", "AmortizedCost"):
            raise SourceError(f"options.metric must be ActualCost or AmortizedCost, not {metric!r}")
        y, m = map(int, month.split("-"))
        today = datetime.now(timezone.utc).date()
        last = calendar.monthrange(y, m)[1]
        if (y, m) == (today.year, today.month):
            last = today.day
        api = AzureCostManagement(parsed.path, management_credential(), base_url=f"{parsed.scheme}://{parsed.netloc}",
                                  polling_interval=self.source.options.get("polling_interval"))
        links = api.cost_details_report(f"{month}-01", f"{month}-{last:02d}", metric)
        if not links:
            raise SourceError(f"the Cost Details report for {parsed.path} {month} has no files")
        blobs = {}
        for i, link in enumerate(links, 1):
            where = urlparse(link)
            shown = f"{where.netloc}{where.path}"  # never the SAS query string
            try:
                resp = requests.get(link, timeout=600)
            except requests.RequestException as exc:
                raise SourceError(f"cannot download Cost Details file {shown}: {type(exc).__name__}") from None
            if resp.status_code != 200:
                raise SourceError(f"cannot download Cost Details file {shown}: HTTP {resp.status_code}", file=shown)
            blobs[f"costdetails/{i:03d}-{Path(where.path).name or 'part.csv'}"] = resp.content
        return land_blobs(self, month, raw_root, blobs, f"azure-costdetails-{metric}", prefix="costdetails")

    def land(self, month: str, raw_root: Path) -> Delivery:
        if self.is_cost_details:
            return self._land_cost_details(month, raw_root)
        return super().land(month, raw_root)

    # ---------------------------------------------------------------- discovery
    def months(self) -> list[str]:
        if self.is_cost_details:
            return self._cost_details_months()
        runs = find_runs(self.store, self.source)
        months = {r.month for r in runs}
        if not runs:
            months |= set(self._legacy_periods())
        return sorted(months)

    def plan(self, month: str) -> DeliveryPlan:
        if self.is_cost_details:
            raise SourceError("a Cost Details source has no delivery plan: it is landed from the API")
        runs = find_runs(self.store, self.source)
        if runs:
            return plan_run(self.store, self.source, runs, month)
        return self._plan_legacy(month)

    def _legacy_periods(self) -> dict[str, list]:
        objects, _ = self.store.list("")
        periods: dict[str, list] = {}
        for o in objects:
            m = PERIOD_FOLDER.search(o.key)
            if m and file_format(o.key):
                periods.setdefault(f"{m.group(2)}-{m.group(3)}", []).append(o)
        return periods

    def _plan_legacy(self, month: str) -> DeliveryPlan:
        """Exports without manifests: one new CSV per run in the period folder; the newest is current."""
        files = self._legacy_periods().get(month)
        if not files:
            raise SourceError(f"no Cost Management export for {month} under {self.source.uri} "
                              "(no manifest.json and no YYYYMMDD-YYYYMMDD period folder)")
        groups: dict[str, list] = {}
        for o in files:
            m = PERIOD_FOLDER.search(o.key)
            rest = o.key[m.end():]
            groups.setdefault(rest.split("/", 1)[0] if "/" in rest else "", []).append(o)
        if "" in groups:
            newest = max(groups[""], key=lambda o: (o.last_modified, o.key))
            chosen = [newest]
        else:
            folder = max(groups, key=lambda g: (g, max(o.last_modified for o in groups[g])))
            chosen = groups[folder]
        return DeliveryPlan(month, "nomanifest-" + digest(chosen), chosen, None, "azure-nomanifest",
                            notes=[f"no manifest: loaded the newest of {len(files)} files"])

    # ---------------------------------------------------------------- staging
    def line_items_sql_for(self, delivery: Delivery) -> str:
        """FocusCost deliveries (found when staging) map with the native FOCUS SQL."""
        return "focus.sql" if delivery.delivery_id in self._focus_deliveries else "azure_cost.sql"

    def stage_sql(self, con, delivery: Delivery) -> str:
        load_cloud_macros(con)
        if self._is_focus(con, delivery):
            from apportion.connectors.focus import stage_focus

            self._focus_deliveries.add(delivery.delivery_id)
            # FocusCost 1.0 rows carry ServiceName and ServiceCategory but no ServiceSubcategory: take it from
            # our services table where the name has exactly one subcategory there.
            con.execute(
                "CREATE OR REPLACE TEMP TABLE focus_subcategory_map AS SELECT ServiceName AS service_name, "
                "min(ServiceSubcategory) AS service_subcategory FROM read_csv(?, header = true, all_varchar = true) "
                "GROUP BY ServiceName HAVING count(DISTINCT ServiceSubcategory) = 1",
                [str(REFERENCE / "services.csv")],
            )
            for name, subcategory in FOCUS_EXTRA_SUBCATEGORIES:
                con.execute("DELETE FROM focus_subcategory_map WHERE service_name = ?", [name])
                con.execute("INSERT INTO focus_subcategory_map VALUES (?, ?)", [name, subcategory])
            version = FOCUS_DATA_VERSIONS.get(delivery.layout.split("-", 2)[-1]) if "FocusCost" in delivery.layout \
                else None
            return stage_focus(con, delivery, {**self.source.options, "provider_name": "Microsoft"},
                               forced_version=version, dataset_prefix="Azure FocusCost")
        self._focus_deliveries.discard(delivery.delivery_id)
        load_azure_reference(con)
        dataset = "AmortizedCost" if "AmortizedCost" in delivery.layout else "ActualCost"
        if self.source.options.get("dataset") in ("ActualCost", "AmortizedCost"):
            dataset = self.source.options["dataset"]
        selects = [self.file_select(con, key, path, idx, dataset) for idx, (key, path) in enumerate(delivery.files)]
        if not selects:
            raise SourceError(f"{delivery.source} {delivery.month}: the delivery has no data files")
        con.execute("CREATE OR REPLACE TEMP VIEW stg_azure_cost AS\n" + "\nUNION ALL BY NAME\n".join(selects))
        return "stg_azure_cost"

    def _is_focus(self, con, delivery: Delivery) -> bool:
        if "FocusCost" in delivery.layout:
            return True
        if not delivery.files:
            return False
        key, path = delivery.files[0]
        cols = {c.lower() for c in describe(con, reader_sql(path), key)}
        return all(m in cols for m in FOCUS_MARKERS)

    def file_select(self, con, key: str, path: Path, file_idx: int, dataset: str = "ActualCost") -> str:
        fmt = file_format(path.name) or "csv"
        reader = reader_sql(path, fmt)
        types = describe(con, reader, key)
        picked = column_picker(types, AZURE_ALIASES)
        if "cost" not in picked:
            raise SourceError(f"{key} has no cost column (CostInBillingCurrency, Cost or PreTaxCost): "
                              "not a Cost Management cost export", file=key)
        parts = [f"{quote_literal(key)} AS _file", f"{int(file_idx)} AS _file_idx", f"{row_number_sql(fmt)} AS _row",
                 f"{quote_literal(dataset)} AS _dataset"]
        for canon in AZURE_ALIASES:
            col = picked.get(canon)
            parts.append(f"{varchar_expr(col, types.get(col) if col else None)} AS {quote_ident(canon)}")
        return f"SELECT {', '.join(parts)} FROM {reader}"


# A unit of measure as a lookup key: lower case, single spaces, no space before '/' ("1 /Month" = "1/Month").
UNIT_KEY_MACRO = """create or replace temp macro apportion_azure_unit_key(u) as
    regexp_replace(regexp_replace(lower(trim(cast(u as varchar))), '\\s+', ' ', 'g'), ' /', '/', 'g')"""
# The rule for units the table does not list: `<n>`, `<n>K`, `<n>M`, `<n> <unit>`, `<n>/<time>`, `<n> <unit>/<time>`.
# Block size = n (x 1,000 for K, x 1,000,000 for M); unit = the rest as written ('Units' when nothing is left,
# 'Units/<time>' for a bare '/<time>'). A unit without a leading number (or with n = 0) is a block of 1.
UNIT_RULE_MACROS = r"""
create or replace temp macro apportion_azure_unit_parts(u) as
    regexp_extract(trim(cast(u as varchar)), '^([0-9]+(?:\.[0-9]+)?)\s*([KkMm]?)(\s.*|/.*|)$', ['n', 'mult', 'rest']);
create or replace temp macro apportion_azure_unit_block(u) as
    case
        when u is null or apportion_azure_unit_parts(u).n = '' then cast(1 as decimal(38, 12))
        when try_cast(apportion_azure_unit_parts(u).n as decimal(38, 12)) <= 0 then cast(1 as decimal(38, 12))
        else cast(cast(apportion_azure_unit_parts(u).n as decimal(38, 12))
                  * case upper(apportion_azure_unit_parts(u).mult) when 'K' then 1000 when 'M' then 1000000 else 1 end
                  as decimal(38, 12))
    end;
create or replace temp macro apportion_azure_unit_name(u) as
    case
        when u is null then null
        when apportion_azure_unit_parts(u).n = '' then trim(cast(u as varchar))
        when trim(apportion_azure_unit_parts(u).rest) = '' then 'Units'
        when starts_with(trim(apportion_azure_unit_parts(u).rest), '/') then 'Units' || trim(apportion_azure_unit_parts(u).rest)
        else trim(apportion_azure_unit_parts(u).rest)
    end;
"""


def load_azure_reference(con) -> None:
    """Our Azure reference tables (models/reference/azure_cost/) as temp tables with normalised lookup keys.

    ref_azure_services(consumed_service, resource_type, meter_category, ServiceName, ServiceCategory,
    ServiceSubcategory): keys lower-cased, blank = not part of the key. ref_azure_pricing_units(unit_key,
    block_size, distinct_unit). ref_azure_regions(spelling, RegionId, RegionName): every spelling of a
    region exports use (id, display name, the billing name `US East 2`, each also without spaces), lower case.
    """
    csv_opts = "header = true, all_varchar = true, quote = '\"', escape = '\"', delim = ','"
    con.execute(UNIT_KEY_MACRO)
    con.execute(UNIT_RULE_MACROS)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE ref_azure_services AS SELECT "
        "lower(nullif(trim(ConsumedService), '')) AS consumed_service, "
        "lower(nullif(trim(ResourceType), '')) AS resource_type, "
        "lower(nullif(trim(MeterCategory), '')) AS meter_category, "
        "trim(ServiceName) AS ServiceName, trim(ServiceCategory) AS ServiceCategory, "
        f"trim(ServiceSubcategory) AS ServiceSubcategory FROM read_csv(?, {csv_opts})",
        [str(REFERENCE / "services.csv")],
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE ref_azure_pricing_units AS SELECT DISTINCT "
        "apportion_azure_unit_key(UnitOfMeasure) AS unit_key, cast(BlockSize AS decimal(38, 12)) AS block_size, "
        f"trim(DistinctUnit) AS distinct_unit FROM read_csv(?, {csv_opts})",
        [str(REFERENCE / "pricing_units.csv")],
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE ref_azure_regions AS WITH r AS (SELECT trim(RegionId) AS RegionId, "
        f"trim(RegionName) AS RegionName, nullif(trim(BillingName), '') AS BillingName FROM read_csv(?, {csv_opts})) "
        "SELECT DISTINCT spelling, RegionId, RegionName FROM ("
        " SELECT lower(RegionId) AS spelling, RegionId, RegionName FROM r"
        " UNION ALL SELECT lower(RegionName), RegionId, RegionName FROM r"
        " UNION ALL SELECT lower(replace(RegionName, ' ', '')), RegionId, RegionName FROM r"
        " UNION ALL SELECT lower(BillingName), RegionId, RegionName FROM r WHERE BillingName IS NOT NULL"
        " UNION ALL SELECT lower(replace(BillingName, ' ', '')), RegionId, RegionName FROM r WHERE BillingName IS NOT NULL)",
        [str(REFERENCE / "regions.csv")],
    )


# ======================================================================== Cost Management API
class AzureCostManagement:
    """azure-mgmt-costmanagement for one scope (`/subscriptions/<id>`, `/providers/Microsoft.Billing/...`).

    The credential comes from the caller (azure-identity's DefaultAzureCredential in production);
    `base_url` points the client at another endpoint (a recorded-response server in tests).
    """

    def __init__(self, scope: str, credential, base_url: str | None = None, polling_interval: float | None = None):
        from azure.mgmt.costmanagement import CostManagementClient

        self.scope = scope.strip("/")
        self.polling = {"polling_interval": polling_interval} if polling_interval is not None else {}
        kwargs = {"base_url": base_url} if base_url else {}
        self.client = CostManagementClient(credential, **kwargs)

    def list_exports(self) -> list[dict]:
        """name, dataset type, data version, format, container/root folder of every export at the scope."""
        out = []
        for e in self.client.exports.list(self.scope).value or []:
            definition = e.definition
            destination = e.delivery_info.destination if e.delivery_info else None
            out.append({
                "name": e.name,
                "type": _enum_text(getattr(definition, "type", None)),
                "timeframe": _enum_text(getattr(definition, "timeframe", None)),
                "data_version": getattr(getattr(definition, "data_set", None), "configuration", None)
                and getattr(definition.data_set.configuration, "data_version", None),
                "format": _enum_text(e.format),
                "container": getattr(destination, "container", None),
                "root_folder_path": getattr(destination, "root_folder_path", None),
            })
        return out

    def run_export(self, name: str) -> None:
        """Trigger a run now (the run writes a new manifest.json that the connector then finds)."""
        self.client.exports.execute(self.scope, name)

    def cost_details_report(self, start: str, end: str, metric: str = "ActualCost") -> list[str]:
        """Request a Cost Details report for [start, end] and wait; returns the CSV blob links (SAS URLs)."""
        from azure.mgmt.costmanagement.models import (
            CostDetailsMetricType,
            CostDetailsTimePeriod,
            GenerateCostDetailsReportRequestDefinition,
        )

        request = GenerateCostDetailsReportRequestDefinition(
            metric=CostDetailsMetricType(metric),
            time_period=CostDetailsTimePeriod(start=start, end=end),
        )
        poller = self.client.generate_cost_details_report.begin_create_operation(self.scope, request, **self.polling)
        result = poller.result()
        status = _enum_text(getattr(result, "status", None))
        if status and status.lower() != "completed":
            raise SourceError(f"Cost Details report for {self.scope} {start}..{end} ended with status {status}")
        manifest = result.manifest
        return [b.blob_link for b in (manifest.blobs or [])]


def _enum_text(value) -> str:
    """SDK enums (str subclasses) and plain strings as their wire value."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def management_credential():
    """Credential for management.azure.com: azure-identity's DefaultAzureCredential (environment,
    workload identity, managed identity, Azure CLI)."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise SourceError("the Cost Details API needs credentials from azure-identity "
                          "(pip install azure-identity)") from None
    return DefaultAzureCredential()
