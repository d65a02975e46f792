"""Deterministic generator of a realistic AWS CUR 2.0 (AWS Data Exports) delivery.

The output looks like what AWS Data Exports drops into S3 for an export of the
``COST_AND_USAGE_REPORT`` table with daily granularity and resource ids included::

    <prefix>/<export>/data/BILLING_PERIOD=YYYY-MM/<export>-00001.snappy.parquet
    <prefix>/<export>/metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json

(or ``...-00001.csv.gz``; with ``versioned=True`` the data files of each delivery go to
``data/BILLING_PERIOD=YYYY-MM/<exportTime>-<executionId>/`` as in "create new export
version" mode). The manifest is written after the data files, as AWS does.

The fictional organisation behind the bill is an AI-heavy company with five accounts:
GPU fleets on EC2 (partly covered by a Compute Savings Plan and a Reserved Instance),
SageMaker training / hosting / notebooks, Bedrock first-party (Nova Pro) and Bedrock
third-party models billed through AWS Marketplace (Claude Sonnet 4.6), a data lake on
S3, plus the usual long tail: data transfer, CloudWatch, EKS, Business Support, sales
tax, a promotional credit and a refund. Tags are deliberately messy (team spelled six
ways, two of them alias variants, a tag key with the wrong case, an unknown team, untagged research resources)
because cleaning exactly that is what the pipeline is for.

Everything is a pure function of ``seed``, the billing period, the number of usage days
(the month-to-date cutoff) and ``rows_per_month``: same inputs, same bytes. Per-row
randomness comes from a counter-based hash of (seed, month, clone, line, day) rather than
from a sequential RNG, so values do not depend on chunk boundaries, and a Savings Plan
negation row sees exactly the same usage amount as the covered usage it cancels.

Scaling: ``rows_per_month`` above the natural size of the demo clones the fleet (new
instance ids, bucket names, ARNs; same tags and prices) until the requested row count is
reached exactly. Rows are produced and written in chunks so memory stays flat.

Conventions, following AWS: a string that does not apply to a row is ``""``, a number that
does not apply is null (``line_item_net_unblended_cost`` is always null: no private
pricing). Per-period rows (fees, tax, credit, refund) have no resource id. Bedrock usage
is counted in tokens with per-token rates. In CSV, timestamps are ISO-8601, map columns
are JSON objects (``{}`` when empty) and nulls are empty fields. "Today" is the UTC date
from ``_utc_today()``, which tests patch.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import itertools
import json
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["generate_cur2", "demo_months", "main", "ACCOUNTS", "PAYER_ACCOUNT_ID"]

CHUNK_ROWS = 250_000
ROWS_PER_FILE = 2_000_000
WRITE_LANES = 2

PAYER_ACCOUNT_ID = "111111111111"
ACCOUNTS: dict[str, str] = {
    "111111111111": "shared-services",
    "222222222222": "ml-platform-prod",
    "333333333333": "research-sandbox",
    "444444444444": "data-lake",
    "555555555555": "search-prod",
}
AWS_INC = "Amazon Web Services, Inc."
MARKETPLACE_SELLER = "Anthropic, PBC"
CLAUDE_PRODUCT_CODE = "prod-4pmewlybdftbs"
CLAUDE_PRODUCT_NAME = "Claude Sonnet 4.6 (Amazon Bedrock Edition)"
SALES_TAX_RATE = 0.06
ACCOUNTS_WITH_AI_COST_CATEGORY = {"222222222222", "333333333333"}

# Commercial terms of the two commitments. Per covered instance so that cloned fleets
# (benchmark sizes) scale the commitment with the usage it covers and the Savings Plan
# always ends the period slightly under-used, as real ones do.
SP_RATE_P5 = 68.824            # Compute SP 1yr No Upfront rate for p5.48xlarge (30 % off)
SP_COMMITMENT_PER_P5 = 71.25   # $/hour of commitment bought per covered p5.48xlarge
RI_RATE_G5 = 3.572             # g5.12xlarge 1yr No Upfront RI effective hourly rate

_EC2_INSTANCES: dict[str, dict] = {
    "p5.48xlarge": dict(price=98.32, family="GPU instance", gpu="8", gpu_memory="640 GB"),
    "p4d.24xlarge": dict(price=32.7726, family="GPU instance", gpu="8", gpu_memory="320 GB"),
    "g5.12xlarge": dict(price=5.672, family="GPU instance", gpu="4", gpu_memory="96 GB"),
    "g5.2xlarge": dict(price=1.212, family="GPU instance", gpu="1", gpu_memory="24 GB"),
    "g5.xlarge": dict(price=1.006, family="GPU instance", gpu="1", gpu_memory="24 GB"),
    "m6i.2xlarge": dict(price=0.384, family="General purpose"),
    "m6i.xlarge": dict(price=0.192, family="General purpose"),
    "r6i.4xlarge": dict(price=1.008, family="Memory optimized"),
    "c6i.4xlarge": dict(price=0.68, family="Compute optimized"),
}
_REGION_PREFIX = {"us-east-1": "USE1", "us-west-2": "USW2"}
_REGION_NAME = {"us-east-1": "US East (N. Virginia)", "us-west-2": "US West (Oregon)"}

# Usage patterns: how the daily usage amount of a line varies from day to day.
ALWAYS_ON, SPOT, JOB, INTERACTIVE, TRAFFIC, STORAGE, STEADY = range(7)

# --------------------------------------------------------------------------------------
# Output schema (CUR 2.0 column names, Parquet types as AWS delivers them)
# --------------------------------------------------------------------------------------
_TS = pa.timestamp("ms", tz="UTC")
_MAP = pa.map_(pa.string(), pa.string())
_STR = pa.string()
_F64 = pa.float64()

SCHEMA = pa.schema([
    ("identity_line_item_id", _STR),
    ("identity_time_interval", _STR),
    ("bill_bill_type", _STR),
    ("bill_billing_entity", _STR),
    ("bill_billing_period_start_date", _TS),
    ("bill_billing_period_end_date", _TS),
    ("bill_invoice_id", _STR),
    ("bill_invoicing_entity", _STR),
    ("bill_payer_account_id", _STR),
    ("bill_payer_account_name", _STR),
    ("line_item_usage_account_id", _STR),
    ("line_item_usage_account_name", _STR),
    ("line_item_line_item_type", _STR),
    ("line_item_usage_start_date", _TS),
    ("line_item_usage_end_date", _TS),
    ("line_item_product_code", _STR),
    ("line_item_usage_type", _STR),
    ("line_item_operation", _STR),
    ("line_item_availability_zone", _STR),
    ("line_item_resource_id", _STR),
    ("line_item_usage_amount", _F64),
    ("line_item_currency_code", _STR),
    ("line_item_unblended_rate", _STR),
    ("line_item_unblended_cost", _F64),
    ("line_item_blended_cost", _F64),
    ("line_item_net_unblended_cost", _F64),
    ("line_item_line_item_description", _STR),
    ("line_item_legal_entity", _STR),
    ("line_item_tax_type", _STR),
    ("pricing_public_on_demand_cost", _F64),
    ("pricing_public_on_demand_rate", _STR),
    ("pricing_unit", _STR),
    ("pricing_term", _STR),
    ("product_servicecode", _STR),
    ("product_product_family", _STR),
    ("product_region_code", _STR),
    ("product_instance_type", _STR),
    ("product", _MAP),
    ("reservation_reservation_a_r_n", _STR),
    ("reservation_effective_cost", _F64),
    ("reservation_unused_amortized_upfront_fee_for_billing_period", _F64),
    ("reservation_unused_recurring_fee", _F64),
    ("savings_plan_savings_plan_a_r_n", _STR),
    ("savings_plan_savings_plan_effective_cost", _F64),
    ("savings_plan_total_commitment_to_date", _F64),
    ("savings_plan_used_commitment", _F64),
    ("resource_tags", _MAP),
    ("cost_category", _MAP),
])

_DICT = pa.dictionary(pa.int32(), pa.string())
# Low-cardinality strings are handed to the Parquet writer dictionary-encoded (far faster
# than hashing millions of repeated strings); the files carry no Arrow schema, so readers
# see plain UTF8 columns exactly as in an AWS-written file.
_DICT_MAP = pa.map_(_DICT, _DICT)
_WRITE_SCHEMA = pa.schema([
    pa.field(f.name, _DICT if (f.type == _STR and f.name != "identity_line_item_id")
             else _DICT_MAP if f.type == _MAP else f.type)
    for f in SCHEMA
])
# Parquet addresses nested columns by leaf path; a map's own name would not select them.
_DICTIONARY_COLUMNS = [f.name for f in _WRITE_SCHEMA if f.type == _DICT] + [
    f"{f.name}.key_value.{leaf}" for f in _WRITE_SCHEMA if f.type == _DICT_MAP for leaf in ("key", "value")]
# Min/max statistics on every top-level column except the random line item id; map keys
# and values get none (costly to compute, useless for pruning).
_STATISTICS_COLUMNS = [f.name for f in SCHEMA if f.type != _MAP and f.name != "identity_line_item_id"]
_CSV_SCHEMA = pa.schema([pa.field(f.name, _F64 if f.type == _F64 else _STR) for f in SCHEMA])
_MANIFEST_TYPES = {_STR: "string", _F64: "double", _TS: "timestamp", _MAP: "map<string,string>"}


# --------------------------------------------------------------------------------------
# Catalog: the lines of usage the demo organisation generates every day
# --------------------------------------------------------------------------------------
@dataclass
class _Line:
    """One resource x usage type that produces one row per active day.

    ``rate`` is the signed unblended rate (0 for RI-covered usage, negative for Savings
    Plan negation), ``od_rate`` the public on-demand rate, ``eff_rate`` the Savings Plan or
    RI rate that drives the amortised (effective) cost. ``daily`` is the typical usage
    amount per day, except for STORAGE lines where it is the amount per month.
    Days are 0-based, ``last_day`` exclusive.
    """

    account: str
    product_code: str
    usage_type: str
    operation: str
    resource_id: str
    unit: str
    rate: float
    daily: float
    pattern: int
    description: str
    service_code: str
    family: str
    product: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    od_rate: float | None = None
    eff_rate: float = 0.0
    line_type: str = "Usage"
    term: str = "OnDemand"
    az: str = ""
    region: str = "us-east-1"
    instance_type: str = ""
    entity: str = "AWS"
    legal_entity: str = AWS_INC
    first_day: int = 0
    last_day: int = 31
    reservation_arn: str = ""
    savings_plan_arn: str = ""
    mirror: int | None = None  # index of the line whose usage a negation row cancels

    def __post_init__(self) -> None:
        if self.od_rate is None:
            self.od_rate = self.rate


def _hexdigest(*parts: object, n: int = 16) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest()[:n]


def _stable_uuid(*parts: object) -> str:
    return str(uuid.UUID(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest()))


def _instance_id(name: str) -> str:
    return "i-0" + _hexdigest("instance", name)


def _volume_id(name: str) -> str:
    return "vol-0" + _hexdigest("volume", name)


def _tags(team: str | None = None, project: str | None = None, workload: str | None = None,
          env: str | None = None, *, Team: str | None = None, created_by: str | None = None) -> dict[str, str]:
    """Resource tags as CUR 2.0 delivers them: activated user tags keep the ``user_``
    prefix, AWS-generated ones the ``aws_`` prefix. ``Team`` models a tag key created with
    the wrong case (``user_Team``), which AWS treats as a different key."""
    out = {"user_team": team, "user_Team": Team, "user_project": project,
           "user_workload": workload, "user_environment": env, "aws_created_by": created_by}
    return {k: v for k, v in out.items() if v is not None}


_KARPENTER = "AssumedRole:AROA3XFRBF535PLBIKJ7N:karpenter"
_SM_ROLE = "AssumedRole:AROA3XFRBF535SAGEMAKER1:SageMaker"


def _ec2_product(itype: str, region: str) -> dict[str, str]:
    spec = _EC2_INSTANCES[itype]
    prod = {"product_name": "Amazon Elastic Compute Cloud", "region": region, "instance_type": itype,
            "instance_family": spec["family"]}
    if "gpu" in spec:
        prod.update(gpu=spec["gpu"], gpu_memory=spec["gpu_memory"])
    return prod


def _ec2(account: str, itype: str, name: str, tags: dict[str, str], *, region: str = "us-east-1",
         az: str | None = None, spot_rate: float | None = None, pattern: int = ALWAYS_ON,
         first_day: int = 0, last_day: int = 31, savings_plan_arn: str = "",
         reservation_arn: str = "", volume_gb: int = 0) -> list[_Line]:
    """An EC2 instance running Linux; optionally Spot, Savings Plan- or RI-covered, with
    its gp3 root/data volume (same tags, as tag propagation to volumes is common)."""
    price = _EC2_INSTANCES[itype]["price"]
    prefix = _REGION_PREFIX[region]
    rid = _instance_id(name)
    common = dict(account=account, product_code="AmazonEC2", operation="RunInstances", resource_id=rid,
                  unit="Hrs", daily=24.0, pattern=pattern, service_code="AmazonEC2", family="Compute Instance",
                  product=_ec2_product(itype, region), tags=tags, az=az or f"{region}a", region=region,
                  instance_type=itype, first_day=first_day, last_day=last_day)
    lines: list[_Line] = []
    if spot_rate is not None:
        lines.append(_Line(**common, usage_type=f"{prefix}-SpotUsage:{itype}", rate=spot_rate, od_rate=price,
                           term="Spot", description=f"${spot_rate:.4f} per Linux/UNIX Spot Instance-hour "
                                                    f"for {itype} in {_REGION_NAME[region]}"))
    elif savings_plan_arn:
        sku = _hexdigest("sku", itype, region).upper()
        lines.append(_Line(**common, usage_type=f"{prefix}-BoxUsage:{itype}", rate=price, eff_rate=SP_RATE_P5,
                           line_type="SavingsPlanCoveredUsage", savings_plan_arn=savings_plan_arn,
                           description=f"${price:g} per On Demand Linux {itype} Instance Hour"))
        lines.append(_Line(**common, usage_type=f"{prefix}-BoxUsage:{itype}", rate=-price, od_rate=0.0,
                           line_type="SavingsPlanNegation", savings_plan_arn=savings_plan_arn,
                           description=f"SavingsPlanNegation used by AccountId : {account} and UsageSku : {sku}"))
    elif reservation_arn:
        lines.append(_Line(**common, usage_type=f"{prefix}-BoxUsage:{itype}", rate=0.0, od_rate=price,
                           eff_rate=RI_RATE_G5, line_type="DiscountedUsage", term="Reserved",
                           reservation_arn=reservation_arn,
                           description=f"USD 0.0 per Linux/UNIX (Amazon VPC), {itype} reserved instance applied"))
    else:
        lines.append(_Line(**common, usage_type=f"{prefix}-BoxUsage:{itype}", rate=price,
                           description=f"${price:g} per On Demand Linux {itype} Instance Hour"))
    if volume_gb:
        lines.append(_Line(account=account, product_code="AmazonEC2", usage_type=f"{prefix}-EBS:VolumeUsage.gp3",
                           operation="CreateVolume-Gp3", resource_id=_volume_id(name), unit="GB-Mo", rate=0.08,
                           daily=float(volume_gb), pattern=STORAGE, service_code="AmazonEC2", family="Storage",
                           product={"product_name": "Amazon Elastic Compute Cloud", "region": region,
                                    "volume_api_name": "gp3"},
                           tags=tags, az=az or f"{region}a", region=region, first_day=first_day, last_day=last_day,
                           description="$0.08 per GB-month of General Purpose (gp3) provisioned storage - "
                                       + _REGION_NAME[region]))
    return lines


def _sagemaker(account: str, kind: str, itype: str, name: str, rate: float, tags: dict[str, str], *,
               count: int = 1, pattern: int = ALWAYS_ON, first_day: int = 0, last_day: int = 31) -> _Line:
    """A SageMaker training job, real-time endpoint or notebook instance. The same
    hardware shows up in training and hosting; usage type and operation tell them apart."""
    usage, operation, arn_type, component, hours = {
        "train": ("Train", "CreateTrainingJob", "training-job", "Training", 24.0),
        "host": ("Host", "RunInstance", "endpoint", "Hosting", 24.0),
        "notebook": ("Notebk", "RunInstance", "notebook-instance", "Notebook", 10.0),
    }[kind]
    return _Line(account=account, product_code="AmazonSageMaker", usage_type=f"USE1-{usage}:{itype}",
                 operation=operation, resource_id=f"arn:aws:sagemaker:us-east-1:{account}:{arn_type}/{name}",
                 unit="Hrs", rate=rate, daily=hours * count, pattern=pattern, service_code="AmazonSageMaker",
                 family="ML Instance", instance_type=itype, tags=tags, first_day=first_day, last_day=last_day,
                 product={"product_name": "Amazon SageMaker", "region": "us-east-1", "instance_type": itype,
                          "component": component},
                 description=f"${rate:g} per {component} {itype} hour in US East (N. Virginia)")


_NOVA_TOKENS = (("input-tokens", 8.0e-7, "input tokens"),
                ("output-tokens", 3.2e-6, "output tokens"),
                ("cache-read-input-token-count", 2.0e-7, "cache read input tokens"))
_CLAUDE_TOKENS = (("InputTokenCount", 3.0e-6, "Input Token Count"),
                  ("OutputTokenCount", 1.5e-5, "Output Token Count"),
                  ("CacheReadInputTokenCount", 3.0e-7, "Cache Read Input Token Count"),
                  ("CacheWriteInputTokenCount", 3.75e-6, "Cache Write Input Token Count"))


def _inference_profile(account: str, name: str) -> str:
    return f"arn:aws:bedrock:us-east-1:{account}:application-inference-profile/{_hexdigest('aip', name, n=12)}"


def _nova(account: str, resource_id: str, tags: dict[str, str], tokens: tuple[float, float, float]) -> list[_Line]:
    """Amazon Nova Pro on Bedrock, billed by AWS. Usage amounts are tokens, rates per token."""
    return [_Line(account=account, product_code="AmazonBedrock", usage_type=f"USE1-NovaPro-{suffix}",
                  operation="InvokeModelInference", resource_id=resource_id, unit="tokens", rate=rate,
                  daily=amount, pattern=TRAFFIC, service_code="AmazonBedrock", family="Amazon Bedrock",
                  product={"product_name": "Amazon Bedrock", "region": "us-east-1", "model": "Nova Pro"},
                  tags=tags, description=f"${rate * 1000:g} per 1K {label} for Nova Pro in US East (N. Virginia)")
            for (suffix, rate, label), amount in zip(_NOVA_TOKENS, tokens)]


def _claude(account: str, resource_id: str, tags: dict[str, str],
            tokens: tuple[float, float, float, float]) -> list[_Line]:
    """Claude Sonnet 4.6 on Bedrock: a third-party model sold through AWS Marketplace, so
    the billing entity, legal entity and (opaque) product code differ from first-party."""
    return [_Line(account=account, product_code=CLAUDE_PRODUCT_CODE, usage_type=f"USE1-MP:USE1_{dim}-Units",
                  operation="Usage", resource_id=resource_id, unit="Units", rate=rate, daily=amount,
                  pattern=TRAFFIC, service_code="", family="", region="us-east-1", term="",
                  entity="AWS Marketplace", legal_entity=MARKETPLACE_SELLER,
                  product={"product_name": CLAUDE_PRODUCT_NAME, "region": "us-east-1"},
                  tags=tags, description=f"USD {rate:.7f} per unit for {label}")
            for (dim, rate, label), amount in zip(_CLAUDE_TOKENS, tokens)]


def _s3(account: str, bucket: str, tb: float, tags: dict[str, str], *, rate: float = 0.023) -> _Line:
    tier = "first 50 TB / month of storage used" if rate == 0.023 else "storage used / month over 500 TB"
    return _Line(account=account, product_code="AmazonS3", usage_type="USE1-TimedStorage-ByteHrs",
                 operation="StandardStorage", resource_id=bucket, unit="GB-Mo", rate=rate, daily=tb * 1000,
                 pattern=STORAGE, service_code="AmazonS3", family="Storage", tags=tags,
                 product={"product_name": "Amazon Simple Storage Service", "region": "us-east-1",
                          "storage_class": "General Purpose"},
                 description=f"${rate:g} per GB - {tier}")


def _s3_requests(account: str, bucket: str, tier: int, per_day: float, tags: dict[str, str]) -> _Line:
    rate, op, what = ((5e-6, "PutObject", "PUT, COPY, POST, or LIST requests") if tier == 1
                      else (4e-7, "GetObject", "GET and all other requests"))
    return _Line(account=account, product_code="AmazonS3", usage_type=f"USE1-Requests-Tier{tier}", operation=op,
                 resource_id=bucket, unit="Requests", rate=rate, daily=per_day, pattern=TRAFFIC,
                 service_code="AmazonS3", family="API Request", tags=tags,
                 product={"product_name": "Amazon Simple Storage Service", "region": "us-east-1"},
                 description=f"${rate * 1000:g} per 1,000 {what}")


def _transfer(account: str, resource_id: str, gb_per_day: float, tags: dict[str, str], *,
              regional: bool = False, operation: str = "RunInstances") -> _Line:
    if regional:
        usage, rate, desc = ("USE1-DataTransfer-Regional-Bytes", 0.01,
                             "$0.010 per GB - regional data transfer - in/out/between EC2 AZs or using IPv4/ELB")
    else:
        usage, rate, desc = ("USE1-DataTransfer-Out-Bytes", 0.09,
                             "$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier")
    return _Line(account=account, product_code="AWSDataTransfer", usage_type=usage, operation=operation,
                 resource_id=resource_id, unit="GB", rate=rate, daily=gb_per_day, pattern=TRAFFIC,
                 service_code="AWSDataTransfer", family="Data Transfer", tags=tags,
                 product={"product_name": "AWS Data Transfer", "region": "us-east-1"}, description=desc)


def _log_group(account: str, name: str, ingest_gb_per_day: float, stored_gb: float,
               tags: dict[str, str]) -> list[_Line]:
    arn = f"arn:aws:logs:us-east-1:{account}:log-group:{name}"
    product = {"product_name": "AmazonCloudWatch", "region": "us-east-1"}
    return [
        _Line(account=account, product_code="AmazonCloudWatch", usage_type="USE1-DataProcessing-Bytes",
              operation="PutLogEvents", resource_id=arn, unit="GB", rate=0.5, daily=ingest_gb_per_day,
              pattern=TRAFFIC, service_code="AmazonCloudWatch", family="Data Payload", tags=tags, product=product,
              description="$0.50 per GB custom log data ingested"),
        _Line(account=account, product_code="AmazonCloudWatch", usage_type="USE1-TimedStorage-ByteHrs",
              operation="HourlyStorageMetering", resource_id=arn, unit="GB-Mo", rate=0.03, daily=stored_gb,
              pattern=STORAGE, service_code="AmazonCloudWatch", family="Storage Snapshot", tags=tags,
              product=product, description="$0.03 per GB-mo of log storage"),
    ]


def _eks(account: str, cluster: str, tags: dict[str, str]) -> _Line:
    return _Line(account=account, product_code="AmazonEKS", usage_type="USE1-AmazonEKS-Hours:perCluster",
                 operation="CreateOperation", resource_id=f"arn:aws:eks:us-east-1:{account}:cluster/{cluster}",
                 unit="Hrs", rate=0.10, daily=24.0, pattern=STEADY, service_code="AmazonEKS", family="Compute",
                 tags=tags, product={"product_name": "Amazon Elastic Container Service for Kubernetes",
                                     "region": "us-east-1"},
                 description="$0.10 per hour per Amazon EKS cluster")


def _catalog(seed: int, year: int, month: int) -> list[_Line]:
    """The demo organisation. Resource ids derive from the seed; SageMaker training jobs
    carry the month in their names because each month runs new jobs."""
    ym = f"{year:04d}{month:02d}"
    sp_arn = f"arn:aws:savingsplans::{PAYER_ACCOUNT_ID}:savingsplan/{_stable_uuid(seed, 'savings-plan')}"
    ri_arn = f"arn:aws:ec2:us-east-1:555555555555:reserved-instances/{_stable_uuid(seed, 'ri-g5')}"
    ml, rs, dl, sr, sh = "222222222222", "333333333333", "444444444444", "555555555555", PAYER_ACCOUNT_ID
    lines: list[_Line] = []

    def n(name: str) -> str:
        return f"{seed}-{name}"  # instance and volume ids change with the seed

    # EC2 GPU fleets -------------------------------------------------------------------
    p5_tags = [
        _tags("ml-platform", "llm-serving", "training", "prod", created_by=_KARPENTER),
        _tags("ml-platform", "llm-serving", "training", "prod", created_by=_KARPENTER),
        _tags("ML Platform", "recsys", "training", "prod"),
        {},  # launched by hand from the console: the biggest untagged line of the bill
    ]
    for i, tags in enumerate(p5_tags):
        lines += _ec2(ml, "p5.48xlarge", n(f"p5-train-{i}"), tags, az=f"us-east-1{'abcd'[i]}",
                  savings_plan_arn=sp_arn, volume_gb=4000)
    g5_ml_tags = [
        _tags("ml-platform", "chatbot", "inference", "prod", created_by=_KARPENTER),
        _tags("ml-platform", "chatbot", "inference", "prod", created_by=_KARPENTER),
        _tags("ml-platform", "llm-serving", "inference", "prod"),
        _tags("ml-platform", "llm-serving", "inference", "prod"),
        _tags("ML Platform", "fraud-detection", "batch-scoring", "prod"),
        _tags("ml-platform", "llm-serving", "inference", "staging"),
    ]
    for i, tags in enumerate(g5_ml_tags):
        lines += _ec2(ml, "g5.12xlarge", n(f"g5-serve-{i}"), tags, az=f"us-east-1{'ab'[i % 2]}", volume_gb=500)
    for i in range(4):
        lines += _ec2(sr, "g5.12xlarge", n(f"g5-search-{i}"), _tags("search", "recsys", "inference", "prod"),
                  reservation_arn=ri_arn, volume_gb=300)
    lines += _ec2(sr, "g5.12xlarge", n("g5-search-dev"), _tags("search", None, "inference", "dev"), volume_gb=300)
    lines += _ec2(sr, "g5.2xlarge", n("g5-growth-0"), _tags("growth-hacking", "chatbot", "inference", "dev"))
    spot_tags = [{}, {}, {}, {}, {}, {},
                 _tags("Research ", None, "batch-scoring", "dev"),
                 _tags(None, "recsys", None, None, Team="research")]
    for i, tags in enumerate(spot_tags):
        lines += _ec2(rs, "g5.xlarge", n(f"spot-research-{i}"), tags, region="us-west-2",
                  az=f"us-west-2{'abc'[i % 3]}", spot_rate=0.4036, pattern=SPOT, volume_gb=200 if i < 4 else 0)
    lines += _ec2(rs, "p5.48xlarge", n("p5-research-0"), {}, pattern=JOB, first_day=3, last_day=13)
    lines += _ec2(rs, "p4d.24xlarge", n("p4d-research-0"), {}, pattern=JOB, first_day=14, last_day=29)

    # CPU fleets -----------------------------------------------------------------------
    for i in range(4):  # two spell the team and environment as alias variants (demo/taxonomy.yaml `aliases`)
        team, env = ("data-eng", "prod") if i % 2 == 0 else ("Data Engineering", "Production")
        lines += _ec2(dl, "m6i.2xlarge", n(f"etl-{i}"), _tags(team, "data-lake", "etl", env), volume_gb=200)
    for i in range(3):
        lines += _ec2(sr, "r6i.4xlarge", n(f"search-node-{i}"), _tags("search", "recsys", "inference", "prod"),
                  volume_gb=1000)
    for i in range(2):
        lines += _ec2(ml, "c6i.4xlarge", n(f"fraud-batch-{i}"),
                  _tags("ml_platform", "fraud-detection", "batch-scoring", "prod"))
    for i in range(2):
        lines += _ec2(sh, "m6i.xlarge", n(f"bastion-{i}"), _tags(env="prod"))

    # SageMaker ------------------------------------------------------------------------
    lines.append(_sagemaker(ml, "train", "ml.p4d.24xlarge", f"llm-sft-{ym}-a", 37.688,
                        _tags("ml-platform", "llm-serving", "training", "prod", created_by=_SM_ROLE),
                        count=2, pattern=JOB, first_day=1, last_day=8))
    for week, start in enumerate((3, 10, 17, 24)):
        lines.append(_sagemaker(ml, "train", "ml.p4d.24xlarge", f"recsys-retrain-{ym}-w{week + 1}", 37.688,
                            _tags("ML Platform", "recsys", "training", "prod"),
                            pattern=JOB, first_day=start, last_day=start + 1))
    lines.append(_sagemaker(ml, "train", "ml.g5.12xlarge", f"fraud-xgb-{ym}", 7.09,
                        _tags("ml_platform", "fraud-detection", "training", "prod"),
                        pattern=JOB, first_day=8, last_day=13))
    lines.append(_sagemaker(rs, "train", "ml.p4d.24xlarge", f"exp-moe-ablation-{ym}", 37.688, {},
                        pattern=JOB, first_day=11, last_day=17))
    lines.append(_sagemaker(rs, "train", "ml.p4d.24xlarge", f"exp-distill-{ym}", 37.688,
                        _tags("research", None, "training", "dev"), pattern=JOB, first_day=19, last_day=27))
    lines.append(_sagemaker(ml, "host", "ml.g5.12xlarge", "chatbot-llm-prod", 7.09,
                        _tags("ml-platform", "chatbot", "inference", "prod", created_by=_SM_ROLE), count=2))
    lines.append(_sagemaker(ml, "host", "ml.g5.12xlarge", "recsys-ranker-prod", 7.09,
                        _tags("ML-Infra", "recsys", "inference", "prod")))  # an alias of ml-platform
    lines.append(_sagemaker(ml, "host", "ml.g5.12xlarge", "fraud-scoring-prod", 7.09,
                        _tags("ml_platform", "fraud-detection", "inference", "prod")))
    lines.append(_sagemaker(ml, "host", "ml.g5.12xlarge", "chatbot-llm-staging", 7.09,
                        _tags("ml-platform", "chatbot", "inference", "staging")))
    for i in range(2):
        lines.append(_sagemaker(ml, "notebook", "ml.t3.medium", f"mlp-dev-{i}", 0.05,
                            _tags("ml-platform", None, "notebooks", "dev"), pattern=INTERACTIVE))
    for i, tags in enumerate([{}, {}, {}, _tags("Research ", None, "notebooks", "dev")]):
        lines.append(_sagemaker(rs, "notebook", "ml.t3.medium", f"research-nb-{i}", 0.05, tags, pattern=INTERACTIVE))
    lines.append(_sagemaker(rs, "notebook", "ml.g5.xlarge", "research-gpu-nb", 1.408, {}, pattern=INTERACTIVE))

    # Bedrock --------------------------------------------------------------------------
    chatbot_tags = _tags("ml-platform", "chatbot", "inference", "prod")
    lines += _nova(ml, _inference_profile(ml, f"{seed}-chatbot-nova"), chatbot_tags, (400e6, 60e6, 300e6))
    lines += _nova(sr, _inference_profile(sr, f"{seed}-search-rerank"), _tags("search", "recsys", "inference", "prod"),
               (80e6, 6e6, 20e6))
    lines += _nova(rs, "", {}, (50e6, 8e6, 10e6))
    lines += _claude(ml, _inference_profile(ml, f"{seed}-chatbot-claude"), chatbot_tags, (150e6, 12e6, 500e6, 40e6))
    lines += _claude(rs, "", {}, (20e6, 3e6, 10e6, 2e6))

    # S3, data transfer, CloudWatch, EKS ------------------------------------------------
    lake = _tags("data-eng", "data-lake", "etl", "prod")
    lines.append(_s3(dl, f"apportion-datalake-raw-{seed}", 900, lake, rate=0.021))
    lines.append(_s3(dl, f"apportion-datalake-curated-{seed}", 150, _tags("data-eng", "data-lake")))
    lines.append(_s3(dl, f"apportion-athena-results-{seed}", 2, {}))
    lines.append(_s3(ml, f"apportion-ml-training-data-{seed}", 400,
                     _tags("ml-platform", "llm-serving", "training", "prod")))
    lines.append(_s3(ml, f"apportion-model-artifacts-{seed}", 60, _tags("ML Platform", "llm-serving")))
    lines.append(_s3(ml, f"apportion-feature-store-{seed}", 30, _tags("ml_platform", "recsys", None, "prod")))
    lines.append(_s3(rs, f"research-scratch-datasets-{seed}", 120, {}))
    lines.append(_s3(rs, f"research-notebook-exports-{seed}", 5, _tags(Team="research")))
    lines.append(_s3(sh, f"apportion-cur-exports-{seed}", 1, _tags(env="prod")))
    lines.append(_s3(sh, f"apportion-cloudtrail-logs-{seed}", 20, {}))
    lines.append(_s3_requests(dl, f"apportion-datalake-raw-{seed}", 1, 20e6, lake))
    lines.append(_s3_requests(ml, f"apportion-ml-training-data-{seed}", 2, 300e6,
                          _tags("ml-platform", "llm-serving", "training", "prod")))

    for i in range(2):
        lines.append(_transfer(ml, _instance_id(n(f"g5-serve-{i}")), 300, g5_ml_tags[i]))
    for i in range(2):
        lines.append(_transfer(sr, _instance_id(n(f"search-node-{i}")), 800,
                           _tags("search", "recsys", "inference", "prod")))
    lines.append(_transfer(dl, f"apportion-datalake-raw-{seed}", 1500, lake, operation="GetObject"))
    for i, tags in enumerate(p5_tags):
        lines.append(_transfer(ml, _instance_id(n(f"p5-train-{i}")), 2000, tags, regional=True))

    lines.append(_Line(account=sh, product_code="AmazonCloudWatch", usage_type="USE1-CW:MetricMonitorUsage",
                   operation="MetricStorage", resource_id="", unit="Metrics", rate=0.30, daily=5000,
                   pattern=STORAGE, service_code="AmazonCloudWatch", family="Metric",
                   product={"product_name": "AmazonCloudWatch", "region": "us-east-1"},
                   description="$0.30 per metric-month - first 10,000 metrics"))
    lines += _log_group(ml, "/aws/sagemaker/Endpoints/chatbot-llm-prod", 150, 4000, chatbot_tags)
    lines += _log_group(dl, "/aws/eks/datalake-etl/cluster", 80, 2500, {})
    lines += _log_group(sh, "/aws/lambda/org-guardrails", 20, 600, _tags(env="prod"))

    lines.append(_eks(ml, "ml-inference", _tags("ml-platform", "llm-serving", "inference", "prod")))
    lines.append(_eks(sr, "search-prod", _tags("search", "recsys", "inference", "prod")))
    lines.append(_eks(dl, "datalake-etl", lake))
    lines.append(_eks(rs, "research-dev", {}))

    for i, line in enumerate(lines):
        if line.line_type == "SavingsPlanNegation":
            line.mirror = i - 1  # _ec2 emits each negation right after its covered usage
    return lines


# --------------------------------------------------------------------------------------
# Vectorised catalog, row plan and hashing
# --------------------------------------------------------------------------------------
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed bijection on uint64 (wrap-around intended)."""
    z = x + _GOLDEN
    z ^= z >> _U64(30)
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


