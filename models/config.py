"""The apportion config file (`apportion.yaml`): where the lake lives, the taxonomy, the sources.

Credentials never live here: connectors use the cloud SDK's default chain and the environment.
Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import re
from datetime import date as date_type
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from apportion.models._yaml import ConfigError, load_yaml_with_lines, problems_from_validation
from apportion.models.savings import SavingsSettings
from apportion.models.source_kinds import SOURCE_KINDS

OBJECT_STORE_SCHEMES = ("s3", "gs", "az")
# local folder -> the object-store URI it caches (filled by ApportionConfig.register_remotes; read by apportion.storage)
REMOTE_ROOTS: dict[Path, str] = {}
# lake folder -> its config's warehouse folder (where closed months live) when `lake:` is a folder elsewhere
LAKE_WAREHOUSE: dict[Path, Path] = {}

SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class SourceConfig(BaseModel):
    """One bill or usage feed. `options` are specific to the kind (see the README)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique name; used in paths, asset keys and x_SourceName.")
    kind: str = Field(description="Connector kind, e.g. aws_cur.")
    uri: str = Field(description="s3://bucket/prefix/export, file:///path or a local path.")
    options: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SOURCE_NAME.match(v):
            raise ValueError(f"{v!r} must be lower-case letters, digits, '-' or '_' (it is used in file paths)")
        return v

    @field_validator("uri")
    @classmethod
    def _no_credentials_in_uri(cls, v: str) -> str:
        problem = uri_credentials_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {v!r} (known: {', '.join(sorted(SOURCE_KINDS))})")
        return v

    @field_validator("options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if re.search(r"(secret|password|token|api_key|access_key)", key, re.I):
                raise ValueError(
                    f"option {key!r} looks like a credential; credentials come from the environment "
                    "or the SDK's default chain, never from the config file"
                )
        return v


def uri_credentials_problem(value: str) -> str | None:
    """Why a URI must be refused (it carries a user and password, or an object-store key), or None.

    The message shows the URI with the user part replaced by `***`, so the secret is never echoed.
    """
    if "://" not in value or "@" not in value.split("://", 1)[1].split("/", 1)[0]:
        return None
    scheme, rest = value.split("://", 1)
    userinfo, host = rest.split("/", 1)[0].rsplit("@", 1)
    if ":" not in userinfo and scheme.lower() not in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"):
        return None  # a bare user name (postgresql://apportion@db) is not a secret
    shown = f"{scheme}://***@{host}{('/' + rest.split('/', 1)[1]) if '/' in rest else ''}"
    return (f"{shown} carries credentials inside the URI; credentials come from the environment or the "
            "SDK's default chain (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_*, PGPASSWORD, ~/.pgpass), "
            "never from the config file")


class FxRate(BaseModel):
    """One FX rate: 1 `from` = `rate` `to`, valid from `date` (until a newer one)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    date: date_type
    from_: str = Field(alias="from", pattern=r"^[A-Za-z]{3}$")
    to: str = Field(pattern=r"^[A-Za-z]{3}$")
    rate: Decimal = Field(gt=0)

    @field_validator("rate", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        return Decimal(str(v)) if isinstance(v, float) else v  # YAML floats keep the digits as written


class ExportOptions(BaseModel):
    """`exports:` in apportion.yaml: how the nightly job writes the finance pack."""

    model_config = ConfigDict(extra="forbid")

    lines: Literal["parquet", "csv"] = Field("parquet", description="The line-level file (allocation_lines): "
                                             "Parquet (default) or gzip-compressed CSV.")


class ApportionConfig(BaseModel):
    """Top level of apportion.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    warehouse: Path = Field(description="Local working folder: apportion.duckdb, exports, scratch, and the raw zone "
                            "and lake unless `raw:` / `lake:` put them elsewhere.")
    lake_at: str | None = Field(None, alias="lake", description="Where the Parquet lake lives: a local folder or an "
                                "s3://, gs:// or az:// URI (the system of record; `<warehouse>/lake` is then its "
                                "local cache). "
                                "Default `<warehouse>/lake`.")
    raw_at: str | None = Field(None, alias="raw", description="Where the raw landing zone lives: a local folder or "
                               "an s3://, gs:// or az:// URI (`<warehouse>/raw` is then its local cache). Default "
                               "`<warehouse>/raw`.")
    publish_to: str | None = Field(None, description="An s3://, gs:// or az:// URI (or local folder) the published apportion.duckdb "
                                   "is also copied to after each warehouse build (its lake views read the object store).")
    taxonomy: Path = Field(description="Tag taxonomy YAML file.")
    sources: list[SourceConfig] = Field(min_length=1)
    open_months: int = Field(2, ge=1, le=36, description="Months the nightly job rebuilds: the current one and the N-1 before it.")
    coverage_threshold: float = Field(0.8, ge=0, le=1, description="Coverage check warns below this spend-weighted share.")
    reporting_currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217 code: adds "
                                           "x_Reporting* columns converted with fx_rates (allocation stays in BillingCurrency).")
    fx_rates: list[FxRate] | Path | None = Field(None, description="FX rates: a list of {date, from, to, rate} or a CSV "
                                                 "file with those columns.")
    fx_max_age_days: int = Field(31, ge=0, le=3660, description="A rate older than this many days is not used.")
    export_options: ExportOptions = Field(default_factory=ExportOptions, alias="exports",
                                          description="Finance pack options: {lines: parquet|csv}.")
    reconciliation_tolerance: Decimal = Field(Decimal("0.01"), ge=0, le=1, description="llm_reconciliation: a "
                                              "residual within this share of the invoice (0.01 = 1 %) is 'within "
                                              "tolerance'; beyond it the status says 'over' or 'under'.")
    budgets: Path | None = Field(None, description="Guardrails file: budgets, anomaly settings, alert channels.")
    token_policies: Path | None = Field(None, description="Token policies file (limits per workload or value class).")
    savings: SavingsSettings | None = Field(None, description="Savings advice settings (models/savings.py).")
    close_after_days: int | None = Field(None, ge=0, le=3660, description="Month close (docs/close.md): the "
                                         "nightly run closes a month this many days after it ends.")
    export_history_days: int = Field(400, ge=1, le=36600, description="Published finance packs kept for "
                                     "`apportion export --as-of` (docs/close.md).")
    config_path: Path | None = Field(None, exclude=True)

    @field_validator("warehouse", mode="before")
    @classmethod
    def _local_warehouse(cls, v: Any) -> Any:
        if isinstance(v, str) and "://" in v:
            raise ValueError(f"{v!r}: `warehouse` is the local working folder (where apportion.duckdb is built); "
                             "put the lake and the raw zone on object storage with `lake:` and `raw:`, and copy the "
                             "published file there with `publish_to:` (docs/running-at-scale.md)")
        return v

    @field_validator("lake_at", "raw_at", "publish_to")
    @classmethod
    def _storage_uri(cls, v: str | None) -> str | None:
        if v is None or "://" not in v:
            return v
        problem = uri_credentials_problem(v)
        if problem:
            raise ValueError(problem)
        scheme, rest = v.split("://", 1)
        if scheme.lower() not in OBJECT_STORE_SCHEMES:
            raise ValueError(f"{v!r}: object storage for the lake is {', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)}"
                             " (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix) or a local folder")
        if not rest.strip("/"):
            raise ValueError(f"{v!r}: name a bucket or container (and optionally a prefix), e.g. "
                             "s3://my-bucket/apportion/lake or az://my-container/apportion/lake")
        return f"{scheme.lower()}://{rest.strip('/')}"

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice")
            seen.add(s.name)
        return v

    @property
    def lake(self) -> Path:
        """The lake as the engine reads and writes it: a local folder (the local cache when `lake:` is a URI)."""
        return Path(self.lake_at) if self.lake_at and "://" not in self.lake_at else self.warehouse / "lake"

    @property
    def raw(self) -> Path:
        """The raw zone as the engine reads and writes it (the local cache when `raw:` is a URI)."""
        return Path(self.raw_at) if self.raw_at and "://" not in self.raw_at else self.warehouse / "raw"

    @property
    def lake_remote(self) -> str | None:
        """The object-store URI that is the system of record of the lake, or None (a local lake)."""
        return self.lake_at if self.lake_at and "://" in self.lake_at else None

    @property
    def raw_remote(self) -> str | None:
        return self.raw_at if self.raw_at and "://" in self.raw_at else None

    def register_remotes(self) -> None:
        """Tell the engine which local folders mirror an object store (`REMOTE_ROOTS`): the lake and raw-zone
        functions take a local path, and look up its object store there. `load_config` calls it."""
        LAKE_WAREHOUSE[self.lake.resolve()] = self.warehouse
        for local, remote in ((self.lake, self.lake_remote), (self.raw, self.raw_remote)):
            if remote:
                REMOTE_ROOTS[local.resolve()] = remote
            else:
                REMOTE_ROOTS.pop(local.resolve(), None)

    @property
    def duckdb_path(self) -> Path:
        return self.warehouse / "apportion.duckdb"

    @property
    def exports(self) -> Path:
        return self.warehouse / "exports"

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def load_config(path: str | Path) -> ApportionConfig:
    """Read and validate apportion.yaml; raise ConfigError naming the line, key and problem."""
    path = Path(path).resolve()
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ConfigError(path, ["line 1: the config must be a mapping with warehouse, taxonomy and sources"])
    uri_problems = [
        f"line {lines.get(('sources', i, 'options', key), 1)}: sources[{i}].options.{key}: {problem}"
        for i, src in enumerate(data.get("sources") or []) if isinstance(src, dict)
        for key, value in (src.get("options") or {}).items() if isinstance(value, str)
        for problem in [uri_credentials_problem(value)] if problem
    ]
    try:
        cfg = ApportionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, problems_from_validation(exc, lines) + uri_problems) from None
    if uri_problems:
        raise ConfigError(path, uri_problems)
    base = path.parent
    cfg.warehouse = (base / cfg.warehouse).resolve()
    cfg.taxonomy = (base / cfg.taxonomy).resolve()
    for key in ("lake_at", "raw_at", "publish_to"):  # local folders are relative to the config file
        value = getattr(cfg, key)
        if value is not None and "://" not in value:
            setattr(cfg, key, str((base / value).resolve()))
    cfg.config_path = path
    cfg.register_remotes()
    for key in ("budgets", "token_policies"):  # guardrails files (apportion/guardrails validates their content)
        if getattr(cfg, key) is not None:
            setattr(cfg, key, (base / getattr(cfg, key)).resolve())
            if not getattr(cfg, key).exists():
                raise ConfigError(path, [f"line {lines.get((key,), 1)}: {key}: file {getattr(cfg, key)} not found"])
    if isinstance(cfg.fx_rates, Path):
        cfg.fx_rates = (base / cfg.fx_rates).resolve()
        if not cfg.fx_rates.exists():
            raise ConfigError(path, [f"line {lines.get(('fx_rates',), 1)}: fx_rates: file {cfg.fx_rates} not found"])
    if cfg.savings is not None and cfg.savings.spot_price_history is not None:
        cfg.savings.spot_price_history = (base / cfg.savings.spot_price_history).resolve()
        if not cfg.savings.spot_price_history.exists():
            raise ConfigError(path, [f"line {lines.get(('savings', 'spot_price_history'), 1)}: "
                                     f"savings.spot_price_history: file {cfg.savings.spot_price_history} not found"])
    for s in cfg.sources:
        if "://" not in s.uri:
            s.uri = str((base / s.uri).resolve())
    if not cfg.taxonomy.exists():
        raise ConfigError(path, [f"line {lines.get(('taxonomy',), 1)}: taxonomy: file {cfg.taxonomy} not found"])
    return cfg


def check_month(month: str) -> str:
    if not MONTH.match(month):
        raise ValueError(f"month {month!r} must look like YYYY-MM")
    return month
