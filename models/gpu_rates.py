"""GPU source options shared by the GPU source kinds: rate card, capacity and idle attribution.

A rate card prices GPU-hours of on-premises clusters (`x_PricedCost`, kept apart from billed
money): dollars per GPU-hour by cluster and GPU model, effective-dated. Capacity (nodes x GPUs per
node over time) minus allocated GPU-hours is the idle line of a cluster, attributed to an owner
team or left `shared`.

```yaml
options:
  cluster: hpc1                      # cluster name when the data does not carry one
  currency: USD
  rates:                             # most specific cluster wins, then the entry in force that day
    - {gpu_model: "a100*", per_gpu_hour: "1.85", from: 2026-01-01}
    - {cluster: hpc1, gpu_model: "h100*", per_gpu_hour: "3.10", from: 2026-01-01, until: 2026-11-01}
  capacity:
    - {cluster: hpc1, gpu_model: a100, nodes: 8, gpus_per_node: 8, from: 2026-01-01}
  idle:
    owner: {team: research, project: research-sandbox, workload: training}   # or: owner: shared
```

GPU models are compared after `normalize_gpu_model`: one name per GPU from
`models/reference/gpu_models.csv` (`h100`, `NVIDIA H100 80GB HBM3` and `p5.48xlarge` are all `h100-80gb`;
a spelling the table does not know is lower case, no vendor prefix, `-` between words). `gpu_model`
patterns are globs matched on that name (`h100*` matches `h100-80gb`). The tables built here are loaded into DuckDB by the
connectors; patterns and values are data, never SQL text.
"""

from __future__ import annotations

import csv
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from apportion.models.taxonomy import glob_to_regex

CURRENCY = re.compile(r"^[A-Z]{3}$")
TAG_KEY = re.compile(r"^[a-z][a-z0-9_.:/-]{0,62}$")
FAR_FUTURE = date(9999, 12, 31)
FAR_PAST = date(1970, 1, 1)