def _uniform(h: np.ndarray) -> np.ndarray:
    """Map hashes to floats in the open interval (0, 1)."""
    return ((h >> _U64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def _key64(*parts: object) -> np.uint64:
    return _U64(int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), "little"))


def _dict_array(values: list[str]) -> tuple[pa.Array, np.ndarray]:
    """Unique dictionary plus per-value index, for dictionary-encoded output columns."""
    uniq = sorted(set(values))
    pos = {v: i for i, v in enumerate(uniq)}
    return pa.array(uniq, _STR), np.array([pos[v] for v in values], dtype=np.int32)


class _MapColumn:
    """A map<string,string> column over a small set of distinct maps (one per catalog
    line). Rows are assembled from offsets and dictionary codes, never by copying strings,
    which keeps both building and Parquet encoding cheap at benchmark sizes."""

    def __init__(self, maps: list[dict[str, str]]):
        self.keys, key_codes = _dict_array([k for m in maps for k in m])
        self.values, value_codes = _dict_array([v for m in maps for v in m.values()])
        self.key_codes, self.value_codes = key_codes, value_codes
        self.count = np.array([len(m) for m in maps], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]]).astype(np.int64)

    def rows(self, idx: np.ndarray) -> pa.MapArray:
        counts = self.count[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        flat = np.repeat(self.start[idx] - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
        return pa.MapArray.from_arrays(
            pa.array(offsets),
            pa.DictionaryArray.from_arrays(pa.array(self.key_codes[flat]), self.keys),
            pa.DictionaryArray.from_arrays(pa.array(self.value_codes[flat]), self.values))


def _rate_str(rate: float) -> str:
    return f"{rate:.10f}"


@dataclass
class _Catalog:
    """Column-wise view of the catalog, ready for ``take`` by line index."""

    lines: list[_Line]
    strings: dict[str, tuple[pa.Array, np.ndarray]]
    maps: dict[str, _MapColumn]
    jsons: dict[str, tuple[pa.Array, np.ndarray]]
    num: dict[str, np.ndarray]
    combos: list[tuple[str, str, str]]

    @classmethod
    def build(cls, lines: list[_Line], invoice_ids: dict[str, str]) -> "_Catalog":
        def col(fn) -> tuple[pa.Array, np.ndarray]:
            return _dict_array([fn(x) for x in lines])

        strings = {
            "bill_billing_entity": col(lambda x: x.entity),
            "bill_invoice_id": col(lambda x: invoice_ids[x.entity]),
            "line_item_usage_account_id": col(lambda x: x.account),
            "line_item_usage_account_name": col(lambda x: ACCOUNTS[x.account]),
            "line_item_line_item_type": col(lambda x: x.line_type),
            "line_item_product_code": col(lambda x: x.product_code),
            "line_item_usage_type": col(lambda x: x.usage_type),
            "line_item_operation": col(lambda x: x.operation),
            "line_item_availability_zone": col(lambda x: x.az),
            "line_item_resource_id": col(lambda x: x.resource_id),
            "line_item_unblended_rate": col(lambda x: _rate_str(x.rate)),
            "line_item_line_item_description": col(lambda x: x.description),
            "line_item_legal_entity": col(lambda x: x.legal_entity),
            "pricing_public_on_demand_rate": col(lambda x: _rate_str(x.od_rate)),
            "pricing_unit": col(lambda x: x.unit),
            "pricing_term": col(lambda x: x.term),
            "product_servicecode": col(lambda x: x.service_code),
            "product_product_family": col(lambda x: x.family),
            "product_region_code": col(lambda x: x.region),
            "product_instance_type": col(lambda x: x.instance_type),
            "reservation_reservation_a_r_n": col(lambda x: x.reservation_arn),
            "savings_plan_savings_plan_a_r_n": col(lambda x: x.savings_plan_arn),
        }
        map_values = {
            "product": [x.product for x in lines],
            "resource_tags": [x.tags for x in lines],
            "cost_category": [_cost_category(x.account) for x in lines],
        }
        maps = {k: _MapColumn(v) for k, v in map_values.items()}
        jsons = {k: _dict_array([json.dumps(d, separators=(",", ":")) for d in v]) for k, v in map_values.items()}
        combos = sorted({(x.entity, x.account, x.product_code) for x in lines})
        combo_pos = {c: i for i, c in enumerate(combos)}
        idx = np.arange(len(lines))
        num = {
            "rate": np.array([x.rate for x in lines]),
            "od_rate": np.array([x.od_rate for x in lines]),
            "eff_rate": np.array([x.eff_rate for x in lines]),
            "daily": np.array([x.daily for x in lines]),
            "pattern": np.array([x.pattern for x in lines], dtype=np.int8),
            "first_day": np.array([x.first_day for x in lines], dtype=np.int64),
            "last_day": np.array([x.last_day for x in lines], dtype=np.int64),
            "is_ri": np.array([x.line_type == "DiscountedUsage" for x in lines]),
            "is_sp": np.array([x.line_type == "SavingsPlanCoveredUsage" for x in lines]),
            "integral": np.array([x.unit in ("tokens", "Units", "Requests") for x in lines]),
            "usage_key": np.array([x.mirror if x.mirror is not None else i for i, x in enumerate(lines)],
                                  dtype=np.uint64),
            "line_key": idx.astype(np.uint64),
            "combo": np.array([combo_pos[(x.entity, x.account, x.product_code)] for x in lines], dtype=np.int64),
            "cloneable": np.array([x.resource_id != "" for x in lines]),
        }
        return cls(lines, strings, maps, jsons, num, combos)


def _cost_category(account: str) -> dict[str, str]:
    return {"business_unit": "ai"} if account in ACCOUNTS_WITH_AI_COST_CATEGORY else {}


@dataclass
class _Segment:
    """``count`` consecutive fleet clones (from ``clone``) that each emit the same slots;
    slot s is catalog line ``lines[s]`` starting on day ``first[s]`` for ``rows[s]`` days."""

    clone: int
    count: int
    lines: np.ndarray
    first: np.ndarray
    rows: np.ndarray

    def __post_init__(self) -> None:
        self.starts = np.concatenate([[0], np.cumsum(self.rows)[:-1]]).astype(np.int64)
        self.per_clone = int(self.rows.sum())

    @property
    def total(self) -> int:
        return self.per_clone * self.count

    def locate(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        local = np.arange(lo, hi, dtype=np.int64)
        clone = self.clone + local // self.per_clone
        r = local % self.per_clone
        slot = np.searchsorted(self.starts, r, side="right") - 1
        return clone, self.lines[slot], self.first[slot] + (r - self.starts[slot])


def _units(cat: _Catalog, days: int, only_cloneable: bool) -> list[list[tuple[int, int, int]]]:
    """Groups of (line, first day, rows) that must be kept together: a Savings Plan covered
    line and its negation; every other line on its own."""
    units: list[list[tuple[int, int, int]]] = []
    for i, line in enumerate(cat.lines):
        if only_cloneable and not cat.num["cloneable"][i]:
            continue
        lo, hi = line.first_day, min(line.last_day, days)
        if hi <= lo:
            continue
        item = (i, lo, hi - lo)
        if line.mirror is not None and units and units[-1][0][0] == line.mirror:
            units[-1].append(item)
        else:
            units.append([item])
    return units


def _segment(clone: int, count: int, units: list[list[tuple[int, int, int]]]) -> _Segment:
    items = [it for u in units for it in u]
    return _Segment(clone, count, np.array([i for i, _, _ in items], dtype=np.int64),
                    np.array([d for _, d, _ in items], dtype=np.int64),
                    np.array([r for _, _, r in items], dtype=np.int64))


def _partial(units: list[list[tuple[int, int, int]]], fillers: list[list[tuple[int, int, int]]],
             clone: int, rows: int) -> list[_Segment]:
    """Exactly ``rows`` rows: whole units of one more clone, then single-day rows of
    short-lived resources of the clone after it for the remainder."""
    taken, total = [], 0
    for unit in units:
        size = sum(r for _, _, r in unit)
        if total + size > rows:
            break
        taken.append(unit)
        total += size
    segs = [_segment(clone, 1, taken)] if taken else []
    rest = rows - total
    singles = [u[0] for u in fillers if len(u) == 1][:rest]
    if len(singles) < rest:
        raise ValueError(f"cannot produce exactly {rows} rows from this catalog")
    if rest:
        segs.append(_segment(clone + 1, 1, [[(i, d, 1)] for i, d, _ in singles]))
    return segs


def _plan(cat: _Catalog, days: int, usage_rows: int | None) -> list[_Segment]:
    """Split the requested usage rows into the natural demo fleet (clone 0) plus as many
    clones of the resource-bearing part of the fleet as needed."""
    base = _units(cat, days, only_cloneable=False)
    clonable = _units(cat, days, only_cloneable=True)
    first = _segment(0, 1, base)
    if usage_rows is None:
        return [first]
    if usage_rows <= first.total:
        return _partial(base, clonable, 0, usage_rows)
    segs, rest = [first], usage_rows - first.total
    per_clone = _segment(1, 1, clonable).total
    full, rest = divmod(rest, per_clone)
    if full:
        segs.append(_segment(1, full, clonable))
    if rest:
        segs += _partial(clonable, clonable, 1 + full, rest)
    return segs


# --------------------------------------------------------------------------------------
# Billing period context
# --------------------------------------------------------------------------------------
def _utc_today() -> date:
    return datetime.now(timezone.utc).date()


def _parse_month(month: str) -> tuple[int, int]:
    try:
        parsed = datetime.strptime(month, "%Y-%m")
    except ValueError as exc:
        raise ValueError(f"month must look like YYYY-MM, got {month!r}") from exc
    return parsed.year, parsed.month


def _month_add(year: int, month: int, delta: int) -> tuple[int, int]:
    y, m = divmod(year * 12 + month - 1 + delta, 12)
    return y, m + 1


def demo_months(today: date | None = None) -> list[str]:
    """The two billing periods a nightly CUR pull cares about: previous and current
    month (UTC), as ``["YYYY-MM", "YYYY-MM"]``."""
    today = today or _utc_today()
    prev = _month_add(today.year, today.month, -1)
    return [f"{prev[0]:04d}-{prev[1]:02d}", f"{today.year:04d}-{today.month:02d}"]


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@dataclass
class _Period:
    """One billing period as seen on the generation day: closed months are complete and
    invoiced; the current month covers usage up to and including today."""

    month: str
    seed: int
    start: datetime
    end: datetime
    days_in_month: int
    days: int
    closed: bool

    @classmethod
    def of(cls, month: str, seed: int, today: date) -> "_Period":
        year, mon = _parse_month(month)
        start = datetime(year, mon, 1, tzinfo=timezone.utc)
        end = datetime(*_month_add(year, mon, 1), 1, tzinfo=timezone.utc)
        days_in_month = calendar.monthrange(year, mon)[1]
        if (year, mon) > (today.year, today.month):
            raise ValueError(f"billing period {month} is in the future (today is {today.isoformat()})")
        closed = (year, mon) < (today.year, today.month)
        return cls(month, seed, start, end, days_in_month, days_in_month if closed else today.day, closed)

    @property
    def usage_end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def export_time(self) -> str:
        return (self.usage_end + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def invoice_ids(self) -> dict[str, str]:
        if not self.closed:
            return {"AWS": "", "AWS Marketplace": ""}
        return {entity: str(2_400_000_000 + int(_key64(self.seed, self.month, entity)) % 100_000_000)
                for entity in ("AWS", "AWS Marketplace")}

    def key(self) -> np.uint64:
        return _key64("cur2", self.seed, self.month)


# --------------------------------------------------------------------------------------
# Row construction
# --------------------------------------------------------------------------------------
_B32 = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", dtype=np.uint8)
_ID_LEN = 52


def _fixed_width(chars: np.ndarray) -> pa.StringArray:
    """Arrow strings from an (n, width) uint8 matrix of ASCII characters, without copying
    through Python objects."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars)))


def _line_item_ids(keys: np.ndarray) -> pa.StringArray:
    """52-character lowercase base32 ids, the shape of CUR ``identity_line_item_id``:
    256 hashed bits, the low five bits of each byte then the high five of the first 20."""
    n = len(keys)
    words = np.empty((n, 4), dtype=np.uint64)
    for w in range(4):
        words[:, w] = _mix64(keys ^ _U64(0x5851F42D4C957F2D * (w + 1) % 2**64))
    raw = words.view(np.uint8).reshape(n, 32)
    codes = np.empty((n, _ID_LEN), dtype=np.uint8)
    np.bitwise_and(raw, 31, out=codes[:, :32])
    np.right_shift(raw[:, :_ID_LEN - 32], 3, out=codes[:, 32:])
    return _fixed_width(_B32[codes])


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ID_PREFIXES = ("i-0", "vol-0")  # EC2 instance and EBS volume ids get fresh hex ids when cloned


def _clone_resource_ids(bases: pa.Array, base_hashes: np.ndarray, kinds: np.ndarray,
                        clones: np.ndarray) -> pa.Array:
    """Resource ids of fleet clones: a fresh 16-hex-digit id for EC2 instances and volumes
    (derived from the original id, so an instance and its data-transfer line stay paired),
    ``<original>-<clone:05d>`` for buckets and ARNs."""
    digits = _mix64(base_hashes ^ _mix64(clones.astype(np.uint64))).view(np.uint8).reshape(-1, 8)
    hexchars = np.stack([_HEX[digits >> 4], _HEX[digits & 15]], axis=2).reshape(-1, 16)
    suffix = pc.utf8_lpad(pa.array(clones).cast(_STR), 5, "0")
    out = pc.binary_join_element_wise(bases, suffix, "-")
    for kind, prefix in enumerate(_ID_PREFIXES, start=1):
        head = np.broadcast_to(np.frombuffer(prefix.encode(), dtype=np.uint8), (len(clones), len(prefix)))
        fresh = _fixed_width(np.concatenate([head, hexchars], axis=1))
        out = pc.if_else(pa.array(kinds == kind), fresh, out)
    return out


class _Builder:
    """Turns (clone, line, day) index arrays into Arrow columns for one billing period and
    keeps the running totals the monthly fee, support and tax rows are computed from."""

    def __init__(self, cat: _Catalog, period: _Period, fmt: str):
        self.cat, self.period, self.fmt = cat, period, fmt
        self.key = period.key()
        day_starts = [period.start + timedelta(days=d) for d in range(period.days)]
        day_ends = day_starts[1:] + [period.usage_end]
        self.day_start_ms = np.array([_ms(d) for d in day_starts], dtype=np.int64)
        self.day_end_ms = np.array([_ms(d) for d in day_ends], dtype=np.int64)
        self.day_start_iso = pa.array([_iso(d) for d in day_starts], _STR)
        self.day_end_iso = pa.array([_iso(d) for d in day_ends], _STR)
        self.intervals = pa.array([f"{_iso(a)}/{_iso(b)}" for a, b in zip(day_starts, day_ends)], _STR)
        self.weekend = np.array([d.weekday() >= 5 for d in day_starts])
        resource_ids = cat.strings["line_item_resource_id"][0].to_pylist()
        self.rid_hash = np.array([_key64("resource", r) for r in resource_ids], dtype=np.uint64)
        self.rid_kind = np.array([next((k for k, p in enumerate(_ID_PREFIXES, start=1) if r.startswith(p)), 0)
                                  for r in resource_ids], dtype=np.int8)
        self.combo_cost = np.zeros(len(cat.combos))
        self.sp_used = 0.0
        self.ri_used = 0.0
        self.constants = {
            "bill_bill_type": "Anniversary",
            "bill_invoicing_entity": AWS_INC,
            "bill_payer_account_id": PAYER_ACCOUNT_ID,
            "bill_payer_account_name": ACCOUNTS[PAYER_ACCOUNT_ID],
            "line_item_currency_code": "USD",
            "line_item_tax_type": "",
        }

    # -- per-row numbers -----------------------------------------------------------------
    def _amounts(self, clone: np.ndarray, line: np.ndarray, day: np.ndarray) -> np.ndarray:
        num = self.cat.num
        usage_key = (clone.astype(np.uint64) << _U64(24)) | (num["usage_key"][line] << _U64(8)) | day.astype(np.uint64)
        h = _mix64(usage_key ^ self.key)
        u1, u2 = _uniform(h), _uniform(_mix64(h))
        pattern = num["pattern"][line]
        weekend = self.weekend[day]
        noise = np.exp(0.3 * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2) - 0.045)
        dim = self.period.days_in_month
        factor = np.select(
            [pattern == ALWAYS_ON, pattern == SPOT,
             pattern == JOB, pattern == INTERACTIVE,
             pattern == TRAFFIC, pattern == STORAGE],
            [np.where(u1 < 0.06, 0.25 + 0.75 * u2, 1.0),  # occasional stop/restart
             0.55 + 0.45 * u1,                             # interruptions
             np.where((day == num["first_day"][line]) | (day == num["last_day"][line] - 1), 0.2 + 0.6 * u2, 1.0),
             np.where(weekend, 0.1 + 0.2 * u1, 0.5 + 0.5 * u1),
             noise * np.where(weekend, 0.6, 1.0),
             (1.0 + 0.05 * day / dim) / dim],              # monthly quantity, growing
            1.0)
        amount = num["daily"][line] * factor
        return np.where(num["integral"][line], np.rint(amount), np.round(amount, 8))

    def usage_table(self, clone: np.ndarray, line: np.ndarray, day: np.ndarray) -> pa.Table:
        cat, num, n = self.cat, self.cat.num, len(line)
        amount = self._amounts(clone, line, day)
        unblended = np.round(amount * num["rate"][line], 8)
        effective = np.round(amount * num["eff_rate"][line], 8)
        is_ri, is_sp = num["is_ri"][line], num["is_sp"][line]
        self.combo_cost += np.bincount(num["combo"][line], weights=unblended, minlength=len(cat.combos))
        self.sp_used += float(effective[is_sp].sum())
        self.ri_used += float(effective[is_ri].sum())

        line32 = line.astype(np.int32)
        cols: dict[str, pa.Array] = {}
        for name, (values, codes) in cat.strings.items():
            cols[name] = pa.DictionaryArray.from_arrays(pa.array(codes[line32]), values)
        cols["line_item_resource_id"] = self._resource_ids(clone, line)
        for name, value in self.constants.items():
            cols[name] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value], _STR))
        ids = (clone.astype(np.uint64) << _U64(24)) | (num["line_key"][line] << _U64(8)) | day.astype(np.uint64)
        cols["identity_line_item_id"] = _line_item_ids(_mix64(ids ^ self.key))
        day32 = pa.array(day.astype(np.int32))
        cols["identity_time_interval"] = pa.DictionaryArray.from_arrays(day32, self.intervals)
        period = {"bill_billing_period_start_date": self.period.start, "bill_billing_period_end_date": self.period.end}
        if self.fmt == "csv":
            for name, value in period.items():
                cols[name] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([_iso(value)]))
            cols["line_item_usage_start_date"] = pa.DictionaryArray.from_arrays(day32, self.day_start_iso)
            cols["line_item_usage_end_date"] = pa.DictionaryArray.from_arrays(day32, self.day_end_iso)
            for name, (values, codes) in cat.jsons.items():
                cols[name] = pa.DictionaryArray.from_arrays(pa.array(codes[line32]), values)
        else:
            for name, value in period.items():
                cols[name] = pa.array(np.full(n, _ms(value), dtype=np.int64), _TS)
            cols["line_item_usage_start_date"] = pa.array(self.day_start_ms[day], _TS)
            cols["line_item_usage_end_date"] = pa.array(self.day_end_ms[day], _TS)
            for name, column in cat.maps.items():
                cols[name] = column.rows(line)
        cols["line_item_usage_amount"] = pa.array(amount)
        cols["line_item_unblended_cost"] = pa.array(unblended)
        cols["line_item_blended_cost"] = pa.array(np.where(is_ri, effective, unblended))
        cols["line_item_net_unblended_cost"] = pa.nulls(n, _F64)
        cols["pricing_public_on_demand_cost"] = pa.array(np.round(amount * num["od_rate"][line], 8))
        cols["reservation_effective_cost"] = pa.array(effective, mask=~is_ri)
        cols["savings_plan_savings_plan_effective_cost"] = pa.array(effective, mask=~is_sp)
        for name in ("reservation_unused_amortized_upfront_fee_for_billing_period", "reservation_unused_recurring_fee",
                     "savings_plan_total_commitment_to_date", "savings_plan_used_commitment"):
            cols[name] = pa.nulls(n, _F64)
        return self._assemble(cols)

    def _resource_ids(self, clone: np.ndarray, line: np.ndarray) -> pa.Array:
        values, codes = self.cat.strings["line_item_resource_id"]
        idx = codes[line].astype(np.int32)
        cloned = clone > 0
        if cloned.any():
            # Keyed by (clone, original id): an instance and its data-transfer line share
            # one entry. Parquet output is only reproducible with a duplicate-free dictionary.
            uniq, inverse = np.unique(clone[cloned] * len(values) + idx[cloned], return_inverse=True)
            base = (uniq % len(values)).astype(np.int32)
            extra = _clone_resource_ids(values.take(pa.array(base)), self.rid_hash[base], self.rid_kind[base],
                                        uniq // len(values))
            idx[cloned] = len(values) + inverse.astype(np.int32)
            values = pa.concat_arrays([values, extra])
        return pa.DictionaryArray.from_arrays(pa.array(idx), values)

    def _assemble(self, cols: dict[str, pa.Array]) -> pa.Table:
        schema = _CSV_SCHEMA if self.fmt == "csv" else _WRITE_SCHEMA
        if self.fmt == "csv":
            arrays = [cols[f.name].dictionary_decode() if pa.types.is_dictionary(cols[f.name].type) else cols[f.name]
                      for f in schema]
        else:
            arrays = [cols[f.name].cast(f.type) for f in schema]  # a no-op for the per-chunk columns
        return pa.Table.from_arrays(arrays, schema=schema)

    # -- monthly rows ----------------------------------------------------------------------
    def monthly_rows_count(self) -> int:
        return 5 + len(self._tax_combos())

    def _tax_combos(self) -> list[tuple[str, str, str]]:
        fees = {("AWS", PAYER_ACCOUNT_ID, "ComputeSavingsPlans"), ("AWS", "555555555555", "AmazonEC2"),
                ("AWS", PAYER_ACCOUNT_ID, "AWSSupportBusiness")}
        return sorted(set(self.cat.combos) | fees)

    def monthly_table(self, sp_slots: int, ri_slots: int) -> pa.Table:
        """Rows AWS books once per period rather than per resource-day: Savings Plan and RI
        fees (sized to the covered fleet), Business Support, a promotional credit, a refund
        and sales tax per billing entity x account x product code. None has a resource id."""
        p, hours = self.period, 24.0 * self.period.days
        sp_commitment = round(SP_COMMITMENT_PER_P5 * sp_slots * hours, 8)
        ri_fee = round(RI_RATE_G5 * ri_slots * hours, 8)
        combo_cost = dict(zip(self.cat.combos, self.combo_cost))
        aws_usage = sum(v for (entity, _, _), v in combo_cost.items() if entity == "AWS")
        support = round(_business_support_fee(aws_usage + sp_commitment + ri_fee), 2)
        research_sm = combo_cost.get(("AWS", "333333333333", "AmazonSageMaker"), 0.0)
        credit = -round(min(2500.0, 0.5 * research_sm), 2)
        refund = -412.37
        sp_arn, ri_arn = _first(self.cat.lines, "savings_plan_arn"), _first(self.cat.lines, "reservation_arn")

        rows = [
            _row(PAYER_ACCOUNT_ID, "SavingsPlanRecurringFee", "ComputeSavingsPlans", "ComputeSP:1yrNoUpfront",
                 sp_commitment, "1 year No Upfront Compute Savings Plan", service_code="ComputeSavingsPlans",
                 family="Savings Plan", savings_plan_savings_plan_a_r_n=sp_arn,
                 savings_plan_total_commitment_to_date=sp_commitment,
                 savings_plan_used_commitment=round(self.sp_used, 8), amount=hours,
                 rate=SP_COMMITMENT_PER_P5 * sp_slots, unit="Hrs"),
            _row("555555555555", "RIFee", "AmazonEC2", "USE1-HeavyUsage:g5.12xlarge", ri_fee,
                 "USD 3.572 hourly fee per Linux/UNIX (Amazon VPC), g5.12xlarge instance",
                 service_code="AmazonEC2", family="Compute Instance", instance_type="g5.12xlarge",
                 reservation_reservation_a_r_n=ri_arn,
                 reservation_unused_amortized_upfront_fee_for_billing_period=0.0,
                 reservation_unused_recurring_fee=round(max(ri_fee - self.ri_used, 0.0), 8),
                 amount=hours * ri_slots, rate=RI_RATE_G5, unit="Hrs", term="Reserved"),
            _row(PAYER_ACCOUNT_ID, "Fee", "AWSSupportBusiness", "Dollar", support, "AWS Support (Business)",
                 service_code="AWSSupportBusiness", family=""),
            _row("333333333333", "Credit", "AmazonSageMaker", "", credit,
                 "AWS Promotional Credit - research program", service_code="AmazonSageMaker"),
            _row("444444444444", "Refund", "AmazonS3", "", refund,
                 "Refund for duplicate S3 request charges (case 176301234501)", service_code="AmazonS3"),
        ]
        fee_cost = {("AWS", PAYER_ACCOUNT_ID, "ComputeSavingsPlans"): sp_commitment,
                    ("AWS", "555555555555", "AmazonEC2"): ri_fee,
                    ("AWS", PAYER_ACCOUNT_ID, "AWSSupportBusiness"): support}
        for combo in self._tax_combos():
            entity, account, product_code = combo
            taxable = combo_cost.get(combo, 0.0) + fee_cost.get(combo, 0.0)
            rows.append(_row(account, "Tax", product_code, "", round(max(taxable, 0.0) * SALES_TAX_RATE, 2),
                             f"Tax for product code {product_code}", entity=entity, tax_type="Sales Tax",
                             legal_entity=MARKETPLACE_SELLER if entity == "AWS Marketplace" else AWS_INC))

        invoice_ids = p.invoice_ids()
        start, end = p.start, min(p.end, p.usage_end)
        keys = _mix64(np.arange(len(rows), dtype=np.uint64) + (_U64(1) << _U64(62)) ^ self.key)
        ids = _line_item_ids(keys).to_pylist()
        for i, row in enumerate(rows):
            row.update(identity_line_item_id=ids[i], identity_time_interval=f"{_iso(start)}/{_iso(end)}",
                       bill_billing_period_start_date=p.start, bill_billing_period_end_date=p.end,
                       line_item_usage_start_date=start, line_item_usage_end_date=end,
                       bill_invoice_id=invoice_ids[row["bill_billing_entity"]],
                       cost_category=_cost_category(row["line_item_usage_account_id"]))
            for name, value in self.constants.items():
                row.setdefault(name, value)
        columns = {f.name: [r.get(f.name) for r in rows] for f in SCHEMA}
        if self.fmt == "csv":
            for f in SCHEMA:
                if f.type == _TS:
                    columns[f.name] = [_iso(v) for v in columns[f.name]]
                elif f.type == _MAP:
                    columns[f.name] = [json.dumps(v, separators=(",", ":")) for v in columns[f.name]]
            return pa.Table.from_pydict(columns, schema=_CSV_SCHEMA)
        arrays = {f.name: _MapColumn(columns[f.name]).rows(np.arange(len(rows))) if f.type == _MAP
                  else pa.array(columns[f.name], f.type) for f in SCHEMA}
        return self._assemble(arrays)


def _first(lines: list[_Line], attr: str) -> str:
    return next(getattr(x, attr) for x in lines if getattr(x, attr))


def _business_support_fee(monthly_aws_charges: float) -> float:
    """AWS Business Support: the greater of $100 or a sliding percentage of AWS charges
    (10 % of the first $10K, 7 % up to $80K, 5 % up to $250K, 3 % above)."""
    tiers = ((10_000.0, 0.10), (80_000.0, 0.07), (250_000.0, 0.05), (float("inf"), 0.03))
    fee, lower = 0.0, 0.0
    for upper, pct in tiers:
        fee += max(0.0, min(monthly_aws_charges, upper) - lower) * pct
        lower = upper
    return max(100.0, fee)


def _row(account: str, line_type: str, product_code: str, usage_type: str, cost: float, description: str, *,
         entity: str = "AWS", legal_entity: str = AWS_INC, tax_type: str = "", service_code: str = "",
         family: str = "", instance_type: str = "", amount: float = 1.0, rate: float | None = None,
         unit: str = "", term: str = "", **extra: object) -> dict:
    row = {
        "bill_billing_entity": entity,
        "line_item_usage_account_id": account,
        "line_item_usage_account_name": ACCOUNTS[account],
        "line_item_line_item_type": line_type,
        "line_item_product_code": product_code,
        "line_item_usage_type": usage_type,
        "line_item_operation": "",
        "line_item_availability_zone": "",
        "line_item_resource_id": "",
        "line_item_usage_amount": amount,
        "line_item_unblended_rate": _rate_str(cost / amount if rate is None else rate),
        "line_item_unblended_cost": cost,
        "line_item_blended_cost": cost,
        "line_item_line_item_description": description,
        "line_item_legal_entity": legal_entity,
        "line_item_tax_type": tax_type,
        "pricing_public_on_demand_cost": 0.0,
        "pricing_public_on_demand_rate": "",
        "pricing_unit": unit,
        "pricing_term": term,
        "product_servicecode": service_code,
        "product_product_family": family,
        "product_region_code": "",
        "product_instance_type": instance_type,
        "product": {},
        "reservation_reservation_a_r_n": "",
        "savings_plan_savings_plan_a_r_n": "",
        "resource_tags": {},
    }
    row.update(extra)
    return row


# --------------------------------------------------------------------------------------
# Writing a delivery
# --------------------------------------------------------------------------------------
@dataclass
class _PeriodDelivery:
    """What one billing period's delivery consists of."""

    billing_period: str
    data_files: list[Path]
    manifest: Path
    rows: int


class _RotatingWriter:
    """Writes tables into ``<export>-NNNNN`` files, starting a new file every ROWS_PER_FILE
    rows, as AWS splits large exports. Writer ``lane`` of ``lanes`` numbers its files
    lane+1, lane+1+lanes, ... so that lanes writing concurrently never collide."""

    def __init__(self, folder: Path, export_name: str, fmt: str, lane: int = 0, lanes: int = 1):
        self.folder, self.export_name, self.fmt = folder, export_name, fmt
        self.lane, self.lanes = lane, lanes
        self.files: list[Path] = []
        self._writer = None
        self._sink = None
        self._rows_in_file = 0

    def _open(self) -> None:
        ext = "snappy.parquet" if self.fmt == "parquet" else "csv.gz"
        number = self.lane + 1 + self.lanes * len(self.files)
        path = self.folder / f"{self.export_name}-{number:05d}.{ext}"
        self.files.append(path)
        if self.fmt == "parquet":
            self._writer = pq.ParquetWriter(
                str(path), _WRITE_SCHEMA, compression="snappy", store_schema=False,
                use_dictionary=_DICTIONARY_COLUMNS, write_statistics=_STATISTICS_COLUMNS,
                write_batch_size=65_536)
        else:
            self._sink = pa.CompressedOutputStream(str(path), "gzip")
            self._writer = pacsv.CSVWriter(self._sink, _CSV_SCHEMA,
                                           write_options=pacsv.WriteOptions(quoting_style="needed"))
        self._rows_in_file = 0

    def write(self, table: pa.Table, *, rotate: bool = True) -> int:
        if self._writer is None or (rotate and self._rows_in_file >= ROWS_PER_FILE):
            self.close()
            self._open()
        if self.fmt == "parquet":
            self._writer.write_table(table, row_group_size=CHUNK_ROWS)
        else:
            self._writer.write_table(table)
        self._rows_in_file += table.num_rows
        return table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None


def _chunks(segments: list[_Segment], chunk_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(clone, line, day) index arrays of at most ``chunk_rows`` rows, in plan order."""
    bounds = np.cumsum([0] + [s.total for s in segments])
    total = int(bounds[-1])
    for lo in range(0, total, chunk_rows):
        hi = min(lo + chunk_rows, total)
        parts = []
        for seg, s_lo, s_hi in zip(segments, bounds[:-1], bounds[1:]):
            a, b = max(lo, s_lo), min(hi, s_hi)
            if a < b:
                parts.append(seg.locate(int(a - s_lo), int(b - s_lo)))
        yield tuple(np.concatenate(cols) for cols in zip(*parts))


def _write_chunks(builder: "_Builder", segments: list[_Segment], writers: list[_RotatingWriter]) -> int:
    """Build chunks one after another in a background thread while the previous ones are
    encoded by one thread per writer lane (chunk i goes to lane i % lanes). numpy and the
    Parquet/CSV writers release the GIL, so this keeps two cores busy. Assignment and order
    are fixed, so the output does not depend on thread timing."""
    rows = 0
    with ThreadPoolExecutor(max_workers=1) as build_pool, ThreadPoolExecutor(max_workers=len(writers)) as write_pool:
        in_flight: list = [None] * len(writers)
        chunks = _chunks(segments, CHUNK_ROWS)
        next_table = build_pool.submit(builder.usage_table, *next(chunks))
        for i, index in enumerate(itertools.chain(chunks, [None])):
            table = next_table.result()
            if index is not None:
                next_table = build_pool.submit(builder.usage_table, *index)
            lane = i % len(writers)
            if in_flight[lane] is not None:
                rows += in_flight[lane].result()
            in_flight[lane] = write_pool.submit(writers[lane].write, table)
            del table  # let the chunk be freed as soon as its lane is done with it
        rows += sum(f.result() for f in in_flight if f is not None)
    return rows


def _covered_slots(cat: _Catalog, segments: list[_Segment], flag: str) -> int:
    """Number of covered instance copies in the plan (clones x covered lines)."""
    return sum(int(cat.num[flag][np.unique(s.lines)].sum()) * s.count for s in segments)


def _write_period(out_dir: Path, month: str, *, seed: int, rows_per_month: int | None, fmt: str,
                  export_name: str, prefix: str, versioned: bool, today: date) -> _PeriodDelivery:
    period = _Period.of(month, seed, today)
    cat = _Catalog.build(_catalog(seed, *_parse_month(month)), period.invoice_ids())
    builder = _Builder(cat, period, fmt)
    monthly = builder.monthly_rows_count()
    if rows_per_month is not None and rows_per_month <= monthly:
        raise ValueError(f"rows_per_month must be larger than {monthly}")
    segments = _plan(cat, period.days, None if rows_per_month is None else rows_per_month - monthly)

    execution_id = _stable_uuid("execution", seed, month, period.days, rows_per_month, fmt, export_name)
    root = out_dir / prefix / export_name
    data_dir = root / "data" / f"BILLING_PERIOD={month}"
    if versioned:
        data_dir = data_dir / f"{period.export_time}-{execution_id}"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not versioned:
        # Overwrite mode replaces the whole delivery; stale higher-numbered files would
        # otherwise be picked up by anyone listing the folder.
        for stale in (*data_dir.glob(f"{export_name}-*.snappy.parquet"), *data_dir.glob(f"{export_name}-*.csv.gz")):
            stale.unlink()

    writers = [_RotatingWriter(data_dir, export_name, fmt, lane, WRITE_LANES) for lane in range(WRITE_LANES)]
    try:
        rows = _write_chunks(builder, segments, writers)
        table = builder.monthly_table(_covered_slots(cat, segments, "is_sp"), _covered_slots(cat, segments, "is_ri"))
        rows += writers[0].write(table, rotate=False)
    finally:
        for writer in writers:
            writer.close()
    data_files = sorted(f for writer in writers for f in writer.files)

    manifest_dir = root / "metadata" / f"BILLING_PERIOD={month}"
    manifest_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = manifest_dir / f"{export_name}-Manifest.json"
    manifest = {
        "executionId": execution_id,
        "exportArn": f"arn:aws:bcm-data-exports:us-east-1:{PAYER_ACCOUNT_ID}:export/"
                     f"{export_name}-{_stable_uuid('export', seed, export_name)}",
        "exportName": export_name,
        "billingPeriod": {"start": period.start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                          "end": period.end.strftime("%Y-%m-%dT%H:%M:%S.000Z")},
        "dataFiles": [f.relative_to(out_dir).as_posix() for f in data_files],
        "columns": [{"name": f.name, "type": _MANIFEST_TYPES[f.type]} for f in SCHEMA],
        "exportTime": period.export_time,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return _PeriodDelivery(month, data_files, manifest_path, rows)


def _deliver(out_dir: str | Path, months: list[str], *, seed: int, rows_per_month: int | None, fmt: str,
             export_name: str, prefix: str, versioned: bool) -> list[_PeriodDelivery]:
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    today = _utc_today()
    return [_write_period(Path(out_dir), m, seed=seed, rows_per_month=rows_per_month, fmt=fmt,
                          export_name=export_name, prefix=prefix, versioned=versioned, today=today)
            for m in months]


def generate_cur2(out_dir: str | Path, months: list[str], *, seed: int = 7, rows_per_month: int | None = None,
                  fmt: str = "parquet", export_name: str = "apportion-demo", prefix: str = "cur",
                  versioned: bool = False) -> list[Path]:
    """Write a CUR 2.0 delivery (data files + manifest) for each billing period in ``months``.

    Closed months get every day and invoice ids; the current month (UTC) gets usage up to
    and including today and empty invoice ids; future months are rejected.
    ``rows_per_month=None`` gives the natural demo (about 4,000 rows for a full month);
    a number gives exactly that many rows per period by cloning the resource fleet.
    Returns the data files written, in order.
    """
    deliveries = _deliver(out_dir, months, seed=seed, rows_per_month=rows_per_month, fmt=fmt,
                          export_name=export_name, prefix=prefix, versioned=versioned)
    return [f for d in deliveries for f in d.data_files]


def main(argv: list[str] | None = None) -> int:
    """``python -m apportion.demo.generators.aws_cur OUT_DIR [--months 2026-10 ...] [--rows N] [--format parquet|csv] [--versioned]``"""
    parser = argparse.ArgumentParser(prog="python -m apportion.demo.generators.aws_cur",
                                     description="Write a synthetic AWS CUR 2.0 (Data Exports) delivery.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--months", nargs="+", metavar="YYYY-MM",
                        help="billing periods (default: previous and current month, UTC)")
    parser.add_argument("--rows", type=int, default=None, help="rows per billing period (default: natural demo)")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--versioned", action="store_true", help="create-new-export-version folder layout")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--export-name", default="apportion-demo")
    parser.add_argument("--prefix", default="cur")
    args = parser.parse_args(argv)
    deliveries = _deliver(args.out_dir, args.months or demo_months(), seed=args.seed, rows_per_month=args.rows,
                          fmt=args.format, export_name=args.export_name, prefix=args.prefix,
                          versioned=args.versioned)
    for d in deliveries:
        print(f"BILLING_PERIOD={d.billing_period}: {d.rows:,} rows")
        for f in d.data_files:
            print(f"  {f}")
        print(f"  {d.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def write_late_credit(out_dir: str | Path, month: str, *, amount: float = -150.0, export_name: str = "apportion-demo",
                      prefix: str = "cur") -> Path:
    """Re-deliver `month` with one more line: a late service credit, as AWS adds after the month has ended
    (the month close demo, docs/close.md). Writes `<export>-00002.snappy.parquet` beside the delivery and a
    new manifest (new executionId: a new delivery). `generate_cur2` for the month removes it again."""
    root = Path(out_dir) / prefix / export_name
    manifest_path = root / "metadata" / f"BILLING_PERIOD={month}" / f"{export_name}-Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    files = [Path(out_dir) / k for k in manifest["dataFiles"] if not k.endswith("-00002.snappy.parquet")]
    table = pa.concat_tables([pq.read_table(f) for f in files])
    credit = table.filter(pc.equal(table["line_item_line_item_type"], "Credit")).slice(0, 1).to_pylist()[0]
    credit.update(identity_line_item_id=_hexdigest("late-credit", month, n=52),
                  line_item_unblended_rate=f"{amount:.10f}", line_item_unblended_cost=amount,
                  line_item_blended_cost=amount,
                  line_item_line_item_description="AWS service credit issued after month end (case 176309876501)")
    dest = files[0].parent / f"{export_name}-00002.snappy.parquet"
    pq.write_table(pa.Table.from_pylist([credit], schema=table.schema), dest, compression="snappy")
    manifest["dataFiles"] = [f.relative_to(out_dir).as_posix() for f in files] + [dest.relative_to(out_dir).as_posix()]
    manifest["executionId"] = _stable_uuid("late-credit", month, manifest["executionId"])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return dest
