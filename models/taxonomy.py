"""The tag taxonomy: how tags, rules and account mappings decide project, team and workload.

Per dimension, the allocator decides a value in this order, and records which step decided it:

1. `keys` — the first tag key present on the line item (case-insensitive, in priority order)
   whose value, after `normalize` and `aliases`, is an `allowed` value. A value that is not
   allowed is rejected (and named in the reason), never silently accepted.
2. `rules` — ordered first-match rules over line-item fields (account, service, resource id,
   region, tag, ...). Patterns are globs (`*`, `?`), matched case-insensitively on the whole value.
3. `accounts` — a fixed value per (sub-)account id.
4. `default` — a fixed value, if set.
5. Otherwise the line is `shared` when no resource can own it (tax, credits, support, commitment
   fees) and `untagged` when it could have been tagged.

The taxonomy is turned into small tables (`taxonomy_tables`) that the allocation SQL joins:
tag keys and values stay data and are never pasted into SQL text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models._yaml import ConfigError, load_yaml_with_lines, problems_from_validation
from models.focus import CORE_DIMENSIONS, SHARED, UNTAGGED

DIMENSION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
NORMALIZERS = ("trim", "lower", "slug")

# Rule match field -> line-item column. The column names are ours; the patterns are data.
RULE_FIELDS: dict[str, str] = {
    "account": "SubAccountId",
    "account_name": "SubAccountName",
    "billing_account": "BillingAccountId",
    "provider": "ProviderName",
    "service": "ServiceName",
    "service_code": "x_ServiceCode",
    "service_category": "ServiceCategory",
    "resource_id": "ResourceId",
    "region": "RegionId",
    "charge_category": "ChargeCategory",
    "usage_type": "x_UsageType",
    "operation": "x_Operation",
    "instance_type": "x_InstanceType",
    "source": "x_SourceName",
}


def glob_to_regex(pattern: str) -> str:
    """Case-insensitive full-match RE2 regex for a glob (`*` any run, `?` one character)."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return "(?is)" + "".join(out)


def normalise_value(raw: str, steps: list[str]) -> str:
    """Python twin of the SQL normalisation (used for aliases and in tests)."""
    v = raw
    if "trim" in steps:
        v = v.strip()
    if "lower" in steps:
        v = v.lower()
    if "slug" in steps:
        v = re.sub(r"[\s_]+", "-", v)
    return v


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    match: dict[str, Any] = Field(description="field -> glob; `tag` takes a mapping of tag key -> glob.")
    value: str

    @field_validator("match")
    @classmethod
    def _fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("a rule needs at least one condition (use `default` to match everything)")
        for field, pattern in v.items():
            if field == "tag":
                if not isinstance(pattern, dict) or not pattern:
                    raise ValueError("`tag` takes a mapping of tag key -> glob, e.g. {environment: prod}")
                for k, p in pattern.items():
                    if not isinstance(p, (str, int)):
                        raise ValueError(f"tag {k!r}: pattern must be a string")
            elif field not in RULE_FIELDS:
                raise ValueError(f"unknown match field {field!r} (known: tag, {', '.join(RULE_FIELDS)})")
            elif not isinstance(pattern, (str, int)):
                raise ValueError(f"{field}: pattern must be a string")
        return {k: ({tk: str(tv) for tk, tv in p.items()} if k == "tag" else str(p)) for k, p in v.items()}


class Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(default_factory=list, description="Tag keys in priority order (case-insensitive).")
    normalize: list[str] = Field(default_factory=lambda: list(NORMALIZERS))
    aliases: dict[str, list[str]] = Field(default_factory=dict, description="canonical value -> variants.")
    allowed: list[str] = Field(default_factory=list, description="Allowed values; empty means any value.")
    accounts: dict[str, str] = Field(default_factory=dict, description="account id -> value.")
    rules: list[Rule] = Field(default_factory=list)
    default: str | None = None

    @field_validator("normalize")
    @classmethod
    def _norm(cls, v: list[str]) -> list[str]:
        for step in v:
            if step not in NORMALIZERS:
                raise ValueError(f"unknown normalisation {step!r} (known: {', '.join(NORMALIZERS)})")
        return v

    @field_validator("accounts", mode="before")
    @classmethod
    def _account_ids(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    raise ValueError(
                        f"account id {k!r} must be quoted: ids are strings and YAML would drop leading zeros"
                    )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Dimension":
        allowed = set(self.allowed)
        problems = []

        def check(value: str, what: str) -> None:
            if allowed and value not in allowed:
                problems.append(f"{what} {value!r} is not in allowed")
            if value in (UNTAGGED, SHARED):
                problems.append(f"{what} {value!r} is reserved for unattributed spend")

        for canonical in self.aliases:
            check(canonical, "alias target")
        for acct, value in self.accounts.items():
            check(value, f"accounts[{acct}] value")
        for rule in self.rules:
            check(rule.value, f"rule {rule.name!r} value")
        if self.default is not None:
            check(self.default, "default")
        seen: dict[str, str] = {}
        for canonical, variants in self.aliases.items():
            for variant in variants:
                key = normalise_value(str(variant), self.normalize)
                if key in seen and seen[key] != canonical:
                    problems.append(
                        f"alias {variant!r} maps to both {seen[key]!r} and {canonical!r} after normalisation"
                    )
                seen[key] = canonical
        names = [r.name for r in self.rules]
        for name in {n for n in names if names.count(n) > 1}:
            problems.append(f"rule name {name!r} is used twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    dimensions: dict[str, Dimension]

    @field_validator("dimensions", mode="before")
    @classmethod
    def _dims(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for name in v:
            if not DIMENSION_NAME.match(name):
                raise ValueError(f"dimension name {name!r} must be lower_snake_case")
        return v

    @model_validator(mode="after")
    def _core_dimensions(self) -> "Taxonomy":
        missing = [d for d in CORE_DIMENSIONS if d not in self.dimensions]
        if missing:
            raise ValueError(f"missing dimension(s) {', '.join(missing)}: project, team and workload are required")
        return self

    @property
    def dimension_names(self) -> list[str]:
        """Core dimensions first, then extra ones in file order."""
        return list(CORE_DIMENSIONS) + [d for d in self.dimensions if d not in CORE_DIMENSIONS]

    def rule_fields(self) -> set[str]:
        return {f for d in self.dimensions.values() for r in d.rules for f in r.match if f != "tag"}


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read and validate a taxonomy file; raise ConfigError pointing at the offending lines."""
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ConfigError(path, ["line 1: a taxonomy is a mapping with `dimensions:`"])
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, problems_from_validation(exc, lines)) from None


def taxonomy_tables(tax: Taxonomy) -> dict[str, pa.Table]:
    """The taxonomy as relational tables for the allocation SQL."""
    dims, keys, aliases, allowed, accounts, conds = [], [], [], [], [], []
    for ord_, name in enumerate(tax.dimension_names):
        d = tax.dimensions[name]
        dims.append(
            {
                "dimension": name,
                "ord": ord_,
                "do_trim": "trim" in d.normalize,
                "do_lower": "lower" in d.normalize,
                "do_slug": "slug" in d.normalize,
                "has_allowed": bool(d.allowed),
                "default_value": d.default,
            }
        )
        for prio, key in enumerate(d.keys):
            keys.append({"dimension": name, "key_lower": key.strip().lower(), "priority": prio})
        for canonical, variants in d.aliases.items():
            for variant in [canonical, *variants]:
                aliases.append(
                    {"dimension": name, "variant": normalise_value(str(variant), d.normalize), "value": canonical}
                )
        for value in d.allowed:
            allowed.append({"dimension": name, "value": value})
        for acct, value in d.accounts.items():
            accounts.append({"dimension": name, "account_id": acct, "value": value})
        for rule_ord, rule in enumerate(d.rules):
            for field, pattern in rule.match.items():
                pairs = pattern.items() if field == "tag" else [(None, pattern)]
                for tag_key, glob in pairs:
                    conds.append(
                        {
                            "dimension": name,
                            "rule_order": rule_ord,
                            "rule_name": rule.name,
                            "value": rule.value,
                            "field": field,
                            "tag_key": tag_key.strip().lower() if tag_key else None,
                            "regex": glob_to_regex(glob),
                        }
                    )
    schemas = {
        "tax_dimensions": pa.schema(
            [("dimension", pa.string()), ("ord", pa.int32()), ("do_trim", pa.bool_()), ("do_lower", pa.bool_()),
             ("do_slug", pa.bool_()), ("has_allowed", pa.bool_()), ("default_value", pa.string())]
        ),
        "tax_keys": pa.schema([("dimension", pa.string()), ("key_lower", pa.string()), ("priority", pa.int32())]),
        "tax_aliases": pa.schema([("dimension", pa.string()), ("variant", pa.string()), ("value", pa.string())]),
        "tax_allowed": pa.schema([("dimension", pa.string()), ("value", pa.string())]),
        "tax_accounts": pa.schema([("dimension", pa.string()), ("account_id", pa.string()), ("value", pa.string())]),
        "tax_rule_conditions": pa.schema(
            [("dimension", pa.string()), ("rule_order", pa.int32()), ("rule_name", pa.string()), ("value", pa.string()),
             ("field", pa.string()), ("tag_key", pa.string()), ("regex", pa.string())]
        ),
    }
    rows = {"tax_dimensions": dims, "tax_keys": keys, "tax_aliases": aliases, "tax_allowed": allowed,
            "tax_accounts": accounts, "tax_rule_conditions": conds}
    return {name: pa.Table.from_pylist(rows[name], schema=schemas[name]) for name in schemas}