def _spelling(raw: str | None) -> str | None:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'; 'nvidia_a100-sxm4-80gb' -> 'a100-sxm4-80gb' (lower case, no
    vendor prefix, `-` between words)."""
    if raw is None:
        return None
    v = raw.strip().lower()
    if not v:
        return None
    v = re.sub(r"[\s_/]+", "-", v)
    v = re.sub(r"^(nvidia-+)?(tesla-+)?", "", v) if not v.startswith("amd") else v
    v = re.sub(r"-{2,}", "-", v).strip("-")
    return v or None


GPU_MODELS_CSV = Path(__file__).parent / "reference" / "gpu_models.csv"


@lru_cache(maxsize=1)
def gpu_model_vocabulary() -> tuple[tuple[re.Pattern, str], ...]:
    """models/reference/gpu_models.csv: (regex over the normalised spelling or instance type, one GPU name)."""
    with GPU_MODELS_CSV.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            out.append((re.compile(row["pattern"]), row["gpu_model"]))
        except (re.error, KeyError) as exc:
            raise ValueError(f"{GPU_MODELS_CSV}:{line}: bad row ({exc})") from None
    return tuple(out)


def _known(spelling: str) -> str | None:
    for pattern, name in gpu_model_vocabulary():
        if pattern.match(spelling):
            return name
    return None


def normalize_gpu_model(raw: str | None) -> str | None:
    """One name per GPU across Slurm, DCGM, OpenCost and cloud instance types, from gpu_models.csv:
    'h100', 'NVIDIA H100 80GB HBM3', 'p5.48xlarge' -> 'h100-80gb'; 'nvidia_a100-sxm4-80gb' -> 'a100-80gb';
    'a100' -> 'a100' (memory not stated). A spelling the table does not know keeps its normalised form
    ('NVIDIA B200' -> 'b200'), never guessed. A glob ('h100*') is no GPU name and keeps its spelling."""
    norm = _spelling(raw)
    if norm is None:
        return None
    return _known(norm) or norm


canonical_gpu_model = normalize_gpu_model


def gpu_model_of_instance(instance_type: str | None) -> str | None:
    """The GPU of a cloud instance type the table knows ('p5.48xlarge' -> 'h100-80gb'), else None (a CPU
    instance type is no GPU model)."""
    norm = _spelling(instance_type)
    return _known(norm) if norm else None


def _money(value: Any, what: str) -> Decimal:
    if isinstance(value, float):
        value = repr(value)
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{what} {value!r} must be a non-negative number")
    return d


class GpuRate(BaseModel):
    """$ (options.currency) per GPU-hour for a GPU model on a cluster, in force from `from` until `until`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    cluster: str = Field("*", description="Cluster name or glob; '*' = any cluster.")
    gpu_model: str = Field(description="GPU model glob, matched on the normalised model ('a100*').")
    per_gpu_hour: Decimal = Field(description="Price of one GPU-hour.")
    valid_from: date = Field(FAR_PAST, alias="from", description="First day the rate applies (inclusive).")
    valid_until: date = Field(FAR_FUTURE, alias="until", description="First day it no longer applies (exclusive).")

    @field_validator("per_gpu_hour", mode="before")
    @classmethod
    def _price(cls, v: Any) -> Decimal:
        return _money(v, "per_gpu_hour")

    @field_validator("gpu_model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("gpu_model must not be empty")
        return normalize_gpu_model(v)  # type: ignore[return-value]

    @model_validator(mode="after")
    def _window(self) -> "GpuRate":
        if self.valid_until <= self.valid_from:
            raise ValueError(f"until ({self.valid_until}) must be after from ({self.valid_from})")
        return self


class GpuCapacity(BaseModel):
    """GPUs a cluster has for a GPU model over a period: nodes x gpus_per_node."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    cluster: str | None = None
    gpu_model: str
    nodes: int = Field(ge=0)
    gpus_per_node: int = Field(ge=1)
    valid_from: date = Field(FAR_PAST, alias="from")
    valid_until: date = Field(FAR_FUTURE, alias="until")

    @field_validator("gpu_model")
    @classmethod
    def _model(cls, v: str) -> str:
        m = normalize_gpu_model(v)
        if not m or "*" in m:
            raise ValueError("gpu_model must be a model name (no glob)")
        return m

    @model_validator(mode="after")
    def _window(self) -> "GpuCapacity":
        if self.valid_until <= self.valid_from:
            raise ValueError(f"until ({self.valid_until}) must be after from ({self.valid_from})")
        return self

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class IdleOwner(BaseModel):
    """Who carries the idle line: `shared` (split by later rules) or tags for the taxonomy to read."""

    model_config = ConfigDict(extra="forbid")

    owner: str | dict[str, str] = "shared"

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        if isinstance(v, str):
            if v != "shared":
                raise ValueError("owner must be 'shared' or a mapping of tags, e.g. {team: research}")
            return v
        if not v:
            raise ValueError("owner tags must not be empty")
        out = {}
        for k, val in v.items():
            key = str(k).strip().lower()
            if not TAG_KEY.match(key):
                raise ValueError(f"owner tag key {k!r} is not a valid tag key")
            out[key] = str(val)
        return out

    @property
    def shared(self) -> bool:
        return self.owner == "shared"

    @property
    def tags(self) -> dict[str, str]:
        return {} if isinstance(self.owner, str) else dict(self.owner)


class GpuOptions(BaseModel):
    """The options every GPU source kind understands (each kind adds its own on top)."""

    model_config = ConfigDict(extra="allow")

    cluster: str | None = None
    currency: str = "USD"
    rates: list[GpuRate] = Field(default_factory=list)
    capacity: list[GpuCapacity] = Field(default_factory=list)
    idle: IdleOwner = Field(default_factory=IdleOwner)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        v = v.strip().upper()
        if not CURRENCY.match(v):
            raise ValueError(f"currency {v!r} must be an ISO 4217 code like USD")
        return v

    @model_validator(mode="after")
    def _no_overlap(self) -> "GpuOptions":
        seen: dict[tuple[str, str], list[GpuRate]] = {}
        for r in self.rates:
            for other in seen.get((r.cluster, r.gpu_model), []):
                if r.valid_from < other.valid_until and other.valid_from < r.valid_until:
                    raise ValueError(
                        f"rates for cluster {r.cluster!r} and gpu_model {r.gpu_model!r} overlap "
                        f"({other.valid_from}..{other.valid_until} and {r.valid_from}..{r.valid_until})"
                    )
            seen.setdefault((r.cluster, r.gpu_model), []).append(r)
        return self


class GpuOptionsError(ValueError):
    """Source options are invalid; the message names the option."""


def parse_gpu_options(source_name: str, options: dict[str, Any], model: type[GpuOptions] = GpuOptions) -> GpuOptions:
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"sources[{source_name}].options{loc}: {msg}")
        raise GpuOptionsError("; ".join(problems)) from None


# ------------------------------------------------------------------ tables for the SQL
def rate_table(opts: GpuOptions) -> pa.Table:
    """One row per rate: cluster/model regexes, validity, price and a specificity rank (lower wins)."""
    rows = []
    for i, r in enumerate(opts.rates):
        rows.append({
            "rate_index": i + 1,
            "cluster_regex": glob_to_regex(r.cluster),
            "model_regex": glob_to_regex(r.gpu_model),
            "cluster_specific": 0 if "*" not in r.cluster and "?" not in r.cluster else 1,
            "model_specific": 0 if "*" not in r.gpu_model and "?" not in r.gpu_model else 1,
            "valid_from": r.valid_from,
            "valid_until": r.valid_until,
            "per_gpu_hour": r.per_gpu_hour,
        })
    schema = pa.schema([("rate_index", pa.int64()), ("cluster_regex", pa.string()), ("model_regex", pa.string()),
                        ("cluster_specific", pa.int32()), ("model_specific", pa.int32()),
                        ("valid_from", pa.date32()), ("valid_until", pa.date32()),
                        ("per_gpu_hour", pa.decimal128(38, 12))])
    return pa.Table.from_pylist(rows, schema=schema)


def capacity_table(opts: GpuOptions, default_cluster: str | None) -> pa.Table:
    rows = []
    for i, c in enumerate(opts.capacity):
        rows.append({
            "capacity_index": i + 1,
            "cluster": c.cluster or default_cluster or opts.cluster or "default",
            "gpu_model": c.gpu_model,
            "gpus": c.gpus,
            "valid_from": c.valid_from,
            "valid_until": c.valid_until,
        })
    schema = pa.schema([("capacity_index", pa.int64()), ("cluster", pa.string()), ("gpu_model", pa.string()),
                        ("gpus", pa.int64()), ("valid_from", pa.date32()), ("valid_until", pa.date32())])
    return pa.Table.from_pylist(rows, schema=schema)


def register_gpu_tables(con, opts: GpuOptions, default_cluster: str | None = None) -> None:
    """Create temp tables gpu_rates, gpu_capacity and gpu_idle_owner in `con`."""
    for name, table in (("gpu_rates", rate_table(opts)), ("gpu_capacity", capacity_table(opts, default_cluster))):
        con.register(f"{name}_arrow", table)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
        con.unregister(f"{name}_arrow")
    import json

    con.execute(
        "CREATE OR REPLACE TEMP TABLE gpu_idle_owner AS SELECT ?::BOOLEAN AS shared, ?::JSON AS tags",
        [opts.idle.shared, json.dumps(opts.idle.tags) if opts.idle.tags else None],
    )


def month_bounds(month: str) -> tuple[datetime, datetime]:
    y, m = int(month[:4]), int(month[5:7])
    start = datetime(y, m, 1, tzinfo=timezone.utc)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def days_of(start: datetime, end: datetime) -> list[date]:
    d, out = start.date(), []
    while datetime(d.year, d.month, d.day, tzinfo=timezone.utc) < end:
        out.append(d)
        d += timedelta(days=1)
    return out
