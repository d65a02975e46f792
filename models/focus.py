"""The line-item contract: FOCUS 1.2 Cost and Usage columns plus apportion's `x_` columns.

Every source kind produces exactly these columns, in this order, with these DuckDB types.
The warehouse, the allocation SQL and the data checks are generated from this list, so a
column added here is added everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

MONEY = "DECIMAL(38,12)"  # AWS bills to 10 decimal places; 12 leaves headroom, 26 integer digits.
QUANTITY = "DECIMAL(38,12)"
TS = "TIMESTAMPTZ"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    nullable: bool = True


FOCUS_COLUMNS: tuple[Column, ...] = (
    Column("AvailabilityZone", "VARCHAR", "Provider-assigned availability zone."),
    Column("BilledCost", MONEY, "Amount invoiced for the charge (AWS: unblended cost).", False),
    Column("BillingAccountId", "VARCHAR", "Account the invoice is issued to (AWS: payer account).", False),
    Column("BillingAccountName", "VARCHAR", "Display name of the billing account."),
    Column("BillingAccountType", "VARCHAR", "Provider label for the billing account kind."),
    Column("BillingCurrency", "VARCHAR", "ISO 4217 currency of BilledCost/EffectiveCost.", False),
    Column("BillingPeriodEnd", TS, "Exclusive end of the billing period (UTC).", False),
    Column("BillingPeriodStart", TS, "Inclusive start of the billing period (UTC).", False),
    Column("CapacityReservationId", "VARCHAR", "Capacity reservation the charge relates to."),
    Column("CapacityReservationStatus", "VARCHAR", "Used | Unused."),
    Column("ChargeCategory", "VARCHAR", "Usage | Purchase | Tax | Credit | Adjustment.", False),
    Column("ChargeClass", "VARCHAR", "Correction, or null."),
    Column("ChargeDescription", "VARCHAR", "Provider's description of the charge."),
    Column("ChargeFrequency", "VARCHAR", "One-Time | Recurring | Usage-Based."),
    Column("ChargePeriodEnd", TS, "Exclusive end of the period the charge covers (UTC).", False),
    Column("ChargePeriodStart", TS, "Inclusive start of the period the charge covers (UTC).", False),
    Column("CommitmentDiscountCategory", "VARCHAR", "Spend | Usage."),
    Column("CommitmentDiscountId", "VARCHAR", "Savings plan / reservation ARN."),
    Column("CommitmentDiscountName", "VARCHAR", "Display name of the commitment discount."),
    Column("CommitmentDiscountQuantity", QUANTITY, "Commitment quantity consumed."),
    Column("CommitmentDiscountStatus", "VARCHAR", "Used | Unused."),
    Column("CommitmentDiscountType", "VARCHAR", "Savings Plan | Reservation."),
    Column("CommitmentDiscountUnit", "VARCHAR", "Unit of CommitmentDiscountQuantity."),
    Column("ConsumedQuantity", QUANTITY, "Usage measured in ConsumedUnit."),
    Column("ConsumedUnit", "VARCHAR", "Unit of ConsumedQuantity."),
    Column("ContractedCost", MONEY, "Cost at negotiated rates (AWS: net unblended when present).", False),
    Column("ContractedUnitPrice", MONEY, "Negotiated unit price."),
    Column("EffectiveCost", MONEY, "Amortised cost after commitment discounts.", False),
    Column("InvoiceId", "VARCHAR", "Invoice the charge appears on (empty until the month closes)."),
    Column("InvoiceIssuerName", "VARCHAR", "Entity issuing the invoice.", False),
    Column("ListCost", MONEY, "Cost at public on-demand prices.", False),
    Column("ListUnitPrice", MONEY, "Public on-demand unit price."),
    Column("PricingCategory", "VARCHAR", "Standard | Dynamic | Committed | Other."),
    Column("PricingCurrency", "VARCHAR", "Currency prices are quoted in."),
    Column("PricingCurrencyContractedUnitPrice", MONEY, "Contracted unit price in PricingCurrency."),
    Column("PricingCurrencyEffectiveCost", MONEY, "EffectiveCost in PricingCurrency."),
    Column("PricingCurrencyListUnitPrice", MONEY, "List unit price in PricingCurrency."),
    Column("PricingQuantity", QUANTITY, "Quantity in PricingUnit.", True),
    Column("PricingUnit", "VARCHAR", "Provider pricing unit."),
    Column("ProviderName", "VARCHAR", "Provider of the resource or service.", False),
    Column("PublisherName", "VARCHAR", "Entity that produced the service (Marketplace seller).", False),
    Column("RegionId", "VARCHAR", "Provider region code."),
    Column("RegionName", "VARCHAR", "Provider region display name."),
    Column("ResourceId", "VARCHAR", "Provider resource identifier (ARN, instance id, bucket)."),
    Column("ResourceName", "VARCHAR", "Display name of the resource."),
    Column("ResourceType", "VARCHAR", "Kind of resource."),
    Column("ServiceCategory", "VARCHAR", "FOCUS service category.", False),
    Column("ServiceName", "VARCHAR", "Provider service name.", False),
    Column("ServiceSubcategory", "VARCHAR", "FOCUS service subcategory."),
    Column("SkuId", "VARCHAR", "Provider SKU."),
    Column("SkuMeter", "VARCHAR", "What the SKU measures."),
    Column("SkuPriceDetails", "JSON", "SKU properties as a JSON object (InstanceType, GpuCount...)."),
    Column("SkuPriceId", "VARCHAR", "Provider price id."),
    Column("SubAccountId", "VARCHAR", "Account that used the resource (AWS: usage account)."),
    Column("SubAccountName", "VARCHAR", "Display name of the sub-account."),
    Column("SubAccountType", "VARCHAR", "Provider label for the sub-account kind."),
    Column("Tags", "JSON", "Finalised tags as a JSON object; AWS `user:`/`user_` prefixes removed."),
)

X_COLUMNS: tuple[Column, ...] = (
    Column("x_SourceName", "VARCHAR", "Source name from the config (`sources[].name`).", False),
    Column("x_SourceKind", "VARCHAR", "Connector kind (`aws_cur`, ...).", False),
    Column("x_BillingMonth", "VARCHAR", "Billing month YYYY-MM: the partition this row belongs to.", False),
    Column("x_LineId", "BIGINT", "Row number within source and month; with them, the line item's key.", False),
    Column("x_DeliveryId", "VARCHAR", "Provider delivery (assembly / execution) the row was loaded from.", False),
    Column("x_IngestedAt", TS, "When apportion fetched the delivery.", False),
    Column("x_SourceFile", "VARCHAR", "Raw object the row came from, relative to the source URI.", False),
    Column("x_SourceRow", "BIGINT", "1-based data row within that raw object.", False),
    Column("x_ProviderLineItemId", "VARCHAR", "Provider's own line-item id (AWS identity_line_item_id)."),
    Column("x_LineItemType", "VARCHAR", "Provider charge type (AWS line_item_line_item_type)."),
    Column("x_ServiceCode", "VARCHAR", "Provider service code (AWS product code)."),
    Column("x_UsageType", "VARCHAR", "Provider usage type (AWS line_item_usage_type)."),
    Column("x_Operation", "VARCHAR", "Provider operation (AWS line_item_operation)."),
    Column("x_BillingEntity", "VARCHAR", "AWS or AWS Marketplace."),
    Column("x_InstanceType", "VARCHAR", "Instance type where the charge is for an instance."),
    Column("x_CostCategories", "JSON", "AWS cost categories as a JSON object."),
    Column("x_HasResource", "BOOLEAN", "False for charges that no resource can own (tax, credits, fees): allocated as shared.", False),
    Column("x_InvoicingEntity", "VARCHAR", "Legal entity on the invoice (AWS bill_invoicing_entity), e.g. "
           "'Amazon Web Services EMEA SARL'."),
    Column("x_CostBasis", "VARCHAR", "invoice: the row is billed money (BilledCost/EffectiveCost count in totals); "
           "usage: the row only measures usage (logs, schedulers) and carries zero BilledCost/EffectiveCost; "
           "its priced estimate is x_PricedCost and it attributes invoice lines through split rules."),
    Column("x_PricedCost", MONEY, "Usage priced at catalogue, negotiated or rate-card prices (not billed money)."),
    Column("x_Cluster", "VARCHAR", "GPU cluster (Slurm cluster, Kubernetes cluster) the usage ran on."),
    Column("x_GpuModel", "VARCHAR", "Normalised GPU model (`a100`, `h100-80gb`, ...); also in SkuPriceDetails."),
    Column("x_JobId", "VARCHAR", "Scheduler job id (Slurm JobID) or Kubernetes pod/allocation name of GPU usage."),
    Column("x_GpuUtilization", "DECIMAL(9,6)", "Average GPU utilisation of the usage, 0..1, when measured "
           "(DCGM, nvidia-smi, OpenCost gpuEfficiency, Slurm gres/gpuutil)."),
    Column("x_LlmProvider", "VARCHAR", "LLM provider that bills the tokens, as a genai-prices provider id (openai, "
           "anthropic, aws = Bedrock, azure, google); invoice and usage rows of one provider share it."),
    Column("x_ModelId", "VARCHAR", "Normalised model id without date, region or version (gpt-4o, claude-sonnet-4-5, "
           "ft:gpt-4o); also SkuPriceDetails.ModelId."),
    Column("x_ModelRef", "VARCHAR", "Model name exactly as the source reported it (dated snapshot, fine-tune, "
           "Bedrock ARN, Azure deployment)."),
    Column("x_TokenType", "VARCHAR", "input | input_audio | cache_read | cache_write_5m | cache_write_1h | output | "
           "output_audio | web_search (requests)."),
    Column("x_Tokens", "BIGINT", "Tokens of x_TokenType on this row (null for request-counted rows such as web_search)."),
    Column("x_Requests", "BIGINT", "Model requests; counted on one row per day x model x attribution key (0 on the "
           "other token-type rows), so sums count each request once."),
    Column("x_ServiceTier", "VARCHAR", "Provider service tier (default, standard, batch, priority, flex, scale...)."),
    Column("x_PriceSource", "VARCHAR", "Where x_PricedCost's unit price came from: 'genai-prices <version> "
           "<provider>/<model> [...]' or 'override:<name>'."),
    # cloud billing sources (azure_cost, gcp_billing, focus) and reporting currency
    Column("x_SourceDataset", "VARCHAR", "Provider dataset the row came from: Azure ActualCost / AmortizedCost / "
           "FocusCost <version>, GCP standard / detailed billing export, FOCUS <version>."),
    Column("x_ResourceGroupName", "VARCHAR", "Azure resource group of the resource (lower-case)."),
    Column("x_PricingBlockSize", QUANTITY, "Units per priced block of the provider's unit of measure (Azure `10K` -> "
           "10000); PricingQuantity and ConsumedQuantity are in single units."),
    Column("x_PricingUnitDescription", "VARCHAR", "Provider's unit of measure as delivered (Azure `1K`, `1 Hour`)."),
    Column("x_UnmappedService", "VARCHAR", "The provider's own service name when apportion's reference table "
           "(models/reference/<kind>/services.csv) has no row for it: ServiceCategory is then `Other` and "
           "ServiceName the provider's name. Null when the service is mapped; counted in the run summary."),
    Column("x_Credits", "JSON", "GCP credits of the row as delivered (name, id, type, amount); netted in "
           "BilledCost and EffectiveCost."),
    Column("x_CreditAmount", MONEY, "Sum of the row's credits (negative); BilledCost = ContractedCost + x_CreditAmount."),
    Column("x_ReportingCurrency", "VARCHAR", "Configured reporting currency (null when none is configured)."),
    Column("x_FxRate", "DECIMAL(38,12)", "BillingCurrency -> x_ReportingCurrency rate used (rate of the charge "
           "date, from the config's fx_rates)."),
    Column("x_ReportingBilledCost", MONEY, "BilledCost in x_ReportingCurrency (for reports; allocation stays exact "
           "in BillingCurrency)."),
    Column("x_ReportingEffectiveCost", MONEY, "EffectiveCost in x_ReportingCurrency."),
    # GPU sources (slurm_sacct, opencost, gpu_metrics)
    Column("x_Node", "VARCHAR", "Node the GPU usage ran on: cloud instance id from the Kubernetes providerID, "
           "Kubernetes node name, Slurm NodeList or DCGM Hostname."),
    Column("x_GpuHours", QUANTITY, "GPU-hours allocated to a job/pod or left idle (= ConsumedQuantity of GPU usage "
           "rows; null on observed-utilisation rows): the measure GPU split rules weigh by."),
)

LINE_ITEM_COLUMNS: tuple[Column, ...] = FOCUS_COLUMNS + X_COLUMNS

# FOCUS 1.2 ServiceCategory -> its allowed ServiceSubcategory values (each subcategory has one parent).
# Every row of models/reference/<kind>/services.csv must use these (tests/test_reference_tables.py).
SERVICE_SUBCATEGORIES: dict[str, tuple[str, ...]] = {
    "AI and Machine Learning": ("AI Platforms", "Bots", "Generative AI", "Machine Learning",
                                "Natural Language Processing", "Other (AI and Machine Learning)"),
    "Analytics": ("Analytics Platforms", "Business Intelligence", "Data Processing", "Search",
                  "Streaming Analytics", "Other (Analytics)"),
    "Business Applications": ("Productivity and Collaboration", "Other (Business Applications)"),
    "Compute": ("Containers", "End User Computing", "Quantum Compute", "Serverless Compute", "Virtual Machines",
                "Other (Compute)"),
    "Databases": ("Caching", "Data Warehouses", "Ledger Databases", "NoSQL Databases", "Relational Databases",
                  "Time Series Databases", "Other (Databases)"),
    "Developer Tools": ("Developer Platforms", "Continuous Integration and Deployment", "Development Environments",
                        "Source Code Management", "Quality Assurance", "Other (Developer Tools)"),
    "Identity": ("Identity and Access Management", "Other (Identity)"),
    "Integration": ("API Management", "Messaging", "Workflow Orchestration", "Other (Integration)"),
    "Internet of Things": ("IoT Analytics", "IoT Platforms", "Other (Internet of Things)"),
    "Management and Governance": ("Architecture", "Compliance", "Cost Management", "Data Governance",
                                  "Disaster Recovery", "Endpoint Management", "Observability", "Support",
                                  "Other (Management and Governance)"),
    "Media": ("Content Creation", "Gaming", "Media Streaming", "Mixed Reality", "Other (Media)"),
    "Migration": ("Data Migration", "Resource Migration", "Other (Migration)"),
    "Mobile": ("Other (Mobile)",),
    "Multicloud": ("Multicloud Integration", "Other (Multicloud)"),
    "Networking": ("Application Networking", "Content Delivery", "Network Connectivity", "Network Infrastructure",
                   "Network Routing", "Network Security", "Other (Networking)"),
    "Security": ("Secret Management", "Security Posture Management", "Threat Detection and Response",
                 "Other (Security)"),
    "Storage": ("Backup Storage", "Block Storage", "File Storage", "Object Storage", "Storage Platforms",
                "Other (Storage)"),
    "Web": ("Application Platforms", "Other (Web)"),
    "Other": ("Other (Other)",),
}
SERVICE_CATEGORIES: tuple[str, ...] = tuple(SERVICE_SUBCATEGORIES)

# Allocation dimensions every taxonomy has; a taxonomy may add more.
CORE_DIMENSIONS = ("project", "team", "workload")

# Values the allocator writes when no tag, rule, account mapping or default decided a dimension.
UNTAGGED = "untagged"
SHARED = "shared"


def dimension_column(dimension: str) -> str:
    """`team` -> `x_Team`, `cost_center` -> `x_CostCenter` (FOCUS x_PascalCase)."""
    return "x_" + "".join(part.capitalize() for part in dimension.split("_"))


def null_select_list(columns: tuple[Column, ...] = LINE_ITEM_COLUMNS) -> str:
    """Every column as a typed NULL, in contract order: the shape of a relation with no line items."""
    return ",\n    ".join(f'CAST(NULL AS {c.type}) AS "{c.name}"' for c in columns)


def select_list(columns: tuple[Column, ...] = LINE_ITEM_COLUMNS, available: set[str] | None = None) -> str:
    """Column list in contract order, each cast to its contract type.

    With `available`, a nullable column the source SQL does not produce becomes a typed NULL, so a
    new `x_` column does not require editing every source; a missing non-nullable column is an error.
    """
    parts = []
    for c in columns:
        if available is None or c.name in available:
            parts.append(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"')
        elif c.nullable:
            parts.append(f'CAST(NULL AS {c.type}) AS "{c.name}"')
        else:
            raise ValueError(f"line-item SQL does not produce required column {c.name}")
    return ",\n    ".join(parts)
